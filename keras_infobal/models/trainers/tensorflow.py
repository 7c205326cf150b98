"""The TensorFlow update steps: tf.GradientTape, and the tf.distribute hooks.

Only this module (and the data pipeline) imports TensorFlow; `tf.distribute` strategies
(MirroredStrategy, MultiWorkerMirroredStrategy) work here and nowhere else.
"""

import tensorflow as tf

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
        strategy = tf.distribute.get_strategy()
        return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
            strategy.extended._in_multi_worker_mode()
        )

    def _checked_batch(self, x):
        need = self._check_static_batch(x)
        # Traced functions may relax the batch size to None: check it when it runs too.
        check = tf.debugging.assert_greater_equal(
            tf.shape(x)[0], need, message=self._batch_message("1"))
        with tf.control_dependencies([check]):
            return tf.identity(x)

    def _checked_pair(self, x1, x2, message):
        check = tf.debugging.assert_equal(tf.shape(x1)[0], tf.shape(x2)[0], message=message)
        with tf.control_dependencies([check]):
            # One encoder pass over both halves; _objective splits them again.
            return tf.concat([x1, x2], axis=0)

    def discriminator_step(self, views):
        """One update of the InfoMin discriminators on (fixed) views; returns their terms."""
        self._require_discriminator_optimizer()
        pooled = tf.stop_gradient(self._pool(views))
        variables = self.discriminator_variables
        optimizer = self.discriminator_optimizer
        with tf.GradientTape() as tape:
            fit, terms = self._discriminator_objective(pooled)
            # Under mixed_float16 `optimizer` is a LossScaleOptimizer, which divides the
            # gradients by its scale: the loss is multiplied by it first.
            loss = optimizer.scale_loss(-fit / self._replicas())
        grads = tape.gradient(loss, variables)
        self._follow_encoder_learning_rate()
        optimizer.apply(grads, variables)
        return fit, terms

    def encoder_step(self, images, before_update=None):
        """One update of encoder, aggregator and InfoMax critics; returns (loss, J, terms).

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
            loss, j, infomax = self._encoder_loss(views)
            scaled = self.optimizer.scale_loss(loss / self._replicas())
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        return loss, j, infomax

    def train_step(self, data):
        return self._stateful_train_step(data)
