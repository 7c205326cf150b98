"""Exports a pretrained run as a shipped preset (encoder + classifier head, and the critics).

    python applications/cifar10/export_weights.py --run applications/cifar10/runs/infobal \
        --variant infobal --command "the command that trained the run"

Steps: load OUT/model.keras; pick the feature layer and head (linear, or DIM's evaluation
classifier "mlp") that score best on a validation split of the training set (never the test
set); train that head on all training features (standardization folded into its first
dense layer); write
`keras_infobal/applications/weights/<variant>_cifar10.weights.h5` with float16 arrays and,
with --with-critics, the whole pretraining model (critics included, for `InfoBal.from_preset`)
as `<variant>_pretraining.weights.h5`; write the preset `<variant>.preset.json` (architecture,
pretraining config, files and sha256s, layer, validation and test accuracy, command) and
OUT/export.json.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PKG_APPS = os.path.join(ROOT, "keras_infobal", "applications")


def to_float16(path):
    """Rewrites every float32 array of an h5 file as float16 (halves the shipped size)."""
    import h5py
    import numpy as np

    tmp = path + ".tmp"
    with h5py.File(path, "r") as src, h5py.File(tmp, "w") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v

        def copy(name, obj):
            if isinstance(obj, h5py.Group):
                g = dst.require_group(name)
                for k, v in obj.attrs.items():
                    g.attrs[k] = v
            else:
                data = obj[()]
                if data.dtype == np.float32:
                    data = data.astype(np.float16)
                dst.create_dataset(name, data=data)

        src.visititems(copy)
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--variant", required=True, help="the preset name to write")
    p.add_argument("--command", required=True, help="the command that trained the run")
    p.add_argument("--description", default="")
    p.add_argument("--with-critics", action="store_true",
                   help="also ship the whole pretraining model (critics included)")
    p.add_argument("--heads", nargs="+", default=["linear", "mlp"],
                   help="classifier heads to choose from on the validation split (mlp: DIM's "
                        "evaluation classifier)")
    p.add_argument("--data", default=os.environ.get("KERAS_INFOBAL_CIFAR10"))
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    import keras_infobal  # noqa: F401  (registers the serializable classes)
    from keras_infobal import datasets, features
    from keras_infobal.applications import presets
    from keras_infobal.applications.infobal_cifar import InfoBalCIFAR, canonical_model, sha256
    from keras_infobal.evaluation import fold_standardization, train_classifier

    model = keras.models.load_model(os.path.join(args.run, "model.keras"))
    x_tr, y_tr, _ = datasets.load_cifar10("train", source=args.data)
    x_te, y_te, _ = datasets.load_cifar10("test", source=args.data)
    layers = features.NAMES  # the shipped head reads the best of every feature layer
    f_tr = model.extract_features(x_tr, layers=layers)
    f_te = model.extract_features(x_te, layers=layers)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x_tr))
    val, fit = order[:5000], order[5000:]
    heads = args.heads
    # Every (layer, head) is scored on the held-out images; the test set is touched only by
    # the chosen one, after the choice.
    val_acc = {(k, h): train_classifier(f_tr[k][fit], y_tr[fit], f_tr[k][val], y_tr[val],
                                        head=h)
               for k in layers for h in heads}
    best, best_head = max(val_acc, key=val_acc.get)
    acc, head, (mean, std) = train_classifier(f_tr[best], y_tr, f_te[best], y_te,
                                              head=best_head, return_model=True)
    # The standardization (x - mean) / std folds into the first dense layer of the head.
    first = "head_dense" if best_head == "mlp" else "logits"
    w_folded, b_folded = fold_standardization(*head.get_layer(first).get_weights(), mean, std)

    backbone = {"num_views": model.num_views, "split": model.split,
                "aggregator": model.aggregator_mode, "filters": list(model.filters),
                "conv_filters": model.conv_filters, "fc_units": model.fc_units,
                "output_dim": model.output_dim}
    app = canonical_model(best, backbone=backbone, head=best_head)
    app.get_layer("view_encoder").set_weights(model.encoder.get_weights())
    app.get_layer("view_aggregator").set_weights(model.aggregator.get_weights())
    if best_head == "mlp":
        app.get_layer("head_dense").set_weights([w_folded, b_folded])
        app.get_layer("head_bn").set_weights(head.get_layer("head_bn").get_weights())
        app.get_layer("predictions").set_weights(head.get_layer("logits").get_weights())
    else:
        app.get_layer("predictions").set_weights([w_folded, b_folded])
    out_dir = os.path.join(PKG_APPS, "weights")
    os.makedirs(out_dir, exist_ok=True)
    fname = f"{args.variant}_cifar10.weights.h5"
    path = os.path.join(out_dir, fname)
    app.save_weights(path)
    to_float16(path)
    shipped = canonical_model(best, backbone=backbone, head=best_head)
    shipped.load_weights(path)
    probs = shipped.predict(x_te, batch_size=500, verbose=0)[0]
    shipped_acc = float(np.mean(probs.argmax(-1) == y_te))

    pretraining_weights = None
    if args.with_critics:
        full_path = os.path.join(out_dir, f"{args.variant}_pretraining.weights.h5")
        model.save_weights(full_path)
        to_float16(full_path)
        pretraining_weights = {"file": os.path.basename(full_path), "sha256": sha256(full_path)}
    with open(os.path.join(args.run, "config.json")) as f:
        run_config = json.load(f)
    pretraining_config = model.get_config()
    for key in ("name", "trainable"):
        pretraining_config.pop(key, None)
    preset = {
        "name": args.variant,
        "description": args.description,
        "backbone": backbone,
        "pretraining_config": pretraining_config,
        "augmentation": run_config.get("augmentation", {}),
        "weights": {"file": fname, "sha256": sha256(path)},
        "pretraining_weights": pretraining_weights,
        "feature_layer": best,
        "head": best_head,
        "validation_accuracy": val_acc[best, best_head],
        "validation_note": f"{best_head} head on the {best!r} features, scored on 5,000 "
                           "held-out training images after fitting on the other 45,000; "
                           "chosen over " + ", ".join(f"{k}/{h} {a:.4f}" for (k, h), a
                                                       in val_acc.items()),
        "test_accuracy": round(shipped_acc, 4),
        "command": args.command,
        "run": os.path.relpath(args.run, ROOT),
    }
    presets.write_preset(preset)
    loaded = InfoBalCIFAR(variant=args.variant)
    public_acc = float(np.mean(loaded.predict(x_te, batch_size=500, verbose=0).argmax(-1)
                               == y_te))
    report = {"variant": args.variant,
              "validation_accuracy": {f"{k}/{h}": a for (k, h), a in val_acc.items()},
              "feature_layer": best, "head": best_head,
              "public_loader_test_accuracy": public_acc,
              "head_test_accuracy_float32": acc, "shipped_test_accuracy_float16": shipped_acc,
              "file_bytes": os.path.getsize(path), "sha256": preset["weights"]["sha256"]}
    with open(os.path.join(args.run, "export.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
