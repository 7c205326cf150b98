"""The JAX update steps: stateless, jitted, `jax.value_and_grad` per update.

Keras' JAX trainer threads the model's state through the jitted step as
`(trainable, non_trainable, optimizer_variables, metrics)`, where the optimizer slot holds
`self.optimizer.variables` only. InfoBal's second optimizer carries its state in that same
slot; the trainer methods that fill and read the slot are overridden in one place,
`models/keras_seams.py` (`JAXOptimizerStateSeam`, which says why and what a Keras release
may break). Everything here uses public Keras APIs (`keras.StatelessScope`,
`optimizer.apply`).

Seed generators (CLUB's sampled partners) are non-trainable variables: their new state comes
back out of every stateless scope with the BatchNorm statistics.

```python
# KERAS_BACKEND=jax; data parallel over all local devices:
keras.distribution.set_distribution(keras.distribution.DataParallel())
model = InfoBal(...); model.compile(...); model.fit(ds)
```
"""

import jax
from keras import ops
import keras

from keras_infobal.models.keras_seams import JAXOptimizerStateSeam
from keras_infobal.models.trainers.base import BaseTrainer


def _stateless(fn, refs, values, read, collect_losses=False):
    """Runs `fn()` with `refs` holding `values`; returns (fn's output, new values of `read`,
    losses added during the call)."""
    with keras.StatelessScope(state_mapping=list(zip(refs, values)),
                                collect_losses=collect_losses) as scope:
        out = fn()
    return out, [scope.get_current_value(v) for v in read], list(scope.losses)


def _stateless_apply(optimizer, optimizer_values, grads, variables, values,
                     learning_rate=None):
    """`optimizer.apply(grads, variables)` on values: (new values, new optimizer values).

    Unlike `optimizer.stateless_apply`, `variables` may be a subset of what the optimizer was
    built with (the encoder optimizer is built on all trainable variables, as on the other
    backends, so the `.keras` files match). `learning_rate`, when given, is set first.

    A `LossScaleOptimizer` (mixed_float16) is applied here on values: its own `apply` runs
    `ops.cond` over stateful branches, whose assignments leak JAX tracers out of the
    stateless scope. Both outcomes are computed and selected with `where`, as Keras' own
    `stateless_apply` selects with `cond`: finite gradients are unscaled and applied (the
    scale doubles after `dynamic_growth_steps` finite steps); otherwise the step is skipped
    and the scale halved.
    """
    refs = list(variables) + list(optimizer.variables)
    initial = list(values) + list(optimizer_values)

    def run(update):
        def fn():
            if learning_rate is not None:
                optimizer.learning_rate = learning_rate
            update()
        _, new, _ = _stateless(fn, refs, initial, refs)
        return new

    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        new = run(lambda: optimizer.apply(grads, variables))
    else:
        counter, scale = optimizer.step_counter, optimizer.dynamic_scale

        def finite_update():
            s, n = scale.value, counter.value
            optimizer.inner_optimizer.apply([g / s for g in grads], variables)
            grow = ops.equal(n, optimizer.dynamic_growth_steps - 1)
            counter.assign(ops.cast(ops.where(grow, 0, n + 1), counter.dtype))
            scale.assign(ops.where(grow, s * 2.0, s))

        def skipped_update():
            counter.assign(ops.zeros((), counter.dtype))
            scale.assign(scale.value * 0.5)

        finite = optimizer.check_finite(grads)
        new = [ops.where(finite, a, b)
               for a, b in zip(run(finite_update), run(skipped_update))]
    return new[:len(variables)], new[len(variables):]


def _optimizer_reading(optimizer, optimizer_values):
    """(the current learning rate, the loss scale: 1 unless a LossScaleOptimizer) of an
    optimizer whose state is `optimizer_values`."""
    (rate, scale), _, _ = _stateless(
        lambda: (ops.convert_to_tensor(optimizer.learning_rate), optimizer.scale_loss(1.0)),
        optimizer.variables, optimizer_values, [])
    return rate, scale


class JAXTrainer(JAXOptimizerStateSeam, BaseTrainer):
    """InfoBal's alternating updates on JAX (see the module docstring for the state)."""

    # ---- stateless pieces --------------------------------------------------------------------
    def _indices(self, variables):
        position = {id(v): i for i, v in enumerate(self.trainable_variables)}
        return [position[id(v)] for v in variables]

    @staticmethod
    def _put(values, indices, new):
        values = list(values)
        for i, v in zip(indices, new):
            values[i] = v
        return values

    def _split_optimizer_state(self, optimizer_values):
        n = len(self.optimizer.variables)
        return list(optimizer_values[:n]), list(optimizer_values[n:])

    def _jax_discriminator_update(self, trainable, non_trainable, enc_opt, disc_opt, views):
        """One discriminator update on values; views carry no gradient to the encoder."""
        learning_rate = None
        if self.discriminator_lr_ratio is not None:
            learning_rate = self.discriminator_lr_ratio * _optimizer_reading(
                self.optimizer, enc_opt)[0]
        # Under mixed_float16 the optimizer divides the gradients by its loss scale.
        scale = _optimizer_reading(self.discriminator_optimizer, disc_opt)[1]
        views = ops.stop_gradient(views)
        d_idx = self._indices(self.discriminator_variables)
        refs = self.trainable_variables + self.non_trainable_variables

        def loss_fn(d_values):
            values = self._put(trainable, d_idx, d_values) + list(non_trainable)
            (fit, logs), new_nt, _ = _stateless(
                lambda: self.discriminator_objective(views), refs, values,
                self.non_trainable_variables)
            return -fit / self._replicas() * scale, (fit, logs, new_nt)

        d_values = [trainable[i] for i in d_idx]
        (_, (fit, logs, non_trainable)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            d_values)
        d_values, disc_opt = _stateless_apply(self.discriminator_optimizer, disc_opt, grads,
                                              self.discriminator_variables, d_values,
                                              learning_rate)
        return self._put(trainable, d_idx, d_values), non_trainable, disc_opt, (fit, logs)

    def _jax_update(self, trainable, non_trainable, enc_opt, disc_opt, x, disc_steps):
        """`disc_steps` discriminator updates, then one encoder update, on values.

        As on TensorFlow, both share one encoder pass: the discriminator updates run inside
        the encoder's loss function on stop-gradient views, so they never change its gradient.
        """
        e_idx = self._indices(self.encoder_variables)
        refs = self.trainable_variables + self.non_trainable_variables
        # Under mixed_float16 the optimizer divides the gradients by its loss scale.
        scale = _optimizer_reading(self.optimizer, enc_opt)[1]

        def loss_fn(e_values, disc_opt):
            values = self._put(trainable, e_idx, e_values)
            # The device augmentation's seed state is non-trainable: its next state comes back.
            views, nt, _ = _stateless(
                lambda: self.backbone.encoder(self.augment_batch(x), training=True), refs,
                values + list(non_trainable), self.non_trainable_variables)
            d_logs = {}
            for _ in range(disc_steps):
                values, nt, disc_opt, (_, d_logs) = self._jax_discriminator_update(
                    values, nt, enc_opt, disc_opt, views)
            (loss, logs), nt, losses = _stateless(
                lambda: self.encoder_loss(views), refs, values + nt,
                self.non_trainable_variables, collect_losses=True)
            if losses:  # layers' added losses (regularizers) reach the scope, not self.losses
                loss = loss + sum(losses)
                logs = {**logs, "loss": loss}
            return (loss / self._replicas() * scale,
                    ({**logs, **d_logs}, values, nt, disc_opt))

        e_values = [trainable[i] for i in e_idx]
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(e_values, disc_opt)
        logs, values, non_trainable, disc_opt = aux
        e_values, enc_opt = _stateless_apply(self.optimizer, enc_opt, grads,
                                             self.encoder_variables, e_values)
        trainable = self._put(values, e_idx, e_values)
        return (trainable, non_trainable, enc_opt, disc_opt), logs

    def _jax_trackers(self, metrics_values, logs):
        out, new, _ = _stateless(lambda: self._update_trackers(logs), self.metrics_variables,
                                 metrics_values, self.metrics_variables)
        return out, new

    # ---- Keras' stateless step API -------------------------------------------------------------
    def train_step(self, state, data):
        trainable, non_trainable, optimizer_values, metrics = state
        x = self._training_batch(data)
        disc_steps = self._discriminator_steps_to_run()
        enc_opt, disc_opt = self._split_optimizer_state(optimizer_values)
        (trainable, non_trainable, enc_opt, disc_opt), logs = (
            self._jax_update(trainable, non_trainable, enc_opt, disc_opt, x, disc_steps))
        logs, metrics = self._jax_trackers(metrics, logs)
        return logs, (trainable, non_trainable, enc_opt + disc_opt, metrics)

    def test_step(self, state, data):
        trainable, non_trainable, metrics = state
        refs = self.trainable_variables + self.non_trainable_variables
        logs, non_trainable, _ = _stateless(lambda: self._test_logs(data), refs,
                                            list(trainable) + list(non_trainable),
                                            self.non_trainable_variables)
        logs, metrics = self._jax_trackers(metrics, logs)
        return logs, (trainable, non_trainable, metrics)

    def predict_step(self, state, data):
        trainable, non_trainable = state
        refs = self.trainable_variables + self.non_trainable_variables
        out, non_trainable, _ = _stateless(lambda: self._predict_outputs(data), refs,
                                           list(trainable) + list(non_trainable),
                                           self.non_trainable_variables)
        return out, non_trainable

    # ---- the eager, stateful updates (same API as on TensorFlow and PyTorch) -----------------
    def _current(self):
        trainable = [v.value for v in self.trainable_variables]
        non_trainable = [v.value for v in self.non_trainable_variables]
        enc_opt, disc_opt = self._split_optimizer_state(
            [v.value for v in self._optimizer_state_variables])
        return trainable, non_trainable, enc_opt, disc_opt

    def _assign(self, trainable, non_trainable, enc_opt, disc_opt):
        pairs = (list(zip(self.trainable_variables, trainable))
                 + list(zip(self.non_trainable_variables, non_trainable))
                 + list(zip(self._optimizer_state_variables, list(enc_opt) + list(disc_opt))))
        for ref, value in pairs:
            ref.assign(value)

    def discriminator_step(self, views):
        """One update of the adversarial terms' critics on (fixed) views; returns (what
        they maximize, their logs)."""
        self._require_discriminator_optimizer()
        trainable, non_trainable, enc_opt, disc_opt = self._current()
        trainable, non_trainable, disc_opt, out = self._jax_discriminator_update(
            trainable, non_trainable, enc_opt, disc_opt, views)
        self._assign(trainable, non_trainable, enc_opt, disc_opt)
        return out

    def encoder_step(self, images, before_update=None):
        """One update of the encoder (backbone and non-adversarial critics); returns
        (loss, logs).

        On JAX the discriminator steps run inside the update (see `_jax_update`); an eager
        `before_update` callback cannot, so it is refused.
        """
        if before_update is not None:
            raise ValueError(
                "On the JAX backend encoder_step takes no `before_update`: the discriminator "
                "steps run inside the jitted update. Call model.discriminator_step(views) "
                "first, or use model.fit / model.train_on_batch.")
        trainable, non_trainable, enc_opt, disc_opt = self._current()
        state, logs = self._jax_update(trainable, non_trainable, enc_opt, disc_opt, images, 0)
        self._assign(*state)
        return logs["loss"], logs
