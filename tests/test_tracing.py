"""Functions traced once per input signature: `extract_features` reuses its predict function."""

import functools

import keras
import numpy as np
import pytest

from helpers import tiny_backbone
from keras_infobal.layers.view_encoder import ViewEncoder

pytestmark = pytest.mark.backend


@pytest.fixture
def traces(monkeypatch):
    """Counts the encoder's calls: under a traced predict function (TensorFlow, JAX) a
    call happens when the function is traced, not when it runs."""
    count = {"n": 0}
    call = ViewEncoder.call

    @functools.wraps(call)  # Keras reads the signature of `call` (its `training` argument)
    def counting(self, *args, **kwargs):
        count["n"] += 1
        return call(self, *args, **kwargs)

    monkeypatch.setattr(ViewEncoder, "call", counting)
    return count


def test_extract_features_traces_once_per_input_signature(traces):
    if keras.backend.backend() == "torch":
        pytest.skip("PyTorch runs predict eagerly: every batch calls the layers")
    backbone = tiny_backbone()
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype="uint8")
    first = backbone.extract_features(images, batch_size=8)
    after_first = traces["n"]
    for _ in range(5):
        again = backbone.extract_features(images, batch_size=8)
    assert traces["n"] == after_first
    for k in first:
        np.testing.assert_array_equal(again[k], first[k])
    # Another signature (float input, other layers) is a model of its own, traced once.
    floats = backbone.extract_features(images.astype("float32"), layers=("R",), batch_size=8)
    after_float = traces["n"]
    assert after_float > after_first
    backbone.extract_features(images.astype("float32"), layers=("R",), batch_size=8)
    assert traces["n"] == after_float
    np.testing.assert_allclose(floats["R"], first["R"], rtol=1e-5, atol=1e-5)


def test_the_cached_extractor_sees_new_weights():
    backbone = tiny_backbone()
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype="uint8")
    before = backbone.extract_features(images, layers=("R",))["R"]
    for v in backbone.trainable_variables:
        v.assign(v * 0.5)
    after = backbone.extract_features(images, layers=("R",))["R"]
    expected = keras.ops.convert_to_numpy(backbone(images, training=False))
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(after - before).max() > 1e-3
