"""One rule for float images at every entry point: floats in [0, 1] are refused with the fix
(multiply by 255), on every backend; floats in [0, 255] and uint8 are taken."""

import keras
import numpy as np
import pytest

from helpers import tiny
from keras_infobal import datasets

pytestmark = pytest.mark.backend


def _unit_floats():
    return np.random.default_rng(0).random((8, 16, 16, 3)).astype("float32")


def _model():
    model = tiny(critic="infonce", infomin_weight=0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  discriminator_optimizer=keras.optimizers.Adam(1e-3))
    return model


ENTRY_POINTS = {
    "fit": lambda m, x: m.fit(x, batch_size=8, epochs=1, verbose=0),
    "evaluate": lambda m, x: m.evaluate(x, batch_size=8, verbose=0),
    "train_on_batch": lambda m, x: m.train_on_batch(x),
    "test_on_batch": lambda m, x: m.test_on_batch(x),
    "predict": lambda m, x: m.predict(x, verbose=0),
    "predict_on_batch": lambda m, x: m.predict_on_batch(x),
    "extract_features": lambda m, x: m.extract_features(x),
    "backbone.extract_features": lambda m, x: m.backbone.extract_features(x),
    "backbone.predict": lambda m, x: m.backbone.predict(x, verbose=0),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_floats_in_0_1_are_refused_with_the_fix(entry):
    model = _model()
    for x in (_unit_floats(), keras.ops.convert_to_tensor(_unit_floats())):
        with pytest.raises(ValueError, match=r"floats in \[0, 1\].*multiply by 255 first"):
            ENTRY_POINTS[entry](model, x)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_floats_in_0_255_and_uint8_are_taken(entry):
    model = _model()
    x = _unit_floats() * 255.0
    ENTRY_POINTS[entry](model, x)
    ENTRY_POINTS[entry](model, np.round(x).astype("uint8"))


def test_the_same_rule_in_make_dataset_and_load_images(tmp_path):
    with pytest.raises(ValueError, match="multiply by 255 first"):
        datasets.make_dataset(_unit_floats(), batch_size=4)
    path = str(tmp_path / "x.npy")
    np.save(path, _unit_floats())
    with pytest.raises(ValueError, match=r"x\.npy` holds floats in \[0, 1\]"):
        datasets.load_images(path)
    datasets.make_dataset(_unit_floats() * 255, batch_size=4)


def test_an_all_zero_batch_and_integers_pass_the_check():
    datasets.check_pixel_range(np.zeros((2, 4, 4, 3), "float32"))
    datasets.check_pixel_range(np.ones((2, 4, 4, 3), "int32"))
    with pytest.raises(ValueError, match="The batch holds floats"):
        datasets.check_pixel_range(np.full((2, 4, 4, 3), 0.5, "float64"))
