"""Collects the shipped variants' results into the README table and figure.

    python applications/cifar10/collect_results.py

Reads applications/cifar10/runs/{infobal,dim,dim_pairs}/{results,export,config}.json and
log.csv, and benchmarks/results/reference_encoders.json; writes applications/cifar10/results.{json,md}
and applications/cifar10/mi_vs_accuracy.png.
"""

import csv
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LAYERS = ("local", "conv", "fc", "R")
VARIANTS = (("dim", "DIM baseline (lambda = 0)"), ("infobal", "InfoBal (lambda = 1)"),
            ("dim_pairs", "dim_pairs: DIM, InfoNCE, augmented pairs (lambda = 0)"))


def load(path):
    with open(path) as f:
        return json.load(f)


def main():
    from keras_infobal.evaluation import plot_mi_vs_accuracy

    rows, out = [], {}
    for variant, label in VARIANTS:
        run = os.path.join(HERE, "runs", variant)
        res = load(os.path.join(run, "results.json"))
        export = load(os.path.join(run, "export.json"))
        with open(os.path.join(run, "log.csv")) as f:
            log = list(csv.DictReader(f))
        out[variant] = {"probe": res["probe"], "final_mi": res["final_mi"],
                        "epochs": res["epochs"], "train_minutes": res["wall_seconds_all_epochs"] / 60,
                        "shipped_head": export}
        rows.append((label, res["probe"], export))
    refs = load(os.path.join(ROOT, "benchmarks", "results", "reference_encoders.json"))
    out["references"] = refs
    md = ["| encoder | probe | local | conv | fc | R |", "|---|---|---|---|---|---|"]
    for label, probe, _ in rows:
        for proto in ("converged", "note"):
            md.append(f"| {label} | {proto} | " + " | ".join(
                f"{100 * probe[proto][k]:.2f}" for k in LAYERS) + " |")
    for key, label in (("random_init", "random init (same architecture)"),
                       ("supervised", "supervised (same architecture)")):
        for proto in ("converged", "note"):
            md.append(f"| {label} | {proto} | " + " | ".join(
                f"{100 * refs[key][proto][k]:.2f}" for k in LAYERS) + " |")
    md += ["", "| shipped classifier | feature layer | CIFAR-10 test accuracy (full test set) |",
           "|---|---|---|"]
    for label, _, export in rows:
        md.append(f"| {label} | {export['feature_layer']} | "
                  f"{100 * export['public_loader_test_accuracy']:.2f} |")
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(out, f, indent=2)
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    plot_mi_vs_accuracy({"DIM": os.path.join(HERE, "runs", "dim", "log.csv"),
                         "InfoBal": os.path.join(HERE, "runs", "infobal", "log.csv"),
                         "dim_pairs": os.path.join(HERE, "runs", "dim_pairs", "log.csv")},
                        os.path.join(HERE, "mi_vs_accuracy.png"),
                        title="CIFAR-10 pretraining: MI estimates and probe accuracy (held-out "
                              "train split)")
    print("\n".join(md))


if __name__ == "__main__":
    main()
