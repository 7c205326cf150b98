"""The `keras-infobal` command line: pretrain, evaluate, extract, plot.

    keras-infobal pretrain --recipe dim_pairs --set task.infomin_weight=0.03 --out runs/x
    keras-infobal evaluate --model cifar10:infobal --data ../shared/data/cifar10-jpeg.tar.gz
    keras-infobal extract --model runs/x/preset --images pics/ --layer fc --out feats.npy
    keras-infobal plot runs/dim/log.csv runs/infobal/log.csv --out fig.png

The `keras-infobal` entry point (`keras_infobal_cli`) loads this file without importing the
package, so `--help` and argument errors never import TensorFlow: nothing here may import
keras_infobal (or keras, TensorFlow) at module level. Names come from the data files and from
keras_infobal/features.py, which imports nothing and is loaded alone.
"""

import argparse
import glob
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _feature_registry():
    """keras_infobal/features.py, the feature-layer names: the package's module once the package
    is imported (so registered layers count), else the file alone (it imports nothing)."""
    module = sys.modules.get("keras_infobal.features")
    if module is None:
        spec = importlib.util.spec_from_file_location("_keras_infobal_features",
                                                      os.path.join(HERE, "features.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def _recipe_names():
    with open(os.path.join(HERE, "pretraining_recipes.json")) as f:
        return sorted(json.load(f))


def _preset_names():
    """Built-in presets, from their folders (the ones `presets.list_presets` reads)."""
    folders = glob.glob(os.path.join(HERE, "presets", "*", "metadata.json"))
    return ", ".join(sorted(os.path.basename(os.path.dirname(f)) for f in folders))


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # argparse's own behaviour (usage + message, exit 2), kept for every subcommand.
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser():
    p = _Parser(prog="keras-infobal", description="Multi-view MI representation learning.")
    p.add_argument("--verbose", action="store_true",
                   help="show TensorFlow's C++ and absl log lines (hidden by default)")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, required=True)

    pre = sub.add_parser("pretrain", help="pretrain an encoder on CIFAR-10 or your own images")
    pre.add_argument("--recipe", choices=_recipe_names(),
                     help="the recipe whose backbone, task and augmentation the run starts from")
    pre.add_argument("--config", help="JSON file of pretraining options (the schema of "
                     "keras_infobal.pretraining: backbone, task, augmentation and the "
                     "training options); flags override it")
    pre.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override one option; VALUE is JSON (or a plain string), KEY may "
                          "name a section's key, e.g. task.infomin_weight=0.03 or "
                          "backbone.num_views=4; repeatable")
    pre.add_argument("--out", help="run folder (model.keras, preset/, log.csv, results.json)")
    pre.add_argument("--data", help="your images (a folder, flat or one subfolder per class, "
                     "an .npy/.npz array, or tfds:NAME[:SPLIT]), or CIFAR-10 (a train/test folder or .tar.gz; default "
                     "$KERAS_INFOBAL_CIFAR10, else tfds)")
    pre.add_argument("--resize", type=int, nargs=2, metavar=("H", "W"),
                     help="bring your images to H x W first")
    pre.add_argument("--epochs", type=int)
    pre.add_argument("--limit", type=int, help="use only N training images")
    pre.add_argument("--init-from", help="continue from a preset (name or folder) or a "
                     ".keras InfoBal model")
    pre.add_argument("--skip-bad-images", action="store_true", default=None,
                     help="leave out image files that cannot be decoded (with a note) "
                          "instead of stopping at them")
    pre.add_argument("--mixed-precision", action="store_true", default=None,
                     help="train under mixed_bfloat16 (the default where the CPU has "
                          "AVX512_BF16 or AMX, 4x slower on AVX2; --set mixed_precision=false "
                          "trains in float32)")

    ev = sub.add_parser("evaluate", help="linear-probe and kNN table of a model's features")
    ev.add_argument("--model", required=True,
                    help="a preset (cifar10 for the default one, cifar10:NAME or NAME, NAME one "
                         f"of {_preset_names()}), a preset folder, or a .keras InfoBal model")
    ev.add_argument("--data", help="labelled images (one subfolder per class, an .npz with "
                    "labels, or tfds:NAME[:SPLIT]; 80%% fit the probe, 20%% score it), or CIFAR-10 (a train/test "
                    "folder or .tar.gz; else tfds)")
    ev.add_argument("--test-data", help="labelled images to score on (same forms as --data); "
                    "then the probe fits on all of --data")
    ev.add_argument("--resize", type=int, nargs=2, metavar=("H", "W"),
                    help="bring your images to H x W first")
    ev.add_argument("--skip-bad-images", action="store_true", default=None,
                     help="leave out image files that cannot be decoded (with a note) "
                          "instead of stopping at them")
    ev.add_argument("--random-init", action="store_true",
                    help="score the model's architecture with fresh random weights instead "
                         "(the baseline)")
    ev.add_argument("--protocol", choices=["note", "converged"], default="converged")
    features = _feature_registry()
    ev.add_argument("--layers", default=",".join(features.probe_layers()),
                    help=f"comma-separated feature layers, from {','.join(features.names())}")
    ev.add_argument("--limit", type=int, default=0, help="use N train and N/5 test images")
    ev.add_argument("--knn", type=int, default=200,
                    help="k of the weighted kNN row (cosine, temperature 0.1); 0 = no kNN row")
    ev.add_argument("--out", help="write the table as JSON here")

    ex = sub.add_parser("extract", help="features of images (a folder or .npy) to a .npy file")
    ex.add_argument("--model", required=True,
                    help="a preset (cifar10, cifar10:NAME or NAME, NAME one of "
                         f"{_preset_names()}), a preset folder, or a .keras InfoBal model")
    ex.add_argument("--images", required=True, help="a folder of images (flat or one subfolder "
                    "per class), an .npy/.npz array or tfds:NAME[:SPLIT] (grayscale is tiled to RGB)")
    ex.add_argument("--skip-bad-images", action="store_true", default=None,
                     help="leave out image files that cannot be decoded (with a note) "
                          "instead of stopping at them")
    ex.add_argument("--layer", choices=features.names(), default="conv")
    ex.add_argument("--out", required=True)
    ex.add_argument("--batch-size", type=int, default=256)

    xp = sub.add_parser("export", help="a model as a serving artifact taking uint8 images "
                        "(SavedModel, ONNX, or a torch ExportedProgram on PyTorch)")
    xp.add_argument("--model", required=True,
                    help="a preset (cifar10, cifar10:NAME or NAME), a preset folder, or a "
                         ".keras InfoBal model")
    xp.add_argument("--out", required=True, help="the artifact's path (a folder for "
                    "tf_saved_model, a .onnx or .pt2 file)")
    xp.add_argument("--format", default="tf_saved_model",
                    choices=["tf_saved_model", "onnx", "torch"],
                    help="onnx needs the [export] extra; torch needs KERAS_BACKEND=torch")
    pl = sub.add_parser("plot", help="figure of MI estimates and probe accuracy over training")
    pl.add_argument("logs", nargs="+", help="CSV logs (log.csv of pretrain runs)")
    pl.add_argument("--names", nargs="+", help="one name per log (default: folder names)")
    pl.add_argument("--out", required=True, help="PNG path")
    p.commands = sub.choices  # name -> the subcommand's parser (its usage line for errors)
    return p


def _load_model(spec, random_init=False):
    """An object with `extract_features(images, layers)`: the backbone of a preset (cifar10,
    cifar10:NAME, NAME or a preset folder) or a .keras InfoBal model; with `random_init`,
    the same architecture freshly initialized (the baseline a pretrained model must beat)."""
    import keras

    import keras_infobal  # noqa: F401  (registers the classes for load_model)
    from keras_infobal.models import InfoBalBackbone, presets

    if spec == "cifar10" or spec.startswith("cifar10:"):
        name = spec.split(":", 1)[1] if ":" in spec else presets.default_preset()
        return InfoBalBackbone.from_preset(name, load_weights=not random_init)
    if spec in presets.list_presets() or os.path.isdir(spec):
        return InfoBalBackbone.from_preset(spec, load_weights=not random_init)
    if not os.path.exists(spec):
        raise ValueError(f"--model `{spec}` does not exist; give a .keras file, a preset folder "
                         f"or a preset name ({_preset_names()}).")
    model = keras.models.load_model(spec)
    if not hasattr(model, "extract_features"):
        raise ValueError(f"`{spec}` is a {type(model).__name__}, not an InfoBal model.")
    return type(model).from_config(model.get_config()) if random_init else model


def _set_option(options, item):
    """Applies one `--set KEY=VALUE` to `options` (KEY: an option, or section.key)."""
    if "=" not in item:
        raise ValueError(f"--set takes KEY=VALUE; got {item!r}.")
    key, text = item.split("=", 1)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    if "." in key:
        section, sub = key.split(".", 1)
        if section not in ("backbone", "task", "augmentation"):
            raise ValueError(f"--set {key}: the sections are backbone, task and augmentation.")
        options.setdefault(section, {})
        options[section] = {**(options[section] or {}), sub: value}
    else:
        options[key] = value


def _extract(model, images, layers, what, batch_size=256):
    """Features with a named progress line (and Keras' bar only on a terminal: redirected
    output stays plain lines)."""
    import time

    print(f"extracting {','.join(layers)} features of {len(images)} {what}...", flush=True)
    t0 = time.time()
    feats = model.extract_features(images, layers=layers, batch_size=batch_size,
                                   verbose=1 if sys.stdout.isatty() else 0)
    print(f"extracted {','.join(layers)} features of {len(images)} {what} in "
          f"{time.time() - t0:.1f} s", flush=True)
    return feats


def _markdown(table):
    layers = list(next(iter(table.values())))
    lines = ["| protocol | " + " | ".join(layers) + " |", "|---" * (len(layers) + 1) + "|"]
    for proto, accs in table.items():
        lines.append(f"| {proto} | " + " | ".join(f"{100 * accs[k]:.2f}" for k in layers) + " |")
    return "\n".join(lines)


def run(args):
    import numpy as np

    if args.command == "pretrain":
        from keras_infobal.pretraining import pretrain

        options = {}
        if args.config:
            with open(args.config) as f:
                options = json.load(f)
            if not isinstance(options, dict):
                raise ValueError(f"`{args.config}` must hold a JSON object of options.")
        for key in ("out", "data", "recipe", "epochs", "limit", "init_from", "mixed_precision",
                    "resize", "skip_bad_images"):
            if getattr(args, key) is not None:
                options[key] = getattr(args, key)
        for item in args.set:
            _set_option(options, item)
        if not options.get("out"):
            raise ValueError("pretrain needs --out (or \"out\" in the config).")
        options.setdefault("verbose", 1 if sys.stdout.isatty() else 2)
        results = pretrain(**options)
        from keras_infobal.evaluation import plot_mi_vs_accuracy

        plot_mi_vs_accuracy({options.get("recipe", "infobal"):
                             os.path.join(options["out"], "log.csv")},
                            os.path.join(options["out"], "figure.png"))
        if results:
            print(json.dumps(results["probe"], indent=2))
        return 0

    if args.command == "evaluate":
        from keras_infobal.evaluation import train_classifier

        layers = [s.strip() for s in args.layers.split(",") if s.strip()]
        _feature_registry().check_layers(layers, "--layers")
        model = _load_model(args.model, random_init=args.random_init)
        from keras_infobal.datasets import load_images
        from keras_infobal.pretraining import _load_data

        resize = None if args.resize is None else tuple(args.resize)
        if args.test_data:
            (x_tr, y_tr, _), (x_te, y_te, _) = (
                load_images(d, resize=resize, skip_bad_images=bool(args.skip_bad_images))
                for d in (args.data, args.test_data))
        else:
            x_tr, y_tr, x_te, y_te = _load_data({"data": args.data, "resize": args.resize,
                                                 "seed": 0,
                                                 "skip_bad_images": bool(args.skip_bad_images)})
        for source, labels in ((args.data, y_tr), (args.test_data, y_te)):
            if source and labels is None:
                raise ValueError(f"`{source}` has no labels: evaluate needs one subfolder per "
                                 "class (or an .npz with `labels`).")
        if args.limit:
            rng = np.random.default_rng(0)
            i = rng.permutation(len(x_tr))[: args.limit]
            j = rng.permutation(len(x_te))[: max(2, args.limit // 5)]
            x_tr, y_tr, x_te, y_te = x_tr[i], y_tr[i], x_te[j], y_te[j]
        f_tr = _extract(model, x_tr, layers, "probe-training images")
        f_te = _extract(model, x_te, layers, "test images" if args.test_data
                        else "held-out images")
        table = {args.protocol: {k: train_classifier(f_tr[k], y_tr, f_te[k], y_te,
                                                     protocol=args.protocol) for k in layers}}
        if args.knn:
            from keras_infobal.knn import knn_accuracy

            table[f"knn (k={args.knn})"] = {k: knn_accuracy(f_tr[k], y_tr, f_te[k], y_te,
                                                             k=args.knn) for k in layers}
        print(_markdown(table))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(table, f, indent=2)
        return 0

    if args.command == "extract":
        from keras_infobal.datasets import load_images

        x, _, _ = load_images(args.images, skip_bad_images=bool(args.skip_bad_images))
        model = _load_model(args.model)
        feats = _extract(model, x, (args.layer,), f"images of {args.images}",
                         batch_size=args.batch_size)
        np.save(args.out, feats[args.layer])
        print(f"wrote {feats[args.layer].shape} {args.layer} features to {args.out}")
        return 0

    if args.command == "export":
        import keras

        if args.format == "torch" and keras.backend.backend() != "torch":
            raise ValueError("--format torch exports on the PyTorch backend: run it with "
                             "KERAS_BACKEND=torch.")
        model = _load_model(args.model)
        model.export(args.out, format=args.format, verbose=False)
        print(f"wrote {args.out}: {args.format}, serve(uint8 images (B, "
              f"{', '.join(str(d) for d in model._serving_image_shape())})) -> R "
              f"({model._image_model().output_dim} floats)")
        return 0

    if args.command == "plot":
        from keras_infobal.evaluation import plot_mi_vs_accuracy

        names = args.names or [os.path.basename(os.path.dirname(os.path.abspath(p)))
                               for p in args.logs]
        if len(names) != len(args.logs):
            raise ValueError(f"--names gives {len(names)} names for {len(args.logs)} logs.")
        for p in args.logs:
            if not os.path.exists(p):
                raise ValueError(f"log `{p}` does not exist.")
        print(plot_mi_vs_accuracy(dict(zip(names, args.logs)), args.out))
        return 0
    raise AssertionError(args.command)


def _import_quietly():
    """Imports TensorFlow and keras_infobal with stderr silenced at the file-descriptor level:
    TensorFlow's C++ and absl lines are written before any Python logging setting applies."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        import keras_infobal  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    tf.get_logger().setLevel("ERROR")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:
        _import_quietly()
    try:
        return run(args)
    except (ValueError, FileNotFoundError, OSError) as e:
        # Bad arguments or inputs: a usage line and the reason, never a traceback.
        parser.commands.get(args.command, parser).print_usage(sys.stderr)
        print(f"keras-infobal {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
