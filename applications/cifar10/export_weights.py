"""Exports a pretraining run as a built-in preset folder, with a classifier head.

    python applications/cifar10/export_weights.py --run applications/cifar10/runs/infobal \
        --preset infobal --command "the command that trained the run" \
        --data ../shared/data/cifar10-jpeg.tar.gz

Steps: load OUT/model.keras; pick the feature layer and head (linear, or DIM's evaluation
classifier "mlp") that score best on a validation split of the training set (never the test
set), then with `--copies K` the same head fitted with K augmented copies of the images
beside them, kept if it scores better there; train the chosen head on all training features
(standardization folded into its first dense layer); write
`keras_infobal/presets/<preset>/` (`InfoBal.save_to_preset`: config.json, model.weights.h5,
task.json, critics.weights.h5 with --with-critics, plus classifier.weights.h5; float16
arrays) with its metadata (validation and test accuracy, command, run), and OUT/export.json.
"""

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--preset", required=True, help="the built-in preset name to write")
    p.add_argument("--command", required=True, help="the command that trained the run")
    p.add_argument("--description", default="")
    p.add_argument("--with-critics", action="store_true",
                   help="also ship the critics (for InfoBal.from_preset to continue pretraining)")
    p.add_argument("--heads", nargs="+", default=["linear", "mlp"],
                   help="classifier heads to choose from on the validation split (mlp: DIM's "
                        "evaluation classifier)")
    p.add_argument("--copies", type=int, default=0,
                   help="also score the chosen layer and head fitted with K augmented copies "
                        "of the training images (evaluation.augmented_copies: the mirror, "
                        "then shifts) and ship that head if it scores better on validation")
    p.add_argument("--data", default=os.environ.get("KERAS_INFOBAL_CIFAR10"))
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    import keras_infobal  # noqa: F401  (registers the serializable classes)
    from keras_infobal import datasets, features
    from keras_infobal.applications import InfoBalCIFAR
    from keras_infobal.applications.infobal_cifar import _top
    from keras_infobal.evaluation import (
        augmented_copies,
        fold_standardization,
        train_classifier,
    )
    from keras_infobal.models import presets

    model = keras.models.load_model(os.path.join(args.run, "model.keras"))
    x_tr, y_tr, _ = datasets.load_cifar10("train", source=args.data)
    x_te, y_te, _ = datasets.load_cifar10("test", source=args.data)
    layers = features.NAMES  # the shipped head reads the best of every feature layer
    f_tr = model.extract_features(x_tr, layers=layers)
    f_te = model.extract_features(x_te, layers=layers)
    order = np.random.default_rng(0).permutation(len(x_tr))
    val, fit = order[:5000], order[5000:]
    # Every (layer, head) is scored on the held-out images; the test set is touched only by
    # the chosen one, after the choice.
    val_acc = {(k, h): train_classifier(f_tr[k][fit], y_tr[fit], f_tr[k][val], y_tr[val],
                                        head=h)
               for k in layers for h in args.heads}
    best, best_head = max(val_acc, key=val_acc.get)
    # Then, for that layer and head only, the same head fitted with augmented copies of the
    # training images beside them (chosen on the same validation images, which have none).
    copies = [model.extract_features(c, layers=[best])[best]
              for c in augmented_copies(x_tr, args.copies)]
    copies_val = (train_classifier(f_tr[best][fit], y_tr[fit], f_tr[best][val], y_tr[val],
                                   head=best_head, train_views=[c[fit] for c in copies])
                  if copies else None)
    use_copies = copies_val is not None and copies_val > val_acc[best, best_head]
    acc, head, (mean, std) = train_classifier(f_tr[best], y_tr, f_te[best], y_te,
                                              head=best_head, return_model=True,
                                              train_views=copies if use_copies else ())
    # The standardization (x - mean) / std folds into the first dense layer of the head.
    first = "head_dense" if best_head == "mlp" else "logits"
    w_folded, b_folded = fold_standardization(*head.get_layer(first).get_weights(), mean, std)
    _, top = _top(keras.Input(f_tr[best].shape[1:]), 10, "softmax", best_head)
    top = {layer.name: layer for layer in top}
    if best_head == "mlp":
        top["head_dense"].set_weights([w_folded, b_folded])
        top["head_bn"].set_weights(head.get_layer("head_bn").get_weights())
        top["predictions"].set_weights(head.get_layer("logits").get_weights())
    else:
        top["predictions"].set_weights([w_folded, b_folded])

    folder = os.path.join(presets.BUILTIN_DIR, args.preset)
    if os.path.exists(folder):
        shutil.rmtree(folder)
    if args.with_critics:
        model.save_to_preset(folder)
        presets.to_float16(os.path.join(folder, presets.CRITICS_FILE))
    else:
        model.backbone.save_to_preset(folder)
        with open(os.path.join(folder, presets.TASK_FILE), "w") as f:
            json.dump(model.objective_config(), f, indent=2)
            f.write("\n")
    presets.to_float16(os.path.join(folder, presets.WEIGHTS_FILE))
    presets.save_layers(os.path.join(folder, presets.CLASSIFIER_FILE),
                        [layer for layer in top.values() if layer.weights])
    presets.to_float16(os.path.join(folder, presets.CLASSIFIER_FILE))
    with open(os.path.join(args.run, "config.json")) as f:
        run_config = json.load(f)
    metadata = dict(
        name=args.preset, description=args.description,
        validation_accuracy=copies_val if use_copies else val_acc[best, best_head],
        validation_note=f"{best_head} head on the {best!r} features, scored on 5,000 held-out "
                        "training images after fitting on the other 45,000; chosen over "
                        + ", ".join(f"{k}/{h} {a:.4f}" for (k, h), a in val_acc.items())
                        + (f"; then fitted with {args.copies} augmented copies of each image "
                           f"({copies_val:.4f}, {'kept' if use_copies else 'not kept'})"
                           if copies else ""),
        classifier={"feature_layer": best, "head": best_head, "classes": 10,
                    "augmented_copies": args.copies if use_copies else 0},
        recipe={"augmentation": run_config.get("augmentation", {})},
        command=args.command, run=os.path.relpath(args.run, ROOT))
    presets.write_metadata(folder, **metadata)
    shipped = InfoBalCIFAR(preset=args.preset)
    shipped_acc = float(np.mean(shipped.predict(x_te, batch_size=500, verbose=0).argmax(-1)
                                == y_te))
    presets.write_metadata(folder, test_accuracy=round(shipped_acc, 4))
    report = {"preset": args.preset,
              "validation_accuracy": {f"{k}/{h}": a for (k, h), a in val_acc.items()},
              "feature_layer": best, "head": best_head,
              "augmented_copies": {"count": args.copies, "validation_accuracy": copies_val,
                                   "kept": use_copies},
              "head_test_accuracy_float32": acc, "shipped_test_accuracy_float16": shipped_acc}
    with open(os.path.join(args.run, "export.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
