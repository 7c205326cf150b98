"""InfoMin: minimize I(V_i; V_j) between the views, InfoBal's second term.

The note (docs/INFOBAL.md) balances DIM's InfoMax against `lambda * sum_{i<j} beta_ij
I_U(V_i; V_j)`. Two ways to estimate the views' MI:

- adversarially (a lower bound: JSD, DV, InfoNCE, NWJ): discriminators U_ij maximize their
  estimate in a step of their own (second optimizer, `discriminator_steps` per encoder
  update), and the encoder minimizes it (Goodfellow et al.'s alternating game);
- CLUB's upper bound (Cheng et al., "CLUB: A Contrastive Log-ratio Upper Bound of Mutual
  Information", ICML 2020), whose q(v_j | v_i) the discriminator step fits by maximum
  likelihood.

The weight is lambda, any finite number: above 0 the views' MI is minimized (InfoBal), 0 is
DIM (the discriminators may still train, as a monitor of I(V_i; V_j)), below 0 the encoder
raises the discriminators' estimate: the views' MI maximized, CMC's objective (Tian et al.,
2019) on InfoBal's critics, which needs a lower bound (an encoder can raise CLUB's upper
bound without sharing information).

All M(M-1)/2 pair discriminators live in one batched layer (`layers.PairCritics` /
`layers.PairCLUB`), named `infomin_critics`. Logs `mi_V{i}_V{j}` and
`discriminator_objective`.
"""

import itertools

import keras
import numpy as np
from keras import ops

from keras_infobal.layers import registry
from keras_infobal.estimators import check_score_clip
from keras_infobal.objectives.base import PACKAGE, ObjectiveTerm


def check_correlation_weights(correlation_weights, num_views):
    """beta as a symmetric (M, M) float32 array (default all ones)."""
    if correlation_weights is None:
        return np.ones((num_views, num_views), dtype="float32")
    beta = np.asarray(correlation_weights, dtype="float32")
    if beta.shape != (num_views, num_views):
        raise ValueError(
            f"`correlation_weights` (beta) must be a {num_views}x{num_views} matrix; got "
            f"shape {beta.shape}.")
    if not np.allclose(beta, beta.T):
        raise ValueError(
            "`correlation_weights` (beta) must be symmetric: beta[i][j] weights the pair "
            "(i, j) and beta[j][i] the same pair.")
    if not np.all(np.isfinite(beta)) or np.any(beta < 0):
        raise ValueError(
            "`correlation_weights` must be finite and non-negative (a negative weight flips a "
            f"maximized term into a minimized one); got {beta.tolist()}.")
    return beta


def pool_views(views, view_pooling):
    """Views (B, M, h, w, C) as the discriminators' inputs (B, M, D): "mean" over the
    locations, or "flatten"."""
    if view_pooling == "mean":
        return ops.mean(views, axis=(2, 3))
    return ops.reshape(views, (ops.shape(views)[0], views.shape[1], -1))


@keras.saving.register_keras_serializable(package=PACKAGE)
class InfoMin(ObjectiveTerm):
    """The views' MI, minimized (weight > 0), monitored (0) or maximized (< 0); see the module.

    Args:
        critic: "jsd", "dv", "infonce", "nwj" (or a registered estimator), trained
            adversarially; or "club" / "club_sampled", CLUB's upper bound.
        units: width of the discriminators (they cost about `M(M-1)/2 * 2 * (2 D + units) *
            units` multiply-adds per image and pass).
        correlation_weights: beta, a symmetric MxM non-negative matrix (default all ones).
        view_pooling: "mean" over a view's locations or "flatten".
        score_clip: as `MICritic`'s ("auto", c or None; CLUB has no scores).
        weight: lambda.

    ```python
    model = InfoBal(objectives=[InfoMax("infonce"), InfoMin("infonce", weight=0.03)])
    ```
    """

    SIGN = -1.0
    adversarial = True

    CRITIC_KEYS = ("critic", "units", "score_clip", "view_pooling")

    def __init__(self, critic="jsd", units=512, correlation_weights=None, view_pooling="mean",
                 score_clip="auto", weight=1.0, **kwargs):
        kwargs.setdefault("name", "infomin")
        super().__init__(weight=weight, **kwargs)
        key = str(critic).lower()
        if self.weight < 0 and registry.is_upper_bound(key):
            raise ValueError(
                f"infomin_weight={self.weight} < 0 maximizes the views' MI, but "
                f"`infomin_critic` {critic!r} is the CLUB upper bound, which an encoder "
                "can raise without sharing information. Use a lower-bound critic (e.g. "
                "infomin_critic='infonce', CMC's) with lambda < 0.")
        if key not in registry.infomin_critic_names():
            raise ValueError(
                f"`infomin_critic` must be one of {list(registry.infomin_critic_names())} (a "
                "lower-bound critic trained adversarially, or the CLUB upper bound); got "
                f"{critic!r}.")
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(
                "`infomin_units` must be None (the critics' `critic_units`) or a positive "
                f"integer; got {units!r}.")
        if view_pooling not in ("mean", "flatten"):
            raise ValueError(f"`view_pooling` must be 'mean' or 'flatten'; got {view_pooling!r}.")
        self.critic = critic
        self.units = units
        self.correlation_weights = (None if correlation_weights is None
                                    else np.asarray(correlation_weights, "float32").tolist())
        self.view_pooling = view_pooling
        self.score_clip = check_score_clip(score_clip)

    def log_names(self, num_views):
        if num_views < 2:
            return []  # a single view has no pairs: the term is 0
        pairs = itertools.combinations(range(num_views), 2)
        return [f"mi_V{i + 1}_V{j + 1}" for i, j in pairs] + ["discriminator_objective"]

    def check_views(self, num_views, split):
        check_correlation_weights(self.correlation_weights, num_views)

    def build_term(self, views_shape, global_dim):
        b, m, vh, vw, c = views_shape
        beta = check_correlation_weights(self.correlation_weights, m)
        self.pairs = list(itertools.combinations(range(m), 2))
        if not self.pairs:
            self.critics = []
            return
        self.beta_pairs = np.array([beta[i, j] for i, j in self.pairs], dtype="float32")
        critics = registry.get_pair_critics(self.critic, self.pairs, units=self.units,
                                            score_clip=self.score_clip, name="infomin_critics")
        critics.build((b, m, c if self.view_pooling == "mean" else vh * vw * c))
        self.critics = [critics]

    def _weighted(self, terms):
        return ops.sum(ops.convert_to_tensor(self.beta_pairs, dtype=terms.dtype) * terms)

    def _logs(self, terms):
        return {f"mi_V{i + 1}_V{k + 1}": terms[p] for p, (i, k) in enumerate(self.pairs)}

    def estimate(self, enc):
        if not self.pairs:
            return 0.0, {}
        pooled = pool_views(enc.views, self.view_pooling)
        terms = self.critics[0](pooled, training=enc.training, gather_fn=enc.gather_fn)
        return self._weighted(terms), self._logs(terms)

    def discriminator_objective(self, enc):
        """Adversarial critics maximize their estimate; CLUB's q its log-likelihood."""
        pooled = pool_views(enc.views, self.view_pooling)
        fits, terms = self.critics[0].fit_and_estimate(pooled, training=enc.training,
                                                       gather_fn=enc.gather_fn)
        fit = self._weighted(fits)
        return fit, {**self._logs(terms), "discriminator_objective": fit}

    def get_config(self):
        return {**super().get_config(), "critic": self.critic, "units": self.units,
                "correlation_weights": self.correlation_weights,
                "view_pooling": self.view_pooling, "score_clip": self.score_clip}
