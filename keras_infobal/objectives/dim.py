"""DIM's global/local InfoMax: maximize I(R; V_i) between the global representation and
each view's local features.

Hjelm, Fedorov, Lavoie-Marchildon, Grewal, Bachman, Trischler, Bengio. "Learning deep
representations by mutual information estimation and maximization", ICLR 2019 (DIM(L): R
scored against every location of the local feature map). Two extensions of AMDIM (Bachman,
Hjelm, Buchwalter, "Learning Representations by Maximizing Mutual Information Across
Views", NeurIPS 2019):

- multi-scale: with `local_scales=(1, 2, 4)` R is also scored against each view's locations
  average-pooled over 2x2 and 4x4 windows (inside the view), one critic per view and scale;
  a view's term is the mean over its scales;
- augmented pairs: when the batch stacks two augmentations of the same images (`paired`), R
  of each half is scored against the local features of the other half.

The term is `sum_i alpha_i I_T(R; V_i)` (alpha: `view_weights`), logged as `mi_R_V{i}`.
"""

import copy

import keras
import numpy as np
from keras import ops

from keras_infobal.layers import registry
from keras_infobal.layers.critics import MICritic
from keras_infobal.estimators import check_score_clip
from keras_infobal.objectives.base import PACKAGE, ObjectiveTerm


def check_local_scales(local_scales):
    """`local_scales` as a sorted tuple of distinct positive pooling sizes that includes 1."""
    try:
        sizes = tuple(local_scales)
    except TypeError:
        sizes = None
    if (not sizes or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
                         for v in sizes) or len(set(sizes)) != len(sizes) or 1 not in sizes):
        raise ValueError(
            "`local_scales` must be distinct positive integer pooling sizes that include 1 "
            "(the views' own locations), e.g. (1,) for DIM or (1, 2, 4) for the 8x8, 7x7 and "
            f"5x5 grids of an 8x8 map; got {local_scales!r}.")
    return tuple(sorted(int(v) for v in sizes))


def check_view_weights(view_weights, num_views):
    """alpha as a (M,) float32 array (default all ones); a ValueError says what it takes."""
    if view_weights is None:
        return np.ones(num_views, dtype="float32")
    alpha = np.asarray(view_weights, dtype="float32")
    if alpha.shape != (num_views,):
        raise ValueError(
            f"`view_weights` (alpha) must have one weight per view, shape ({num_views},); "
            f"got shape {alpha.shape}.")
    if not np.all(np.isfinite(alpha)) or np.any(alpha < 0):
        raise ValueError(
            "`view_weights` must be finite and non-negative (a negative weight flips a "
            f"maximized term into a minimized one); got {alpha.tolist()}.")
    return alpha


def _critic_spec(critic):
    """(estimator name, the critic instances given or None, what the config saves)."""
    if isinstance(critic, dict) or (isinstance(critic, list) and critic
                                    and isinstance(critic[0], dict)):
        # Keras' deserialization consumes nested configs: work on a copy.
        critic = keras.saving.deserialize_keras_object(copy.deepcopy(critic))
    if isinstance(critic, MICritic):
        return critic.estimator, [critic], keras.saving.serialize_keras_object(critic)
    if isinstance(critic, (list, tuple)):
        if not critic or not all(isinstance(c, MICritic) for c in critic):
            raise ValueError(
                "`critic` as a list must hold one MICritic per view; got "
                f"{[type(c).__name__ for c in critic]}.")
        names = {c.name for c in critic}
        if len(names) != len(critic):
            raise ValueError(f"The critics of a `critic` list need distinct names; got {names}.")
        return (critic[0].estimator, list(critic),
                keras.saving.serialize_keras_object(list(critic)))
    if str(critic).lower() not in registry.critic_names():
        raise ValueError(
            f"`critic` must be one of {list(registry.critic_names())} (or an estimator added "
            "with keras_infobal.estimators.register_estimator), an MICritic shared by all "
            f"views, or a list of one MICritic per view; got {critic!r}.")
    return critic, None, critic


@keras.saving.register_keras_serializable(package=PACKAGE)
class InfoMax(ObjectiveTerm):
    """DIM's global/local InfoMax, multi-scale and across augmented pairs (see the module).

    Args:
        critic: the estimator, "jsd", "dv", "infonce", "nwj" (or a registered one): one
            critic per view (`infomax_critic_{i}`); or an `MICritic` shared by all views, or
            a list of one `MICritic` per view.
        critic_units: width of the named critics' encodings.
        view_weights: alpha, M non-negative weights (default all ones).
        local_scales: pooling sizes of the local features R is scored against; must
            include 1 (the views' own locations).
        score_clip: how the critics' scores are bounded ("auto", a number c, or None; see
            `MICritic`).
        weight: the term's weight in J (default 1).

    ```python
    term = InfoMax(critic="infonce", local_scales=(1, 2, 4), score_clip=20.0)
    model = InfoBal(objectives=[term])   # DIM(L), multi-scale
    ```
    """

    scores_global = True

    CRITIC_KEYS = ("critic", "critic_units", "score_clip")

    def __init__(self, critic="jsd", critic_units=512, view_weights=None, local_scales=(1,),
                 score_clip="auto", weight=1.0, **kwargs):
        kwargs.setdefault("name", "infomax")
        super().__init__(weight=weight, **kwargs)
        if not isinstance(critic_units, int) or critic_units < 1:
            raise ValueError(f"`critic_units` must be a positive integer; got {critic_units!r}.")
        self.estimator, given, self.critic_spec = _critic_spec(critic)
        self.local_scales = check_local_scales(local_scales)
        if self.local_scales != (1,) and given is not None:
            raise ValueError(
                "`local_scales` other than (1,) need a named `critic` (e.g. 'infonce'): each "
                "scale gets critics of its own, built like the named ones; got a critic "
                f"instance {type(given[0]).__name__}.")
        # Critic instances given are the term's critics (one list, so Keras saves each once);
        # named critics are built with the views' shape.
        self.named = given is None
        if given is not None:
            self.critics = list(given)
        self.critic_units = critic_units
        self.view_weights = None if view_weights is None else [float(w) for w in view_weights]
        self.score_clip = check_score_clip(score_clip)

    @property
    def pooled_scales(self):
        """The `local_scales` above 1: the pooled grids beside the views' own locations."""
        return tuple(size for size in self.local_scales if size != 1)

    def log_names(self, num_views):
        return [f"mi_R_V{i + 1}" for i in range(num_views)]

    def check_views(self, num_views, split):
        check_view_weights(self.view_weights, num_views)
        if not self.named and len(self.critics) not in (1, num_views):
            raise ValueError(
                f"`critic` as a list must hold one MICritic per view ({num_views}); got "
                f"{len(self.critics)}.")

    def check_view_grid(self, view_height, view_width):
        """Raises when a pooling size exceeds the views' grid."""
        too_large = [size for size in self.local_scales if size > min(view_height, view_width)]
        if too_large:
            raise ValueError(
                f"`local_scales` {list(self.local_scales)}: pooling sizes {too_large} exceed "
                f"the views' {view_height}x{view_width} locations; use sizes up to "
                f"{min(view_height, view_width)}.")

    def build_term(self, views_shape, global_dim):
        b, m, vh, vw, c = views_shape
        self.check_views(m, None)
        self.check_view_grid(vh, vw)
        self.alpha = check_view_weights(self.view_weights, m)
        if not self.named:
            critics = list(self.critics)
        else:
            critics = [registry.get_critic(self.estimator, units=self.critic_units,
                                           score_clip=self.score_clip,
                                           name=f"infomax_critic_{i + 1}") for i in range(m)]
        for critic in critics:
            if not critic.built:
                critic.build([(b, global_dim), (b, vh * vw, c)])
        scale_critics = []
        for i in range(m):
            for size in self.pooled_scales:
                critic = registry.get_critic(self.estimator, units=self.critic_units,
                                             score_clip=self.score_clip,
                                             name=f"infomax_critic_{i + 1}_pool{size}")
                critic.build([(b, global_dim), (b, (vh - size + 1) * (vw - size + 1), c)])
                scale_critics.append(critic)
        # One list, view-major: the views' critics, then each view's pooled-scale critics.
        self.critics = list(critics) + scale_critics
        self.num_views = m

    def _view_terms(self, views, r, enc):
        b, m, vh, vw, c = views.shape
        shared = len(self.critics) - m * len(self.pooled_scales) == 1
        terms = []
        for i in range(m):
            critic = self.critics[0 if shared else i]
            local = ops.reshape(views[:, i], (-1, vh * vw, c))
            scale_terms = [critic([r, local], training=enc.training, gather_fn=enc.gather_fn)]
            first = 1 if shared else m
            for k, size in enumerate(self.pooled_scales):
                # Pooled inside the view (valid padding): a scale never mixes two views.
                pooled = ops.average_pool(views[:, i], size, strides=1, padding="valid")
                n = (vh - size + 1) * (vw - size + 1)
                scale_critic = self.critics[first + i * len(self.pooled_scales) + k]
                scale_terms.append(scale_critic([r, ops.reshape(pooled, (-1, n, c))],
                                                training=enc.training,
                                                gather_fn=enc.gather_fn))
            terms.append(scale_terms[0] if len(scale_terms) == 1
                         else sum(scale_terms) / float(len(scale_terms)))
        return terms

    def estimate(self, enc):
        if enc.paired:
            # R of each augmentation against the local views of the other (AMDIM): the
            # encoder must see through the augmentation instead of matching colours.
            v1, v2 = ops.split(enc.views, 2, axis=0)
            r1, r2 = ops.split(enc.r, 2, axis=0)
            terms = [(a + b) / 2.0 for a, b in zip(self._view_terms(v2, r1, enc),
                                                   self._view_terms(v1, r2, enc))]
        else:
            terms = self._view_terms(enc.views, enc.r, enc)
        value = sum(float(self.alpha[i]) * t for i, t in enumerate(terms))
        return value, {f"mi_R_V{i + 1}": t for i, t in enumerate(terms)}

    def get_config(self):
        return {**super().get_config(), "critic": self.critic_spec,
                "critic_units": self.critic_units, "view_weights": self.view_weights,
                "local_scales": list(self.local_scales), "score_clip": self.score_clip}
