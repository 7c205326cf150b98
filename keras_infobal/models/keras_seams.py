"""The one place keras-infobal relies on Keras behaviour that has no public API (Keras 3.15).

Everything else in the package uses public Keras APIs only. Each seam here says why it is
needed; `tests/test_keras_seams.py` fails loudly when a Keras release changes what it relies on.

1. `_maybe_symbolic_build` (TensorFlow, under a `tf.distribute` strategy only). Before the
   first step, Keras' TensorFlow trainer takes one batch of the distributed dataset and
   all-reduces it (`strategy.reduce("MEAN", batch)`) to build the model symbolically. The
   collectives of `MultiWorkerMirroredStrategy` take no uint8 tensors, and images are uint8,
   so that reduce fails before training starts. InfoBal is built before `fit` whenever its
   image size is known (and `compile` builds both optimizers), so the build is skipped
   then; an unbuilt model still goes through Keras' own path.
2. The JAX trainer's state (`JAXOptimizerStateSeam`). Keras' JAX trainer threads the model's
   state through its jitted step as `(trainable, non_trainable, optimizer_variables,
   metrics)`, and fills, purges, shards and syncs the optimizer slot from
   `self.optimizer.variables` in four private methods (`_get_jax_state`,
   `_purge_model_variables`, `_get_state_sharding_spec`, `jax_state_sync`). InfoBal has a
   second optimizer (the InfoMin discriminators'); the seam puts its variables in the same
   slot. `keras.optimizers.MultiOptimizer` would put both in `model.optimizer` publicly, but
   then `model.optimizer` is no longer the encoder's optimizer (a MultiOptimizer has no
   `learning_rate`, so `LearningRateScheduler` and schedules read from it fail) on every
   backend, for a need only JAX has. The seam also writes `variable._value` once: when the
   first traced step fails (a bad batch), Keras has purged the values and keeps no state to
   sync back; they are put back so the model stays usable.
3. `all_layers`: every layer inside a layer or model, nested ones included. Keras 3 lists
   a functional model's top layers publicly (`model.layers`) but the sublayers of a custom
   layer (the batch norms inside `ViewEncoder`) only through `Layer._flatten_layers`.
   `applications.unfreeze` and `InfoBal.compile` (synchronized batch norm) need them.
4. `portable_optimizer_config`: on PyTorch Keras saves an optimizer under its private
   module (`keras.src.backend.torch.optimizers...`), which no other backend can load; the
   compile config names the public `keras.optimizers` class instead.
5. `in_multi_worker_mode` (TensorFlow): whether a `MultiWorkerMirroredStrategy` runs on
   several workers, which tf.distribute says only through `extended._in_multi_worker_mode`;
   multi-worker logs need a batch axis (`BaseTrainer._update_trackers`).
"""

import keras


def all_layers(layer):
    """Every layer inside `layer`, itself included, nested ones too."""
    return list(layer._flatten_layers(include_self=True, recursive=True))


def portable_optimizer_config(config):
    """An optimizer's config that loads on every backend.

    On PyTorch, Keras saves e.g. Adam as `keras.src.backend.torch.optimizers.torch_adam.Adam`,
    which other backends cannot run: name the public `keras.optimizers` class instead.
    """
    module = str(config.get("module", "")) if isinstance(config, dict) else ""
    if (module.startswith("keras.src.backend.")
            and hasattr(keras.optimizers, str(config.get("class_name")))):
        config = {**config, "module": "keras.optimizers"}
    return config


def in_multi_worker_mode(strategy):
    """Whether a tf.distribute `strategy` is a MultiWorkerMirroredStrategy over several
    workers."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.extended._in_multi_worker_mode())


class KerasSeams:
    """Mixed into `InfoBal` before Keras' trainer classes."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self.built and self.optimizer is not None and self.optimizer.built:
            return None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


class JAXOptimizerStateSeam:
    """Mixed into the JAX trainer: both optimizers' variables in Keras' optimizer slot."""

    @property
    def _optimizer_state_variables(self):
        optimizer = getattr(self, "optimizer", None)  # unset before compile()
        out = list(optimizer.variables) if optimizer is not None else []
        if getattr(self, "discriminator_optimizer", None) is not None:
            out += self.discriminator_optimizer.variables
        return out

    def _get_jax_state(self, trainable_variables=False, non_trainable_variables=False,
                       optimizer_variables=False, metrics_variables=False,
                       purge_model_variables=False):
        state = []
        if trainable_variables:
            state.append([v.value for v in self.trainable_variables])
        if non_trainable_variables:
            state.append([v.value for v in self.non_trainable_variables])
        if optimizer_variables:
            state.append([v.value for v in self._optimizer_state_variables])
        if metrics_variables:
            state.append([v.value for v in self.metrics_variables])
        if purge_model_variables:
            # Keras drops the variables' values while its jitted loop holds them. A bad batch
            # fails while the first step traces, before Keras keeps any state to sync back:
            # remember the values so `_restore_purged` can put them back.
            # (object.__setattr__: a list of variables must not be tracked as new state.)
            object.__setattr__(self, "_purged",
                               [(v, v._value) for v in self._all_state_variables()])
            self._purge_model_variables(trainable_variables, non_trainable_variables,
                                        optimizer_variables, metrics_variables)
        return tuple(state)

    def _all_state_variables(self):
        return (self.trainable_variables + self.non_trainable_variables
                + self._optimizer_state_variables + self.metrics_variables)

    def _restore_purged(self):
        for v, value in getattr(self, "_purged", None) or []:
            if v._value is None:
                v._value = value
        object.__setattr__(self, "_purged", None)

    def _keeping_state(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except BaseException:
            self._restore_purged()
            raise
        finally:
            object.__setattr__(self, "_purged", None)

    def fit(self, *args, **kwargs):
        return self._keeping_state(super().fit, *args, **kwargs)

    def evaluate(self, *args, **kwargs):
        return self._keeping_state(super().evaluate, *args, **kwargs)

    def predict(self, *args, **kwargs):
        return self._keeping_state(super().predict, *args, **kwargs)

    def _purge_model_variables(self, trainable_variables=False, non_trainable_variables=False,
                               optimizer_variables=False, metrics_variables=False):
        super()._purge_model_variables(trainable_variables, non_trainable_variables,
                                       optimizer_variables, metrics_variables)
        if optimizer_variables and getattr(self, "discriminator_optimizer", None) is not None:
            for v in self.discriminator_optimizer.variables:
                v._value = None

    def jax_state_sync(self):
        if not getattr(self, "_jax_state", None) or self._jax_state_synced:
            return
        optimizer_values = self._jax_state.get("optimizer_variables", None)
        if optimizer_values:
            for ref, value in zip(self._optimizer_state_variables, optimizer_values):
                ref.assign(value)
            # Keras' own sync below assigns the first optimizer's part again: harmless.
        super().jax_state_sync()

    def _get_state_sharding_spec(self):
        trainable, non_trainable, _, metrics = super()._get_state_sharding_spec()
        optimizer = [v.value.sharding for v in self._optimizer_state_variables]
        return trainable, non_trainable, optimizer, metrics

