"""BatchNormalization with PyTorch's fused kernel in training (issue 23).

Keras 3.15's `BatchNormalization` composes a training step from `moments`, subtract, rsqrt,
multiply and add, and on PyTorch autograd records each of them: the backward pass then
runs a dozen elementwise kernels and reductions per layer. PyTorch's own layer runs one
`native_batch_norm` forward and one `native_batch_norm_backward`. On the DIM(L) step that
difference was the largest Keras-side part of Keras-on-PyTorch's gap to a plain PyTorch
step (docs/benchmarks.md, `benchmarks/profile_torch.py`).

This layer is Keras' layer everywhere (same arguments, weights, moving statistics and
inference path) except in one case: training on the PyTorch backend, with the channels
last, no mask, no renorm and no synchronization, where the forward and backward passes are
PyTorch's fused kernels. The moving statistics are updated as Keras does (biased batch
variance, `momentum` the weight of the old value), not as `torch.nn.BatchNorm2d` does.
"""

import keras
from keras import ops

PACKAGE = "keras_infobal"


@keras.saving.register_keras_serializable(package=PACKAGE)
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization`, fused on PyTorch in training.

    ```python
    bn = kib.layers.BatchNormalization()   # takes keras.layers.BatchNormalization's arguments
    y = bn(x, training=True)
    ```
    """

    def _fused(self, inputs, training, mask):
        return (
            keras.backend.backend() == "torch"
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
        import torch

        # As Keras: statistics in float32 at least, whatever the compute dtype.
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, dtype)
        channels = x.shape[-1]
        gamma = ops.cast(self.gamma, dtype) if self.scale else None
        beta = ops.cast(self.beta, dtype) if self.center else None
        # (N, ..., C) as a contiguous (rows, C) matrix: PyTorch's channels-last kernels,
        # no copy. Its running statistics are not passed (they follow PyTorch's rules).
        y, mean, invstd = torch.native_batch_norm(
            x.reshape(-1, channels), gamma, beta, None, None, True, 0.0, self.epsilon)
        with torch.no_grad():
            # The biased batch variance, as Keras keeps it: invstd = (var + eps)^-1/2.
            variance = torch.clamp_min(invstd.reciprocal().square() - self.epsilon, 0.0)
            momentum = self.momentum
            self.moving_mean.assign(
                ops.cast(self.moving_mean, dtype) * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                ops.cast(self.moving_variance, dtype) * momentum
                + variance * (1.0 - momentum))
        return ops.cast(y.reshape(x.shape), self.compute_dtype)
