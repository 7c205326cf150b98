"""`InfoBal(augmentation=...)`: the Keras augmentation pipeline inside the train step, on
backend tensors (every backend), instead of in `tf.data` on the CPU."""

import keras
import numpy as np
import pytest

from helpers import tiny
from keras_infobal.augmentation import augmentation_pipeline

pytestmark = pytest.mark.backend


def _images(n=8):
    return np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype="uint8")


@keras.saving.register_keras_serializable(package="tests")
class Invert(keras.layers.Layer):
    """A deterministic 'augmentation': 255 - x (so a step on it has a plain reference)."""

    def call(self, images, training=None):
        return 255.0 - keras.ops.cast(images, "float32")


def _one_sgd_step(x, **kwargs):
    keras.utils.set_random_seed(0)
    model = tiny(critic="infonce", infomin_weight=0.5, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  discriminator_optimizer=keras.optimizers.SGD(0.1))
    logs = model.train_on_batch(*x, return_dict=True)
    return model, logs


def _assert_same_weights(a, b):
    for va, vb in zip(a.trainable_variables, b.trainable_variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(va), keras.ops.convert_to_numpy(vb),
                                   rtol=1e-5, atol=1e-6, err_msg=va.path)


def test_the_train_step_encodes_the_augmented_batch():
    x = _images()
    on_device, logs = _one_sgd_step((x,), augmentation=Invert())
    reference, ref_logs = _one_sgd_step(((255 - x).astype("uint8"),))
    _assert_same_weights(on_device, reference)
    assert logs["loss"] == pytest.approx(ref_logs["loss"], rel=1e-5)
    plain, _ = _one_sgd_step((x,))
    assert max(float(np.abs(keras.ops.convert_to_numpy(a) - keras.ops.convert_to_numpy(b)).max())
               for a, b in zip(plain.trainable_variables, on_device.trainable_variables)) > 1e-4


def test_augmented_pairs_are_drawn_on_the_device_from_single_images():
    x = _images()
    inverted = (255 - x).astype("uint8")
    on_device, logs = _one_sgd_step((x,), augmentation=Invert(), augmented_pairs=True)
    reference, ref_logs = _one_sgd_step((inverted, inverted), augmented_pairs=True)
    _assert_same_weights(on_device, reference)
    assert logs["loss"] == pytest.approx(ref_logs["loss"], rel=1e-5)


def test_the_draws_are_augmentation_pipeline_s_with_the_same_seed():
    options = {"color_jitter": 0.5, "grayscale": 0.5, "crop": 0.3, "seed": 3}
    x = _images()
    model = tiny(critic="infonce", augmented_pairs=True, augmentation=options)
    reference = augmentation_pipeline(**options)
    first = keras.ops.convert_to_numpy(reference(x, training=True))
    second = keras.ops.convert_to_numpy(reference(x, training=True))
    pair = keras.ops.convert_to_numpy(model.augment_batch(x))
    np.testing.assert_allclose(pair[:8], np.clip(first, 0, 255), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(pair[8:], np.clip(second, 0, 255), rtol=1e-5, atol=1e-3)
    assert np.abs(pair[:8] - pair[8:]).max() > 10  # two draws, not one copied
    assert np.abs(pair[:8] - x).max() > 10


def test_fit_advances_the_seed_state_and_evaluate_uses_the_draws():
    model = tiny(critic="infonce", augmentation={"seed": 0})
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  discriminator_optimizer=keras.optimizers.Adam(1e-3))
    state = [v for v in model.augmentation.variables if "seed" in v.path]
    assert state
    before = [keras.ops.convert_to_numpy(v).copy() for v in state]
    model.fit(_images(16), batch_size=8, epochs=1, verbose=0)
    after = [keras.ops.convert_to_numpy(v) for v in state]
    assert any(np.any(a != b) for a, b in zip(before, after))
    logs = model.evaluate(_images(16), batch_size=8, verbose=0, return_dict=True)
    assert np.isfinite(logs["loss"])


@pytest.mark.parametrize("augmentation", [{"color_jitter": 0.5, "seed": 1}, Invert()])
def test_the_augmentation_survives_save_and_load(tmp_path, augmentation):
    import keras_infobal as kib

    model = tiny(critic="infonce", augmented_pairs=True, augmentation=augmentation)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  discriminator_optimizer=keras.optimizers.Adam(1e-3))
    model.fit(_images(), batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = kib.load_infobal(path)
    assert loaded.objective_config()["augmentation"] == model.objective_config()["augmentation"]
    assert type(loaded.augmentation) is type(model.augmentation)
    loaded.fit(_images(), batch_size=8, epochs=1, verbose=0)


def test_prediction_takes_the_images_as_they_are():
    x = _images()
    model = tiny(critic="infonce", augmentation=Invert())
    expected = keras.ops.convert_to_numpy(model.backbone(x, training=False))
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-5)


def test_bad_augmentations_and_pairs_are_refused():
    with pytest.raises(ValueError, match=r"\['colour'\] are not augmentation_pipeline's"):
        tiny(augmentation={"colour": 0.5})
    with pytest.raises(ValueError, match="must be None, a dict"):
        tiny(augmentation="strong")
    with pytest.raises(ValueError, match="color_jitter"):
        tiny(augmentation={"color_jitter": -1})
    model = tiny(critic="infonce", augmented_pairs=True, augmentation=Invert())
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  discriminator_optimizer=keras.optimizers.Adam(1e-3))
    x = _images()
    with pytest.raises(ValueError, match="Pass batches of single images"):
        model.train_on_batch(x, x)
