"""Scores presets against the three targets set for a default encoder, on full test sets.

    python applications/cifar10/targets.py --data ../shared/data/cifar10-jpeg.tar.gz \
        --fashion-mnist $FMNIST --presets infobal_pairs_long infobal_scales_long \
        --out applications/cifar10/targets.json
    python applications/cifar10/targets.py ... --presets NEW --keep   # add one preset's row

For each preset (features extracted once per dataset):
- **classifier**: its shipped classifier (`InfoBalCIFAR(preset=...)`, head and feature layer
  chosen on validation at export) on the full CIFAR-10 test set; target >= 76%.
- **kNN**: weighted kNN (k = 200, temperature 0.1, cosine) on `conv`, `fc` and `R`, the
  memory bank all 50,000 training images, scored on the full test set. The layer the target
  is judged on is chosen on validation (`knn.knn_select_layer`: the 5,000 held-out training
  images the shipped head was chosen on, against the other 45,000); target >= 66% on it.
- **transfer**: a converged linear probe on `conv` features of Fashion-MNIST (28x28 grayscale
  brought to 32x32 and tiled to RGB, as `keras-infobal evaluate --resize 32 32` does), fitted
  on its 60,000 training images and scored on its 10,000 test images, against the same
  architecture with random weights (`--random-init`, seed 0); target >= random + 4 points.
`--fashion-mnist` is a folder with train.npz and test.npz (`applications/fashion_mnist/prepare.py`).
Nothing here reads the test set to choose: the presets were chosen on validation splits
before, and the kNN layer is chosen on one here.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TARGETS = {"classifier": 0.76, "knn": 0.66, "transfer_gain": 0.04}
KNN_LAYERS = ("conv", "fc", "R")


def fashion_mnist_probe(model, train, test, layer="conv"):
    """The transfer probe: a converged linear probe on `model`'s `layer` features of
    `train` = (images, labels), scored on `test`."""
    from keras_infobal.evaluation import train_classifier

    f = {s: model.extract_features(x, layers=(layer,))[layer] for s, (x, _) in
         (("train", train), ("test", test))}
    return train_classifier(f["train"], train[1], f["test"], test[1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="CIFAR-10 (a train/test folder or .tar.gz)")
    p.add_argument("--fashion-mnist", required=True,
                   help="folder with Fashion-MNIST's train.npz and test.npz")
    p.add_argument("--presets", nargs="+", required=True)
    p.add_argument("--out", required=True, help="JSON results (a .md table beside it)")
    p.add_argument("--keep", action="store_true",
                   help="keep the results of other presets already in --out (scored by the "
                        "same script before) and add or replace these presets' rows")
    p.add_argument("--limit", type=int, default=0,
                   help="a quick check on every Nth image only (not a result)")
    args = p.parse_args(argv)
    import keras
    import numpy as np

    import keras_infobal  # noqa: F401
    from keras_infobal import datasets
    from keras_infobal.applications import InfoBalCIFAR
    from keras_infobal.knn import knn_accuracy, knn_select_layer
    from keras_infobal.models import InfoBal

    # Checked before the data loads.
    results = {}
    if args.keep and os.path.exists(args.out):
        with open(args.out) as f:
            before = json.load(f)
        if before.get("targets") != TARGETS:
            raise SystemExit(f"{args.out} was scored against other targets ({before.get('targets')})"
                             f": drop --keep and score every preset again.")
        if before.get("every_nth_image") != (args.limit or 1):
            raise SystemExit(f"{args.out} was scored on every {before.get('every_nth_image')}th "
                             f"image, this run on every {args.limit or 1}th: drop --keep.")
        results = {k: v for k, v in before["presets"].items() if k not in args.presets}
    x_tr, y_tr, _ = datasets.load_cifar10("train", source=args.data)
    x_te, y_te, _ = datasets.load_cifar10("test", source=args.data)
    fm = {s: datasets.load_images(os.path.join(args.fashion_mnist, f"{s}.npz"), resize=(32, 32))
          for s in ("train", "test")}
    if args.limit:
        x_tr, y_tr, x_te, y_te = (a[::args.limit] for a in (x_tr, y_tr, x_te, y_te))
        fm = {s: (v[0][::args.limit], v[1][::args.limit]) for s, v in fm.items()}

    def transfer(model):
        return fashion_mnist_probe(model, fm["train"], fm["test"])

    # The split the shipped heads were chosen on (export_weights.py): kNN's layer is chosen
    # on the same 5,000 images.
    validation = np.random.default_rng(0).permutation(len(x_tr))[:len(x_tr) // 10]
    for name in args.presets:
        pred = InfoBalCIFAR(preset=name).predict(x_te, batch_size=500, verbose=0).argmax(-1)
        model = InfoBal.from_preset(name)
        f_tr = model.extract_features(x_tr, layers=KNN_LAYERS)
        f_te = model.extract_features(x_te, layers=KNN_LAYERS)
        knn_layer, knn_val = knn_select_layer(f_tr, y_tr, validation, k=200)
        knn_test = {k: knn_accuracy(f_tr[k], y_tr, f_te[k], y_te, k=200) for k in KNN_LAYERS}
        keras.utils.set_random_seed(0)
        random = InfoBal.from_config(model.get_config())  # same architecture, fresh weights
        r = {"classifier": float(np.mean(pred == y_te)),
             "knn": knn_test[knn_layer], "knn_layer": knn_layer, "knn_validation": knn_val,
             "knn_test": knn_test,
             "transfer_conv": transfer(model), "transfer_conv_random_init": transfer(random)}
        r["transfer_gain"] = r["transfer_conv"] - r["transfer_conv_random_init"]
        r["meets"] = {k: r[k] >= v for k, v in TARGETS.items()}
        results[name] = r
        print(name, json.dumps(r), flush=True)
    out = {"targets": TARGETS, "every_nth_image": args.limit or 1, "cifar10_test_images": int(len(y_te)),
           "fashion_mnist_images": {s: int(len(fm[s][1])) for s in fm},
           "keras": keras.__version__, "backend": keras.backend.backend(), "presets": results}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    md = ["| preset | shipped classifier, CIFAR-10 test | kNN on the layer chosen on "
          "validation, test (validation) | kNN test: conv / fc / R | Fashion-MNIST probe "
          "conv: pretrained / random init (gain) |", "|---|---|---|---|---|"]
    for name, r in results.items():
        md.append(f"| `{name}` | {100 * r['classifier']:.2f} | {r['knn_layer']}: "
                  f"{100 * r['knn']:.2f} ({100 * r['knn_validation'][r['knn_layer']]:.2f}) | "
                  + " / ".join(f"{100 * r['knn_test'][k]:.2f}" for k in KNN_LAYERS)
                  + f" | {100 * r['transfer_conv']:.2f} / "
                  f"{100 * r['transfer_conv_random_init']:.2f} "
                  f"({100 * r['transfer_gain']:+.2f}) |")
    md.append(f"| target | >= {100 * TARGETS['classifier']:.0f} | >= "
              f"{100 * TARGETS['knn']:.0f} | - | gain >= "
              f"{100 * TARGETS['transfer_gain']:+.0f} |")
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
