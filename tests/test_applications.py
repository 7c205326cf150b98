import os

import keras
import numpy as np
import pytest

from helpers import CIFAR_TAR, infomax_critics, infomin_critics
from keras_infobal.applications import InfoBalCIFAR, decode_predictions
from keras_infobal import InfoBal, InfoBalBackbone
from keras_infobal.applications import infobal_cifar
from keras_infobal.models import presets

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
    top = InfoBalCIFAR(weights=None, feature_layer="local", preset="dim")
    assert top.get_layer("predictions").kernel.shape == (8 * 8 * 128, 10)
    top = InfoBalCIFAR(weights=None, feature_layer="local", preset="dim_pairs_long")
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
    with pytest.raises(ValueError, match="No preset 'simclr'"):
        InfoBalCIFAR(weights=None, preset="simclr")
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


def _write_preset(folder, backbone, feature_layer="conv", head="linear", val=0.5, test=0.1,
                  task=None, seed=0):
    """A preset folder as export_weights.py writes it: backbone (or the whole task, critics
    included), a classifier head of random weights on `feature_layer`, metadata."""
    keras.utils.set_random_seed(seed)
    if task is not None:
        task.save_to_preset(folder)
    else:
        backbone.save_to_preset(folder)
    shape = backbone.aggregator.feature_shapes(
        backbone.encoder.compute_output_shape((None,) + backbone.image_shape))
    dim = (int(np.prod(backbone.encoder.compute_output_shape((1,) + backbone.image_shape)[1:]))
           if feature_layer == "local" else shape[feature_layer][1])
    _, layers = infobal_cifar._top(keras.Input((dim,)), 10, "softmax", head)
    presets.save_layers(os.path.join(folder, presets.CLASSIFIER_FILE),
                        [layer for layer in layers if layer.weights])
    presets.write_metadata(folder, name=os.path.basename(folder), validation_accuracy=val,
                           test_accuracy=test, command="none",
                           classifier={"feature_layer": feature_layer, "head": head,
                                       "classes": 10})
    return {layer.name: layer for layer in layers}


@pytest.fixture
def builtin_dir(tmp_path, monkeypatch):
    """An empty built-in preset folder, so tests write their own presets."""
    folder = tmp_path / "presets"
    folder.mkdir()
    monkeypatch.setattr(presets, "BUILTIN_DIR", str(folder))
    return folder


@pytest.fixture
def fake_dim(builtin_dir):
    backbone = InfoBalBackbone(image_shape=(32, 32, 3), name="backbone")
    head = _write_preset(str(builtin_dir / "dim"), backbone)
    return backbone, head


def test_default_is_the_best_preset_on_validation(builtin_dir):
    backbone = InfoBalBackbone(filters=(8, 16), conv_filters=8, fc_units=16, output_dim=4,
                               image_shape=(32, 32, 3))
    # Validation decides, never the test accuracy.
    for name, val, test in (("a", 0.6, 0.9), ("b", 0.7, 0.2), ("c", 0.65, 0.95)):
        _write_preset(str(builtin_dir / name), backbone, val=val, test=test)
    (builtin_dir / "not_a_preset").mkdir()
    assert presets.list_presets() == ["a", "b", "c"]
    assert presets.default_preset() == "b"
    with pytest.raises(ValueError, match=r"No preset 'z'.*\['a', 'b', 'c'\]"):
        presets.preset_folder("z")
    with pytest.raises(ValueError, match="no metadata.json"):
        presets.preset_folder(str(builtin_dir / "not_a_preset"))


def test_preset_architecture_is_data(builtin_dir):
    """A preset with another split and M builds that architecture without new code."""
    backbone = InfoBalBackbone(num_views=4, split="grid", filters=(8, 16), conv_filters=32,
                               fc_units=64, image_shape=(32, 32, 3))
    head = _write_preset(str(builtin_dir / "grid4"), backbone, feature_layer="fc")
    model = InfoBalCIFAR(preset="grid4")
    enc = model.get_layer("view_encoder")
    assert (enc.num_views, enc.split) == (4, "grid")
    fc = backbone.extract_features(IMAGES, layers=("fc",))["fc"]
    w, b = head["predictions"].get_weights()
    logits = fc @ w + b
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(model.predict(IMAGES, verbose=0),
                               expected / expected.sum(-1, keepdims=True), atol=1e-5)


def test_preset_files_are_hash_checked(fake_dim, builtin_dir):
    backbone, _ = fake_dim
    loaded = InfoBalCIFAR(preset="dim", include_top=False, feature_layer="fc")
    np.testing.assert_allclose(loaded.predict(IMAGES, verbose=0),
                               backbone.extract_features(IMAGES, layers=("fc",))["fc"],
                               atol=1e-5)
    with pytest.raises(ValueError, match="reads the 'conv' features"):
        InfoBalCIFAR(preset="dim", feature_layer="fc")
    path = str(builtin_dir / "dim" / presets.WEIGHTS_FILE)
    with open(path, "r+b") as f:  # flip one byte
        f.seek(os.path.getsize(path) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ValueError, match="does not match its recorded sha256"):
        InfoBalCIFAR(preset="dim")
    with pytest.raises(ValueError, match="does not match its recorded sha256"):
        InfoBalBackbone.from_preset("dim")
    os.remove(path)
    with pytest.raises(ValueError, match="is missing"):
        InfoBalCIFAR(preset="dim")
    with pytest.raises(ValueError, match="No preset 'infobal'"):
        InfoBalCIFAR(preset="infobal")


def test_fine_tune_workflow(fake_dim):
    keras.utils.set_random_seed(0)
    encoder = InfoBalCIFAR(preset="dim", include_top=False, feature_layer="fc")
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


@pytest.mark.parametrize("name", SHIPPED or ["none"])
def test_real_shipped_presets(name):
    if not SHIPPED:
        pytest.skip("no built-in presets")
    folder = presets.checked_folder(name)  # checks every file's hash
    assert sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) < 20 * 2**20
    metadata = presets.load_metadata(name)
    for key in ("validation_accuracy", "test_accuracy", "command", "versions", "classifier"):
        assert key in metadata, key
    model = InfoBalCIFAR(preset=name)
    assert model.output_shape == (None, 10)


@pytest.mark.data
@pytest.mark.parametrize("name", SHIPPED or ["none"])
def test_shipped_classifier_on_500_real_test_images(name):
    if not SHIPPED:
        pytest.skip("no built-in presets")
    if not os.path.exists(CIFAR_TAR):
        pytest.skip(f"{CIFAR_TAR} is absent: the real CIFAR-10 copy lives in ../shared/data")
    from keras_infobal.datasets import load_cifar10

    x, y, _ = load_cifar10("test", source=CIFAR_TAR)
    idx = np.random.default_rng(0).permutation(len(x))[:500]
    probs = InfoBalCIFAR(preset=name).predict(x[idx], batch_size=250, verbose=0)
    acc = float(np.mean(probs.argmax(-1) == y[idx]))
    # Chance is 0.10. The floor is the accuracy recorded on the full test set (README table)
    # less 5 points: a 500-image sample has a standard error of ~2.2 points.
    floor = presets.load_metadata(name)["test_accuracy"] - 0.05
    assert floor > 0.45
    assert acc > floor, (acc, floor)


def test_from_preset_continues_pretraining_with_the_shipped_critics(builtin_dir):
    import warnings

    keras.utils.set_random_seed(1)
    backbone = InfoBalBackbone(filters=(8, 16), conv_filters=8, fc_units=16, output_dim=4,
                               image_shape=(32, 32, 3))
    source = InfoBal(backbone, critic="jsd", critic_units=16, infomin_weight=0.5)
    _write_preset(str(builtin_dir / "p"), backbone, task=source)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # everything is shipped: no warning
        model = InfoBal.from_preset("p")
    assert model.objective_config() == source.objective_config()
    assert model.backbone.get_config() == backbone.get_config()
    for a, b in zip(model.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  discriminator_optimizer=keras.optimizers.Adam(1e-3))
    before = [w.copy() for w in model.backbone.get_weights()]
    model.fit(IMAGES, batch_size=4, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.backbone.get_weights()))

    # Another InfoMin estimator: the backbone and InfoMax critics still come along.
    fresh = r"InfoBal.from_preset\('p'\): the critics {} start from a random initialization"
    with pytest.warns(UserWarning, match=fresh.format(r"\['infomin_critics'\]")):
        club = InfoBal.from_preset("p", infomin_critic="club")
    with pytest.warns(UserWarning, match=fresh.format(r"\['infomin_critics'\]")):
        narrow = InfoBal.from_preset("p", infomin_units=8)  # another width: fresh critics
    assert infomin_critics(narrow).units == 8
    # Another InfoMax width: its critics start fresh, and so do the InfoMin critics, whose
    # width follows critic_units.
    with pytest.warns(UserWarning, match=fresh.format(
            r"\['infomax_critic_1', 'infomax_critic_2', 'infomin_critics'\]")):
        wide = InfoBal.from_preset("p", critic_units=32)
    assert infomax_critics(wide)[0].units == 32
    for m in (narrow, club):
        for c, c_source in zip(infomax_critics(m), infomax_critics(source), strict=True):
            for a, b in zip(c.get_weights(), c_source.get_weights(), strict=True):
                np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"objective overrides.*got \['num_views'\].*"
                                         r"InfoBal\(backbone=InfoBalBackbone"):
        InfoBal.from_preset("p", num_views=4)
    with pytest.raises(ValueError, match=r"got \['backbone_overrides'\]"):  # no longer exists
        InfoBal.from_preset("p", backbone_overrides={"num_views": 4})
    with open(builtin_dir / "p" / presets.CRITICS_FILE, "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="sha256"):
        InfoBal.from_preset("p")


def test_backbone_only_preset_starts_critics_fresh(fake_dim):
    with pytest.warns(UserWarning, match=r"the critics \['infomax_critic_1', "
                                         r"'infomax_critic_2', 'infomin_critics'\] start from "
                                         r"a random initialization"):
        model = InfoBal.from_preset("dim", critic_units=16, infomin_weight=0.0)
    backbone, _ = fake_dim
    for a, b in zip(model.backbone.get_weights(), backbone.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_mlp_head_preset_is_dims_evaluation_classifier(builtin_dir):
    """A preset with head "mlp" builds DIM's classifier (dense 200, BN, dropout, ReLU, dense)
    on its feature layer; checked against the same computation in numpy."""
    rng = np.random.default_rng(1)
    backbone = InfoBalBackbone(image_shape=(32, 32, 3))
    folder = str(builtin_dir / "mlp")
    head = _write_preset(folder, backbone, feature_layer="fc", head="mlp")
    bn = head["head_bn"]
    # Non-trivial BatchNorm statistics, so an inference-mode mistake shows.
    bn.set_weights([rng.uniform(0.5, 2, 200), rng.normal(0, 1, 200), rng.normal(0, 1, 200),
                    rng.uniform(0.5, 2, 200)])
    presets.save_layers(os.path.join(folder, presets.CLASSIFIER_FILE),
                        [layer for layer in head.values() if layer.weights])
    presets.write_metadata(folder)
    model = InfoBalCIFAR(preset="mlp")
    assert [layer.name for layer in model.layers[-5:]] == [
        "head_dense", "head_bn", "head_dropout", "head_relu", "predictions"]
    f = np.asarray(backbone.extract_features(IMAGES, layers=("fc",))["fc"], "float64")
    w1, b1 = head["head_dense"].get_weights()
    gamma, beta, mu, var = bn.get_weights()
    w2, b2 = head["predictions"].get_weights()
    h = np.maximum((f @ w1 + b1 - mu) / np.sqrt(var + 1e-3) * gamma + beta, 0)
    logits = h @ w2 + b2
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(model.predict(IMAGES, verbose=0), expected, atol=1e-4)
    presets.write_metadata(folder, classifier={"feature_layer": "fc", "head": "svm",
                                               "classes": 10})
    with pytest.raises(ValueError, match=r"`head` must be one of \('linear', 'mlp'\)"):
        InfoBalCIFAR(preset="mlp")


def test_fold_standardization_matches_standardize_then_dense():
    from keras_infobal.evaluation import fold_standardization

    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, (6, 5))
    mean, std = rng.normal(0, 1, (1, 5)), rng.uniform(0.5, 2, (1, 5))
    w, b = rng.normal(0, 1, (5, 4)), rng.normal(0, 1, 4)
    wf, bf = fold_standardization(w, b, mean, std)
    np.testing.assert_allclose(x @ wf + bf, ((x - mean) / std) @ w + b, atol=1e-12)


def test_unfreeze_keeps_batch_norm_frozen_unless_asked():
    from keras_infobal.applications import unfreeze
    from keras_infobal.models.keras_seams import all_layers

    for batch_norm in (False, True):
        encoder = InfoBalCIFAR(include_top=False, feature_layer="conv", weights=None)
        encoder.trainable = False
        assert unfreeze(encoder, batch_norm=batch_norm) is encoder
        norms = [la for la in all_layers(encoder)
                 if isinstance(la, keras.layers.BatchNormalization)]
        assert norms and all(la.trainable == batch_norm for la in norms)
        kernels = [w for w in encoder.trainable_weights if w.path.endswith("kernel")]
        assert kernels and encoder.trainable
        gammas = [w for w in encoder.trainable_weights if w.path.endswith("gamma")]
        assert bool(gammas) == batch_norm
