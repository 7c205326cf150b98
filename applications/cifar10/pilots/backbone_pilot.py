"""Pilots for the default encoder: backbone levers against DIM's backbone under the same recipe.

Arms: `dim` (the `dim_pairs` backbone), `resnet` (a CIFAR-style ResNet trunk in the view
encoder instead of DIM's two convs), `resnet_scales` (that trunk with the `scales` arm's
multi-scale InfoMax, the default's recipe), `scales` (AMDIM-style multi-scale InfoMax:
`local_scales=(1, 2, 4)`, R also scored against each view's 2x2- and 4x4-pooled locations),
`scales14` (only the 4x4-pooled scale beside the full map), `crop` and `crop02` (random resized
crops, `crop=0.4` and 0.2) and `lr6e4` (the cosine schedule from twice the peak rate): `ARMS`.

All arms run the `dim_pairs` recipe (InfoNCE, augmented pairs, colour, score clip 20, mixed
bfloat16 when asked) for the same few epochs and are compared on the in-training linear
probe (10,000 training images, scored on 5,000 held-out training images; never the test set).

The ResNet trunk keeps DIM's 8x8x128 local map for 32x32 images, so the views, aggregator
and critics are unchanged; `--summarize` prints its multiply-adds per image beside DIM's
trunk's (`conv_macs`, `dim_trunk_macs`).

    python applications/cifar10/pilots/backbone_pilot.py --arm resnet --epochs 3 \
        --mixed-precision --seed 0 --data ../shared/data/cifar10-jpeg.tar.gz --out OUT

Results: `backbone/` (see README.md there).
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_infobal import pretraining  # noqa: E402


def resnet_trunk(widths=(32, 64, 128), name="resnet_trunk", input_shape=(None, None, 3)):
    """conv3x3 widths[0], then one basic residual block per further width, each halving
    the map: 32x32 -> 16x16 -> 8x8 (any image size: the input is (None, None, 3))."""
    x = inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(widths[0], 3, padding="same", use_bias=False)(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    for w in widths[1:]:
        y = keras.layers.Conv2D(w, 3, strides=2, padding="same", use_bias=False)(x)
        y = keras.layers.ReLU()(keras.layers.BatchNormalization()(y))
        y = keras.layers.Conv2D(w, 3, padding="same", use_bias=False)(y)
        y = keras.layers.BatchNormalization()(y)
        s = keras.layers.Conv2D(w, 1, strides=2, use_bias=False)(x)
        s = keras.layers.BatchNormalization()(s)
        x = keras.layers.ReLU()(keras.layers.Add()([y, s]))
    return keras.Model(inputs, x, name=name)


def conv_macs(model):
    """Multiply-adds per image of the Conv2D layers of a functional `model` with a fixed
    input size: H_out * W_out * k_h * k_w * C_in * C_out per layer."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            total += h * w * kh * kw * c_in * c_out
    return total


# Each arm changes the dim_pairs recipe in one place: (backbone, task, augmentation, run
# options). The scales are the objective's (InfoBal(local_scales=...)), under `task`.
ARMS = {
    "dim": ({}, {}, {}, {}),
    "scales": ({}, {"local_scales": [1, 2, 4]}, {}, {}),
    # Only the coarsest extra scale: 5 of the 26 extra locations per view (stride-1 pooling
    # of a view's 8x4 map: 2x2 windows give 21, 4x4 windows 5), so most of the cost is saved.
    "scales14": ({}, {"local_scales": [1, 4]}, {}, {}),
    # Random resized crops of 60-100% (crop) or 80-100% (crop02) of each side.
    "crop": ({}, {}, {"crop": 0.4}, {}),
    "crop02": ({}, {}, {"crop": 0.2}, {}),
    # The schedule: twice the peak learning rate of the cosine decay.
    "lr6e4": ({}, {}, {}, {"lr": 6e-4}),
}


def dim_trunk_macs(image_shape=(32, 32, 3), filters=(64, 128)):
    """The same count for DIM's trunk (conv 4x4 stride 2, 'same' padding, per filter)."""
    h, w, c = image_shape
    total = 0
    for f in filters:
        h, w = -(-h // 2), -(-w // 2)
        total += h * w * 4 * 4 * c * f
        c = f
    return total


def summarize(folder):
    """The markdown table of the in-training probe (last epoch) of every run under `folder`
    (`<arm>_seed<k>/log.csv`), with the mean per arm."""
    import csv
    import glob
    import statistics

    rows, by_arm = [], {}
    for log in sorted(glob.glob(os.path.join(folder, "*_seed*", "log.csv"))):
        run = os.path.basename(os.path.dirname(log))
        last = list(csv.DictReader(open(log)))[-1]
        probe = [100 * float(last[f"probe_{k}"]) for k in ("conv", "fc", "R")]
        rows.append(f"| {run} | " + " | ".join(f"{v:.2f}" for v in probe) + " |")
        by_arm.setdefault(run.split("_seed")[0], []).append(probe)
    for arm, runs in sorted(by_arm.items()):
        means = [statistics.mean(col) for col in zip(*runs)]
        rows.append(f"| {arm}, mean of {len(runs)} | " + " | ".join(f"{v:.2f}" for v in means)
                    + " |")
    table = ["| run | probe conv | probe fc | probe R |", "|---|---|---|---|"] + rows
    cost = (f"Trunk multiply-adds per 32x32 image: ResNet {conv_macs(resnet_trunk(input_shape=(32, 32, 3))) / 1e6:.1f} M, "
            f"DIM {dim_trunk_macs() / 1e6:.1f} M.")
    return "\n".join(table + ["", cost])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--summarize", metavar="FOLDER",
                   help="print the table of the runs under FOLDER and exit")
    p.add_argument("--arm", choices=("resnet", "resnet_scales") + tuple(ARMS))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixed-precision", action="store_true")
    p.add_argument("--data")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    if not (args.arm and args.data and args.out):
        p.error("--arm, --data and --out are required to run a pilot")
    backbone, task, augmentation, options = {}, {}, {}, {}
    if args.arm.startswith("resnet"):
        backbone["trunk"] = keras.saving.serialize_keras_object(resnet_trunk())
        if args.arm == "resnet_scales":
            task["local_scales"] = ARMS["scales"][1]["local_scales"]
    else:
        backbone, task, augmentation, options = (dict(part) for part in ARMS[args.arm])
    pretraining.pretrain(recipe="dim_pairs", backbone=backbone, task=task,
                         augmentation=augmentation, epochs=args.epochs, **options,
                         seed=args.seed, mixed_precision=args.mixed_precision,
                         probe_every=args.epochs, data=args.data, out=args.out,
                         skip_final_probe=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
