"""kib.layers.BatchNormalization (TensorFlow's and PyTorch's fused kernels in training) against
numpy's batch normalization: outputs, moving statistics, gradients, compiled steps and mixed
precision; Keras' own path elsewhere."""

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


def _spy_on_fused_kernel(monkeypatch):
    """A list that grows by one per call of this backend's fused kernel."""
    calls = []
    if keras.backend.backend() == "torch":
        import torch as module

        name = "native_batch_norm"
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        module, name = tf.raw_ops, "FusedBatchNormV3"
    else:
        pytest.skip("the fused kernels are TensorFlow's and PyTorch's")
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_trains_through_the_fused_kernel_only_where_it_applies(monkeypatch):
    calls = _spy_on_fused_kernel(monkeypatch)
    layer, x = _layer_and_input((4, 3, 5, 6))
    layer(x, training=True)
    BatchNormalization()(x[:, 0, 0], training=True)          # rank 2 too
    assert len(calls) == 2
    layer(x, training=False)                                 # inference: moving statistics
    layer(x, training=True, mask=np.ones((4, 3, 5), bool))  # masks: Keras' path
    frozen = BatchNormalization()
    frozen.build(x.shape)
    frozen.trainable = False
    frozen(x, training=True)                                 # frozen: moving statistics
    assert len(calls) == 2


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_compiled_training_step_updates_the_moving_statistics_as_numpy(jit_compile):
    """Inside `fit`'s compiled function, with the batch size unknown when it is traced
    (and under XLA on TensorFlow and JAX)."""
    if jit_compile and keras.backend.backend() == "torch":
        pytest.skip("torch.compile: minutes of compilation")
    layer, x = _layer_and_input((4, 3, 5, 6), seed=5)
    gamma, beta, old_mean, old_var = layer.get_weights()
    model = keras.Sequential([keras.Input((3, 5, 6)), layer])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse", jit_compile=jit_compile)
    model.fit(x, np.zeros_like(x), batch_size=4, epochs=1, verbose=0)
    _, mean, var = _numpy_batch_norm(x, gamma, beta)
    new_mean, new_var = layer.get_weights()[2:]
    np.testing.assert_allclose(new_mean, MOMENTUM * old_mean + (1 - MOMENTUM) * mean,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_var, MOMENTUM * old_var + (1 - MOMENTUM) * var,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(16, 5), (4, 3, 5, 6)])
def test_mixed_bfloat16_normalizes_in_float32_and_returns_bfloat16(shape):
    """As Keras' layer: a bfloat16 input is normalized with float32 statistics."""
    _, x = _layer_and_input(shape, seed=6)
    layer = BatchNormalization(momentum=MOMENTUM, epsilon=EPS, dtype="mixed_bfloat16")
    xb = ops.cast(x, "bfloat16")
    y = layer(xb, training=True)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(layer.moving_variance.dtype) == "float32"
    rounded = ops.convert_to_numpy(ops.cast(xb, "float32"))
    ref, mean, var = _numpy_batch_norm(rounded, np.ones(shape[-1]), np.zeros(shape[-1]))
    np.testing.assert_allclose(ops.convert_to_numpy(ops.cast(y, "float32")), ref,
                               rtol=1e-2, atol=2e-2)  # bfloat16 keeps 8 bits
    np.testing.assert_allclose(ops.convert_to_numpy(layer.moving_mean), (1 - MOMENTUM) * mean,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ops.convert_to_numpy(layer.moving_variance),
                               MOMENTUM + (1 - MOMENTUM) * var, rtol=1e-5, atol=1e-6)


def test_one_row_has_a_batch_variance_of_zero():
    layer = BatchNormalization(momentum=MOMENTUM, epsilon=EPS)
    x = np.array([[1.0, -2.0, 3.0]], "float32")
    y = ops.convert_to_numpy(layer(x, training=True))
    np.testing.assert_allclose(y, np.zeros_like(x), atol=1e-5)  # x - mean = 0, beta = 0
    np.testing.assert_allclose(ops.convert_to_numpy(layer.moving_variance),
                               np.full(3, MOMENTUM), rtol=1e-6)  # 0.9 * 1 + 0.1 * 0
    np.testing.assert_allclose(ops.convert_to_numpy(layer.moving_mean),
                               (1 - MOMENTUM) * x[0], rtol=1e-6)


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


def test_a_nan_reaches_the_loss_through_compiled_conv_batch_norm_relu_blocks():
    """A NaN pixel makes its channels' batch statistics NaN; the ReLU after the layer must
    not turn that back into numbers (TensorFlow's Grappler can fuse FusedBatchNorm + Relu
    into a kernel that maps NaN to 0), or NonFiniteGuard cannot see a poisoned batch."""
    x = np.random.default_rng(7).normal(size=(8, 16, 16, 3)).astype("float32")
    x[3, 2, 2, 0] = np.nan
    blocks = [[keras.layers.Conv2D(8, 4, strides=2, padding="same"), BatchNormalization(),
               keras.layers.Activation("relu")] for _ in range(2)]
    model = keras.Sequential([keras.Input((16, 16, 3)), *blocks[0], *blocks[1],
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    loss = model.train_on_batch(x, np.zeros((8, 1), "float32"))
    assert np.isnan(loss)
