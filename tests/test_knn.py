"""Weighted kNN evaluation against a hand-computed case."""

import math

import numpy as np
import pytest

from keras_infobal.knn import (
    KNNMonitor,
    knn_accuracy,
    knn_evaluate,
    knn_predict,
    knn_select_layer,
)

# Unit-norm training features with cosine similarities 1, 0.8, 0.8, 0 to the query [1, 0].
TRAIN = np.array([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6], [0.0, 1.0]])
LABELS = np.array([0, 1, 1, 2])
QUERY = np.array([[1.0, 0.0]])


def test_votes_are_exp_similarity_over_temperature():
    scores = knn_predict(TRAIN, LABELS, QUERY, k=3, temperature=1.0)
    np.testing.assert_allclose(scores[0], [math.e, 2 * math.exp(0.8), 0.0], rtol=1e-6)
    scores = knn_predict(TRAIN, LABELS, QUERY, k=4, temperature=0.5)
    np.testing.assert_allclose(scores[0], [math.exp(2), 2 * math.exp(1.6), 1.0], rtol=1e-6)


def test_k_and_temperature_decide_the_vote():
    assert knn_predict(TRAIN, LABELS, QUERY, k=1).argmax() == 0
    # Two neighbours at 0.8 outvote one at 1.0 only at a high temperature.
    assert knn_predict(TRAIN, LABELS, QUERY, k=3, temperature=0.1).argmax() == 0
    assert knn_predict(TRAIN, LABELS, QUERY, k=3, temperature=1.0).argmax() == 1


def test_cosine_ignores_scale_and_k_is_capped():
    a = knn_predict(TRAIN * 5.0, LABELS, QUERY * 0.1, k=3, temperature=1.0)
    b = knn_predict(TRAIN, LABELS, QUERY, k=3, temperature=1.0)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    # k larger than the training set uses all of it.
    np.testing.assert_allclose(knn_predict(TRAIN, LABELS, QUERY, k=50, temperature=1.0),
                               knn_predict(TRAIN, LABELS, QUERY, k=4, temperature=1.0))


def test_accuracy_and_batching():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8))
    y_tr = np.repeat(np.arange(3), 20)
    x_tr = centers[y_tr] + 0.1 * rng.normal(size=(60, 8))
    y_te = np.array([0, 1, 2, 2])
    x_te = centers[y_te]
    assert knn_accuracy(x_tr, y_tr, x_te, y_te, k=5) == 1.0
    assert knn_accuracy(x_tr, y_tr, x_te, np.array([1, 1, 2, 2]), k=5) == 0.75
    np.testing.assert_allclose(knn_predict(x_tr, y_tr, x_te, k=7, batch_size=1),
                               knn_predict(x_tr, y_tr, x_te, k=7, batch_size=1024), rtol=1e-4)


def test_bad_input_says_what_to_fix():
    with pytest.raises(ValueError, match="one label per training feature"):
        knn_predict(TRAIN, LABELS[:3], QUERY)
    with pytest.raises(ValueError, match="same feature layer"):
        knn_predict(TRAIN, LABELS, np.ones((1, 3)))
    with pytest.raises(ValueError, match="positive integer"):
        knn_predict(TRAIN, LABELS, QUERY, k=0)
    with pytest.raises(ValueError, match="temperature"):
        knn_predict(TRAIN, LABELS, QUERY, temperature=0)
    with pytest.raises(ValueError, match="test labels"):
        knn_accuracy(TRAIN, LABELS, QUERY, np.array([0, 1]))


class _Features:
    """A stand-in model: features are the images' first two pixels' red values."""

    def extract_features(self, images, layers=("fc",)):
        return {k: images[:, 0, :2, 0].astype("float32") for k in layers}


def test_monitor_logs_every_n_epochs():
    x_tr = np.zeros((4, 2, 2, 3), "uint8")
    x_tr[:, 0, :2, 0] = np.array([[200, 100], [180, 160], [180, 40], [100, 200]])
    monitor = KNNMonitor((x_tr, LABELS), (x_tr, LABELS), every=2, k=1)
    monitor.set_model(_Features())
    logs = {}
    monitor.on_epoch_end(0, logs)
    assert np.isnan(logs["knn_fc"])
    monitor.on_epoch_end(1, logs)
    assert logs["knn_fc"] == 1.0  # k=1 on the training set itself
    assert monitor.history == [{"epoch": 2, "knn_fc": 1.0}]
    assert knn_evaluate(_Features(), (x_tr, LABELS), (x_tr, LABELS), k=1) == {"fc": 1.0}


def _brute_force_knn_accuracy(bank, bank_labels, queries, query_labels, k, temperature):
    """Weighted kNN written out row by row: a full sort, no batching, no argpartition."""
    correct = 0
    for q, y in zip(queries, query_labels):
        sims = [float(np.dot(q, b) / (np.linalg.norm(q) * np.linalg.norm(b))) for b in bank]
        order = sorted(range(len(bank)), key=lambda i: -sims[i])[:k]
        votes = {}
        for i in order:
            votes[bank_labels[i]] = votes.get(bank_labels[i], 0.0) + math.exp(sims[i] / temperature)
        correct += max(votes, key=votes.get) == y
    return correct / len(queries)


def test_select_layer_scores_held_out_rows_against_the_rest():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 120)
    signal = np.eye(4)[labels] + 0.3 * rng.normal(size=(120, 4))
    noise = rng.normal(size=(120, 6))
    validation = rng.choice(120, 30, replace=False)
    best, scores = knn_select_layer({"noise": noise, "signal": signal}, labels, validation,
                                    k=7, temperature=0.5)
    bank = np.setdiff1d(np.arange(120), validation)
    for name, f in (("noise", noise), ("signal", signal)):
        expected = _brute_force_knn_accuracy(f[bank], labels[bank], f[validation],
                                             labels[validation], k=7, temperature=0.5)
        assert scores[name] == pytest.approx(expected)
    assert best == "signal" and scores["signal"] > scores["noise"]


def test_select_layer_never_finds_a_held_out_row_in_the_bank():
    # Random features and labels: with k = 1 a held-out row that were also in the memory bank
    # would be its own nearest neighbour and always right.
    rng = np.random.default_rng(1)
    features = {"x": rng.normal(size=(400, 16))}
    labels = rng.integers(0, 10, 400)
    _, scores = knn_select_layer(features, labels, np.arange(0, 400, 4), k=1)
    assert scores["x"] < 0.3


def test_select_layer_bad_input_says_what_to_fix():
    f = {"fc": np.ones((10, 3))}
    y = np.arange(10) % 2
    with pytest.raises(ValueError, match="features.*empty"):
        knn_select_layer({}, y, [0, 1])
    with pytest.raises(ValueError, match="indices into the 10 training rows"):
        knn_select_layer(f, y, [3, 10])
    with pytest.raises(ValueError, match="memory bank"):
        knn_select_layer(f, y, np.arange(10))
    with pytest.raises(ValueError, match="'fc' has 9 rows for 10 labels"):
        knn_select_layer({"fc": np.ones((9, 3))}, y, [0])
