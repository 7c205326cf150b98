"""kib.layers.BatchNormalization (PyTorch's fused kernels in training) against numpy's batch
normalization: outputs, moving statistics, gradients; Keras' own path elsewhere."""

import keras
import numpy as np
import pytest
from keras import ops

from helpers import gradients
from keras_infobal.layers import BatchNormalization

pytestmark = pytest.mark.backend

EPS = 1e-3
MOMENTUM = 0.9


def _layer_and_input(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype("float32") * 3.0 + 1.5
    x[..., 0] = 2.0                  # a constant channel: variance 0
    x[..., 1] = 7.0 + 1e-3 * x[..., 1]  # a channel whose variance is far below epsilon
    layer = BatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    layer.build(shape)
    c = shape[-1]
    layer.set_weights([rng.normal(size=c).astype("float32") + 1.0,   # gamma
                       rng.normal(size=c).astype("float32"),         # beta
                       rng.normal(size=c).astype("float32"),         # moving mean
                       rng.uniform(0.5, 2.0, size=c).astype("float32")])  # moving variance
    return layer, x


def _numpy_batch_norm(x, gamma, beta):
    rows = x.reshape(-1, x.shape[-1]).astype("float64")
    mean = rows.mean(axis=0)
    var = ((rows - mean) ** 2).mean(axis=0)  # biased, as Keras keeps it
    y = (rows - mean) / np.sqrt(var + EPS) * gamma + beta
    return y.reshape(x.shape), mean, var


@pytest.mark.parametrize("shape", [(16, 5), (4, 3, 5, 6)])
def test_training_step_and_moving_statistics_match_numpy(shape):
    layer, x = _layer_and_input(shape)
    gamma, beta, old_mean, old_var = layer.get_weights()
    y = ops.convert_to_numpy(layer(x, training=True))
    ref, mean, var = _numpy_batch_norm(x, gamma, beta)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    new_mean, new_var = layer.get_weights()[2:]
    np.testing.assert_allclose(new_mean, MOMENTUM * old_mean + (1 - MOMENTUM) * mean,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_var, MOMENTUM * old_var + (1 - MOMENTUM) * var,
                               rtol=1e-5, atol=1e-6)
    # Inference normalizes with the moving statistics just written.
    y_inf = ops.convert_to_numpy(layer(x, training=False))
    ref_inf = (x - new_mean) / np.sqrt(new_var + EPS) * gamma + beta
    np.testing.assert_allclose(y_inf, ref_inf, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(16, 5), (4, 3, 5, 6)])
def test_gradients_match_numpy(shape):
    layer, x = _layer_and_input(shape, seed=1)
    x[..., 1] = np.random.default_rng(2).normal(size=x.shape[:-1])  # a regular channel
    gamma, beta = layer.get_weights()[:2]
    cotangent = np.random.default_rng(3).normal(size=shape).astype("float32")
    weights = ops.convert_to_tensor(cotangent)
    xv = keras.Variable(x, name="x")
    grads = gradients(lambda: ops.sum(layer(xv, training=True) * weights),
                      [xv, layer.gamma, layer.beta])
    # Batch normalization's backward pass, written out: xhat = (x - mean) * invstd,
    # dx = gamma * invstd / N * (N dy - sum dy - xhat sum(dy xhat)).
    rows = x.reshape(-1, shape[-1]).astype("float64")
    dy = cotangent.reshape(rows.shape).astype("float64")
    n = rows.shape[0]
    invstd = 1.0 / np.sqrt(rows.var(axis=0) + EPS)
    xhat = (rows - rows.mean(axis=0)) * invstd
    dbeta, dgamma = dy.sum(axis=0), (dy * xhat).sum(axis=0)
    dx = gamma * invstd / n * (n * dy - dbeta - xhat * dgamma)
    np.testing.assert_allclose(grads[0], dx.reshape(shape), rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(grads[1], dgamma, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(grads[2], dbeta, rtol=1e-4, atol=1e-3)


def test_pytorch_trains_through_the_fused_kernel_only_where_it_applies(monkeypatch):
    if keras.backend.backend() != "torch":
        pytest.skip("the fused kernel is PyTorch's")
    import torch

    calls = []
    real = torch.native_batch_norm
    monkeypatch.setattr(torch, "native_batch_norm",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    layer, x = _layer_and_input((4, 3, 5, 6))
    layer(x, training=True)
    assert len(calls) == 1
    layer(x, training=False)                                 # inference: moving statistics
    layer(x, training=True, mask=np.ones((4, 3, 5), bool))  # masks: Keras' path
    frozen = BatchNormalization()
    frozen.build(x.shape)
    frozen.trainable = False
    frozen(x, training=True)                                 # frozen: moving statistics
    assert len(calls) == 1


def test_serializes_as_its_own_class_and_keeps_keras_arguments():
    layer = BatchNormalization(momentum=0.8, epsilon=1e-4, center=False, name="bn")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is BatchNormalization
    assert clone.get_config() == layer.get_config()
    assert (clone.momentum, clone.epsilon, clone.center) == (0.8, 1e-4, False)


@pytest.mark.parametrize("center,scale", [(False, True), (True, False)])
def test_without_gamma_or_beta(center, scale):
    x = np.random.default_rng(4).normal(size=(8, 2, 2, 3)).astype("float32")
    layer = BatchNormalization(center=center, scale=scale, epsilon=EPS)
    y = ops.convert_to_numpy(layer(x, training=True))
    gamma = np.ones(3) if not scale else ops.convert_to_numpy(layer.gamma)
    beta = np.zeros(3) if not center else ops.convert_to_numpy(layer.beta)
    np.testing.assert_allclose(y, _numpy_batch_norm(x, gamma, beta)[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("epsilon", [1e-3, 1.18901674244199e-06])
def test_a_constant_channel_keeps_a_moving_variance_of_zero_not_below(epsilon):
    # PyTorch's kernel returns 1 / sqrt(var + eps); recovering var from it can round below
    # zero (at this second epsilon it does), and a variance is never negative.
    layer = BatchNormalization(momentum=0.5, epsilon=epsilon, moving_variance_initializer="zeros")
    layer(np.full((16, 2), 2.0, "float32"), training=True)
    moving_var = ops.convert_to_numpy(layer.moving_variance)
    assert np.all(moving_var >= 0.0) and np.all(moving_var < 1e-9)
