"""The lambda study: InfoBal's InfoMin weight under the dim_pairs recipe, both routes, seeds.

    # train + evaluate cells (skips cells whose result file exists; resumable)
    python benchmarks/lambda_study.py run --route none --lambdas 0 --seeds 0 1 2
    python benchmarks/lambda_study.py run --route adversarial --lambdas 0.03 0.1 0.3 1 --seeds 0 1
    python benchmarks/lambda_study.py run --route club --lambdas 0.03 0.1 0.3 1 --seeds 0 1
    # the table, the results file and the figure
    python benchmarks/lambda_study.py report

Every cell is one `pretraining.pretrain` run of the dim_pairs recipe (InfoNCE InfoMax, augmented
pairs, colour, score clip 20, mixed bfloat16) with `infomin_weight=lambda` and the InfoMin
term estimated either by the adversarial InfoNCE discriminator ("adversarial") or by the CLUB
upper bound ("club"); lambda = 0 is DIM. After training, with the encoder frozen:
- a converged linear probe on `conv` and `fc`, fitted on 10,000 training images and scored on
  a fixed validation split of 5,000 other training images (the number models are chosen on)
  and on the full test set (reported only);
- I(V1; V2) measured by an independent monitor: a fresh InfoNCE critic trained on the frozen,
  mean-pooled views of 20,000 training images and evaluated on the validation split (nats,
  a lower bound, at most log 256 = 5.55);
- the cost per training step (ms), from the epoch times in the run's log.
- with `--knn`, weighted kNN (k = 200, t = 0.1, cosine) on `conv`, `fc` and `R`, its memory
  bank the 45,000 training images outside the validation split, scored on the validation
  split and on the full test set. `rescore` adds the layers an older run did not score
  (`R`, scored since commit 8627532) from the run's saved model.
Per-run results go to benchmarks/results/<study>/<cell>/seed<k>.json; `report` writes
benchmarks/results/<study>/<study>.{json,md,png}. Runs (models, logs) go to benchmarks/runs/<study>/.
`--study` (default `lambda_study`) names a study, so another budget keeps its own files:

    # the seeded comparison at a mid budget: full training set, 5 epochs, 3 seeds
    for s in 0 1 2; do
      python benchmarks/lambda_study.py run --study seeded_mid --route none --lambdas 0 --seeds $s --epochs 5 --limit 0 --knn
      python benchmarks/lambda_study.py run --study seeded_mid --route adversarial --lambdas 0.03 --seeds $s --epochs 5 --limit 0 --knn
      python benchmarks/lambda_study.py run --study seeded_mid --route club --lambdas 0.03 --seeds $s --epochs 5 --limit 0 --knn
    done
    python benchmarks/lambda_study.py report --study seeded_mid

    # the same at the default preset's recipe (multi-scale InfoMax, local_scales 1 2 4)
    for s in 0 1 2; do
      for arm in "none --lambdas 0" "adversarial --lambdas 0.03" "club --lambdas 0.03"; do
        python benchmarks/lambda_study.py run --study seeded_scales --route $arm --seeds $s \\
            --epochs 5 --limit 0 --knn --local-scales 1 2 4
      done
    done
    python benchmarks/lambda_study.py report --study seeded_scales
    # kNN on the layers a study's older runs did not score, from their saved models
    python benchmarks/lambda_study.py rescore --study seeded_scales
"""

import argparse
import csv
import glob
import json
import os
import statistics
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
ROUTES = {"none": None, "adversarial": "infonce", "club": "club", "club_sampled": "club_sampled"}
MONITOR_BATCH = 256
KNN_LAYERS = ("conv", "fc", "R")


def cell_name(route, lam):
    return "dim" if lam == 0 else f"{route}_lambda{lam:g}"


def split_indices(n_train=50000):
    """Fixed splits of the training set: validation (5,000) and probe-training (10,000)."""
    import numpy as np

    order = np.random.default_rng(12345).permutation(n_train)
    return order[:5000], order[5000:15000], order[15000:35000]


def monitor_view_mi(model, x_fit, x_val, epochs=3, seed=0):
    """I(V1; V2) of a frozen model, by a fresh InfoNCE critic on its mean-pooled views."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_infobal.layers.critics import InfoNCECritic
    from keras_infobal.objectives.infomin import pool_views

    @tf.function(autograph=False)
    def pooled(x):
        return pool_views(model.backbone.encoder(x, training=False), "mean")

    def views(x):
        return np.concatenate([pooled(x[i:i + 500]).numpy() for i in range(0, len(x), 500)])

    v_fit, v_val = views(x_fit), views(x_val)
    keras.utils.set_random_seed(seed)
    critic = InfoNCECritic(units=512, normalization="layer", dtype="float32")
    critic.build([(None, v_fit.shape[-1]), (None, v_fit.shape[-1])])
    opt = keras.optimizers.Adam(1e-3)
    variables = critic.trainable_variables

    @tf.function(autograph=False)
    def step(a, b):
        with tf.GradientTape() as tape:
            loss = -critic([a, b])
        opt.apply(tape.gradient(loss, variables), variables)
        return -loss

    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(v_fit))
        for i in range(0, len(order) - MONITOR_BATCH + 1, MONITOR_BATCH):
            idx = order[i:i + MONITOR_BATCH]
            step(v_fit[idx, 0], v_fit[idx, 1])
    estimates = [float(critic([v_val[i:i + MONITOR_BATCH, 0], v_val[i:i + MONITOR_BATCH, 1]]))
                 for i in range(0, len(v_val) - MONITOR_BATCH + 1, MONITOR_BATCH)]
    return float(np.mean(estimates))


def evaluate(run_dir, x_train, y_train, x_test, y_test, seed, knn=False):
    import keras_infobal  # noqa: F401
    from keras_infobal.evaluation import train_classifier
    from keras_infobal.models.infobal import load_infobal

    model = load_infobal(os.path.join(run_dir, "model.keras"))
    val, probe_tr, monitor_fit = split_indices(len(x_train))
    layers = ("conv", "fc")
    f_tr = model.extract_features(x_train[probe_tr], layers=layers)
    f_val = model.extract_features(x_train[val], layers=layers)
    f_te = model.extract_features(x_test, layers=layers)
    out = {"val": {}, "test": {}}
    for layer in layers:
        out["val"][layer] = train_classifier(f_tr[layer], y_train[probe_tr], f_val[layer],
                                             y_train[val], seed=seed)
        out["test"][layer] = train_classifier(f_tr[layer], y_train[probe_tr], f_te[layer],
                                              y_test, seed=seed)
    if knn:
        out["knn_val"], out["knn_test"] = knn_scores(model, x_train, y_train, x_test, y_test,
                                                     KNN_LAYERS)
    out["monitor_view_mi"] = monitor_view_mi(model, x_train[monitor_fit], x_train[val],
                                             seed=seed)
    with open(os.path.join(run_dir, "log.csv")) as f:
        rows = list(csv.DictReader(f))
    out["seconds_per_epoch"] = [float(r["epoch_seconds"]) for r in rows]
    out["final_log"] = {k: float(v) for k, v in rows[-1].items()
                        if k.startswith(("mi_", "cmc_", "cpc_", "objective", "discriminator"))}
    return out


def knn_scores(model, x_train, y_train, x_test, y_test, layers):
    """Weighted kNN on `layers`, the bank the training images outside the validation split:
    ({layer: validation accuracy}, {layer: test accuracy})."""
    import numpy as np

    from keras_infobal.knn import knn_accuracy

    val = split_indices(len(x_train))[0]
    bank = np.setdiff1d(np.arange(len(x_train)), val)
    f_bank = model.extract_features(x_train[bank], layers=layers)
    f_val = model.extract_features(x_train[val], layers=layers)
    f_te = model.extract_features(x_test, layers=layers)
    return ({k: knn_accuracy(f_bank[k], y_train[bank], f_val[k], y_train[val]) for k in layers},
            {k: knn_accuracy(f_bank[k], y_train[bank], f_te[k], y_test) for k in layers})


def rescore(args):
    """Adds kNN on the layers of KNN_LAYERS that a study's per-run results lack, from each
    run's saved model (benchmarks/runs/<study>/<cell>/seed<k>/model.keras)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    paths = sorted(glob.glob(os.path.join(RESULTS, args.study, "*", "seed*.json")))
    todo = []
    for path in paths:
        with open(path) as f:
            r = json.load(f)
        if "knn_test" not in r:
            continue  # a study run without --knn stays without it
        missing = [k for k in KNN_LAYERS if k not in r["knn_test"] or k not in r["knn_val"]]
        if missing:
            cell, seed = os.path.basename(os.path.dirname(path)), r["seed"]
            model_path = os.path.join(HERE, "runs", args.study, cell, f"seed{seed}",
                                      "model.keras")
            if not os.path.exists(model_path):
                raise SystemExit(f"{path} lacks kNN on {missing}, and its model {model_path} "
                                 "is not on this machine: run the cell again to score them.")
            todo.append((path, r, model_path, missing))
    if not todo:
        print(f"Every run of {args.study!r} has kNN on {KNN_LAYERS}.")
        return
    import keras_infobal  # noqa: F401
    from keras_infobal import datasets
    from keras_infobal.models.infobal import load_infobal

    x_train, y_train, _ = datasets.load_cifar10("train", source=args.data)
    x_test, y_test, _ = datasets.load_cifar10("test", source=args.data)
    for path, r, model_path, missing in todo:
        knn_val, knn_test = knn_scores(load_infobal(model_path), x_train, y_train, x_test,
                                       y_test, tuple(missing))
        r["knn_val"].update(knn_val)
        r["knn_test"].update(knn_test)
        r["knn_rescored"] = sorted(set(r.get("knn_rescored", [])) | set(missing))
        with open(path, "w") as f:
            json.dump(r, f, indent=2)
        print(path, "kNN test", knn_test, flush=True)


def run(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_infobal import datasets
    from keras_infobal.pretraining import pretrain

    x_train, y_train, _ = datasets.load_cifar10("train", source=args.data)
    x_test, y_test, _ = datasets.load_cifar10("test", source=args.data)
    limit = args.limit or None  # 0: the full training set
    for seed in args.seeds:
        for lam in args.lambdas:
            name = cell_name(args.route, lam)
            result_path = os.path.join(RESULTS, args.study, name, f"seed{seed}.json")
            if os.path.exists(result_path):
                continue
            run_dir = os.path.join(HERE, "runs", args.study, name, f"seed{seed}")
            task = dict(infomin_weight=float(lam))
            if lam:
                task["infomin_critic"] = ROUTES[args.route]
            cfg = dict(recipe="dim_pairs" if lam == 0 else "infobal_pairs", task=task)
            if args.local_scales:  # an objective option: InfoBal(local_scales=...)
                task["local_scales"] = list(args.local_scales)
            t0 = time.time()
            pretrain(**cfg, epochs=args.epochs, limit=limit, seed=seed,
                             data=args.data, out=run_dir, threads=args.threads,
                             batch_size=args.batch_size, mixed_precision=True,
                             probe_every=10 ** 6, verbose=0, skip_final_probe=True)
            train_wall = time.time() - t0
            res = evaluate(run_dir, x_train, y_train, x_test, y_test, seed, knn=args.knn)
            res.update(route=args.route if lam else "none", infomin_weight=float(lam),
                       seed=seed, config=cfg, train_wall_seconds=train_wall,
                       eval_wall_seconds=time.time() - t0 - train_wall,
                       budget=dict(epochs=args.epochs, images=limit or len(x_train),
                                   batch_size=args.batch_size, threads=args.threads))
            os.makedirs(os.path.dirname(result_path), exist_ok=True)
            with open(result_path, "w") as f:
                json.dump(res, f, indent=2)
            print(name, seed, res["val"], res["test"], res.get("knn_test"),
                  res["monitor_view_mi"], flush=True)


def mean_std(values):
    if not values:
        return float("nan"), float("nan")
    if len(values) == 1:
        return values[0], float("nan")
    return statistics.mean(values), statistics.stdev(values)


def difference(arm, base):
    """(mean(arm) - mean(base), its standard error) for two lists of per-seed values, Welch's
    (unequal variances): sqrt(s_arm^2 / n_arm + s_base^2 / n_base). The error is nan when an
    arm has fewer than 2 seeds (no spread to estimate)."""
    if not arm or not base:
        raise ValueError("difference() needs at least one value per arm.")
    diff = statistics.mean(arm) - statistics.mean(base)
    if min(len(arm), len(base)) < 2:
        return diff, float("nan")
    return diff, (statistics.variance(arm) / len(arm)
                  + statistics.variance(base) / len(base)) ** 0.5


# The measures the difference table compares, with their per-run key and scale.
MEASURES = (("val fc", ("val", "fc"), 100.0), ("val conv", ("val", "conv"), 100.0),
            ("test fc", ("test", "fc"), 100.0), ("test conv", ("test", "conv"), 100.0),
            ("kNN val fc", ("knn_val", "fc"), 100.0), ("kNN test fc", ("knn_test", "fc"), 100.0),
            ("kNN val R", ("knn_val", "R"), 100.0), ("kNN test R", ("knn_test", "R"), 100.0),
            ("monitor I(V1;V2)", ("monitor_view_mi",), 1.0))


def difference_table(cells, names):
    """Rows `| route (lambda) | difference ± standard error, per measure |` of each named
    cell against lambda = 0 ("dim"); `*` marks |difference| > 2 standard errors."""
    base = cells["dim"]

    def values(rs, key, scale):
        out = []
        for r in rs:
            v = r
            for k in key:
                v = v.get(k) if isinstance(v, dict) else None
            out.append(None if v is None else scale * v)
        return None if None in out else out

    measures = [m for m in MEASURES if all(values(cells[n], m[1], m[2]) is not None
                                           for n in ["dim", *names])]
    lines = ["| arm against lambda = 0 | " + " | ".join(m[0] for m in measures) + " |",
             "|---" * (1 + len(measures)) + "|"]
    for name in names:
        rs = cells[name]
        row = [f"{rs[0]['route']} ({rs[0]['infomin_weight']:g})"]
        for _, key, scale in measures:
            d, se = difference(values(rs, key, scale), values(base, key, scale))
            row.append(f"{d:+.2f}" if se != se else
                       f"{d:+.2f} ± {se:.2f}" + (" *" if abs(d) > 2 * se else ""))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def fmt(values, scale=100.0):
    m, s = mean_std([scale * v for v in values])
    return f"{m:.2f}" if s != s else f"{m:.2f} ± {s:.2f}"


def report(args):
    cells = {}
    per_run = os.path.join(RESULTS, args.study)
    for path in sorted(glob.glob(os.path.join(per_run, "*", "seed*.json"))):
        with open(path) as f:
            r = json.load(f)
        cells.setdefault(os.path.basename(os.path.dirname(path)), []).append(r)
    if not cells:
        raise SystemExit(f"No per-run results under {per_run}; run the `run` command first.")

    def key(item):
        rs = item[1]
        return ({"none": 0, "adversarial": 1, "club": 2, "club_sampled": 3}[rs[0]["route"]],
                rs[0]["infomin_weight"])

    rows, summary = [], {}
    budget = next(iter(cells.values()))[0]["budget"]
    runs = [r for rs in cells.values() for r in rs]
    knn = all("knn_test" in r for r in runs)
    # The kNN layers every run scored (fc in every study with kNN; R since commit 8627532).
    knn_layers = [k for k in ("fc", "R") if knn and all(k in r["knn_test"] for r in runs)]
    for name, rs in sorted(cells.items(), key=key):
        steps = budget["images"] // budget["batch_size"]
        # The fastest epoch of each run: the host is shared and noisy, a slow epoch says
        # more about the neighbours than about the step.
        ms = [1000 * min(r["seconds_per_epoch"]) / steps for r in rs]
        summary[name] = {
            "route": rs[0]["route"], "infomin_weight": rs[0]["infomin_weight"],
            "seeds": [r["seed"] for r in rs],
            "val_fc": mean_std([r["val"]["fc"] for r in rs]),
            "val_conv": mean_std([r["val"]["conv"] for r in rs]),
            "test_fc": mean_std([r["test"]["fc"] for r in rs]),
            "test_conv": mean_std([r["test"]["conv"] for r in rs]),
            "monitor_view_mi": mean_std([r["monitor_view_mi"] for r in rs]),
            "ms_per_step": mean_std(ms),
        }
        for layer in knn_layers:
            for split in ("val", "test"):
                summary[name][f"knn_{split}_{layer}"] = mean_std(
                    [r[f"knn_{split}"][layer] for r in rs])
        rows.append(
            f"| {rs[0]['route']} | {rs[0]['infomin_weight']:g} | {len(rs)} | "
            f"{fmt([r['val']['fc'] for r in rs])} | {fmt([r['val']['conv'] for r in rs])} | "
            f"{fmt([r['test']['fc'] for r in rs])} | {fmt([r['test']['conv'] for r in rs])} | "
            + "".join(f"{fmt([r['knn_val'][k] for r in rs])} | "
                      f"{fmt([r['knn_test'][k] for r in rs])} | " for k in knn_layers)
            + f"{fmt([r['monitor_view_mi'] for r in rs], 1.0)} | {min(ms):.0f} |")
    base = summary.get("dim")
    verdict, best_cells = [], []
    for route in ("adversarial", "club", "club_sampled"):
        cands = {n: s for n, s in summary.items() if s["route"] == route}
        if not cands or not base:
            continue
        best = max(cands, key=lambda n: cands[n]["val_fc"][0])
        best_cells.append(best)
        b, d = cands[best], base
        diff = b["val_fc"][0] - d["val_fc"][0]
        head = (f"- {route}: best lambda on validation = {b['infomin_weight']:g} "
                f"(fc {100 * b['val_fc'][0]:.2f} vs DIM {100 * d['val_fc'][0]:.2f}, "
                f"difference {100 * diff:+.2f} points, ")
        if min(len(b["seeds"]), len(d["seeds"])) < 2:
            # One run has no spread: any difference would "beat" a spread of zero.
            verdict.append(head + f"seeds {len(b['seeds'])} and {len(d['seeds'])}): not "
                           "judged, a seed spread needs at least 2 seeds per arm.")
            continue
        spread = max(b["val_fc"][1], d["val_fc"][1])
        verdict.append(head + f"larger seed std {100 * spread:.2f}): "
                       + ("beats lambda = 0 beyond the seed spread." if diff > spread else
                          "does not beat lambda = 0 beyond the seed spread."))
    first = next(iter(cells.values()))[0]
    # Runs before the objectives-as-parts refactor saved the scales under "backbone".
    scales = (first["config"].get("task", {}).get("local_scales")
              or first["config"].get("backbone", {}).get("local_scales"))
    recipe = "dim_pairs recipe" + (f", local_scales {tuple(scales)}" if scales else "")
    md = [f"Recipe: {recipe}. "
          f"Budget per run: {budget['epochs']} epochs x {budget['images']} images, batch "
          f"{budget['batch_size']} pairs, mixed bfloat16, {budget['threads'] or 'all'} "
          "thread(s). Accuracy: converged linear probe (%) fitted on 10,000 training images; "
          "`val` = 5,000 held-out training images (models are chosen on it), `test` = the "
          "full test set. View MI: an independent InfoNCE monitor trained on the frozen "
          "views after training (nats). Mean ± std over seeds.", "",
          "| route | lambda | seeds | val fc | val conv | test fc | test conv | "
          + "".join(f"kNN val {k} | kNN test {k} | " for k in knn_layers)
          + "monitor I(V1;V2) | ms/step (best epoch) |",
          "|---" * (9 + 2 * len(knn_layers)) + "|"] + rows + ["", *verdict]
    if best_cells:
        md += ["", "Each route's best lambda (on validation) against lambda = 0: difference of "
               "the means ± its standard error (Welch, from the seeds' spreads; none with one "
               "seed); * where the difference exceeds 2 standard errors.", "",
               *difference_table(cells, best_cells)]
    if knn:
        md.insert(1, "kNN: weighted (k = 200, t = 0.1, cosine), memory bank the 45,000 training "
                     "images outside the validation split.")
    folder = os.path.join(RESULTS, args.study)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{args.study}.json"), "w") as f:
        json.dump({"budget": budget, "cells": summary, "verdict": verdict,
                   "differences": difference_table(cells, best_cells) if best_cells else []},
                  f, indent=2)
    with open(os.path.join(folder, f"{args.study}.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    plot(summary, os.path.join(folder, f"{args.study}.png"),
         f"{recipe}, {budget['epochs']} epochs x {budget['images']} images")
    print("\n".join(md))


def plot(summary, path, budget):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    base = summary.get("dim")
    for route, color in (("adversarial", "tab:red"), ("club", "tab:blue"),
                         ("club_sampled", "tab:green")):
        pts = sorted((s["infomin_weight"], s) for s in summary.values()
                     if isinstance(s, dict) and s["route"] == route)
        if base:
            pts = [(0.0, base)] + pts
        if len(pts) < 2:
            continue
        xs = [max(lam, 0.01) for lam, _ in pts]
        for ax, k, scale in ((axes[0], "val_fc", 100.0), (axes[1], "monitor_view_mi", 1.0)):
            ys = [scale * s[k][0] for _, s in pts]
            es = [scale * s[k][1] if s[k][1] == s[k][1] else 0.0 for _, s in pts]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=color, label=route)
    axes[0].set_ylabel("linear probe, validation (fc, %)")
    axes[1].set_ylabel("monitor I(V1;V2) (nats)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("lambda (0 plotted at 0.01)")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle(f"InfoBal lambda study ({budget} per run)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--route", choices=sorted(ROUTES), required=True)
    r.add_argument("--lambdas", type=float, nargs="+", required=True)
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    r.add_argument("--epochs", type=int, default=2)
    r.add_argument("--limit", type=int, default=10000, help="training images; 0: all")
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--threads", type=int, default=0)
    r.add_argument("--data", default=os.environ.get("KERAS_INFOBAL_CIFAR10"))
    r.add_argument("--knn", action="store_true", help="also score weighted kNN (conv, fc, R)")
    r.add_argument("--local-scales", type=int, nargs="+", default=None,
                   help="the InfoMax term's local_scales, e.g. 1 2 4 (AMDIM's multi-scale "
                        "InfoMax, the default preset's recipe); default: the recipe's (1)")
    rs = sub.add_parser("rescore")
    rs.add_argument("--data", default=os.environ.get("KERAS_INFOBAL_CIFAR10"))
    for sp in (r, sub.add_parser("report"), rs):
        sp.add_argument("--study", default="lambda_study",
                        help="names the results and runs folders (default: lambda_study)")
    args = p.parse_args()
    {"run": run, "report": report, "rescore": rescore}[args.command](args)


if __name__ == "__main__":
    main()
