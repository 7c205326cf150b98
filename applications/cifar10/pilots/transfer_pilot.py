"""Transfer pilots: which encoders move the Fashion-MNIST probe, on validation.

The default encoder's transfer target is judged by `applications/cifar10/targets.py` on
Fashion-MNIST's test set. Levers are compared here instead on a validation split of Fashion-MNIST's
training set, so no lever is chosen on the test set: the same converged linear probe on
`conv` (`targets.fashion_mnist_probe`), fitted on 54,000 training images and scored on the
other 6,000 (a fixed permutation, seed 0). Each model's score sits beside the same
architecture with random weights (seed 0), the baseline the target is measured against.

    python applications/cifar10/pilots/transfer_pilot.py --fashion-mnist $FMNIST \
        --models dim_seed0=benchmarks/runs/seeded_scales/dim/seed0/model.keras \
                 shipped=infobal_scales_long \
        --out applications/cifar10/pilots/transfer/transfer.json

    python applications/cifar10/pilots/transfer_pilot.py \
        --summarize applications/cifar10/pilots/transfer/transfer.json   # the markdown table

A model is a `.keras` file, a preset folder or a shipped preset's name. `--out` keeps the
rows of models it already holds (scored on the same split) and adds or replaces these.

`--cifar10 PATH` also scores what a lever costs on CIFAR-10, on validation only, with the
seeded studies' splits (`benchmarks/lambda_study.split_indices`): converged linear probes on
`conv` and `fc` fitted on 10,000 training images and scored on 5,000 others, and weighted
kNN on `R` with the other 45,000 as the memory bank. Those are the studies' `val` columns,
so a 5-epoch pilot compares with `seeded_scales`' lambda = 0 runs.
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))  # targets.py
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "benchmarks"))  # lambda_study.py

HELD_OUT = 6000


def validation_split(n, held_out=HELD_OUT, seed=0):
    """(fit rows, held-out rows) of a training set of `n` images: a seeded permutation."""
    import numpy as np

    if not 0 < held_out < n:
        raise ValueError(f"`held_out` must be between 0 and the {n} training images; "
                         f"got {held_out}.")
    order = np.random.default_rng(seed).permutation(n)
    return order[held_out:], order[:held_out]


def cifar10_validation(model, x_train, y_train):
    """The seeded studies' validation scores of `model` on CIFAR-10's training set:
    {"probe_conv", "probe_fc", "knn_R"}."""
    import numpy as np

    from keras_infobal.evaluation import train_classifier
    from keras_infobal.knn import knn_accuracy
    from lambda_study import split_indices

    val, probe_tr, _ = split_indices(len(x_train))
    bank = np.setdiff1d(np.arange(len(x_train)), val)
    f = model.extract_features(x_train, layers=("conv", "fc", "R"))
    out = {f"probe_{k}": train_classifier(f[k][probe_tr], y_train[probe_tr], f[k][val],
                                          y_train[val]) for k in ("conv", "fc")}
    out["knn_R"] = knn_accuracy(f["R"][bank], y_train[bank], f["R"][val], y_train[val])
    return out


def summarize(path):
    """The markdown table of a results file: one row per model, then the mean (and the
    sample standard deviation) of each arm with more than one seed (`<arm>_seed<k>`)."""
    import statistics

    with open(path) as f:
        results = json.load(f)["models"]
    columns = [("pretrained", "FMNIST pretrained"), ("random_init", "FMNIST random init"),
               ("gain", "gain")]
    cifar = [("probe_conv", "CIFAR probe conv"), ("probe_fc", "CIFAR probe fc"),
             ("knn_R", "CIFAR kNN R")]

    def cell(v, sign):
        if not v:
            return "-"
        mean = f"{100 * statistics.mean(v):{'+' if sign else ''}.2f}"
        return mean if len(v) == 1 else f"{mean} ± {100 * statistics.stdev(v):.2f}"

    def cells(values):
        return [cell(v, sign=(i == 2)) for i, v in enumerate(values)]

    def column_values(rows):
        return ([[r[k] for r in rows] for k, _ in columns]
                # An arm's CIFAR-10 mean only when every seed was scored there.
                + [[r["cifar10_validation"][k] for r in rows]
                   if all("cifar10_validation" in r for r in rows) else [] for k, _ in cifar])

    lines = ["| model | " + " | ".join(t for _, t in columns + cifar) + " |",
             "|---" * (1 + len(columns) + len(cifar)) + "|"]
    arms = {}
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(cells(column_values([r]))) + " |")
        arms.setdefault(name.rsplit("_seed", 1)[0], []).append(r)
    for arm, rows in arms.items():
        if len(rows) > 1:
            lines.append(f"| {arm}, mean ± std of {len(rows)} | "
                         + " | ".join(cells(column_values(rows))) + " |")
    return "\n".join(lines)


def load(spec):
    """An InfoBal model from a `.keras` file, a preset folder or a shipped preset's name."""
    import keras_infobal  # noqa: F401  (registers the classes `.keras` files name)
    from keras_infobal.models import InfoBal
    from keras_infobal.models.infobal import load_infobal

    if spec.endswith(".keras"):
        if not os.path.exists(spec):
            raise FileNotFoundError(f"No model file {spec!r}: give a `.keras` file that "
                                    f"`keras-infobal pretrain` wrote (OUT/model.keras).")
        return load_infobal(spec, compile=False)
    return InfoBal.from_preset(spec)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fashion-mnist",
                   help="folder with Fashion-MNIST's train.npz (applications/fashion_mnist/prepare.py)")
    p.add_argument("--summarize", metavar="RESULTS",
                   help="print the markdown table of a results file and exit")
    p.add_argument("--models", nargs="+", metavar="NAME=MODEL")
    p.add_argument("--out")
    p.add_argument("--held-out", type=int, default=HELD_OUT,
                   help="training images held out to score on (default 6,000, a tenth)")
    p.add_argument("--cifar10", metavar="DATA",
                   help="CIFAR-10 (a train/test folder or .tar.gz): also score the CIFAR-10 "
                        "validation probes and kNN (its training set only)")
    args = p.parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return 0
    if not (args.models and args.out and args.fashion_mnist):
        p.error("--fashion-mnist, --models and --out are required to score models")
    models = {}
    for item in args.models:
        name, sep, spec = item.partition("=")
        if not (sep and name and spec):
            p.error(f"each of --models is NAME=MODEL (a .keras file, preset folder or preset "
                    f"name); got {item!r}")
        models[name] = spec
    import keras

    from keras_infobal import datasets
    from keras_infobal.models import InfoBal
    from targets import fashion_mnist_probe

    results = {}
    if os.path.exists(args.out):
        with open(args.out) as f:
            before = json.load(f)
        if before.get("held_out") != args.held_out:
            raise SystemExit(f"{args.out} holds scores on another split: give a new --out.")
        results = before["models"]
    x, y, _ = datasets.load_images(os.path.join(args.fashion_mnist, "train.npz"), resize=(32, 32))
    fit, held = validation_split(len(y), args.held_out)
    train, val = (x[fit], y[fit]), (x[held], y[held])
    if args.cifar10:
        x_cifar, y_cifar, _ = datasets.load_cifar10("train", source=args.cifar10)
    random_init = {}  # architecture -> its random-init score: scored once per architecture
    for name, spec in models.items():
        model = load(spec)
        config = model.get_config()
        key = json.dumps(config, sort_keys=True, default=str)
        if key not in random_init:
            keras.utils.set_random_seed(0)
            random = InfoBal.from_config(config)  # same architecture, fresh weights
            random_init[key] = fashion_mnist_probe(random, train, val)
        r = {"model": spec, "pretrained": fashion_mnist_probe(model, train, val),
             "random_init": random_init[key]}
        r["gain"] = r["pretrained"] - r["random_init"]
        if args.cifar10:
            r["cifar10_validation"] = cifar10_validation(model, x_cifar, y_cifar)
        results[name] = r
        print(name, json.dumps(r), flush=True)
        with open(args.out, "w") as f:
            json.dump({"held_out": args.held_out, "fitted": int(len(fit)),
                       "keras": keras.__version__, "models": results}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
