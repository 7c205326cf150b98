"""The note's experiment (DIM vs InfoBal, DV then JSD), the many-view and the recipe study.

    python benchmarks/note_experiment.py --data ../shared/data/cifar10-jpeg.tar.gz \
        --epochs 2 --limit 10000 --seeds 0 1 --study note
    python benchmarks/note_experiment.py --data ../shared/data/cifar10-jpeg.tar.gz \
        --epochs 2 --limit 10000 --seeds 0 --study views --mixed-precision
    python benchmarks/note_experiment.py --data ../shared/data/cifar10-jpeg.tar.gz \
        --epochs 4 --limit 20000 --seeds 0 --study recipe --mixed-precision

Every cell is one `keras_infobal.pretraining.pretrain` run under the same budget
(epochs x images), scored with both probes (the note's 4-epoch linear layer, and the
converged one) on the full CIFAR-10 test set. Writes
benchmarks/results/STEM/STEM.{json,md}, STEM one of note_experiment, views_study and
recipe_study, and, for the note study, a figure of MI against probe accuracy over training. Runs go to benchmarks/runs/ (not committed).
"""

import argparse
import json
import os
import statistics
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def cells(study):
    if study == "note":
        for critic in ("dv", "jsd"):
            for name, lam in (("DIM", 0.0), ("InfoBal", 1.0)):
                yield f"{name} {critic.upper()}", dict(
                    recipe="infobal", task=dict(critic=critic, infomin_weight=lam),
                    backbone=dict(num_views=2, split="rows"))
    elif study == "recipe":
        # The note's comparison again, under the dim_pairs recipe (InfoNCE, augmented pairs).
        yield "DIM pairs", dict(recipe="dim_pairs")
        yield "InfoBal pairs", dict(recipe="infobal_pairs")
    else:
        for m, split in ((2, "rows"), (4, "rows"), (4, "grid"), (8, "rows"), (8, "grid")):
            for name, lam in (("DIM", 0.0), ("InfoBal", 1.0)):
                yield f"{name} M={m} {split}", dict(
                    recipe="infobal", task=dict(critic="jsd", infomin_weight=lam),
                    backbone=dict(num_views=m, split=split))


def summarize(values, scale=100.0):
    """Mean ± std over seeds (accuracies in %, MI in nats with scale=1)."""
    values = [scale * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.environ.get("KERAS_INFOBAL_CIFAR10"))
    p.add_argument("--study", choices=["note", "views", "recipe"], default="note")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=10000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--critic-units", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--mixed-precision", action="store_true",
                   help="train under mixed_bfloat16 (evaluation stays float32)")
    args = p.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_infobal.evaluation import plot_mi_vs_accuracy
    from keras_infobal.pretraining import pretrain

    out = {"budget": {"epochs": args.epochs, "train_images": args.limit or 50000,
                      "batch_size": args.batch_size, "critic_units": args.critic_units,
                      "mixed_precision": args.mixed_precision, "threads": args.threads},
           "seeds": args.seeds, "data": args.data or "tfds", "cells": {}}
    logs = {}
    for name, cfg in cells(args.study):
        runs = []
        for seed in args.seeds:
            run_dir = os.path.join(HERE, "runs", args.study,
                                   name.replace(" ", "_").replace("=", ""), f"seed{seed}")
            t0 = time.time()
            task = {**cfg.get("task", {}), "critic_units": args.critic_units}
            res = pretrain(**{**cfg, "task": task}, epochs=args.epochs, limit=args.limit,
                                   seed=seed, data=args.data, out=run_dir,
                                   threads=args.threads, batch_size=args.batch_size,
                                   probe_every=1, probe_train=5000, verbose=0,
                                   mixed_precision=args.mixed_precision,
                                   final_probe_layers=("conv", "fc", "R"))
            res["wall_seconds"] = time.time() - t0
            runs.append(res)
            logs.setdefault(name, os.path.join(run_dir, "log.csv"))
            print(name, seed, res["probe"], flush=True)
        out["cells"][name] = {
            "config": cfg,
            "runs": [{"seed": s, "probe": r["probe"], "final_mi": r["final_mi"],
                      "seconds_per_epoch": r["wall_seconds_all_epochs"] / args.epochs}
                     for s, r in zip(args.seeds, runs)],
        }
    stem = {"note": "note_experiment", "views": "views_study", "recipe": "recipe_study"}[args.study]
    folder = os.path.join(RESULTS, stem)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, stem + ".json"), "w") as f:
        json.dump(out, f, indent=2)
    precision = "mixed bfloat16" if args.mixed_precision else "float32"
    md = [f"Budget per cell: {args.epochs} epochs x {out['budget']['train_images']} images, "
          f"batch {args.batch_size}, {precision} training, {args.threads or 'all'} thread(s), "
          f"seeds {args.seeds} (mean ± std over seeds).", "",
          "| run | note probe conv | converged conv | converged fc | converged R | "
          "final I(R;V1) | final I(V1;V2) | s/epoch | ms/step |", "|---" * 9 + "|"]
    steps = out["budget"]["train_images"] // args.batch_size
    for name, cell in out["cells"].items():
        rs = cell["runs"]

        def col(proto, layer):
            return summarize([r["probe"][proto][layer] for r in rs])

        def mi(key):
            return summarize([r["final_mi"].get(key, float("nan")) for r in rs], scale=1.0)

        vv = "-" if "mi_V1_V2" not in rs[0]["final_mi"] else mi("mi_V1_V2")
        md.append(f"| {name} | {col('note', 'conv')} | {col('converged', 'conv')} | "
                  f"{col('converged', 'fc')} | {col('converged', 'R')} | {mi('mi_R_V1')} | "
                  f"{vv} | {statistics.mean(r['seconds_per_epoch'] for r in rs):.0f} | "
                  f"{1000 * statistics.mean(r['seconds_per_epoch'] for r in rs) / steps:.0f} |")
    with open(os.path.join(folder, stem + ".md"), "w") as f:
        f.write("\n".join(md) + "\n")
    if args.study == "note":
        plot_mi_vs_accuracy(logs, os.path.join(folder, "note_experiment.png"),
                            title="Note's experiment: MI estimates and probe accuracy")
    print("\n".join(md))


if __name__ == "__main__":
    main()
