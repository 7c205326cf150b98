"""The PyTorch update steps: zero_grad, backward, optimizer.apply, once per update.

Runs eagerly, one process, one device: `tf.distribute` features raise a clear error at
`compile` (`check_distribution_options`).
"""

import torch
from keras import ops

from keras_infobal.models.trainers.base import BaseTrainer


def _detached(logs):
    return {k: v.detach() for k, v in logs.items()}


class TorchTrainer(BaseTrainer):
    """InfoBal's alternating updates on PyTorch.

    ```python
    # KERAS_BACKEND=torch
    model.fit(images, batch_size=64)
    ```
    """

    def _backward_and_apply(self, loss, optimizer, variables):
        # Gradients accumulate in .grad: clear them so each update sees only its own loss.
        self.zero_grad()
        # Under mixed_float16 `optimizer` is a LossScaleOptimizer, which divides the
        # gradients by its scale: the loss is multiplied by it first.
        optimizer.scale_loss(loss).backward()
        grads = [v.value.grad for v in variables]
        with torch.no_grad():
            optimizer.apply(grads, variables)

    def discriminator_step(self, views):
        """One update of the adversarial terms' critics on (fixed) views; returns (what
        they maximize, their logs)."""
        self._require_discriminator_optimizer()
        fit, logs = self.discriminator_objective(ops.stop_gradient(views))
        self._follow_encoder_learning_rate()
        self._backward_and_apply(-fit / self._replicas(), self.discriminator_optimizer,
                                 self.discriminator_variables)
        return fit.detach(), _detached(logs)

    def encoder_step(self, images, before_update=None):
        """One update of the encoder (backbone and non-adversarial critics); returns
        (loss, logs).

        `before_update(views)` (the discriminator steps in `train_step`) runs on this
        step's views before the encoder's objective; it detaches them itself, so it never
        changes the encoder's gradient.
        """
        views = self.backbone.encoder(self.augment_batch(images), training=True)
        if before_update is not None:
            before_update(views)
        loss, logs = self.encoder_loss(views)
        self._backward_and_apply(loss / self._replicas(), self.optimizer,
                                 self.encoder_variables)
        return loss.detach(), _detached(logs)

    def train_step(self, data):
        return self._stateful_train_step(data)
