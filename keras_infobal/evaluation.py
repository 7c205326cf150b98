"""Frozen-encoder evaluation: linear probes, a probe callback, and the MI-vs-accuracy figure.

Example:

```python
from keras_infobal.evaluation import linear_probe
acc = linear_probe(model, (x_train, y_train), (x_test, y_test), protocol="converged")
# {"conv": 0.61, "fc": 0.58, "R": 0.49}
```
"""

import json
import os

import keras
import numpy as np

from keras_infobal import features as feature_registry

# The layers probed by default: keras_infobal.features.probe_layers() ("conv", "fc", "R").
FEATURE_LAYERS = feature_registry.probe_layers()
PROTOCOLS = ("note", "converged")
# "linear": one dense layer; "mlp": DIM's evaluation classifier (Hjelm et al. 2019), the
# protocol of its published accuracies: dense 200 -> BN -> dropout 0.1 -> ReLU -> dense.
HEADS = ("linear", "mlp")


def _make_classifier(dim, classes, head, seed):
    keras.utils.set_random_seed(seed)
    # float32 whatever the global policy (pretraining may run under mixed_bfloat16).
    f32 = dict(dtype="float32")
    inputs = keras.Input((dim,))
    if head == "linear":
        outputs = keras.layers.Dense(classes, name="logits", **f32)(inputs)
    elif head == "mlp":
        # DIM's evaluation classifier: dense 200 -> BN -> dropout 0.1 -> ReLU -> dense.
        # Named as in the application's top, which the shipped MLP heads are copied into.
        h = keras.layers.Dense(200, name="head_dense", **f32)(inputs)
        h = keras.layers.BatchNormalization(name="head_bn", **f32)(h)
        h = keras.layers.Dropout(0.1, name="head_dropout", **f32)(h)
        h = keras.layers.ReLU(name="head_relu", **f32)(h)
        outputs = keras.layers.Dense(classes, name="logits", **f32)(h)
    else:
        raise ValueError(f"`head` must be one of {HEADS}; got {head!r}.")
    return keras.Model(inputs, outputs)


def augmented_copies(images, count, batch_size=1000):
    """`count` augmented copies of uint8 images, for a classifier's `train_views`: the mirror
    image first, then `count - 1` draws of pretraining's spatial augmentation (shifts of up to
    12.5% with mirrored borders, flips; `augmentation_pipeline(seed=k)`, so they repeat)."""
    from keras_infobal.augmentation import augmentation_pipeline

    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"Expected uint8 images (N, H, W, C); got {images.dtype} "
                         f"{images.shape}.")
    if not (isinstance(count, int) and count >= 0):
        raise ValueError(f"`count` is a number of copies >= 0; got {count!r}.")
    out = [images[:, :, ::-1]][:count]
    for k in range(1, count):
        spatial = augmentation_pipeline(seed=k)
        out.append(np.concatenate([
            keras.ops.convert_to_numpy(spatial(images[i:i + batch_size], training=True))
            for i in range(0, len(images), batch_size)]).astype(np.uint8))
    return out


def standardize(train, *others):
    """Per-feature standardization fitted on `train` (applied to all)."""
    mean = train.mean(0, keepdims=True)
    std = train.std(0, keepdims=True) + 1e-6
    return [(a - mean) / std for a in (train,) + others], (mean, std)


def fold_standardization(kernel, bias, mean, std):
    """The dense layer on raw features equal to `kernel, bias` on standardized ones:
    ((x - mean) / std) @ kernel + bias == x @ kernel' + bias'. Used to ship heads trained
    by `train_classifier` (which standardizes) as plain layers."""
    mean, std = np.reshape(mean, (-1, 1)), np.reshape(std, (-1, 1))
    return kernel / std, bias - ((mean / std) * kernel).sum(0)


def train_classifier(f_train, y_train, f_test, y_test, protocol="converged", head="linear",
                     classes=10, validation_fraction=0.1, max_epochs=100, patience=5,
                     learning_rate=1e-3, batch_size=256, seed=0, return_model=False,
                     train_views=()):
    """Trains a classifier on cached features; returns test accuracy (and the model).

    `protocol="note"`: one linear layer (or `head`), 4 epochs, Adam 1e-4, no validation.
    `protocol="converged"`: trains until the accuracy on a validation split carved out of the
    training features stops improving (`patience` epochs), restores the best epoch, and only
    then touches the test features once.

    `train_views`: features of augmented copies of the training images (e.g. mirrored), each
    row-aligned with `f_train`. They join the fitting rows only: the early-stopping split
    holds no copy of an image it fits on, and the standardization is `f_train`'s.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"`protocol` must be one of {PROTOCOLS}; got {protocol!r}.")
    for view in train_views:
        if np.shape(view) != np.shape(f_train):
            raise ValueError(f"Each of `train_views` is row-aligned with `f_train` "
                             f"{np.shape(f_train)} (the same images, augmented); got "
                             f"{np.shape(view)}.")
    (f_train, f_test, *train_views), norm = standardize(
        f_train.astype("float32"), f_test.astype("float32"),
        *(np.asarray(v, "float32") for v in train_views))
    y_train = np.asarray(y_train)
    model = _make_classifier(f_train.shape[1], classes, head, seed)
    if protocol == "note":
        f_train = np.concatenate([f_train, *train_views])
        y_train = np.concatenate([y_train] * (1 + len(train_views)))
        model.compile(keras.optimizers.Adam(1e-4),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        model.fit(f_train, y_train, epochs=4, batch_size=64, verbose=0)
    else:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(f_train))
        n_val = max(1, int(len(f_train) * validation_fraction))
        val, tr = order[:n_val], order[n_val:]
        model.compile(keras.optimizers.Adam(learning_rate),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        fit_x = np.concatenate([f_train[tr]] + [v[tr] for v in train_views])
        fit_y = np.concatenate([y_train[tr]] * (1 + len(train_views)))
        # On small data an epoch is a step or two: smaller batches, and stop early only after
        # ~300 steps.
        batch_size = int(min(batch_size, max(16, len(fit_x) // 10)))
        steps_per_epoch = max(1, -(-len(fit_x) // batch_size))
        warmup = -(-300 // steps_per_epoch)
        stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max",
                                             patience=patience, restore_best_weights=True,
                                             start_from_epoch=warmup)
        model.fit(fit_x, fit_y, validation_data=(f_train[val], y_train[val]),
                  epochs=max(max_epochs, warmup + patience), batch_size=batch_size,
                  callbacks=[stop], verbose=0)
    logits = model.predict(f_test, batch_size=1024, verbose=0)
    acc = float(np.mean(np.argmax(logits, -1) == np.asarray(y_test)))
    return (acc, model, norm) if return_model else acc


def linear_probe(model, train, test, layers=None, protocol="converged",
                 head="linear", classes=10, seed=0, **kwargs):
    """Frozen-encoder probe: features computed once, a classifier per layer; test accuracy.

    Args:
        model: an `InfoBal` model (anything with `extract_features(images, layers)`).
        train, test: `(images, labels)` tuples of uint8 images and integer labels.
        layers: feature layers to probe, from `keras_infobal.features.names()` ("local",
            "conv", "fc", "R"); default `features.probe_layers()` ("conv", "fc", "R").
        protocol: "note" (one linear layer, 4 epochs) or "converged" (early stopping on a
            validation split of `train`).
        head: "linear", or "mlp" for DIM's 200-unit classifier.

    Returns: `{layer: test accuracy}`.
    """
    if layers is None:
        layers = feature_registry.probe_layers()
    # Checked before any features are computed.
    layers = feature_registry.check_layers(layers)
    (x_tr, y_tr), (x_te, y_te) = train, test
    f_tr = model.extract_features(x_tr, layers=layers)
    f_te = model.extract_features(x_te, layers=layers)
    return {
        layer: train_classifier(f_tr[layer], np.asarray(y_tr), f_te[layer], np.asarray(y_te),
                                protocol=protocol, head=head, classes=classes, seed=seed,
                                **kwargs)
        for layer in layers
    }


class LinearProbe(keras.callbacks.Callback):
    """Runs a linear probe every `every` epochs and logs `probe_<layer>` beside the MI terms.

    The accuracies go into the epoch's `logs`, so `CSVLogger`, `TensorBoard` and `History`
    record them. Evaluate on a validation split, not the test set, while tuning.

    ```python
    probe = LinearProbe((x_tr[:5000], y_tr[:5000]), (x_val, y_val), every=2)
    model.fit(ds, epochs=20, callbacks=[probe, keras.callbacks.CSVLogger("log.csv")])
    ```
    """

    def __init__(self, train, test, every=1, layers=("conv",), protocol="converged", **kwargs):
        super().__init__()
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"`every` must be a positive integer; got {every!r}.")
        self.train, self.test = train, test
        layers = feature_registry.check_layers(layers)  # at construction, not after an epoch
        self.every, self.layers, self.protocol, self.kwargs = every, layers, protocol, kwargs
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            # NaN on the other epochs keeps the columns stable: CSVLogger fixes its columns
            # at the first epoch.
            if logs is not None:
                logs.update({f"probe_{k}": float("nan") for k in self.layers})
            return
        acc = linear_probe(self.model, self.train, self.test, layers=self.layers,
                           protocol=self.protocol, **self.kwargs)
        entry = {"epoch": epoch + 1, **{f"probe_{k}": v for k, v in acc.items()}}
        self.history.append(entry)
        if logs is not None:
            logs.update({k: v for k, v in entry.items() if k != "epoch"})


def read_log(path):
    """Reads a CSVLogger file (or a JSON list of per-epoch dicts) into {column: list}."""
    if path.endswith(".json"):
        with open(path) as f:
            rows = json.load(f)
    else:
        import csv

        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"`{path}` holds no epochs.")
    cols = {}
    for row in rows:
        for k, v in row.items():
            try:
                value = float(v)
            except (TypeError, ValueError):
                value = float("nan")
            cols.setdefault(k, []).append(value)
    return cols


def plot_mi_vs_accuracy(logs, path, title="MI estimates and probe accuracy over training"):
    """Draws the note's figure: MI estimates (left) and probe accuracy (right) per epoch.

    `logs`: {run name: log file path or {column: list}}. Writes a PNG to `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not logs:
        raise ValueError("`logs` is empty: pass {run name: CSV log path}.")
    fig, (ax_mi, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, log) in enumerate(logs.items()):
        cols = read_log(log) if isinstance(log, (str, os.PathLike)) else log
        n = len(next(iter(cols.values())))
        epochs = cols.get("epoch", list(range(n)))
        epochs = [e + 1 for e in epochs]
        color = f"C{i}"
        for k in sorted(cols):
            if k.startswith("mi_"):
                style = "-" if k.startswith("mi_R") else "--"
                ax_mi.plot(epochs, cols[k], style, color=color, label=f"{name} {k}")
        for j, k in enumerate(sorted(c for c in cols if c.startswith("probe_"))):
            pts = [(e, a) for e, a in zip(epochs, cols[k]) if a == a]
            if pts:
                ax_acc.plot(*zip(*pts), ["-o", "-s", "-^", "-v"][j % 4], color=color,
                            label=f"{name} {k}")
    ax_mi.set_xlabel("epoch")
    ax_mi.set_ylabel("MI estimate (nats)")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("linear-probe accuracy")
    for ax, empty in ((ax_mi, "no MI estimates logged"),
                      (ax_acc, "no probe accuracy logged (unlabeled images)")):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:  # a legend of nothing would warn; say what is missing instead
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
