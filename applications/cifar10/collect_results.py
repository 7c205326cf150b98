"""Collects the shipped variants' results into the README table and figure.

    python applications/cifar10/collect_results.py

Reads applications/cifar10/runs/{infobal,dim,dim_pairs,dim_pairs_long,infobal_pairs_long,
infobal_scales_long}/
{results,export,config}.json and
log.csv, and benchmarks/results/reference_encoders/reference_encoders.json; writes
applications/cifar10/results.{json,md} and applications/cifar10/mi_vs_accuracy.png.
"""

import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# The shipped presets' row labels, in table order; main() checks that they are exactly the
# presets `keras_infobal.models.presets.list_presets()` ships.
VARIANTS = (("dim", "DIM baseline (lambda = 0)"), ("infobal", "InfoBal (lambda = 1)"),
            ("dim_pairs", "dim_pairs: DIM, InfoNCE, augmented pairs (lambda = 0)"),
            ("dim_pairs_long", "dim_pairs_long: dim_pairs continued 28 epochs (lambda = 0)"),
            ("infobal_pairs_long", "infobal_pairs_long: dim_pairs continued 28 epochs with "
                                   "InfoMin (adversarial InfoNCE, lambda = 0.03)"),
            ("infobal_scales_long", "infobal_scales_long: the same continuation at local "
                                    "scales 1, 2, 4"))
CONTINUED = ("dim_pairs_long", "infobal_pairs_long", "infobal_scales_long")


def load(path):
    with open(path) as f:
        return json.load(f)


def check_variants(variants, shipped):
    """Raises a ValueError unless `variants` labels exactly the `shipped` presets."""
    labelled = sorted(name for name, _ in variants)
    if labelled != sorted(shipped):
        raise ValueError(
            f"VARIANTS labels {labelled}, but the shipped presets are {sorted(shipped)}: give "
            "every shipped preset a row label in collect_results.VARIANTS, and drop the others."
        )


def main():
    from keras_infobal import features
    from keras_infobal.models import presets
    from keras_infobal.evaluation import plot_mi_vs_accuracy, read_log

    check_variants(VARIANTS, presets.list_presets())
    layers = features.NAMES  # the table's columns: every feature layer

    first = len(read_log(os.path.join(HERE, "runs", "dim_pairs", "log.csv"))["epoch"])
    continued = {}
    for name in CONTINUED:
        continued[name] = read_log(os.path.join(HERE, "runs", name, "log.csv"))
        continued[name]["epoch"] = [first + e for e in continued[name]["epoch"]]

    rows, out = [], {}
    for variant, label in VARIANTS:
        run = os.path.join(HERE, "runs", variant)
        res = load(os.path.join(run, "results.json"))
        export = load(os.path.join(run, "export.json"))
        out[variant] = {"probe": res["probe"], "final_mi": res["final_mi"],
                        "epochs": res["epochs"], "train_minutes": res["wall_seconds_all_epochs"] / 60,
                        "shipped_head": export}
        rows.append((label, res["probe"], export))
    refs = load(os.path.join(ROOT, "benchmarks", "results", "reference_encoders",
                             "reference_encoders.json"))
    out["references"] = refs
    md = ["| encoder | probe | " + " | ".join(layers) + " |", "|---|---|" + "---|" * len(layers)]
    for label, probe, _ in rows:
        for proto in ("converged", "note"):
            md.append(f"| {label} | {proto} | " + " | ".join(
                f"{100 * probe[proto][k]:.2f}" for k in layers) + " |")
    for key, label in (("random_init", "random init (same architecture)"),
                       ("supervised", "supervised (same architecture)")):
        for proto in ("converged", "note"):
            md.append(f"| {label} | {proto} | " + " | ".join(
                f"{100 * refs[key][proto][k]:.2f}" for k in layers) + " |")
    default = presets.default_preset()
    md += ["", "| shipped classifier (preset) | objective, lambda | feature layer | head | "
           "validation accuracy (5,000 held-out training images) | CIFAR-10 test accuracy "
           "(full test set) |", "|---|---|---|---|---|---|"]
    for (variant, label), (_, _, export) in zip(VARIANTS, rows):
        metadata = presets.load_metadata(variant)
        with open(os.path.join(presets.preset_folder(variant), presets.TASK_FILE)) as f:
            cfg = json.load(f)
        objective = f"{cfg['critic']}, {cfg['infomin_weight']:g}"
        if cfg.get("infomin_weight") and cfg.get("infomin_critic") not in (None, cfg["critic"]):
            objective += f" ({cfg['infomin_critic']})"
        name = f"`{variant}`" + (" (default)" if variant == default else "")
        head = metadata["classifier"]["head"]
        if metadata["classifier"].get("augmented_copies"):
            head += f", fitted with {metadata['classifier']['augmented_copies']} copies"
        md.append(f"| {name} | {objective} | {metadata['classifier']['feature_layer']} | "
                  f"{head} | "
                  f"{100 * metadata['validation_accuracy']:.2f} | "
                  f"{100 * metadata['test_accuracy']:.2f} |")
    # The same frozen encoders under both heads (pilots/head_protocol.py).
    pilots = sorted(glob.glob(os.path.join(HERE, "pilots", "head_protocol", "*.json")))
    if pilots:
        md += ["", "| encoder | layer | linear head: validation / test | DIM's classifier "
               "(mlp): validation / test |", "|---|---|---|---|"]
        out["head_protocol"] = {}
        with_copies = []
        for path in pilots:
            pilot = load(path)
            name = os.path.basename(path)[:-len(".json")]
            out["head_protocol"][name] = pilot
            cells = {(c["layer"], c["head"]): c for c in pilot["cells"]
                     if not c.get("augmented_copies")}
            with_copies += [(name, c, cells.get((c["layer"], c["head"])))
                            for c in pilot["cells"] if c.get("augmented_copies")]
            for layer in dict.fromkeys(c["layer"] for c in pilot["cells"]):
                row = [f"| `{name}` | {layer} |"]
                for head in ("linear", "mlp"):
                    c = cells.get((layer, head))
                    row.append(f" {100 * c['validation_accuracy']:.2f} / "
                               f"{100 * c['test_accuracy']:.2f} |" if c else " - |")
                md.append("".join(row))
        if with_copies:
            md += ["", "| encoder | layer, head | fitted on the images: validation / test | "
                   "with K augmented copies too: validation / test |", "|---|---|---|---|"]
            for name, c, plain in with_copies:
                md.append(f"| `{name}` | {c['layer']}, {c['head']} | "
                          f"{100 * plain['validation_accuracy']:.2f} / "
                          f"{100 * plain['test_accuracy']:.2f} | K = {c['augmented_copies']}: "
                          f"{100 * c['validation_accuracy']:.2f} / "
                          f"{100 * c['test_accuracy']:.2f} |")
    out["default_preset"] = default
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(out, f, indent=2)
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    plot_mi_vs_accuracy({"DIM": os.path.join(HERE, "runs", "dim", "log.csv"),
                         "InfoBal": os.path.join(HERE, "runs", "infobal", "log.csv"),
                         "dim_pairs": os.path.join(HERE, "runs", "dim_pairs", "log.csv"),
                         # Continued from dim_pairs' 36 epochs: drawn after them.
                         **continued},
                        os.path.join(HERE, "mi_vs_accuracy.png"),
                        title="CIFAR-10 pretraining: MI estimates and probe accuracy (held-out "
                              "train split)")
    print("\n".join(md))


if __name__ == "__main__":
    main()
