"""What every backend's trainer shares: the single-process defaults of the distribution hooks."""

import keras


class BaseTrainer:
    """Defaults for one process without `tf.distribute`: no replicas, no gathering.

    The TensorFlow trainer overrides these hooks; on JAX the arrays of a
    `keras.distribution.DataParallel` step are global, so nothing needs reducing by hand.
    """

    def _replicas(self):
        """Replicas the loss is divided by (Keras sums the replicas' gradients on TF)."""
        return 1

    def _gather_fn(self):
        """All-gathers local encodings across replicas; None without tf.distribute."""
        return None

    def _multi_worker(self):
        return False

    def _checked_batch(self, x):
        """x, after checking that the batch holds enough images for negatives.

        Shapes are concrete on JAX (traced per shape) and PyTorch (eager), so the static
        check is the whole check there.
        """
        self._check_static_batch(x)
        return x

    def _checked_pair(self, x1, x2, message):
        """Both halves of an augmented pair stacked; their batch sizes were checked statically."""
        return keras.ops.concatenate([x1, x2], axis=0)

    def _follow_encoder_learning_rate(self):
        """Sets the discriminators' learning rate to `discriminator_lr_ratio` times the
        encoder's current one (its schedule's value, or what a Keras LR callback set)."""
        ratio = self.discriminator_lr_ratio
        if ratio is not None:
            self.discriminator_optimizer.learning_rate = ratio * self.optimizer.learning_rate

    @staticmethod
    def _unsupported(feature, alternative):
        backend = keras.backend.backend()
        return ValueError(
            f"{feature} needs the TensorFlow backend (tf.distribute); this process uses the "
            f"{backend} backend. {alternative}"
        )

    # TensorFlow and PyTorch run these stateful steps as they are; JAX runs its own
    # stateless versions of the same neutral pieces.
    def _stateful_train_step(self, data):
        """k `discriminator_step`s, then one `encoder_step`, sharing one encoder pass."""
        x = self._checked_batch(self._check_data(data))
        d_out = []
        before_update = None
        if self.discriminator_active:
            self._require_discriminator_optimizer()

            def before_update(views):
                for _ in range(self.discriminator_steps):
                    d_out[:] = self.discriminator_step(views)

        loss, j, infomax = self.encoder_step(x, before_update=before_update)
        return self._update_trackers(self._train_logs(loss, j, infomax, d_out))

    def test_step(self, data):
        return self._update_trackers(self._test_logs(data))

    def predict_step(self, data):
        return self._predict_outputs(data)
