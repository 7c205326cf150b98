"""The framework comparison: DIM, CMC, DIM + CMC, CPC and InfoBal at the default's recipe.

The note asks whether balancing InfoMax against InfoMin beats maximizing MI between views;
Tschannen et al. (ICLR 2020) read DIM, CMC and CPC as MI between views. Every arm is one
`pretraining.pretrain` run of the default preset's recipe (dim_pairs: augmented pairs,
colour, crops, mixed bfloat16, batch 64) with another objective (`keras_infobal.objectives`):

    dim            InfoMax, InfoNCE, local_scales (1, 2, 4)             (lambda = 0)
    cmc            CMC alone: the views' MI maximized, both directions, InfoNCE
    dim_cmc<L>     DIM + the views' MI maximized on InfoBal's critics  (lambda = -L < 0)
    cpc            CPC alone: the upper band predicts the lower band's rows, InfoNCE
    adversarial    InfoBal, adversarial InfoNCE InfoMin, lambda = 0.03
    club           InfoBal, CLUB InfoMin, lambda = 0.03

    # a 2-epoch pilot of the arms, then the seeded comparison at 5 epochs
    python benchmarks/framework_study.py run --arms cmc cpc dim_cmc0.03 dim_cmc0.1 \\
        --study framework_pilot --epochs 2 --seeds 0 --data $CIFAR10
    python benchmarks/framework_study.py run --arms dim cmc dim_cmc0.1 cpc adversarial club \\
        --study framework --epochs 5 --seeds 0 1 2 --data $CIFAR10
    python benchmarks/lambda_study.py report --study framework

Each run is evaluated as `lambda_study.evaluate` does (linear probes on conv and fc on the
validation split and the test set, kNN, an independent monitor of I(V1; V2), the epoch
times, the final logged MI estimates), plus the linear probe on R. Per-run results go to
benchmarks/results/<study>/<arm>/seed<k>.json, runs to benchmarks/runs/<study>/.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import lambda_study  # noqa: E402

SCALES = [1, 2, 4]


def arm_config(arm):
    """(route, lambda, the pretrain options) of an arm name."""
    if arm == "dim":
        return "none", 0.0, dict(recipe="dim_pairs", task=dict(local_scales=SCALES))
    if arm in ("adversarial", "club"):
        critic = "infonce" if arm == "adversarial" else "club"
        return arm, 0.03, dict(recipe="infobal_pairs", task=dict(
            infomin_weight=0.03, infomin_critic=critic, local_scales=SCALES))
    if arm.startswith("dim_cmc"):
        lam = -float(arm[len("dim_cmc"):])
        return "dim_cmc", lam, dict(recipe="infobal_pairs", task=dict(
            infomin_weight=lam, infomin_critic="infonce", local_scales=SCALES))
    if arm in ("cmc", "cpc"):
        term = {"cmc": "CMC", "cpc": "CPC"}[arm]
        return arm, 0.0, dict(recipe="dim_pairs", task=dict(
            objectives=[{"class_name": term, "config": {}}]))
    raise SystemExit(f"Unknown arm {arm!r}: dim, cmc, dim_cmc<L>, cpc, adversarial, club.")


def run(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras_infobal import datasets
    from keras_infobal.evaluation import train_classifier
    from keras_infobal.models.infobal import load_infobal
    from keras_infobal.pretraining import pretrain

    x_train, y_train, _ = datasets.load_cifar10("train", source=args.data)
    x_test, y_test, _ = datasets.load_cifar10("test", source=args.data)
    limit = args.limit or None
    for seed in args.seeds:
        for arm in args.arms:
            route, lam, cfg = arm_config(arm)
            result_path = os.path.join(lambda_study.RESULTS, args.study, arm, f"seed{seed}.json")
            if os.path.exists(result_path):
                continue
            run_dir = os.path.join(HERE, "runs", args.study, arm, f"seed{seed}")
            t0 = time.time()
            pretrain(**cfg, epochs=args.epochs, limit=limit, seed=seed, data=args.data,
                     out=run_dir, batch_size=64, mixed_precision=True, probe_every=10 ** 6,
                     verbose=0, skip_final_probe=True)
            train_wall = time.time() - t0
            res = lambda_study.evaluate(run_dir, x_train, y_train, x_test, y_test, seed,
                                        knn=True)
            # The probe on R, as on conv and fc.
            model = load_infobal(os.path.join(run_dir, "model.keras"))
            val, probe_tr, _ = lambda_study.split_indices(len(x_train))
            f_tr, f_val, f_te = (model.extract_features(x, layers=("R",))["R"] for x in
                                 (x_train[probe_tr], x_train[val], x_test))
            res["val"]["R"] = train_classifier(f_tr, y_train[probe_tr], f_val, y_train[val],
                                               seed=seed)
            res["test"]["R"] = train_classifier(f_tr, y_train[probe_tr], f_te, y_test,
                                                seed=seed)
            res.update(route=route, arm=arm, infomin_weight=lam, seed=seed, config=cfg,
                       train_wall_seconds=train_wall,
                       eval_wall_seconds=time.time() - t0 - train_wall,
                       budget=dict(epochs=args.epochs, images=limit or len(x_train),
                                   batch_size=64, threads=0))
            os.makedirs(os.path.dirname(result_path), exist_ok=True)
            with open(result_path, "w") as f:
                json.dump(res, f, indent=2)
            print(arm, seed, res["val"], res["test"], res.get("knn_val"),
                  res["monitor_view_mi"], res["final_log"], flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--arms", nargs="+", required=True)
    r.add_argument("--study", default="framework")
    r.add_argument("--seeds", type=int, nargs="+", default=[0])
    r.add_argument("--epochs", type=int, default=5)
    r.add_argument("--limit", type=int, default=0, help="training images; 0: all")
    r.add_argument("--data", default=os.environ.get("KERAS_INFOBAL_CIFAR10"))
    args = p.parse_args()
    for arm in args.arms:
        arm_config(arm)  # unknown arms fail before any data loads
    run(args)


if __name__ == "__main__":
    main()
