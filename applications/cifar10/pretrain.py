"""Pretrains an InfoBal or DIM encoder on CIFAR-10 and evaluates it with linear probes.

This is the recipe behind the weights shipped in `keras_infobal/applications/weights/`:

    python applications/cifar10/pretrain.py --variant infobal --epochs 30 \
        --out applications/cifar10/runs/infobal
    python applications/cifar10/pretrain.py --variant dim --epochs 30 \
        --out applications/cifar10/runs/dim

It resumes after a crash (BackupAndRestore in OUT/backup), logs every epoch to OUT/log.csv
(MI estimates, and a linear probe on a validation split every --probe-every epochs), and at
the end writes OUT/results.json (conv / fc / R / local probe accuracy under both protocols)
and OUT/model.keras. Exporting shipped weights is a separate step (export_weights.py).
"""

import argparse
import json
import os
import sys
import time

CONFIGS = {
    # The note's setting: M=2 (top/bottom halves of the 8x8 local map), JSD critics.
    "infobal": dict(num_views=2, split="rows", critic="jsd", infomin_weight=1.0),
    # The DIM(L) baseline on the same code path: same views and critics, lambda = 0.
    "dim": dict(num_views=2, split="rows", critic="jsd", infomin_weight=0.0),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", choices=sorted(CONFIGS), default="infobal")
    p.add_argument("--critic", choices=["jsd", "dv", "infonce", "nwj"], default=None,
                   help="override the variant's estimator")
    p.add_argument("--infomin-weight", type=float, default=None, help="override lambda")
    p.add_argument("--num-views", type=int, default=None)
    p.add_argument("--split", default=None)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (cosine decay)")
    p.add_argument("--critic-units", type=int, default=512)
    p.add_argument("--probe-every", type=int, default=5)
    p.add_argument("--probe-train", type=int, default=10000,
                   help="training images for the in-training probe")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0 = all)")
    p.add_argument("--limit", type=int, default=0, help="use only N training images (smoke)")
    p.add_argument("--data", default=os.environ.get("KERAS_INFOBAL_CIFAR10"),
                   help="CIFAR-10 folder/.tar.gz (default: $KERAS_INFOBAL_CIFAR10, else tfds)")
    p.add_argument("--out", required=True)
    p.add_argument("--skip-final-probe", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_infobal import InfoBal, datasets
    from keras_infobal.evaluation import LinearProbe, train_classifier

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    config = dict(CONFIGS[args.variant])
    for key, value in (("critic", args.critic), ("infomin_weight", args.infomin_weight),
                       ("num_views", args.num_views), ("split", args.split)):
        if value is not None:
            config[key] = value
    config["critic_units"] = args.critic_units
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump({"model": config, "args": vars(args)}, f, indent=2)

    x_train, y_train, _ = datasets.load_cifar10("train", source=args.data)
    x_test, y_test, _ = datasets.load_cifar10("test", source=args.data)
    if args.limit:
        # The local copy is ordered by class: a random subset keeps every class.
        keep = np.random.default_rng(args.seed).permutation(len(x_train))[: args.limit]
        x_train, y_train = x_train[keep], y_train[keep]
    # The in-training probe never sees the test set: it trains on part of the training
    # images and is scored on a held-out 5,000 of them.
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(x_train))
    n_hold = min(5000, len(x_train) // 5)
    hold, rest = order[:n_hold], order[n_hold:][: args.probe_train]
    probe = LinearProbe((x_train[rest], y_train[rest]), (x_train[hold], y_train[hold]),
                        every=args.probe_every, layers=("conv", "fc", "R"), max_epochs=30)

    steps_per_epoch = len(x_train) // args.batch_size
    total = steps_per_epoch * args.epochs

    def optimizer():
        schedule = keras.optimizers.schedules.CosineDecay(args.lr, total, alpha=0.1)
        return keras.optimizers.Adam(schedule, beta_1=0.5, beta_2=0.999)

    model = InfoBal(**config)
    model.compile(optimizer=optimizer(),
                  discriminator_optimizer=optimizer() if model.discriminator_active else None)
    train_ds = datasets.make_dataset(x_train, batch_size=args.batch_size, shuffle=True,
                                     augment_images=True, drop_remainder=True, seed=args.seed)
    log_path = os.path.join(args.out, "log.csv")

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.time()

        def on_epoch_end(self, epoch, logs=None):
            logs["epoch_seconds"] = time.time() - self.t0
            logs["images_per_second"] = steps_per_epoch * args.batch_size / logs["epoch_seconds"]

    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(args.out, "backup")),
        Timer(),
        probe,
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.CSVLogger(log_path, append=True),
    ]
    t0 = time.time()
    model.fit(train_ds, epochs=args.epochs, callbacks=callbacks, verbose=2)
    train_seconds = time.time() - t0
    model.save(os.path.join(args.out, "model.keras"))
    if args.skip_final_probe:
        return 0

    results = {"variant": args.variant, "config": config, "epochs": args.epochs,
               "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
               "train_seconds_this_process": train_seconds,
               "data": args.data or "tfds", "probe": {}}
    layers = ("local", "conv", "fc", "R")
    feats_tr = model.extract_features(x_train, layers=layers)
    feats_te = model.extract_features(x_test, layers=layers)
    for protocol in ("note", "converged"):
        results["probe"][protocol] = {
            layer: train_classifier(feats_tr[layer], y_train, feats_te[layer], y_test,
                                    protocol=protocol)
            for layer in layers
        }
        print(protocol, results["probe"][protocol], flush=True)
    last = {}
    with open(log_path) as f:
        import csv

        rows = list(csv.DictReader(f))
        last = {k: float(v) for k, v in rows[-1].items() if k.startswith(("mi_", "objective"))}
        results["wall_seconds_all_epochs"] = sum(float(r["epoch_seconds"]) for r in rows)
    results["final_mi"] = last
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
