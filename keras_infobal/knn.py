"""Weighted kNN evaluation on frozen features, the monitor self-supervised libraries report.

As in InstDisc (Wu et al., CVPR 2018) and the kNN monitors of lightly and solo-learn: cosine
similarity to the training features, the k = 200 nearest neighbours vote for their label
with weight `exp(similarity / temperature)` (temperature 0.1), the class with the largest
summed weight wins. No training, so it tracks representation quality cheaply during `fit`.

```python
from keras_infobal.knn import knn_accuracy
acc = knn_accuracy(train_features, train_labels, test_features, test_labels)
```
"""

import numpy as np


def _normalize(x):
    x = np.asarray(x, dtype="float32").reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_predict(train_features, train_labels, features, k=200, temperature=0.1, classes=None,
                batch_size=1024):
    """Class scores (N, classes) of `features` by a similarity-weighted vote of the k nearest
    (cosine) training features; `argmax(-1)` is the prediction."""
    train_labels = np.asarray(train_labels).reshape(-1).astype("int64")
    if len(train_features) != len(train_labels):
        raise ValueError(
            f"{len(train_features)} training features but {len(train_labels)} labels: pass one "
            "label per training feature."
        )
    if len(train_labels) == 0:
        raise ValueError("kNN needs at least one training feature.")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` must be a positive integer; got {k!r}.")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0; got {temperature!r}.")
    if np.any(train_labels < 0):
        raise ValueError("Labels must be non-negative class indices.")
    classes = int(classes or train_labels.max() + 1)
    train = _normalize(train_features)
    queries = _normalize(features)
    if queries.shape[1] != train.shape[1]:
        raise ValueError(
            f"Features of width {queries.shape[1]} cannot be compared with training features of "
            f"width {train.shape[1]}: use the same feature layer for both."
        )
    k = min(k, len(train))
    out = np.zeros((len(queries), classes), dtype="float64")
    for start in range(0, len(queries), batch_size):
        sim = queries[start:start + batch_size] @ train.T  # (b, N)
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(sim, idx, axis=1).astype("float64")
        weights = np.exp(top / temperature)
        votes = np.zeros((len(sim), classes))
        np.add.at(votes, (np.arange(len(sim))[:, None], train_labels[idx]), weights)
        out[start:start + batch_size] = votes
    return out


def knn_accuracy(train_features, train_labels, test_features, test_labels, k=200,
                 temperature=0.1):
    """Accuracy of the weighted kNN classifier (cosine, `k`, `temperature`) on the test set."""
    test_labels = np.asarray(test_labels).reshape(-1)
    if len(test_features) != len(test_labels):
        raise ValueError(
            f"{len(test_features)} test features but {len(test_labels)} test labels."
        )
    classes = int(max(np.max(train_labels), np.max(test_labels)) + 1)
    scores = knn_predict(train_features, train_labels, test_features, k=k,
                         temperature=temperature, classes=classes)
    return float(np.mean(scores.argmax(-1) == test_labels))



def knn_select_layer(features, labels, validation, k=200, temperature=0.1):
    """Chooses the feature layer for kNN on a validation split of the training set.

    `features`: {layer: (N, ...) features of the N training images}; `labels`: (N,);
    `validation`: indices of the held-out rows. Each held-out row is classified with the
    other rows as the memory bank (never with itself or another held-out row), so the test
    set is not touched. Returns `(best_layer, {layer: validation accuracy})`.
    """
    labels = np.asarray(labels).reshape(-1)
    validation = np.unique(np.asarray(validation, dtype="int64"))
    if not features:
        raise ValueError("`features` is empty: pass {layer: training features}.")
    if len(validation) == 0 or validation[0] < 0 or validation[-1] >= len(labels):
        raise ValueError(f"`validation` must hold indices into the {len(labels)} training rows; "
                         f"got {len(validation)} indices in [{validation.min(initial=0)}, "
                         f"{validation.max(initial=0)}].")
    bank = np.setdiff1d(np.arange(len(labels)), validation)
    if len(bank) == 0:
        raise ValueError("Every row is in `validation`: keep some rows as the memory bank.")
    scores = {}
    for layer, f in features.items():
        if len(f) != len(labels):
            raise ValueError(f"Layer {layer!r} has {len(f)} rows for {len(labels)} labels.")
        f = np.asarray(f)
        scores[layer] = knn_accuracy(f[bank], labels[bank], f[validation], labels[validation],
                                     k=k, temperature=temperature)
    return max(scores, key=scores.get), scores

def knn_evaluate(model, train, test, layers=("fc",), k=200, temperature=0.1):
    """{layer: kNN accuracy} of a model with `extract_features(images, layers)`.

    `train`, `test`: `(images, labels)`.
    """
    (x_tr, y_tr), (x_te, y_te) = train, test
    f_tr = model.extract_features(x_tr, layers=tuple(layers))
    f_te = model.extract_features(x_te, layers=tuple(layers))
    return {layer: knn_accuracy(f_tr[layer], y_tr, f_te[layer], y_te, k=k,
                                temperature=temperature) for layer in layers}


def _callback_base():
    import keras

    return keras.callbacks.Callback


class KNNMonitor(_callback_base()):
    """Logs `knn_<layer>` (weighted kNN accuracy) every `every` epochs during `fit`.

    Score it on a validation split of your training images, not the test set.

    ```python
    monitor = KNNMonitor((x_tr[:10000], y_tr[:10000]), (x_val, y_val), every=2)
    model.fit(ds, epochs=20, callbacks=[monitor, keras.callbacks.CSVLogger("log.csv")])
    ```
    """

    def __init__(self, train, test, every=1, layers=("fc",), k=200, temperature=0.1):
        super().__init__()
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"`every` must be a positive integer; got {every!r}.")
        self.train, self.test, self.every = train, test, every
        self.layers, self.k, self.temperature = tuple(layers), k, temperature
        self.history = []

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            if logs is not None:  # stable CSV columns
                logs.update({f"knn_{k}": float("nan") for k in self.layers})
            return
        acc = knn_evaluate(self.model, self.train, self.test, layers=self.layers, k=self.k,
                           temperature=self.temperature)
        entry = {f"knn_{k}": v for k, v in acc.items()}
        self.history.append({"epoch": epoch + 1, **entry})
        if logs is not None:
            logs.update(entry)
