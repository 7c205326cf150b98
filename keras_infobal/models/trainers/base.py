"""What every backend's trainer shares: the single-process defaults of the distribution
hooks, the metrics, and the step built from the task's public methods.

A trainer calls only `InfoBal`'s public interface: `batch_images`, `min_batch_size`,
`augment_batch`, `backbone`, `encoder_loss`, `discriminator_objective`,
`discriminator_active`, `discriminator_steps`, the variables and optimizers, `metrics`.
"""

import keras
from keras import ops



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

    def _stack(self, parts):
        """The batch's image batches (one, or an augmented pair) as one batch.

        Shapes are concrete on JAX (traced per shape) and PyTorch (eager), so the static
        checks of `batch_images` are the whole check there.
        """
        return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=0)

    def _training_batch(self, data):
        return self._stack(self.batch_images(data))

    def _follow_encoder_learning_rate(self):
        """Sets the discriminators' learning rate to `discriminator_lr_ratio` times the
        encoder's current one (its schedule's value, or what a Keras LR callback set)."""
        ratio = self.discriminator_lr_ratio
        if ratio is not None:
            self.discriminator_optimizer.learning_rate = ratio * self.optimizer.learning_rate

    def _discriminator_steps_to_run(self):
        """k when the discriminators train this step (and their optimizer exists), else 0."""
        if not self.discriminator_active:
            return 0
        self._require_discriminator_optimizer()
        return self.discriminator_steps

    def _require_discriminator_optimizer(self):
        if self.discriminator_optimizer is None:
            raise ValueError(
                "This model trains InfoMin discriminators (an adversarial objective term with "
                f"weight != 0, e.g. infomin_weight={self.infomin_weight}) but was compiled "
                "without `discriminator_optimizer`. Call model.compile(optimizer=..., "
                "discriminator_optimizer=keras.optimizers.Adam(1e-4)), or set "
                "infomin_weight=0 for the DIM baseline.")

    def check_distribution_options(self, cross_replica_negatives, synchronized_batch_norm):
        """Raises when this backend lacks a `compile` option of `tf.distribute`."""
        if keras.backend.backend() == "tensorflow":
            return
        backend = keras.backend.backend()
        for flag, on, alternative in (
                ("cross_replica_negatives=True", cross_replica_negatives,
                 "On JAX, keras.distribution.DataParallel computes each step on the global "
                 "batch, so the negatives already come from every device: set "
                 "cross_replica_negatives=False."),
                ("synchronized_batch_norm=True", synchronized_batch_norm,
                 "On JAX, keras.distribution.DataParallel already normalizes over the global "
                 "batch: set synchronized_batch_norm=False.")):
            if on:
                raise ValueError(
                    f"{flag} needs the TensorFlow backend (tf.distribute); this process uses "
                    f"the {backend} backend. {alternative} On PyTorch, train on one device, "
                    "or use KERAS_BACKEND=tensorflow with a tf.distribute strategy.")

    def _update_trackers(self, logs):
        trackers = {m.name: m for m in self.metrics}
        for name, value in logs.items():
            trackers[name].update_state(value)
        results = {name: trackers[name].result() for name in logs}
        if self._multi_worker():
            # Keras reduces multi-worker logs with reduce("MEAN", axis=0), which needs a
            # batch axis: give each scalar one (the reduced value is a scalar again).
            results = {k: ops.reshape(v, (1,)) for k, v in results.items()}
        return results

    def _test_logs(self, data):
        x = self._training_batch(data)
        views = self.backbone.views(self.augment_batch(x), training=False)
        _, logs = self.encoder_loss(views, training=False, gather_fn=self._gather_fn())
        if self.discriminator_active:
            logs.update(self.discriminator_objective(views, training=False,
                                                     gather_fn=self._gather_fn())[1])
        return logs

    def _predict_outputs(self, data):
        # Prediction takes single images, also for a model trained on augmented pairs.
        return self(self.batch_images(data, single=True)[0], training=False)

    # TensorFlow and PyTorch run these stateful steps as they are; JAX runs its own
    # stateless versions of the same neutral pieces.
    def _stateful_train_step(self, data):
        """k `discriminator_step`s, then one `encoder_step`, sharing one encoder pass."""
        x = self._training_batch(data)
        steps = self._discriminator_steps_to_run()
        d_logs = {}
        before_update = None
        if steps:
            def before_update(views):
                for _ in range(steps):
                    d_logs.update(self.discriminator_step(views)[1])

        _, logs = self.encoder_step(x, before_update=before_update)
        return self._update_trackers({**logs, **d_logs})

    def test_step(self, data):
        return self._update_trackers(self._test_logs(data))

    def predict_step(self, data):
        return self._predict_outputs(data)
