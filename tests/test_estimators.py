import math

import numpy as np
import pytest
import tensorflow as tf

from keras_infobal import estimators

S = np.array([[2.0, -1.0], [0.0, 3.0]], dtype="float32")


def sp(x):
    return math.log1p(math.exp(x))


# Hand-computed on S: positives 2 and 3, negatives -1 and 0.
EXPECTED = {
    "jsd": (-(sp(-2) + sp(-3)) / 2) - (sp(-1) + sp(0)) / 2,  # = -0.590962
    "dv": 2.5 - math.log((math.exp(-1) + 1) / 2),  # = 2.879885
    "infonce": ((2 - math.log(math.exp(2) + math.exp(-1)))
                + (3 - math.log(1 + math.exp(3)))) / 2 + math.log(2),  # = 0.644560
    "nwj": 2.5 - math.exp(-1) * (math.exp(-1) + 1) / 2,  # = 2.248393
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_value_on_hand_made_matrix(name):
    value = float(estimators.get(name)(S))
    assert value == pytest.approx(EXPECTED[name], abs=1e-5)


def test_literal_reference_numbers():
    # The same references written out, so a wrong formula above cannot hide a wrong estimator.
    assert float(estimators.jsd(S)) == pytest.approx(-0.590962, abs=1e-5)
    assert float(estimators.dv(S)) == pytest.approx(2.879885, abs=1e-5)
    assert float(estimators.infonce(S)) == pytest.approx(0.644560, abs=1e-5)
    assert float(estimators.nwj(S)) == pytest.approx(2.248393, abs=1e-5)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_local_axis_averages_locations(name):
    # Two identical locations give the same estimate as one.
    s3 = np.stack([S, S], axis=-1)
    assert float(estimators.get(name)(s3)) == pytest.approx(EXPECTED[name], abs=1e-5)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_better_separated_positives_raise_the_estimate(name):
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(6, 6)).astype("float32")
    values = [float(estimators.get(name)(noise + gap * np.eye(6, dtype="float32")))
              for gap in (0.0, 1.0, 3.0)]
    assert values[0] < values[1] < values[2]


def test_infonce_is_bounded_by_log_batch():
    s = 50.0 * np.eye(4, dtype="float32")
    assert float(estimators.infonce(s)) == pytest.approx(math.log(4), abs=1e-4)
    assert float(estimators.infonce(s)) <= math.log(4) + 1e-6


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("scale", [1e2, 1e3, 1e4, -1e4])
def test_finite_values_and_gradients_for_huge_scores(name, scale):
    rng = np.random.default_rng(2)
    s = tf.Variable(scale * rng.uniform(-1, 1, size=(5, 5, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        value = estimators.get(name)(s)
    grad = tape.gradient(value, s)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_batch_of_one_is_a_clear_error(name):
    with pytest.raises(ValueError, match="at least 2 images"):
        estimators.get(name)(np.ones((1, 1), dtype="float32"))


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="rank"):
        estimators.jsd(np.ones((4,), dtype="float32"))
    with pytest.raises(ValueError, match="square"):
        estimators.dv(np.ones((3, 4), dtype="float32"))
    with pytest.raises(ValueError, match="Unknown MI estimator"):
        estimators.get("mine")
