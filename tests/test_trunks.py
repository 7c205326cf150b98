"""Any trunk: the preprocessing contract and bounded MI estimates."""

import math

import numpy as np
import pytest

import keras

from keras_infobal import estimators
from keras_infobal.layers import ViewEncoder, trunk_scales_inputs
from keras_infobal.estimators import clip_scores
from keras_infobal.models import InfoBal, InfoBalBackbone


def conv_trunk(first=None):
    layers = [keras.Input((16, 16, 3))] + ([first] if first is not None else [])
    layers += [keras.layers.Conv2D(8, 3, strides=2, padding="same")]
    return keras.Sequential(layers)


def test_trunk_scaling_is_detected_before_the_first_weights():
    assert not trunk_scales_inputs(conv_trunk())
    assert trunk_scales_inputs(conv_trunk(keras.layers.Rescaling(1 / 127.5, offset=-1)))
    norm = keras.layers.Normalization(mean=[120.0] * 3, variance=[3600.0] * 3)
    assert trunk_scales_inputs(conv_trunk(norm))
    # Scaling after a conv is not the trunk's input scaling.
    late = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3),
                             keras.layers.Rescaling(2.0)])
    assert not trunk_scales_inputs(late)
    nested = keras.Sequential([keras.Input((16, 16, 3)),
                               keras.Sequential([keras.layers.Rescaling(1 / 255)]),
                               keras.layers.Conv2D(8, 3)])
    assert trunk_scales_inputs(nested)
    mobilenet = keras.applications.MobileNetV3Small(
        input_shape=(64, 64, 3), include_top=False, weights=None)
    assert trunk_scales_inputs(mobilenet)
    resnet = keras.applications.ResNet50(input_shape=(64, 64, 3), include_top=False,
                                         weights=None)
    assert not trunk_scales_inputs(resnet)


def test_pixels_reach_the_trunk_scaled_once():
    x = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype(np.uint8)
    scaled = x.astype(np.float32) / 127.5 - 1.0

    def local(encoder):
        return keras.ops.convert_to_numpy(encoder.local_map(x))

    plain = conv_trunk()  # no scaling of its own: ViewEncoder scales to [-1, 1]
    want = keras.ops.convert_to_numpy(plain(scaled))
    np.testing.assert_allclose(local(ViewEncoder(num_views=2, backbone=plain)), want,
                               rtol=1e-5, atol=1e-5)
    own = conv_trunk(keras.layers.Rescaling(1 / 127.5, offset=-1))  # scales its own pixels
    want_own = keras.ops.convert_to_numpy(own(x.astype(np.float32)))
    np.testing.assert_allclose(local(ViewEncoder(num_views=2, backbone=own)), want_own,
                               rtol=1e-5, atol=1e-5)
    # rescale=True / False override the detection.
    twice = keras.ops.convert_to_numpy(own(scaled))
    np.testing.assert_allclose(local(ViewEncoder(num_views=2, backbone=own, rescale=True)),
                               twice, rtol=1e-5, atol=1e-5)
    raw = keras.ops.convert_to_numpy(plain(x.astype(np.float32)))
    np.testing.assert_allclose(local(ViewEncoder(num_views=2, backbone=plain, rescale=False)),
                               raw, rtol=1e-4, atol=1e-3)
    assert not np.allclose(want_own, twice, atol=1e-3)  # the two scalings differ
    with pytest.raises(ValueError, match="True, False or 'auto'"):
        ViewEncoder(rescale="yes")


@pytest.mark.parametrize("estimator", ["jsd", "dv", "infonce"])
@pytest.mark.parametrize("batch", [2, 16, 128])
def test_auto_clip_bounds_every_estimate(estimator, batch):
    # Scores as large as an unnormalized trunk gives (thousands), both signs, and the two
    # adversarial extremes (positives lowest, negatives highest and the reverse).
    rng = np.random.default_rng(batch)
    eye = np.eye(batch, dtype=bool)[..., None]
    for raw in (rng.normal(0, 3000, (batch, batch, 1)),
                np.where(eye, -1e4, 1e4), np.where(eye, 1e4, -1e4)):
        s = clip_scores(keras.ops.convert_to_tensor(raw, "float32"), "auto")
        est = float(estimators.get(estimator)(s))
        assert math.isfinite(est) and abs(est) <= math.log(batch) + 5, (raw[0, :2], est)
    with pytest.raises(ValueError, match="'auto'"):
        InfoBal(InfoBalBackbone(), score_clip=-1)


@pytest.mark.slow
@pytest.mark.parametrize("app", ["MobileNetV3Small", "ResNet50"])
def test_keras_applications_trunks_train_with_bounded_estimates(app):
    trunk = getattr(keras.applications, app)(input_shape=(64, 64, 3), include_top=False,
                                             weights=None)
    backbone = InfoBalBackbone(num_views=2, trunk=trunk, image_shape=(64, 64, 3))
    # MobileNetV3 scales its own pixels (include_preprocessing=True); ResNet50 does not.
    assert backbone.encoder.scales_inputs == (app == "ResNet50")
    model = InfoBal(backbone, infomin_weight=1.0)  # defaults: JSD, adversarial InfoMin
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  discriminator_optimizer=keras.optimizers.Adam(1e-3))
    batch, records = 16, []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            records.append({k: float(v) for k, v in logs.items()})

    x = np.random.default_rng(0).integers(0, 256, (20 * batch, 64, 64, 3)).astype(np.uint8)
    model.fit(x, batch_size=batch, epochs=1, verbose=0, callbacks=[Record()])
    assert len(records) == 20
    for step in records:
        for name, value in step.items():
            assert math.isfinite(value), (name, step)
            if name.startswith("mi_"):
                assert abs(value) <= math.log(batch) + 5, (name, step)
