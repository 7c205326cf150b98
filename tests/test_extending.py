"""Extending: a registered split, and ViewEncoder with another backbone."""

import keras
import numpy as np
import pytest

from helpers import infomax_critics, infomin_critics, tiny

from keras_infobal import ViewEncoder
from keras_infobal.layers import view_encoder as ve

IMAGES = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)).astype("uint8")


@pytest.fixture
def diagonal_split():
    """A new split in one registered function pair: the two diagonal quadrants as views."""

    def shape(h, w, c, m):
        if m != 2:
            raise ValueError("split='diagonal' makes exactly 2 views; use num_views=2.")
        return h // 2, w // 2, c

    def cut(fmap, m, vh, vw, c):
        return keras.ops.stack([fmap[:, :vh, :vw], fmap[:, vh:, vw:]], axis=1)

    ve.register_split("diagonal", shape, cut)
    yield "diagonal"
    del ve.SPLIT_REGISTRY["diagonal"]


def test_a_registered_split_is_used_by_the_encoder(diagonal_split):
    enc = ViewEncoder(num_views=2, split="diagonal", filters=(8, 16))
    views = keras.ops.convert_to_numpy(enc(IMAGES))
    fmap = keras.ops.convert_to_numpy(enc.local_map(IMAGES))  # 4x4x16 map
    assert views.shape == (4, 2, 2, 2, 16)
    np.testing.assert_allclose(views[:, 0], fmap[:, :2, :2], atol=1e-6)
    np.testing.assert_allclose(views[:, 1], fmap[:, 2:, 2:], atol=1e-6)
    with pytest.raises(ValueError, match="exactly 2 views"):
        ViewEncoder(num_views=4, split="diagonal").build((None, 16, 16, 3))
    with pytest.raises(ValueError, match="register_split"):
        ViewEncoder(split="spiral")


def test_one_view_of_a_registered_split_is_the_whole_map(diagonal_split):
    # M = 1 never cuts: the diagonal cut (which always makes 2 views) is not called.
    enc = ViewEncoder(num_views=1, split="diagonal", filters=(4, 8))
    views = keras.ops.convert_to_numpy(enc(IMAGES))
    assert views.shape == (4, 1, 4, 4, 8)
    np.testing.assert_allclose(views[:, 0], keras.ops.convert_to_numpy(enc.local_map(IMAGES)),
                               atol=1e-6)


def _backbone():
    return keras.Sequential([keras.layers.Conv2D(12, 3, strides=2, padding="same"),
                             keras.layers.ReLU(),
                             keras.layers.Conv2D(20, 3, strides=2, padding="same")],
                            name="trunk")


def test_any_backbone_that_returns_a_feature_map():
    keras.utils.set_random_seed(0)
    backbone = _backbone()
    enc = ViewEncoder(num_views=4, split="grid", backbone=backbone)
    views = keras.ops.convert_to_numpy(enc(IMAGES))
    assert views.shape == (4, 4, 2, 2, 20)
    # The views are the backbone's map of the rescaled images, cut into quadrants.
    fmap = keras.ops.convert_to_numpy(backbone(IMAGES.astype("float32") / 127.5 - 1.0))
    np.testing.assert_allclose(views[:, 0], fmap[:, :2, :2], atol=1e-5)
    np.testing.assert_allclose(views[:, 3], fmap[:, 2:, 2:], atol=1e-5)
    assert enc.compute_output_shape((None, 16, 16, 3)) == (None, 4, 2, 2, 20)


def test_backbone_encoder_round_trips_and_separate_trunks_have_their_own_weights(tmp_path):
    enc = ViewEncoder(num_views=2, split="separate", backbone=_backbone())
    views = keras.ops.convert_to_numpy(enc(IMAGES))
    assert views.shape == (4, 2, 4, 4, 20)
    assert not np.allclose(views[:, 0], views[:, 1])  # two trunks, two initializations
    again = ViewEncoder.from_config(enc.get_config())
    again.build((None, 16, 16, 3))
    again.set_weights(enc.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(IMAGES)), views, atol=1e-6)
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, enc(inputs))
    path = str(tmp_path / "enc.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(IMAGES, verbose=0), views, atol=1e-6)


def test_backbone_map_shape_of_non_square_images():
    enc = ViewEncoder(num_views=2, split="columns", backbone=_backbone())
    assert enc.map_shape((None, 16, 8, 3)) == (4, 2, 20)  # two stride-2 convolutions
    assert enc.compute_output_shape((None, 16, 8, 3)) == (None, 2, 4, 1, 20)
    assert tuple(enc(IMAGES[:, :, :8]).shape) == (4, 2, 4, 1, 20)
    # Any backbone takes images down to 1x1 pixels (the trunk decides what it needs).
    assert ViewEncoder(num_views=1, backbone=_backbone()).view_shape((None, 1, 1, 3)) == (
        1, 1, 20)


def test_backbone_encoder_build_builds_every_trunk():
    one = _backbone()
    one.build((None, 16, 16, 3))
    per_trunk = len(one.weights)
    assert per_trunk == 4  # two convolutions, kernel and bias each
    enc = ViewEncoder(num_views=2, split="separate", backbone=_backbone())
    enc.build((None, 16, 16, 3))
    assert [t[0].built for t in enc.trunks] == [True, True]
    assert len(enc.weights) == 2 * per_trunk


def test_bad_backbones_say_what_is_expected():
    with pytest.raises(ValueError, match="Keras layer or model"):
        ViewEncoder(backbone=lambda x: x)
    pooled = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()])
    with pytest.raises(ValueError, match=r"feature map \(B, h, w, C\)"):
        ViewEncoder(backbone=pooled).build((None, 16, 16, 3))
    volume = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.Reshape((14, 14, 2, 2))])
    with pytest.raises(ValueError, match=r"feature map \(B, h, w, C\)"):
        ViewEncoder(backbone=volume).build((None, 16, 16, 3))  # rank 5 is no map either
    with pytest.raises(ValueError, match="too small"):
        ViewEncoder(num_views=1, backbone=_backbone()).view_shape((None, 0, 16, 3))
    sequence = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.Reshape((-1, 4))])
    with pytest.raises(ValueError, match=r"feature map \(B, h, w, C\)"):
        ViewEncoder(backbone=sequence).build((None, 16, 16, 3))  # rank 3 is no map either


def test_a_registered_estimator_trains_in_the_model():
    """A new estimator is one registered function; the model builds critics that use it."""
    from keras_infobal import InfoBal, estimators

    def mean_gap(scores, offset=None):
        """E_pos[s] - E_neg[s]: a toy estimator."""
        scores = estimators._check_scores(scores, offset)
        pos, neg = estimators._masks(scores, offset)
        return (keras.ops.sum(scores * pos) / keras.ops.sum(pos)
                - keras.ops.sum(scores * neg) / keras.ops.sum(neg))

    estimators.register_estimator("mean_gap", mean_gap)
    try:
        model = tiny(critic="mean_gap", infomin_weight=0.0)
        critic = infomax_critics(model)[0]
        assert critic.estimator == "mean_gap"
        scores = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 2.0], [1.0, 1.0, 4.0]])
        # Positives 3, 2, 4 (mean 3); negatives 1, 0, 0, 2, 1, 1 (mean 5/6).
        np.testing.assert_allclose(float(estimators.get("mean_gap")(scores)), 3 - 5 / 6,
                                   rtol=1e-6)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        model.fit(IMAGES, batch_size=4, epochs=1, verbose=0)
        with pytest.raises(ValueError, match="already registered"):
            estimators.register_estimator("mean_gap", lambda s, offset=None: s)
    finally:
        del estimators.ESTIMATORS["mean_gap"]
    with pytest.raises(ValueError, match="register_estimator"):
        InfoBal(critic="mean_gap")


def test_a_backbone_around_any_keras_trunk_trains_saves_and_loads(tmp_path):
    """A composable model: any Keras feature-map network as the trunk of the backbone."""
    from keras_infobal import InfoBal, InfoBalBackbone

    keras.utils.set_random_seed(0)
    backbone = InfoBalBackbone(num_views=4, split="grid", trunk=_backbone(),
                               aggregator="attention", output_dim=8, fc_units=16,
                               conv_filters=8, image_shape=(16, 16, 3))
    model = InfoBal(backbone, critic="infonce", infomin_weight=0.5, critic_units=8)
    trunk = backbone.encoder.backbone
    assert (model.num_views, backbone.split, backbone.output_dim) == (4, "grid", 8)
    assert infomin_critics(model).num_pairs == 6  # one per pair of the backbone's 4 views
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  discriminator_optimizer=keras.optimizers.Adam(1e-3))
    before = [w.copy() for w in trunk.get_weights()]
    model.fit(IMAGES, batch_size=4, epochs=1, verbose=0)
    assert any(not np.allclose(a, b) for a, b in zip(before, trunk.get_weights()))
    path = str(tmp_path / "composed.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.backbone.encoder.backbone is not None
    assert loaded.backbone.aggregator.mode == "attention"
    np.testing.assert_allclose(loaded.predict(IMAGES, verbose=0),
                               model.predict(IMAGES, verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="Keras layer or model"):
        InfoBalBackbone(trunk=lambda x: x)
    with pytest.raises(ValueError, match="`aggregator` must be one of"):
        InfoBalBackbone(aggregator=3)
