"""Pilot: the linear probe against DIM's own evaluation classifier on the same frozen encoder.

DIM's published CIFAR-10 numbers (73.25% conv for DIM(L) JSD) are measured with a small
nonlinear classifier (dense 200 -> BN -> dropout 0.1 -> ReLU -> dense 10), not a linear layer.
This pilot scores both heads on the same cached features of one run, choosing on 5,000 held-out
training images (the split `export_weights.py` uses) and touching the test set once per cell.

    python applications/cifar10/pilots/head_protocol.py \
        --run applications/cifar10/runs/dim_pairs_long --data ../shared/data/cifar10-jpeg.tar.gz
    python applications/cifar10/pilots/head_protocol.py --preset dim_pairs --data ...
    python applications/cifar10/pilots/head_protocol.py --preset infobal_scales_long \
        --layers fc --heads mlp --copies 4 --data ...  # + heads fitted on augmented copies

Writes `pilots/head_protocol/<run or preset name>.json`. Budget: feature extraction (~2 min) plus
2 heads x len(--layers) classifiers on 45,000 x D features (~1-3 min each on 2 cores).
"""

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a run folder holding model.keras")
    src.add_argument("--preset", help="a shipped preset (its encoder, without the head)")
    p.add_argument("--data", default=os.environ.get("KERAS_INFOBAL_CIFAR10"))
    p.add_argument("--layers", nargs="+", default=["conv", "fc"])
    p.add_argument("--heads", nargs="+", default=["linear", "mlp"])
    p.add_argument("--copies", type=int, default=0,
                   help="also score each head fitted on the features of K augmented copies of "
                        "the training images beside the plain ones (evaluation."
                        "train_classifier's train_views): the mirror image, then K - 1 draws "
                        "of pretraining's spatial augmentation (shifts up to 4 pixels with "
                        "mirrored borders, flips); writes <name>_copies<K>.json")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    import keras_infobal  # noqa: F401
    from keras_infobal import datasets
    from keras_infobal.evaluation import augmented_copies, train_classifier

    if args.run:
        model = keras.models.load_model(os.path.join(args.run, "model.keras"))
        features = model.extract_features
    else:
        # The shipped encoder (float16 weights), through the application's feature models.
        from keras_infobal.applications import InfoBalCIFAR

        apps = {k: InfoBalCIFAR(preset=args.preset, include_top=False, feature_layer=k)
                for k in args.layers}

        def features(x, layers):
            return {k: apps[k].predict(x, batch_size=500, verbose=0) for k in layers}
    x_tr, y_tr, _ = datasets.load_cifar10("train", source=args.data)
    x_te, y_te, _ = datasets.load_cifar10("test", source=args.data)
    f_tr = features(x_tr, layers=args.layers)
    f_te = features(x_te, layers=args.layers)
    copies = [features(c, layers=args.layers) for c in augmented_copies(x_tr, args.copies)]
    del x_tr, x_te
    # The same 5,000 held-out training images as export_weights.py.
    order = np.random.default_rng(0).permutation(len(y_tr))
    val, fit = order[:5000], order[5000:]
    cells = []
    for layer in args.layers:
        for head in args.heads:
            for n_copies in sorted({0, args.copies}):
                t0 = time.time()

                def views(rows):
                    return tuple(c[layer][rows] for c in copies[:n_copies])

                val_acc = train_classifier(f_tr[layer][fit], y_tr[fit], f_tr[layer][val],
                                           y_tr[val], head=head, train_views=views(fit))
                test_acc = train_classifier(f_tr[layer], y_tr, f_te[layer], y_te, head=head,
                                            train_views=views(slice(None)))
                cells.append({"layer": layer, "head": head, "augmented_copies": n_copies,
                              "dim": int(f_tr[layer].shape[1]),
                              "validation_accuracy": val_acc, "test_accuracy": test_acc,
                              "seconds": round(time.time() - t0, 1)})
                print(json.dumps(cells[-1]), flush=True)
    best = max(cells, key=lambda c: c["validation_accuracy"])
    name = os.path.basename(args.run.rstrip("/")) if args.run else args.preset
    name += f"_copies{args.copies}" if args.copies else ""
    out = {"run": (os.path.relpath(args.run, os.path.dirname(os.path.dirname(HERE)))
                   if args.run else None), "preset": args.preset,
           "protocol": "converged (early stopping on 10% of the fitting images); validation = "
                       "5,000 held-out training images, test = the full test set",
           "cells": cells, "best_on_validation": best, "cpu": platform.processor() or
           platform.machine(), "keras": keras.__version__}
    os.makedirs(os.path.join(HERE, "head_protocol"), exist_ok=True)
    path = os.path.join(HERE, "head_protocol", name + ".json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
