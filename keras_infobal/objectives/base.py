"""The declared interface of one objective term, which `InfoBal` composes.

Tschannen et al. (ICLR 2020, "On Mutual Information Maximization for Representation
Learning") read DIM, CMC and CPC as ways of maximizing MI between views of an image; InfoBal
adds a term that minimizes it. Each of those is one `ObjectiveTerm` (one module per term,
with its paper), and the task's objective is their weighted sum:

    J = sum_t sign_t * weight_t * estimate_t

which the encoder (backbone and the terms' own critics) maximizes. A term with
`adversarial = True` (InfoMin) also has critics of its own that a second optimizer trains
in the discriminator step: they maximize `discriminator_objective`, off the encoder's
gradient. Each backend's trainer calls only this interface, through `InfoBal`'s public
methods.

A term sees one batch's `Encodings`: the views V (B, M, h, w, C) the encoder made, the global
representation R (B, D), whether the batch stacks two augmentations of the same images
(`paired`: the first half and the second half, AMDIM's pairs), `training`, and `gather_fn`
(under tf.distribute with cross-replica negatives: all-gathers encodings across replicas).

```python
class MyTerm(ObjectiveTerm):
    def log_names(self, num_views): return ["my_mi"]
    def build_term(self, views_shape, global_dim): self.critic = ...; self.critic.build(...)
    def estimate(self, enc):
        mi = self.critic([enc.r, enc.views[:, 0]], training=enc.training)
        return mi, {"my_mi": mi}

model = InfoBal(objectives=[InfoMax(critic="infonce"), MyTerm(weight=0.5)])
```
"""

import collections
import numbers

import keras
import numpy as np

PACKAGE = "keras_infobal"

Encodings = collections.namedtuple("Encodings", ["views", "r", "paired", "training",
                                                 "gather_fn"])
Encodings.__doc__ = """One batch's encodings as the objective terms see them (see the module)."""


def check_weight(weight, name="weight"):
    """A finite float; a ValueError names the argument."""
    if (isinstance(weight, bool) or not isinstance(weight, numbers.Real)
            or not np.isfinite(weight)):
        raise ValueError(f"`{name}` must be a finite number; got {weight!r}.")
    return float(weight)


class ObjectiveTerm(keras.layers.Layer):
    """One term of InfoBal's objective: what it scores, its critics, its estimate, its weight
    and sign, its logs.

    Subclasses set `SIGN` (+1: the encoder maximizes the estimate, -1: it minimizes it) and
    implement `log_names`, `build_term` and `estimate`; an adversarial term also sets
    `adversarial = True` and implements `discriminator_objective`.

    Args:
        weight: the term's weight in J (any finite number; 0 leaves the term out of the
            encoder's objective, while an adversarial term's critics may still train as a
            monitor).
    """

    SIGN = 1.0
    adversarial = False
    # Whether the term scores R: when no term does, the aggregator gets no gradient and the
    # encoder step leaves it out (CMC and CPC train the view encoder alone).
    scores_global = False

    def __init__(self, weight=1.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = check_weight(weight)
        self.critics = []  # build_term appends the term's critic layers

    @property
    def coefficient(self):
        """sign * weight: the term's factor in J."""
        return self.SIGN * self.weight

    # ---- what a term declares ---------------------------------------------------------------
    def log_names(self, num_views):
        """The names of the scalars `estimate` (and `discriminator_objective`) log."""
        raise NotImplementedError(f"{type(self).__name__} must define log_names(num_views).")

    def build_term(self, views_shape, global_dim):
        """Creates and builds the term's critics for views `(B, M, h, w, C)` and R `(B, D)`."""
        raise NotImplementedError(f"{type(self).__name__} must define build_term().")

    def estimate(self, enc):
        """(the scalar estimate the weight multiplies, {log name: scalar}) on `Encodings`."""
        raise NotImplementedError(f"{type(self).__name__} must define estimate(enc).")

    def discriminator_objective(self, enc):
        """Adversarial terms: (what the critics' own update maximizes, {log name: scalar}).

        `enc.views` carry no gradient to the encoder here."""
        raise NotImplementedError(
            f"{type(self).__name__} is not adversarial: it has no discriminator objective.")

    def check_views(self, num_views, split):
        """Raises a ValueError when the backbone's views do not suit the term (e.g. CPC
        needs row views); the default accepts any."""

    # ---- what the task reads ------------------------------------------------------------------
    def critic_layers(self):
        """The layers a preset's `critics.weights.h5` holds for this term (saved by name):
        the `critics` list `build_term` fills. (A method: Keras' saving walks properties.)"""
        return list(self.critics)

    @property
    def encoder_variables(self):
        """Variables the encoder step trains (the term's non-adversarial critics)."""
        return [] if self.adversarial else list(self.trainable_variables)

    @property
    def discriminator_variables(self):
        """Variables the discriminator step trains (an adversarial term's critics)."""
        return list(self.trainable_variables) if self.adversarial else []

    def build(self, input_shape):
        views_shape, r_shape = input_shape
        self.build_term(tuple(views_shape), r_shape[-1])
        self.built = True

    # The config keys that fix the shape of the term's critics: a preset's critics load into a
    # term whose saved config agrees on them (`InfoBal.from_preset`).
    CRITIC_KEYS = ()

    def same_critics(self, config):
        """Whether a saved term config's critics fit this term's (`CRITIC_KEYS` agree)."""
        own = self.get_config()
        return all(config.get(k) == own[k] for k in self.CRITIC_KEYS)

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}
