"""lambda < 0: the views' MI maximized on InfoBal's critics (CMC's objective); lambda > 0
minimizes it (InfoBal), 0 is DIM."""

import keras
import numpy as np
import pytest

from helpers import tiny
from keras_infobal.objectives.infomin import pool_views

pytestmark = pytest.mark.backend


def _images(n=16):
    return np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype="uint8")


def _model(lam, **kwargs):
    keras.utils.set_random_seed(0)
    model = tiny(critic="infonce", infomin_critic="infonce", infomin_weight=lam, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  discriminator_optimizer=keras.optimizers.SGD(0.05))
    return model


@pytest.mark.parametrize("lam", [-0.5, 0.0, 0.5])
def test_the_objective_is_infomax_minus_lambda_times_the_views_mi(lam):
    """J = sum_i I(R; V_i) - lambda * I(V_1; V_2), recomputed from the logged terms."""
    model = _model(lam)
    model.fit(_images(), batch_size=8, epochs=1, verbose=0)
    logs = model.evaluate(_images(), batch_size=16, verbose=0, return_dict=True)
    expected = logs["mi_R_V1"] + logs["mi_R_V2"] - lam * logs["mi_V1_V2"]
    assert logs["objective"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert logs["loss"] == pytest.approx(-logs["objective"], rel=1e-6, abs=1e-6)


def test_negative_lambda_moves_the_encoder_to_raise_the_views_mi():
    """From the same weights, one encoder step at lambda < 0 raises the discriminators'
    estimate of I(V_1; V_2) more than DIM's step (lambda = 0), which raises it more than the
    step at lambda > 0. Measured on training-mode views (batch statistics), the ones the
    encoder step optimizes."""
    x = _images()
    after = {}
    for lam in (-5.0, 0.0, 5.0):
        model = _model(lam)
        pooled = lambda: pool_views(model.backbone.views(x, training=True), "mean")  # noqa: E731
        critics = model.objectives[1].critics[0]  # every pair's discriminator, batched
        before = float(keras.ops.convert_to_numpy(critics(pooled(), training=False))[0])
        model.encoder_step(x)  # the encoder alone: the discriminators stay as they were
        after[lam] = float(keras.ops.convert_to_numpy(critics(pooled(), training=False))[0])
        after[lam] -= before
    assert after[-5.0] > after[0.0] > after[5.0], after


def test_clubs_upper_bound_is_refused_below_zero():
    with pytest.raises(ValueError, match="CLUB upper bound"):
        tiny(infomin_critic="club", infomin_weight=-0.1)
    for bad in (float("inf"), float("nan"), "1", True):
        with pytest.raises(ValueError, match="finite number"):
            tiny(infomin_weight=bad)
    tiny(infomin_critic="club", infomin_weight=0.1)  # fine above zero


def test_negative_lambda_needs_the_discriminator_optimizer():
    model = tiny(critic="infonce", infomin_critic="infonce", infomin_weight=-0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    with pytest.raises(ValueError, match="discriminator_optimizer"):
        model.train_on_batch(_images(8))
