"""Pretraining runs: the code behind the shipped presets and `keras-infobal pretrain`.

A run's configuration has one schema, the same in a recipe, a `--config` file and
`pretrain(...)`'s keywords:

- `backbone`: `InfoBalBackbone` arguments (the architecture; a run with `init_from` has
  its preset's); `task`: `InfoBal` arguments (the objective: the shorthand arguments, e.g.
  `infomin_weight`, `local_scales`, or `objectives`, a list of serialized terms);
  `augmentation`: `augmentation.augmentation_pipeline`'s `color_jitter`, `grayscale`,
  `translate`, `flip`, `crop` (a Keras preprocessing pipeline). A recipe
  (`pretraining_recipes.json`) gives the three, and may set training options (`options`:
  the `resnet18` GPU recipe's batch 512, 200 epochs); the run's own sections update them key
  by key, and its own options win.
- the training options in `DEFAULTS` (epochs, batch size, learning rate, ...), among them
  `mixed_precision` (True: mixed bfloat16; "mixed_float16", Keras' GPU policy, with loss
  scaling; "auto": bfloat16 where the CPU computes it natively) and `device_augmentation`
  (True: the augmentation runs inside the train step on the device, `InfoBal(augmentation=)`,
  instead of in `tf.data` on the CPU; `benchmarks/pipeline.py` says how many images per
  second the CPU pipeline feeds).

```python
from keras_infobal.pretraining import pretrain
results = pretrain(recipe="dim_pairs", task={"infomin_weight": 0.03}, epochs=30,
                   data="../shared/data/cifar10-jpeg.tar.gz", out="runs/infobal")
```

It resumes after a crash (`BackupAndRestore` in OUT/backup), logs every epoch to OUT/log.csv
(MI estimates, and a linear probe on 5,000 held-out training images every `probe_every`
epochs), and writes OUT/model.keras, the preset folder OUT/preset (`InfoBal.from_preset`,
`InfoBalBackbone.from_preset`) and, unless `skip_final_probe`, OUT/results.json.
"""

import csv
import json
import os
import shutil
import sys
import time

from keras_infobal import features as feature_registry

# The recipes are data, which the command line also reads without importing TensorFlow.
RECIPES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "pretraining_recipes.json")
with open(RECIPES_FILE) as _f:
    RECIPES = json.load(_f)
SECTIONS = ("backbone", "task", "augmentation")
# augmentation.augmentation_pipeline's options (the seed is the run's).
AUGMENTATION_KEYS = ("color_jitter", "grayscale", "translate", "flip", "crop")

DEFAULTS = dict(recipe="infobal", backbone=None, task=None, augmentation=None,
                mixed_precision="auto", device_augmentation=False, epochs=30, batch_size=64, lr=3e-4,
                probe_every=5, probe_train=10000, seed=0, threads=0, limit=0,
                data=None, resize=None, skip_bad_images=False, out=None, skip_final_probe=False, verbose=2, init_from=None,
                probe_layers=feature_registry.probe_layers(),
                final_probe_layers=feature_registry.NAMES)


MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")
# InfoBal's shorthand arguments for its default terms (`models.infobal.SHORTHAND`, which
# this module does not import: the command line reads recipes without TensorFlow).
SHORTHAND_KEYS = ("critic", "infomin_critic", "critic_units", "infomin_units",
                  "infomin_weight", "view_weights", "correlation_weights", "local_scales",
                  "view_pooling", "score_clip")

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) at or above native bfloat16 compute.
_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX10", "ALL",
              "DEFAULT")


def bfloat16_is_fast(cpuinfo="/proc/cpuinfo", environ=None):
    """Whether mixed bfloat16 is the faster precision for training on this CPU: it has
    AVX512_BF16 or AMX and oneDNN is not capped below them (`ONEDNN_MAX_CPU_ISA`). There
    the DIM(L) step is about 1.4x faster than float32 (docs/benchmarks.md); on AVX2-only
    CPUs bfloat16 is emulated and about 4x slower. What `mixed_precision="auto"` uses."""
    environ = os.environ if environ is None else environ
    cap = environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap and not cap.startswith(_BF16_ISAS):
        return False
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:  # not Linux: no flags to read, float32 is the safe choice
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve(**options):
    """The full options of a run: DEFAULTS, then `options`; the recipe's sections updated
    by the run's. Raises a ValueError for unknown options, recipes or section keys."""
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"Unknown pretraining options {sorted(unknown)}; known: {sorted(DEFAULTS)} "
            f"(architecture under 'backbone', objective under 'task')."
        )
    name = options.get("recipe", DEFAULTS["recipe"])
    if name not in RECIPES:
        raise ValueError(f"`recipe` must be one of {sorted(RECIPES)}; got {name!r}.")
    recipe = RECIPES[name]
    # A recipe may set training options too (batch size, epochs, lr); the run's own win.
    run = {**DEFAULTS, **recipe.get("options", {}), **options}
    for section in SECTIONS:
        given = run[section] or {}
        if not isinstance(given, dict):
            raise ValueError(f"`{section}` must be a dict of arguments; got {given!r}.")
        if section == "backbone" and run["init_from"]:
            # A continued run's architecture is its preset's (or its .keras model's).
            if given:
                raise ValueError(
                    f"`backbone` options {sorted(given)} change the architecture, but the run "
                    f"continues from `{run['init_from']}`, whose architecture is fixed. Drop "
                    "them, or train from scratch without init_from; objective options (e.g. "
                    "local_scales) go under `task`.")
            run[section] = {}
        elif section == "task" and str(run["init_from"] or "").endswith(".keras"):
            # A .keras model keeps its own objective: only the run's own keys (checked when
            # the task builds), not the recipe's.
            run[section] = dict(given)
        elif section == "task" and "objectives" in given:
            # Terms given: the recipe's shorthand for its default terms gives way to them.
            kept = {k: v for k, v in recipe.get(section, {}).items() if k not in SHORTHAND_KEYS}
            run[section] = {**kept, **given}
        else:
            run[section] = {**recipe.get(section, {}), **given}
    if run["mixed_precision"] == "auto":
        # The run records what it trains under, so its config reruns the same anywhere.
        run["mixed_precision"] = bfloat16_is_fast()
    elif not (isinstance(run["mixed_precision"], bool)
              or run["mixed_precision"] in MIXED_POLICIES):
        raise ValueError("`mixed_precision` must be True (mixed bfloat16), False, "
                         "'mixed_float16' (GPUs without fast bfloat16), 'mixed_bfloat16' or "
                         "'auto' (mixed bfloat16 where the CPU computes it natively); got "
                         f"{run['mixed_precision']!r}.")
    if not isinstance(run["device_augmentation"], bool):
        raise ValueError("`device_augmentation` must be True (augment inside the train step, "
                         "on the device) or False (in tf.data, on the CPU); got "
                         f"{run['device_augmentation']!r}.")
    bad = set(run["augmentation"]) - set(AUGMENTATION_KEYS)
    if bad:
        raise ValueError(f"Unknown augmentation options {sorted(bad)}; known: "
                         f"{', '.join(AUGMENTATION_KEYS)} (augmentation.augmentation_pipeline).")
    # Bad values fail here, before the data loads, not an epoch's set-up later.
    from keras_infobal.augmentation import check_options

    check_options(**{k: v for k, v in run["augmentation"].items() if k != "flip"})
    return run


def _build_task(run, image_shape):
    """The InfoBal task of a run (under mixed precision when asked)."""
    import keras

    from keras_infobal.models import InfoBal, InfoBalBackbone

    previous = keras.mixed_precision.global_policy()
    task = dict(run["task"])
    if run["device_augmentation"]:
        task["augmentation"] = {**run["augmentation"], "seed": run["seed"]}
    if run["mixed_precision"]:
        # 1.4x faster DIM(L) steps with AVX512_BF16 (docs/benchmarks.md); variables and the
        # MI estimates stay float32. Layers keep the policy they were built with, so the
        # global one is restored right away.
        keras.mixed_precision.set_global_policy(
            run["mixed_precision"] if run["mixed_precision"] in MIXED_POLICIES
            else "mixed_bfloat16")
    try:
        if run["init_from"]:
            source = run["init_from"]
            if str(source).endswith(".keras"):
                from keras_infobal.models import load_infobal

                objective = sorted(set(task) - {"augmentation"})
                if objective:
                    raise ValueError(
                        f"`task` options {objective} change the objective, but the run "
                        f"continues from `{source}`, a .keras model that keeps its own. "
                        "Continue from its run's preset/ folder (InfoBal.from_preset takes "
                        "objective overrides), or drop them.")
                trained = load_infobal(source)
                # A .keras model keeps its own objective; only where it augments follows
                # the run.
                config = trained.get_config()
                if "augmentation" in task:
                    config["augmentation"] = task["augmentation"]
                model = InfoBal.from_config(config)
                model.set_weights(trained.get_weights())
            else:
                model = InfoBal.from_preset(source, **task)
        else:
            backbone = InfoBalBackbone(**run["backbone"], image_shape=image_shape,
                                       name="backbone")
            model = InfoBal(backbone, **task)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return model


def is_cifar10_source(data):
    """Whether `data` names the CIFAR-10 layout (tfds, a `.tar.gz`, or a folder with
    `train/` and `test/` splits) rather than a user's own images."""
    import tarfile

    if data in (None, "tfds"):
        return True
    data = os.fspath(data)
    if os.path.isfile(data):
        return tarfile.is_tarfile(data)
    return os.path.isdir(os.path.join(data, "train")) and os.path.isdir(
        os.path.join(data, "test"))


def _load_data(run):
    """(x_train, y_train, x_eval, y_eval): CIFAR-10's splits, or the run's own images with,
    when they have labels (class subfolders, an .npz `labels`), 20% held out for the final
    probe (y_* None without labels)."""
    import numpy as np

    from keras_infobal import datasets

    if is_cifar10_source(run["data"]):
        x_train, y_train, _ = datasets.load_cifar10("train", source=run["data"])
        x_test, y_test, _ = datasets.load_cifar10("test", source=run["data"])
        if run["resize"]:
            raise ValueError("`resize` is for your own images; CIFAR-10 stays 32x32.")
        return x_train, y_train, x_test, y_test
    images, labels, _ = datasets.load_images(
        run["data"], resize=None if run["resize"] is None else tuple(run["resize"]),
        skip_bad_images=bool(run.get("skip_bad_images")))
    if labels is None:
        return images, None, images[:0], None
    order = np.random.default_rng(run["seed"]).permutation(len(images))
    n_eval = max(1, len(images) // 5)
    return (images[order[n_eval:]], labels[order[n_eval:]], images[order[:n_eval]],
            labels[order[:n_eval]])


def pretrain(**options):
    """Pretrains on CIFAR-10 or your own images (`data`: see `is_cifar10_source` and
    `datasets.load_images`; the image size is the data's, or `resize`), resumable; writes
    OUT/{config.json, log.csv, model.keras, preset/ (with training_log.csv), results.json}. Options: see `DEFAULTS`
    and the module docstring. Returns the results dict (None with skip_final_probe, and for
    unlabeled images)."""
    run = resolve(**options)
    if not run["out"]:
        raise ValueError("`out` (the run folder) is required.")
    # Before any data is loaded or epoch run.
    feature_registry.check_layers(run["probe_layers"], "probe_layers")
    feature_registry.check_layers(run["final_probe_layers"], "final_probe_layers")
    if run["data"] is None:
        run["data"] = os.environ.get("KERAS_INFOBAL_CIFAR10")
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_infobal import NonFiniteGuard, datasets
    from keras_infobal.evaluation import LinearProbe, train_classifier

    if run["threads"]:
        tf.config.threading.set_intra_op_parallelism_threads(run["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(run["threads"])
    keras.utils.set_random_seed(run["seed"])
    out = run["out"]
    x_train, y_train, x_test, y_test = _load_data(run)
    labeled = y_train is not None
    if not labeled:
        # Unlabeled images: nothing to probe. The run trains, logs its MI terms and writes
        # its preset; `keras-infobal evaluate` scores it on labelled images later.
        run["probe_every"], run["skip_final_probe"] = 10 ** 9, True
        y_train = np.zeros(len(x_train), dtype="int64")
    if run["limit"]:
        # The local copy is ordered by class: a random subset keeps every class.
        keep = np.random.default_rng(run["seed"]).permutation(len(x_train))[: run["limit"]]
        x_train, y_train = x_train[keep], y_train[keep]
    # The in-training probe never sees the test set: it trains on part of the training
    # images and is scored on a held-out 5,000 of them.
    order = np.random.default_rng(run["seed"]).permutation(len(x_train))
    n_hold = min(5000, len(x_train) // 5)
    hold, rest = order[:n_hold], order[n_hold:][: run["probe_train"]]
    probe = LinearProbe((x_train[rest], y_train[rest]), (x_train[hold], y_train[hold]),
                        every=run["probe_every"], layers=tuple(run["probe_layers"]),
                        max_epochs=30)

    batch_size = run["batch_size"]
    steps_per_epoch = len(x_train) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"{len(x_train)} training images make no full batch of {batch_size}; use a "
            "smaller batch_size or more images."
        )
    total = steps_per_epoch * run["epochs"]

    def optimizer():
        schedule = keras.optimizers.schedules.CosineDecay(run["lr"], total, alpha=0.1)
        return keras.optimizers.Adam(schedule, beta_1=0.5, beta_2=0.999)

    model = _build_task(run, tuple(x_train.shape[1:]))
    needs_discriminator = model.discriminator_active  # before compile: a weight != 0
    model.compile(optimizer=optimizer(),
                  discriminator_optimizer=optimizer() if needs_discriminator else None)
    if run["device_augmentation"]:
        # Plain batches: the model draws the augmentation (both halves of a pair) itself.
        train_ds = datasets.make_dataset(x_train, batch_size=batch_size, shuffle=True,
                                         drop_remainder=True, seed=run["seed"])
    else:
        train_ds = datasets.make_dataset(x_train, batch_size=batch_size, shuffle=True,
                                         augment_images=True, drop_remainder=True,
                                         seed=run["seed"], pairs=model.augmented_pairs,
                                         **run["augmentation"])
    # The run folder is written once the data loaded and the model was built: a run refused
    # for bad input leaves nothing behind.
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(run, f, indent=2)
    log_path = os.path.join(out, "log.csv")

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.time()

        def on_epoch_end(self, epoch, logs=None):
            logs["epoch_seconds"] = time.time() - self.t0
            logs["images_per_second"] = steps_per_epoch * batch_size / logs["epoch_seconds"]

    callbacks = [
        keras.callbacks.BackupAndRestore(os.path.join(out, "backup"), double_checkpoint=True),
        Timer(),
        # Unlabeled images: no probe, so the log has no columns of NaN accuracies.
        *([probe] if labeled else []),
        NonFiniteGuard(),
        keras.callbacks.CSVLogger(log_path, append=True),
    ]
    t0 = time.time()
    model.fit(train_ds, epochs=run["epochs"], callbacks=callbacks, verbose=run["verbose"])
    train_seconds = time.time() - t0
    if run["mixed_precision"]:
        # Evaluate and save a float32 copy: the saved model does not depend on the policy.
        trained = model
        model = type(trained).from_config(trained.get_config())
        model.set_weights(trained.get_weights())
    model.save(os.path.join(out, "model.keras"))
    with open(log_path) as f:
        rows = list(csv.DictReader(f))
    preset = os.path.join(out, "preset")
    os.makedirs(preset, exist_ok=True)
    # The training log travels with the preset (and is checked with its other files).
    shutil.copyfile(log_path, os.path.join(preset, "training_log.csv"))
    model.save_to_preset(preset,
                         command=" ".join(sys.argv), recipe=run["recipe"],
                         data=str(run["data"] or "tfds"),
                         augmentation=run["augmentation"], epochs=run["epochs"],
                         wall_seconds_all_epochs=sum(float(r["epoch_seconds"]) for r in rows))
    if run["skip_final_probe"]:
        return None

    results = {"recipe": run["recipe"], "task": model.objective_config(),
               "backbone": model.backbone.get_config(), "augmentation": run["augmentation"],
               "epochs": run["epochs"], "batch_size": batch_size, "lr": run["lr"],
               "seed": run["seed"], "train_seconds_this_process": train_seconds,
               "data": run["data"] or "tfds", "probe": {}}
    layers = tuple(run["final_probe_layers"])
    feats_tr = model.extract_features(x_train, layers=layers)
    feats_te = model.extract_features(x_test, layers=layers)
    for protocol in ("note", "converged"):
        results["probe"][protocol] = {
            layer: train_classifier(feats_tr[layer], y_train, feats_te[layer], y_test,
                                    protocol=protocol)
            for layer in layers
        }
        print(protocol, results["probe"][protocol], flush=True)
    results["final_mi"] = {k: float(v) for k, v in rows[-1].items()
                           if k.startswith(("mi_", "objective"))}
    results["wall_seconds_all_epochs"] = sum(float(r["epoch_seconds"]) for r in rows)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results
