"""Pretraining recipe for CIFAR-10: the code behind the shipped weights and `keras-infobal pretrain`.

```python
from keras_infobal.pretraining import pretrain_cifar10
results = pretrain_cifar10(variant="infobal", epochs=30, out="runs/infobal",
                           data="../shared/data/cifar10-jpeg.tar.gz")
```
"""

import json
import os
import time
from types import SimpleNamespace

from keras_infobal import features as feature_registry

# The pretraining recipes (variants) are data: keras_infobal/pretraining_recipes.json, which
# the CLI also reads without importing TensorFlow.
RECIPES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "pretraining_recipes.json")
with open(RECIPES_FILE) as _f:
    RECIPES = json.load(_f)
CONFIGS = {name: recipe["config"] for name, recipe in RECIPES.items()}
# Options that shape the data rather than the model: an override, or the variant's value.
DATA_OPTIONS = ("augmented_pairs", "color_jitter", "grayscale")


DEFAULTS = dict(variant="infobal", critic=None, infomin_critic=None, infomin_weight=None, num_views=None,
                split=None, score_clip=None, augmented_pairs=None, color_jitter=None,
                grayscale=None, mixed_precision=False, epochs=30, batch_size=64, lr=3e-4,
                critic_units=512, infomin_units=None,
                probe_every=5, probe_train=10000, seed=0, threads=0, limit=0,
                data=None, out=None, skip_final_probe=False, verbose=2, init_from=None,
                probe_layers=feature_registry.probe_layers(),
                final_probe_layers=feature_registry.NAMES)


def _initialize_from(model, source):
    """Loads trained weights into `model` before training (a warm start)."""
    if str(source).endswith(".keras"):
        from keras_infobal.models.infobal import load_infobal

        trained = load_infobal(source)
        if trained.get_config()["num_views"] != model.num_views:
            raise ValueError(f"`init_from` {source} has another number of views than the model.")
        pairs = [(model.encoder, trained.encoder), (model.aggregator, trained.aggregator)]
        pairs += list(zip(model.infomax_critics, trained.infomax_critics))
        if model.infomin_critics is not None:
            pairs.append((model.infomin_critics, trained.infomin_critics))
    else:
        from keras_infobal.applications import presets

        if source not in presets.list_presets():
            raise ValueError(
                f"`init_from` must be a shipped preset ({presets.list_presets()}) or a "
                f"`.keras` file; got {source!r}."
            )
        presets.load_encoder_and_aggregator(model, source)
        return
    from keras_infobal.applications.presets import _copy_weights

    for target, src in pairs:
        _copy_weights(target, src)


def pretrain_cifar10(**kwargs):
    """Pretrains on CIFAR-10, resumable; writes OUT/{config.json,log.csv,model.keras,results.json}.

    Keyword arguments (defaults in `DEFAULTS`): variant (a key of `CONFIGS`), critic,
    infomin_critic (the InfoMin estimator: a lower-bound critic or "club"), infomin_weight,
    num_views, split, score_clip, augmented_pairs (two augmentations per image, R of one scored against the local views of the other), color_jitter, grayscale
    (colour distortion of the augmentation) (overrides of the variant), mixed_precision
    (train under keras' "mixed_bfloat16" policy; evaluation and model.keras stay float32),
    epochs, batch_size,
    lr (peak of a cosine decay), critic_units, infomin_units, probe_every, probe_train, seed, threads, limit, data
    (CIFAR-10 folder/.tar.gz or None for $KERAS_INFOBAL_CIFAR10 / tfds), out (required),
    skip_final_probe, verbose, probe_layers (in-training probe), final_probe_layers,
    init_from (continue from trained weights: a shipped variant name, whose encoder and
    aggregator are loaded and whose critics start fresh, or an InfoBal `.keras` file of the
    same configuration, loaded whole).
    Returns the results dict (None with skip_final_probe).
    """
    unknown = set(kwargs) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown pretraining options {sorted(unknown)}; known: {sorted(DEFAULTS)}.")
    args = SimpleNamespace(**{**DEFAULTS, **kwargs})
    if not args.out:
        raise ValueError("`out` (the run folder) is required.")
    if args.variant not in CONFIGS:
        raise ValueError(f"`variant` must be one of {sorted(CONFIGS)}; got {args.variant!r}.")
    # Before any data is loaded or epoch run.
    feature_registry.check_layers(args.probe_layers, "probe_layers")
    feature_registry.check_layers(args.final_probe_layers, "final_probe_layers")
    if args.data is None:
        args.data = os.environ.get("KERAS_INFOBAL_CIFAR10")
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_infobal import InfoBal, NonFiniteGuard, datasets
    from keras_infobal.evaluation import LinearProbe, train_classifier

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    config = dict(CONFIGS[args.variant])
    for key in ("critic", "infomin_critic", "infomin_weight", "num_views", "split", "score_clip",
                "infomin_units") + DATA_OPTIONS:
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    aug = dict(color_jitter=float(config.pop("color_jitter", 0.0)),
               grayscale=float(config.pop("grayscale", 0.0)))
    config["critic_units"] = args.critic_units
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump({"model": config, "augmentation": aug, "args": vars(args)}, f, indent=2)

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
                        every=args.probe_every, layers=tuple(args.probe_layers), max_epochs=30)

    steps_per_epoch = len(x_train) // args.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"{len(x_train)} training images make no full batch of {args.batch_size}; use a "
            "smaller batch_size or more images."
        )
    total = steps_per_epoch * args.epochs

    def optimizer():
        schedule = keras.optimizers.schedules.CosineDecay(args.lr, total, alpha=0.1)
        return keras.optimizers.Adam(schedule, beta_1=0.5, beta_2=0.999)

    previous_policy = keras.mixed_precision.global_policy()
    if args.mixed_precision:
        # 1.4x faster DIM(L) steps with AVX512_BF16 (benchmarks/results/speed.md);
        # variables and the MI estimates stay float32. Layers keep the policy they were
        # built with, so the global one is restored right away.
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = InfoBal(**config)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    if args.init_from:
        _initialize_from(model, args.init_from)
    model.compile(optimizer=optimizer(),
                  discriminator_optimizer=optimizer() if model.discriminator_active else None)
    train_ds = datasets.make_dataset(x_train, batch_size=args.batch_size, shuffle=True,
                                     augment_images=True, drop_remainder=True, seed=args.seed,
                                     pairs=bool(config.get("augmented_pairs")), **aug)
    log_path = os.path.join(args.out, "log.csv")

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.time()

        def on_epoch_end(self, epoch, logs=None):
            logs["epoch_seconds"] = time.time() - self.t0
            logs["images_per_second"] = steps_per_epoch * args.batch_size / logs["epoch_seconds"]

    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(args.out, "backup"),
                                         double_checkpoint=True),
        Timer(),
        probe,
        NonFiniteGuard(),
        keras.callbacks.CSVLogger(log_path, append=True),
    ]
    t0 = time.time()
    model.fit(train_ds, epochs=args.epochs, callbacks=callbacks, verbose=args.verbose,
              shuffle=False)  # the dataset shuffles itself
    train_seconds = time.time() - t0
    if args.mixed_precision:
        # Evaluate and save a float32 copy: the saved model does not depend on the policy.
        trained, model = model, InfoBal(**config)
        model.set_weights(trained.get_weights())
    model.save(os.path.join(args.out, "model.keras"))
    if args.skip_final_probe:
        return None

    results = {"variant": args.variant, "config": config, "augmentation": aug,
               "epochs": args.epochs,
               "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
               "train_seconds_this_process": train_seconds,
               "data": args.data or "tfds", "probe": {}}
    layers = tuple(args.final_probe_layers)
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
    return results


