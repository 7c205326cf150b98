import os
import shutil

import keras
import numpy as np
import pytest

from helpers import CIFAR_TAR
from keras_infobal.applications import InfoBalCIFAR, decode_predictions
from keras_infobal.applications import presets
from keras_infobal.applications import infobal_cifar

IMAGES = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")


@pytest.mark.parametrize("feature_layer,dim", [("conv", 4096), ("fc", 1024), ("R", 64)])
def test_feature_models(feature_layer, dim):
    model = InfoBalCIFAR(include_top=False, weights=None, feature_layer=feature_layer)
    assert model.predict(IMAGES, verbose=0).shape == (4, dim)


@pytest.mark.parametrize("pooling,shape", [(None, (4, 8, 8, 128)), ("avg", (4, 128)),
                                           ("max", (4, 128))])
def test_local_map_and_pooling(pooling, shape):
    model = InfoBalCIFAR(include_top=False, weights=None, feature_layer="local", pooling=pooling)
    assert model.predict(IMAGES, verbose=0).shape == shape


def test_local_map_is_the_encoders_map():
    model = InfoBalCIFAR(include_top=False, weights=None, feature_layer="local")
    enc = model.get_layer("view_encoder")
    np.testing.assert_allclose(model.predict(IMAGES, verbose=0),
                               np.asarray(enc.local_map(IMAGES)), atol=1e-5)
    # Flattened under the top: the linear head of "dim", the first layer of an mlp head.
    top = InfoBalCIFAR(weights=None, feature_layer="local", variant="dim")
    assert top.get_layer("predictions").kernel.shape == (8 * 8 * 128, 10)
    top = InfoBalCIFAR(weights=None, feature_layer="local", variant="dim_pairs_long")
    assert top.get_layer("head_dense").kernel.shape == (8 * 8 * 128, 200)


def test_top_classes_activation_input_tensor_and_name():
    model = InfoBalCIFAR(weights=None, classes=5, classifier_activation=None, name="mine")
    assert model.name == "mine"
    logits = model.predict(IMAGES, verbose=0)
    assert logits.shape == (4, 5)
    assert not np.allclose(logits.sum(-1), 1.0)
    probs = InfoBalCIFAR(weights=None).predict(IMAGES, verbose=0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    inp = keras.Input((32, 32, 3))
    model = InfoBalCIFAR(weights=None, include_top=False, input_tensor=inp)
    assert model.inputs[0] is inp
    model = InfoBalCIFAR(weights=None, include_top=False, input_shape=(64, 64, 3))
    assert model.predict(np.zeros((2, 64, 64, 3), "uint8"), verbose=0).shape == (2, 4 * 8 * 2 * 256)


def test_bad_arguments():
    with pytest.raises(ValueError, match="`classes` should be 10"):
        InfoBalCIFAR(weights="cifar10", include_top=True, classes=5)
    with pytest.raises(ValueError, match="does not exist"):
        InfoBalCIFAR(weights="imagenet")
    with pytest.raises(ValueError, match="does not exist"):
        InfoBalCIFAR(weights="/no/such/file.weights.h5")
    with pytest.raises(ValueError, match="`weights` argument should be either"):
        InfoBalCIFAR(weights=3)
    with pytest.raises(ValueError, match="variant"):
        InfoBalCIFAR(weights=None, variant="simclr")
    with pytest.raises(ValueError, match="feature_layer"):
        InfoBalCIFAR(weights=None, feature_layer="logits")
    with pytest.raises(ValueError, match="pooling"):
        InfoBalCIFAR(weights=None, include_top=False, feature_layer="fc", pooling="avg")
    with pytest.raises(ValueError, match="pooling"):
        InfoBalCIFAR(weights=None, pooling="mean")
    with pytest.raises(ValueError, match="input_shape"):
        InfoBalCIFAR(weights=None, input_shape=(32, 32))


def test_decode_predictions():
    probs = np.zeros((2, 10))
    probs[0, 3], probs[0, 5] = 0.7, 0.3
    probs[1, 9] = 1.0
    top = decode_predictions(probs, top=2)
    assert top[0] == [(3, "cat", 0.7), (5, "dog", 0.3)]
    assert top[1][0] == (9, "truck", 1.0)
    with pytest.raises(ValueError, match=r"\(samples, 10\)"):
        decode_predictions(np.zeros((2, 1000)))


def test_weights_from_a_path_round_trip(tmp_path):
    model = InfoBalCIFAR(weights=None, include_top=False, feature_layer="fc")
    path = str(tmp_path / "mine.weights.h5")
    model.save_weights(path)
    clone = InfoBalCIFAR(weights=path, include_top=False, feature_layer="fc")
    np.testing.assert_allclose(clone.predict(IMAGES, verbose=0), model.predict(IMAGES, verbose=0),
                               atol=1e-6)


def test_bad_weights_files(tmp_path):
    model = InfoBalCIFAR(weights=None)
    good = str(tmp_path / "good.weights.h5")
    model.save_weights(good)
    truncated = str(tmp_path / "truncated.weights.h5")
    with open(good, "rb") as f, open(truncated, "wb") as g:
        g.write(f.read()[:2000])
    with pytest.raises(ValueError, match="truncated|not a readable HDF5"):
        InfoBalCIFAR(weights=truncated)
    text = tmp_path / "notes.weights.h5"
    text.write_text("not weights")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        InfoBalCIFAR(weights=str(text))
    keras_file = str(tmp_path / "model.keras")
    model.save(keras_file)
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        InfoBalCIFAR(weights=keras_file)
    with pytest.raises(ValueError, match="same arguments"):
        InfoBalCIFAR(weights=good, classes=7)
    # Nothing was written to the files given as weights.
    assert os.path.getsize(truncated) == 2000 and text.read_text() == "not weights"


def _fake_preset(name, weights_file, digest, feature_layer="conv", val=0.5, test=0.1,
                 pretraining=None):
    return {"name": name, "description": "test", "backbone": dict(presets.DEFAULT_BACKBONE),
            "pretraining_config": {"critic": "jsd", "critic_units": 16, "infomin_weight": 0.0},
            "weights": {"file": weights_file, "sha256": digest},
            "pretraining_weights": pretraining, "feature_layer": feature_layer,
            "validation_accuracy": val, "test_accuracy": test, "command": "none"}


@pytest.fixture
def fake_shipped(tmp_path, monkeypatch):
    """A preset pointing at a freshly saved weights file in a temp weights folder."""
    full = infobal_cifar.canonical_model("conv")
    wdir = tmp_path / "weights"
    wdir.mkdir()
    path = str(wdir / "dim_cifar10.weights.h5")
    full.save_weights(path)
    model = InfoBalCIFAR(weights=None, variant="dim")
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())
    monkeypatch.setattr(presets, "WEIGHTS_DIR", str(wdir))
    presets.write_preset(_fake_preset("dim", "dim_cifar10.weights.h5", presets.sha256(path)))
    return model, path


def test_default_is_the_best_preset_on_validation(tmp_path, monkeypatch):
    monkeypatch.setattr(presets, "WEIGHTS_DIR", str(tmp_path))
    # Validation decides, never the test accuracy.
    presets.write_preset(_fake_preset("a", "a.weights.h5", "0", val=0.6, test=0.9))
    presets.write_preset(_fake_preset("b", "b.weights.h5", "0", val=0.7, test=0.2))
    presets.write_preset(_fake_preset("c", "c.weights.h5", "0", val=0.65, test=0.95))
    assert presets.list_presets() == ["a", "b", "c"]
    assert presets.default_preset() == "b"
    with pytest.raises(ValueError, match=r"available: \['a', 'b', 'c'\]"):
        presets.get_preset("z")
    broken = dict(_fake_preset("d", "d.weights.h5", "0"))
    del broken["command"]
    with pytest.raises(ValueError, match="command"):
        presets.write_preset(broken)


def test_preset_architecture_is_data(fake_shipped, tmp_path):
    """A preset with another split and M builds that architecture without new code."""
    wdir = presets.WEIGHTS_DIR
    backbone = dict(presets.DEFAULT_BACKBONE, num_views=4, split="grid", fc_units=64,
                    conv_filters=32, filters=[8, 16])
    full = infobal_cifar.canonical_model("fc", backbone=backbone)
    path = os.path.join(wdir, "grid4.weights.h5")
    full.save_weights(path)
    preset = _fake_preset("grid4", "grid4.weights.h5", presets.sha256(path), "fc")
    preset["backbone"] = backbone
    presets.write_preset(preset)
    model = InfoBalCIFAR(variant="grid4")
    enc = model.get_layer("view_encoder")
    assert (enc.num_views, enc.split) == (4, "grid")
    np.testing.assert_allclose(model.predict(IMAGES, verbose=0),
                               full.predict(IMAGES, verbose=0)[0], atol=1e-6)


def test_shipped_weights_are_hash_checked(fake_shipped):
    model, path = fake_shipped
    loaded = InfoBalCIFAR(variant="dim")
    np.testing.assert_allclose(loaded.predict(IMAGES, verbose=0), model.predict(IMAGES, verbose=0),
                               atol=1e-6)
    # Feature models reuse the shipped encoder (no head).
    feats = InfoBalCIFAR(variant="dim", include_top=False, feature_layer="fc")
    np.testing.assert_allclose(
        feats.get_layer("view_encoder").get_weights()[0],
        model.get_layer("view_encoder").get_weights()[0])
    with pytest.raises(ValueError, match="reads the 'conv' features"):
        InfoBalCIFAR(variant="dim", feature_layer="fc")
    with open(path, "r+b") as f:  # flip one byte
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="does not match its recorded sha256"):
        InfoBalCIFAR(variant="dim")
    os.remove(path)
    with pytest.raises(FileNotFoundError, match="reinstall"):
        InfoBalCIFAR(variant="dim")
    with pytest.raises(ValueError, match="No shipped CIFAR-10 preset"):
        InfoBalCIFAR(variant="infobal")


def test_fine_tune_workflow(fake_shipped):
    keras.utils.set_random_seed(0)
    encoder = InfoBalCIFAR(variant="dim", include_top=False, feature_layer="fc")
    encoder.trainable = False
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(3, activation="softmax")(encoder(inputs))
    clf = keras.Model(inputs, outputs)
    clf.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
    x = np.repeat(IMAGES[:3], 4, axis=0)
    y = np.repeat(np.arange(3), 4)
    frozen = [w.copy() for w in encoder.get_weights()]
    clf.fit(x, y, epochs=20, batch_size=12, verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(frozen, encoder.get_weights()))
    assert clf.evaluate(x, y, verbose=0)[1] == 1.0
    encoder.trainable = True  # then unfreeze with a low learning rate
    clf.compile(keras.optimizers.Adam(1e-5), "sparse_categorical_crossentropy")
    clf.fit(x, y, epochs=1, batch_size=12, verbose=0)
    assert not all(np.array_equal(a, b) for a, b in zip(frozen, encoder.get_weights()))


SHIPPED = presets.list_presets()


@pytest.mark.parametrize("variant", SHIPPED or ["none"])
def test_real_shipped_weights(variant):
    if not SHIPPED:
        pytest.skip("no shipped weights registered")
    path = presets.checked_path(variant)  # checks the hash
    assert os.path.getsize(path) < 15 * 2**20
    model = InfoBalCIFAR(variant=variant)
    assert model.output_shape == (None, 10)


@pytest.mark.data
@pytest.mark.parametrize("variant", SHIPPED or ["none"])
def test_shipped_classifier_on_500_real_test_images(variant):
    if not SHIPPED:
        pytest.skip("no shipped weights registered")
    if not os.path.exists(CIFAR_TAR):
        pytest.skip(f"{CIFAR_TAR} is absent: the real CIFAR-10 copy lives in ../shared/data")
    from keras_infobal.datasets import load_cifar10

    x, y, _ = load_cifar10("test", source=CIFAR_TAR)
    idx = np.random.default_rng(0).permutation(len(x))[:500]
    probs = InfoBalCIFAR(variant=variant).predict(x[idx], batch_size=250, verbose=0)
    acc = float(np.mean(probs.argmax(-1) == y[idx]))
    # Chance is 0.10. The floor is the accuracy recorded on the full test set (README table)
    # less 5 points: a 500-image sample has a standard error of ~2.2 points.
    floor = presets.get_preset(variant)["test_accuracy"] - 0.05
    assert floor > 0.45
    assert acc > floor, (acc, floor)


def test_from_preset_continues_pretraining_with_the_shipped_critics(tmp_path, monkeypatch):
    import warnings

    from keras_infobal import InfoBal

    monkeypatch.setattr(presets, "WEIGHTS_DIR", str(tmp_path))
    cfg = {"critic": "jsd", "critic_units": 16, "infomin_weight": 0.5,
           "input_shape": [32, 32, 3]}
    keras.utils.set_random_seed(1)
    source = InfoBal(**cfg)
    full_path = str(tmp_path / "p_pretraining.weights.h5")
    source.save_weights(full_path)
    head = infobal_cifar.canonical_model("conv")
    head_path = str(tmp_path / "p.weights.h5")
    head.save_weights(head_path)
    preset = _fake_preset("p", "p.weights.h5", presets.sha256(head_path),
                          pretraining={"file": "p_pretraining.weights.h5",
                                       "sha256": presets.sha256(full_path)})
    preset["pretraining_config"] = cfg
    presets.write_preset(preset)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # everything is shipped: no warning
        model = InfoBal.from_preset("p")
    for a, b in zip(model.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  discriminator_optimizer=keras.optimizers.Adam(1e-3))
    before = [w.copy() for w in model.encoder.get_weights()]
    model.fit(IMAGES, batch_size=4, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.encoder.get_weights()))

    # Another InfoMin estimator: encoder, aggregator and InfoMax critics still come along.
    with pytest.warns(UserWarning, match="InfoMin critics"):
        club = InfoBal.from_preset("p", infomin_critic="club")
    with pytest.warns(UserWarning, match="InfoMin critics"):
        narrow = InfoBal.from_preset("p", infomin_units=8)  # another width: fresh critics
    assert narrow.infomin_critics.units == 8
    for a, b in zip(narrow.infomax_critics[0].get_weights(),
                    source.infomax_critics[0].get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(club.infomax_critics[0].get_weights(),
                    source.infomax_critics[0].get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="architecture"):
        InfoBal.from_preset("p", num_views=4)
    with open(full_path, "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="sha256"):
        InfoBal.from_preset("p")


def test_mlp_head_preset_is_dims_evaluation_classifier(fake_shipped):
    """A preset with head "mlp" builds DIM's classifier (dense 200, BN, dropout, ReLU, dense)
    on its feature layer; checked against the same computation in numpy."""
    rng = np.random.default_rng(1)
    full = infobal_cifar.canonical_model("fc", head="mlp")
    bn = full.get_layer("head_bn")
    # Non-trivial BatchNorm statistics, so an inference-mode mistake shows.
    bn.set_weights([rng.uniform(0.5, 2, 200), rng.normal(0, 1, 200), rng.normal(0, 1, 200),
                    rng.uniform(0.5, 2, 200)])
    path = os.path.join(presets.WEIGHTS_DIR, "mlp.weights.h5")
    full.save_weights(path)
    preset = _fake_preset("mlp", "mlp.weights.h5", presets.sha256(path), "fc")
    preset["head"] = "mlp"
    presets.write_preset(preset)
    model = InfoBalCIFAR(variant="mlp")
    assert [layer.name for layer in model.layers[-5:]] == [
        "head_dense", "head_bn", "head_dropout", "head_relu", "predictions"]
    feats = InfoBalCIFAR(variant="mlp", include_top=False, feature_layer="fc")
    f = np.asarray(feats.predict(IMAGES, verbose=0), "float64")
    w1, b1 = full.get_layer("head_dense").get_weights()
    gamma, beta, mu, var = bn.get_weights()
    w2, b2 = full.get_layer("predictions").get_weights()
    h = np.maximum((f @ w1 + b1 - mu) / np.sqrt(var + 1e-3) * gamma + beta, 0)
    logits = h @ w2 + b2
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(model.predict(IMAGES, verbose=0), expected, atol=1e-4)
    preset["head"] = "svm"
    presets.write_preset(dict(preset, name="bad"))
    with pytest.raises(ValueError, match=r"`head` must be one of \('linear', 'mlp'\)"):
        InfoBalCIFAR(variant="bad")


def test_fold_standardization_matches_standardize_then_dense():
    from keras_infobal.evaluation import fold_standardization

    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, (6, 5))
    mean, std = rng.normal(0, 1, (1, 5)), rng.uniform(0.5, 2, (1, 5))
    w, b = rng.normal(0, 1, (5, 4)), rng.normal(0, 1, 4)
    wf, bf = fold_standardization(w, b, mean, std)
    np.testing.assert_allclose(x @ wf + bf, ((x - mean) / std) @ w + b, atol=1e-12)
