import os

import keras
import numpy as np
import pytest

from helpers import tiny
from keras_infobal.evaluation import (
    LinearProbe,
    linear_probe,
    plot_mi_vs_accuracy,
    read_log,
    train_classifier,
)


def blobs(n, dim=20, classes=3, seed=0, sep=3.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, sep, (classes, dim))
    y = rng.integers(0, classes, n)
    return (centers[y] + rng.normal(size=(n, dim))).astype("float32"), y


@pytest.mark.parametrize("protocol", ["note", "converged"])
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_classifier_learns_separable_features(protocol, head):
    # The note's protocol takes only 4 epochs at lr 1e-4: it needs CIFAR-sized data to learn.
    n = 20000 if protocol == "note" else 1000
    f, y = blobs(n + 300)
    acc = train_classifier(f[:n], y[:n], f[n:], y[n:], protocol=protocol, head=head, classes=3)
    assert acc > 0.8  # chance is 1/3


def test_classifier_is_at_chance_on_noise():
    rng = np.random.default_rng(0)
    acc = train_classifier(rng.normal(size=(500, 10)).astype("float32"),
                           rng.integers(0, 2, 500), rng.normal(size=(400, 10)).astype("float32"),
                           rng.integers(0, 2, 400), classes=2)
    assert 0.35 < acc < 0.65


def test_bad_protocol():
    f, y = blobs(20)
    with pytest.raises(ValueError, match="protocol"):
        train_classifier(f, y, f, y, protocol="long")


def class_images(n, seed=0):
    """Two classes of 16x16 images: bright top vs bright bottom."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 60, (n, 16, 16, 3))
    x[y == 0, :8] += 150
    x[y == 1, 8:] += 150
    return x.astype("uint8"), y


def test_linear_probe_and_callback(tmp_path):
    model = tiny(infomin_weight=0.0)
    model.compile(optimizer="adam")
    train, test = class_images(200), class_images(100, seed=1)
    acc = linear_probe(model, train, test, classes=2)
    assert set(acc) == {"conv", "fc", "R"}
    assert acc["conv"] > 0.9  # even a random trunk separates this
    probe = LinearProbe(train, test, every=2, layers=("conv", "R"), classes=2)
    log = str(tmp_path / "log.csv")
    hist = model.fit(train[0], batch_size=20, epochs=2, verbose=0,
                     callbacks=[probe, keras.callbacks.CSVLogger(log)])
    assert "probe_conv" in hist.history and "probe_R" in hist.history
    assert probe.history[0]["epoch"] == 2
    cols = read_log(log)
    assert np.isnan(cols["probe_conv"][0]) and cols["probe_conv"][1] > 0.9
    png = plot_mi_vs_accuracy({"dim": log}, str(tmp_path / "fig.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 5000
    with pytest.raises(ValueError, match="every"):
        LinearProbe(train, test, every=0)


def test_mi_terms_and_probe_reach_tensorboard(tmp_path):
    import tensorflow as tf

    model = tiny(infomin_weight=1.0)
    model.compile(optimizer="adam", discriminator_optimizer="adam")
    train, test = class_images(60), class_images(40, seed=1)
    logdir = str(tmp_path / "tb")
    model.fit(train[0], batch_size=20, epochs=1, verbose=0,
              callbacks=[LinearProbe(train, test, layers=("conv",), classes=2),
                         keras.callbacks.TensorBoard(logdir)])
    tags = set()
    for root, _, files in os.walk(logdir):
        for f in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, f)):
                tags.update(v.tag for v in event.summary.value)
    for tag in ("epoch_mi_R_V1", "epoch_mi_R_V2", "epoch_mi_V1_V2",
                "epoch_discriminator_objective", "epoch_objective", "epoch_probe_conv"):
        assert tag in tags, (tag, sorted(tags))


@pytest.mark.bf16
def test_probe_classifier_is_float32_under_a_mixed_policy():
    import keras

    from keras_infobal.evaluation import _make_classifier

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _make_classifier(8, 3, "mlp", seed=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(layer.compute_dtype == "float32" for layer in model.layers[1:])


def test_validation_choices_and_the_model_never_see_the_test_set():
    # The converged protocol standardizes, early-stops and restores the best epoch from the
    # training features alone: poisoned test features (NaN) and shuffled test labels leave the
    # trained classifier and its normalization bit-for-bit the same.
    f, y = blobs(260, dim=8, sep=1.0, seed=2)
    f_tr, y_tr, f_te, y_te = f[:200], y[:200], f[200:], y[200:]
    kwargs = dict(classes=3, max_epochs=5, patience=2, return_model=True)
    keras.utils.set_random_seed(0)
    acc, model, (mean, std) = train_classifier(f_tr, y_tr, f_te, y_te, **kwargs)
    poison = np.full_like(f_te, np.nan)
    shuffled = np.random.default_rng(1).permutation(y_te)
    keras.utils.set_random_seed(0)
    _, model_p, (mean_p, std_p) = train_classifier(f_tr, y_tr, poison, shuffled, **kwargs)
    for a, b in zip(model.get_weights(), model_p.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mean, mean_p)
    np.testing.assert_array_equal(std, std_p)
    # The normalization is the training features' own, by numpy ...
    np.testing.assert_allclose(mean[0], f_tr.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std[0], f_tr.std(0) + 1e-6, rtol=1e-5, atol=1e-6)
    # ... and the test accuracy is that of the returned model on the test set, scored once.
    logits = model.predict((f_te - mean) / std, verbose=0)
    assert acc == np.mean(np.argmax(logits, -1) == y_te)


def test_early_stopping_monitors_a_split_of_the_training_features(monkeypatch):
    # The validation data that fit gets are rows of the training features (never the test
    # features), a tenth of them, disjoint from the rows it trains on.
    import keras_infobal.evaluation as evaluation

    f, y = blobs(260, dim=8, seed=3)
    f_tr, y_tr, f_te, y_te = f[:200], y[:200], f[200:] + 100.0, y[200:]
    seen = {}
    real_fit = keras.Model.fit

    def spy(self, x=None, y=None, validation_data=None, callbacks=None, **kw):
        seen.update(x=np.array(x), val=np.array(validation_data[0]),
                    monitor=[c.monitor for c in callbacks
                             if isinstance(c, keras.callbacks.EarlyStopping)])
        return real_fit(self, x, y, validation_data=validation_data, callbacks=callbacks,
                        **{**kw, "epochs": 1})

    monkeypatch.setattr(keras.Model, "fit", spy)
    evaluation.train_classifier(f_tr, y_tr, f_te, y_te, classes=3)
    assert seen["monitor"] == ["val_accuracy"]
    std_tr = (f_tr - f_tr.mean(0)) / (f_tr.std(0) + 1e-6)  # by numpy
    rows = lambda a: {tuple(np.round(r, 4)) for r in a}  # noqa: E731
    assert len(seen["val"]) == 20 and len(seen["x"]) == 180
    assert rows(seen["val"]) | rows(seen["x"]) == rows(std_tr)
    assert not rows(seen["val"]) & rows(seen["x"])


def test_train_views_join_the_fitting_rows_only(monkeypatch):
    # Mirrored copies (here: each row negated, standing in for a mirrored image's features)
    # are fitted on beside their originals, but the early-stopping rows keep no copy in the
    # fitting data, and the normalization stays the originals' own.
    f, y = blobs(260, dim=8, seed=4)
    f_tr, y_tr, f_te, y_te = f[:200], y[:200], f[200:], y[200:]
    copies = -f_tr
    seen = {}
    real_fit = keras.Model.fit

    def spy(self, x=None, y=None, validation_data=None, **kw):
        seen.update(x=np.array(x), y=np.array(y), val=np.array(validation_data[0]))
        return real_fit(self, x, y, validation_data=validation_data, **{**kw, "epochs": 1})

    monkeypatch.setattr(keras.Model, "fit", spy)
    _, _, (mean, std) = train_classifier(f_tr, y_tr, f_te, y_te, classes=3,
                                         return_model=True, train_views=(copies,))
    np.testing.assert_allclose(mean[0], f_tr.mean(0), rtol=1e-5, atol=1e-6)
    rows = lambda a: {tuple(np.round(r, 4)) for r in a}  # noqa: E731
    std_tr = (f_tr - mean) / std
    std_copies = (copies - mean) / std
    val = rows(seen["val"])
    assert len(seen["x"]) == 2 * 180 and len(val) == 20 and val <= rows(std_tr)
    fitted_originals = rows(std_tr) - val
    # The fitting rows: the 180 originals outside the validation rows and exactly their
    # copies, each with its original's label.
    index = {tuple(np.round(r, 4)): i for i, r in enumerate(std_tr)}
    twins = {tuple(np.round(std_copies[index[r]], 4)) for r in fitted_originals}
    assert rows(seen["x"]) == fitted_originals | twins
    label = {tuple(np.round(r, 4)): y_tr[i] for i, r in enumerate(std_copies)}
    label.update({k: y_tr[i] for k, i in index.items()})
    assert all(label[tuple(np.round(r, 4))] == t for r, t in zip(seen["x"], seen["y"]))
    with pytest.raises(ValueError, match="row-aligned with `f_train`"):
        train_classifier(f_tr, y_tr, f_te, y_te, classes=3, train_views=(copies[:10],))


def test_augmented_copies_are_the_mirror_then_seeded_mirrored_shifts():
    from keras_infobal.evaluation import augmented_copies

    x = np.random.default_rng(5).integers(0, 256, (12, 16, 16, 3)).astype(np.uint8)
    copies = augmented_copies(x, 3, batch_size=5)
    assert len(copies) == 3 and all(c.dtype == np.uint8 and c.shape == x.shape for c in copies)
    np.testing.assert_array_equal(copies[0], x[:, :, ::-1])
    # Each later copy: the image or its mirror shifted by at most 2 pixels (12.5% of 16),
    # borders mirrored (numpy's "symmetric" pad), and the draws repeat.
    for copy in copies[1:]:
        for a, b in zip(x, copy):
            hits = [(dy, dx, f) for f in (a, a[:, ::-1])
                    for padded in [np.pad(f, ((2, 2), (2, 2), (0, 0)), mode="symmetric")]
                    for dy in range(5) for dx in range(5)
                    if np.array_equal(padded[dy:dy + 16, dx:dx + 16], b)]
            assert hits
    np.testing.assert_array_equal(augmented_copies(x, 3, batch_size=5)[2], copies[2])
    assert not np.array_equal(copies[1], copies[2])
    assert augmented_copies(x, 0) == []
    with pytest.raises(ValueError, match="uint8 images"):
        augmented_copies(x.astype("float32"), 1)
