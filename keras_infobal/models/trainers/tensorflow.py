"""The TensorFlow update steps: tf.GradientTape, and the tf.distribute hooks.

Only this module (and the data pipeline) imports TensorFlow; `tf.distribute` strategies
(MirroredStrategy, MultiWorkerMirroredStrategy) work here and nowhere else.
"""

import tensorflow as tf

from keras_infobal.models.batches import PAIR_SIZES_MESSAGE, batch_size_message
from keras_infobal.models.keras_seams import in_multi_worker_mode
from keras_infobal.models.trainers.base import BaseTrainer


class TensorFlowTrainer(BaseTrainer):
    """InfoBal's alternating updates on TensorFlow.

    ```python
    model.fit(ds)   # inside tf.distribute.MirroredStrategy().scope() too
    ```
    """

    def _replicas(self):
        return tf.distribute.get_strategy().num_replicas_in_sync

    def _gather_fn(self):
        if not self.cross_replica_negatives:
            return None
        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            return None

        def gather(encodings):
            offset = ctx.replica_id_in_sync_group * tf.shape(encodings)[0]
            return ctx.all_gather(encodings, axis=0), offset

        return gather

    def _multi_worker(self):
        return in_multi_worker_mode(tf.distribute.get_strategy())

    def _stack(self, parts):
        # Traced functions may relax the batch size to None: check it when it runs too.
        checks = [tf.debugging.assert_greater_equal(
            tf.shape(parts[0])[0] * len(parts), self.min_batch_size,
            message=batch_size_message("fewer"))]
        if len(parts) == 2:
            checks.append(tf.debugging.assert_equal(tf.shape(parts[0])[0],
                                                    tf.shape(parts[1])[0],
                                                    message=PAIR_SIZES_MESSAGE))
        with tf.control_dependencies(checks):
            # One encoder pass over both halves of a pair; the objective terms split them.
            return tf.identity(parts[0]) if len(parts) == 1 else tf.concat(parts, axis=0)

    def discriminator_step(self, views):
        """One update of the adversarial terms' critics on (fixed) views; returns (what
        they maximize, their logs)."""
        self._require_discriminator_optimizer()
        variables = self.discriminator_variables
        optimizer = self.discriminator_optimizer
        with tf.GradientTape() as tape:
            fit, logs = self.discriminator_objective(tf.stop_gradient(views),
                                                     gather_fn=self._gather_fn())
            # Under mixed_float16 `optimizer` is a LossScaleOptimizer, which divides the
            # gradients by its scale: the loss is multiplied by it first.
            loss = optimizer.scale_loss(-fit / self._replicas())
        grads = tape.gradient(loss, variables)
        self._follow_encoder_learning_rate()
        optimizer.apply(grads, variables)
        return fit, logs

    def encoder_step(self, images, before_update=None):
        """One update of the encoder (backbone and non-adversarial critics); returns
        (loss, logs).

        `before_update(views)` runs on this step's views before the encoder's objective, off
        the gradient tape: `train_step` runs the discriminator steps there, so both updates
        share one encoder pass and the discriminators never change the encoder's gradient.
        """
        variables = self.encoder_variables
        with tf.GradientTape() as tape:
            views = self.backbone.encoder(self.augment_batch(images), training=True)
            if before_update is not None:
                with tape.stop_recording():
                    before_update(views)
            loss, logs = self.encoder_loss(views, gather_fn=self._gather_fn())
            scaled = self.optimizer.scale_loss(loss / self._replicas())
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        return loss, logs

    def train_step(self, data):
        return self._stateful_train_step(data)
