"""BatchNormalization with the backend's fused kernel in training (for CPU training speed).

Keras 3.15's `BatchNormalization` composes a training step from `moments`, subtract, rsqrt,
multiply and add, and the backward pass differentiates each of them: a dozen elementwise
kernels and reductions per layer. TensorFlow's `FusedBatchNormV3` and PyTorch's
`native_batch_norm` do the forward pass in one kernel and the backward pass in another. On
the DIM(L) step the composed layer was the largest Keras-side part of Keras-on-PyTorch's gap
to a plain PyTorch step, and on TensorFlow the fused op makes the whole step about 5% faster
in float32 and 9-10% in bfloat16 (docs/benchmarks.md, `benchmarks/profile_torch.py`,
`benchmarks/speed.py`'s `*_keras_bn` contenders).

This layer is Keras' layer everywhere (same arguments, weights, moving statistics and
inference path) except in one case: training on TensorFlow or PyTorch, with the channels
last, no mask, no renorm and no synchronization, where the forward and backward passes are
the fused kernels. The statistics are computed in float32 at least, as Keras does (a
bfloat16 or float16 input is upcast first; this also keeps TensorFlow off oneDNN's
bfloat16 batch norm, which has no kernel with oneDNN capped at AVX2). The moving
statistics are updated as Keras does (biased batch variance, `momentum` the weight of the
old value), not as `torch.nn.BatchNorm2d` or TensorFlow's fused op would.
"""

import keras
from keras import ops

PACKAGE = "keras_infobal"


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization`, fused on TensorFlow and PyTorch in training.

    ```python
    bn = kib.layers.BatchNormalization()   # takes keras.layers.BatchNormalization's arguments
    y = bn(x, training=True)
    ```
    """

    def _fused(self, inputs, training, mask):
        return (
            keras.backend.backend() in ("tensorflow", "torch")
            and bool(training)
            and self.trainable
            and mask is None
            and not self.renorm
            and not self.synchronized
            and self.axis in (-1, len(inputs.shape) - 1)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        # As Keras: statistics in float32, whatever the compute dtype (Keras' layer computes
        # in result_type(dtype, "float32"), which is float32 for float64 too).
        x = ops.cast(inputs, "float32")
        channels = x.shape[-1]
        gamma = ops.cast(self.gamma, "float32") if self.scale else ops.ones((channels,))
        beta = ops.cast(self.beta, "float32") if self.center else ops.zeros((channels,))
        fused = _tensorflow if keras.backend.backend() == "tensorflow" else _torch
        y, mean, variance = fused(x, gamma, beta, self.epsilon)
        momentum = self.momentum
        self.moving_mean.assign(
            ops.cast(self.moving_mean, "float32") * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            ops.cast(self.moving_variance, "float32") * momentum
            + variance * (1.0 - momentum))
        return ops.cast(y, self.compute_dtype)


def _tensorflow(x, gamma, beta, epsilon):
    """(y, batch mean, biased batch variance) from `FusedBatchNormV3` (NHWC)."""
    import tensorflow as tf

    # Any rank as NHWC (rows, 1, 1, C): the same memory, and a (N, H, W, C) input too. The
    # reshape back then sits between the op and whatever follows, which keeps Grappler from
    # fusing a following ReLU into it: that fused kernel maps NaN to 0, and a NaN (a bad
    # pixel, diverged weights) must reach the loss, where NonFiniteGuard sees it.
    x4 = tf.reshape(x, (-1, 1, 1, x.shape[-1]))
    y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=x4, scale=gamma, offset=beta, mean=tf.zeros((0,)), variance=tf.zeros((0,)),
        epsilon=epsilon, is_training=True, data_format="NHWC")
    # The op returns the batch variance with Bessel's correction (for its own running
    # statistics); Keras keeps the biased one. One row has none: its variance is 0.
    rows = tf.cast(tf.size(x) // x.shape[-1], "float32")
    variance = tf.stop_gradient(variance) * tf.maximum(rows - 1.0, 0.0) / rows
    return tf.reshape(y, tf.shape(x)), tf.stop_gradient(mean), variance


def _torch(x, gamma, beta, epsilon):
    """(y, batch mean, biased batch variance) from `native_batch_norm`."""
    import torch

    channels = x.shape[-1]
    # (N, ..., C) as a contiguous (rows, C) matrix: PyTorch's channels-last kernels, no
    # copy. Its running statistics are not passed (they follow PyTorch's rules).
    y, mean, invstd = torch.native_batch_norm(
        x.reshape(-1, channels), gamma, beta, None, None, True, 0.0, epsilon)
    with torch.no_grad():
        # The biased batch variance, as Keras keeps it: invstd = (var + eps)^-1/2, which
        # can round below zero for a constant channel; a variance is never negative.
        variance = torch.clamp_min(invstd.reciprocal().square() - epsilon, 0.0)
    return y.reshape(x.shape), mean.detach(), variance
