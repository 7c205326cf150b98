"""`compile` with a second optimizer: the InfoMin discriminators' (mixed into `InfoBal`).

The encoder (backbone and non-adversarial critics) trains with Keras' `optimizer`; the
critics of adversarial objective terms (`objectives.InfoMin`) with `discriminator_optimizer`.
This module builds both, wraps them for mixed_float16, saves them in the compile config and
makes the discriminators' learning rate follow the encoder's.
"""

import keras
import numpy as np

from keras_infobal.models.keras_seams import all_layers, portable_optimizer_config


class TwoOptimizers:
    """`compile`, its config and the optimizers' build, for a model with
    `discriminator_variables` (mixed into `InfoBal` before `keras.Model`)."""

    def compile(self, optimizer="adam", discriminator_optimizer=None,
                discriminator_lr_ratio="auto", cross_replica_negatives=False,
                synchronized_batch_norm=False, auto_scale_loss=True, **kwargs):
        """Like `keras.Model.compile`, plus the InfoMin discriminators' own optimizer, how its
        learning rate follows the encoder's, and two `tf.distribute` options.

        Args:
            discriminator_optimizer: required when `infomin_weight != 0`; at lambda = 0 it
                makes the discriminators train as a monitor of I(V_i; V_j). Built here when
                the model is built, so the training function never creates variables while
                tracing (which `tf.distribute` requires).
            discriminator_lr_ratio: how Keras' learning-rate callbacks and schedules reach
                the discriminators. "auto" (default): when `discriminator_optimizer` has a
                constant learning rate, it follows the encoder optimizer's current rate
                (its schedule, `ReduceLROnPlateau`, `LearningRateScheduler`) at the ratio
                the two rates have here; a discriminator optimizer with a schedule of its
                own keeps it, and so does one beside an encoder rate of 0 (frozen). A positive number: the discriminators' rate is that number
                times the encoder's at every step. None: the two rates are independent.
            cross_replica_negatives: TensorFlow only: under tf.distribute, score each
                replica's anchors against the images of all replicas (all-gather), as one
                device with the global batch would.
            synchronized_batch_norm: TensorFlow only: every BatchNormalization of the
                model normalizes over the global batch under tf.distribute.
            auto_scale_loss: as in Keras: under the "mixed_float16" dtype policy, both
                optimizers are wrapped in a `keras.optimizers.LossScaleOptimizer` (dynamic
                loss scaling; a step whose gradients overflow is skipped and the scale
                halved).
        """
        for key in ("loss", "metrics"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"InfoBal computes its own objective and metrics; do not pass `{key}` to "
                    "compile()."
                )
        self.check_distribution_options(cross_replica_negatives, synchronized_batch_norm)
        super().compile(optimizer=optimizer, auto_scale_loss=auto_scale_loss, **kwargs)
        if discriminator_optimizer is not None:
            discriminator_optimizer = keras.optimizers.get(discriminator_optimizer)
            if discriminator_optimizer is self.optimizer or (
                    isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
                    and discriminator_optimizer is self.optimizer.inner_optimizer):
                raise ValueError(
                    "`discriminator_optimizer` must be a different optimizer instance from "
                    "`optimizer`: each update keeps its own state."
                )
            if (auto_scale_loss and self.dtype_policy.name == "mixed_float16"
                    and not isinstance(discriminator_optimizer,
                                       keras.optimizers.LossScaleOptimizer)):
                # What Keras' compile does for `optimizer`: float16 gradients underflow.
                discriminator_optimizer = keras.optimizers.LossScaleOptimizer(
                    discriminator_optimizer, name="discriminator_loss_scale_optimizer")
        self.discriminator_optimizer = discriminator_optimizer
        self.discriminator_lr_ratio = _discriminator_lr_ratio(
            discriminator_lr_ratio, self.optimizer, discriminator_optimizer)
        self.cross_replica_negatives = bool(cross_replica_negatives)
        self.synchronized_batch_norm = bool(synchronized_batch_norm)
        for layer in all_layers(self):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = self.synchronized_batch_norm
        if self.built:
            self._build_optimizers()

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:  # Keras gives {} for an uncompiled model: nothing to add
            config = dict(config)
            config["discriminator_optimizer"] = (
                None if self.discriminator_optimizer is None
                else keras.saving.serialize_keras_object(self.discriminator_optimizer))
            # The resolved ratio: "auto" would be resolved again against rates that have
            # moved since (a schedule's step, a callback's change).
            config["discriminator_lr_ratio"] = self.discriminator_lr_ratio
            config["cross_replica_negatives"] = self.cross_replica_negatives
            config["synchronized_batch_norm"] = self.synchronized_batch_norm
        return config

    def compile_from_config(self, config):
        config = dict(config)
        for key in ("optimizer", "discriminator_optimizer"):
            config[key] = portable_optimizer_config(config.get(key))
        config = keras.saving.deserialize_keras_object(config)
        if "jit_compile" in config:
            # `.keras` files move between backends, and Keras saves the saving backend's
            # resolved choice: True from JAX would mean torch.compile (minutes of C++
            # compilation) on PyTorch, False from TensorFlow an unjitted JAX step. "auto"
            # picks the loading backend's own default; pass jit_compile to compile() again to
            # choose otherwise.
            config["jit_compile"] = "auto"
        if keras.backend.backend() != "tensorflow":
            # tf.distribute options of a file saved on TensorFlow do nothing elsewhere.
            config["cross_replica_negatives"] = False
            config["synchronized_batch_norm"] = False
        self.compile(**config)

    def _build_optimizers(self):
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        if self.discriminator_optimizer is not None and not self.discriminator_optimizer.built:
            self.discriminator_optimizer.build(self.discriminator_variables)


def _constant_rate(optimizer):
    """The optimizer's learning rate as a float when it is a constant (a variable that
    callbacks set), else None (a schedule or a callable)."""
    rate = optimizer.learning_rate
    return _as_float(rate) if isinstance(rate, keras.Variable) else None


def _as_float(value):
    # float() of the variable or tensor itself: through numpy, a Keras Variable warns on
    # every backend (its __array__ takes no `copy`), and so do some backends' tensors.
    try:
        return float(value)
    except TypeError:  # a tf.distribute MirroredVariable has no __float__
        return float(value.numpy())


def _discriminator_lr_ratio(ratio, optimizer, discriminator_optimizer):
    """`compile`'s `discriminator_lr_ratio` resolved: a float, or None (independent)."""
    if discriminator_optimizer is None or ratio is None:
        return None
    own = _constant_rate(discriminator_optimizer)
    if isinstance(ratio, str) and ratio == "auto":
        if own is None:
            return None  # the discriminators follow their own schedule
        encoder_rate = _as_float(optimizer.learning_rate)
        if not encoder_rate > 0:
            return None  # a frozen encoder (rate 0): no ratio to keep; the rates are apart
        return own / encoder_rate
    if (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
            or not np.isfinite(ratio) or ratio <= 0):
        raise ValueError(
            "`discriminator_lr_ratio` must be 'auto', a positive finite number (the "
            "discriminators' rate over the encoder's) or None (independent rates); got "
            f"{ratio!r}.")
    if own is None:
        raise ValueError(
            f"discriminator_lr_ratio={ratio} sets the discriminators' rate from the encoder's, "
            "but `discriminator_optimizer` has a learning-rate schedule of its own. Give it a "
            "constant learning rate, or pass discriminator_lr_ratio=None to keep its schedule.")
    return float(ratio)
