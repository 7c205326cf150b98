"""Extending: a registered split, and ViewEncoder with another backbone."""

import keras
import numpy as np
import pytest

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


def test_bad_backbones_say_what_is_expected():
    with pytest.raises(ValueError, match="Keras layer or model"):
        ViewEncoder(backbone=lambda x: x)
    pooled = keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D()])
    with pytest.raises(ValueError, match=r"feature map \(B, h, w, C\)"):
        ViewEncoder(backbone=pooled).build((None, 16, 16, 3))
