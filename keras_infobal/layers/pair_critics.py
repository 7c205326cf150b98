"""Batched InfoMin critics: one discriminator per view pair, all pairs in one computation.

InfoBal's InfoMin term has a discriminator U_ij for every pair of views (i < j): M(M-1)/2 of
them (28 at M = 8). Instead of one layer per pair, called in a Python loop, the layers here
hold every pair's parameters stacked on a leading pair axis P and score all pairs at once
with batched matmuls (`einsum` over the pair axis). Pair p's slice computes exactly what
the per-pair critic computes (`registry.get_infomin_critic`: an encode-and-dot `MICritic`
with LayerNorm encoders, or a `CLUB`), so estimates and gradients are the same. The maths
after the scores is not repeated here: the estimators (`keras_infobal.estimators`) and
CLUB's functions (`layers/club.py`) take the pair axis themselves.
"""

import keras
import numpy as np
from keras import ops

from keras_infobal import estimators
from keras_infobal.estimators import check_score_clip, clip_scores
from keras_infobal.layers.club import club_estimate, gaussian_log_likelihood

PACKAGE = "keras_infobal"
_LN_EPSILON = 1e-3  # keras.layers.LayerNormalization's default, as in the per-pair critics


def _stacked_initializer(initializer, count):
    """Initializes a (P, ...) weight as P independent (...) slices, each with its own fans."""
    def init(shape, dtype=None):
        return ops.stack([keras.initializers.get(initializer)(tuple(shape[1:]), dtype=dtype)
                          for _ in range(count)])
    return init


class _PairLayer(keras.layers.Layer):
    """Shared parts: the pair list, stacked weights and input checks.

    Inputs are the pooled views `(B, M, D)`; pair p = (i, j) reads views i and j.
    Subclasses list their weights in `_WEIGHTS`: (name, the weight's path in the per-pair
    critic layer of the same pair, shape function, initializer).
    """

    _WEIGHTS = ()

    def __init__(self, pairs, units=512, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"`units` must be a positive integer; got {units!r}.")
        pairs = [tuple(int(v) for v in p) for p in pairs]
        if not pairs or any(len(p) != 2 or p[0] == p[1] or min(p) < 0 for p in pairs):
            raise ValueError(
                "`pairs` must be a non-empty list of view pairs (i, j), i != j; got "
                f"{pairs!r}."
            )
        self.pairs = pairs
        self.units = units
        self._first = np.array([i for i, _ in pairs], dtype="int32")
        self._second = np.array([j for _, j in pairs], dtype="int32")

    @property
    def num_pairs(self):
        return len(self.pairs)

    def build(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise ValueError(
                f"{type(self).__name__} takes the pooled views (B, M, D); got {shape}."
            )
        if shape[1] is not None and max(max(p) for p in self.pairs) >= shape[1]:
            raise ValueError(f"The pairs {self.pairs} need more than the {shape[1]} views given.")
        self.view_dim = shape[-1]
        for name, _, shape_fn, init in self._WEIGHTS:
            shape = (self.num_pairs,) + shape_fn(self.view_dim, self.units)
            weight = self.add_weight(shape=shape, name=name,
                                     initializer=_stacked_initializer(init, self.num_pairs))
            setattr(self, name, weight)

    def _pair_inputs(self, pooled):
        """(x, y) of shape (B, P, D): the first and second view of every pair."""
        if not self.built:
            self.build(tuple(pooled.shape))
        if len(pooled.shape) != 3 or pooled.shape[-1] != self.view_dim:
            raise ValueError(
                f"{type(self).__name__} was built for pooled views (B, M, {self.view_dim}); "
                f"got {tuple(pooled.shape)}."
            )
        return ops.take(pooled, self._first, axis=1), ops.take(pooled, self._second, axis=1)

    @staticmethod
    def _dense(x, kernel, bias):
        """Pair p's Dense layer on x[:, p]: (B, P, D) x (P, D, U) -> (B, P, U)."""
        return ops.einsum("bpd,pdu->bpu", x, kernel) + bias

    # ---- pair slices, as the per-pair critic layer's weights ------------------------------------------
    def set_pair_weights(self, p, arrays):
        """Sets pair p's slice from `{per-pair critic path: array}` (the per-pair critic's
        weights, e.g. `pair_weights_of(critic)`)."""
        for name, path, _, _ in self._WEIGHTS:
            weight = getattr(self, name)
            value = ops.convert_to_numpy(weight).copy()
            value[p] = np.asarray(arrays[path], dtype=value.dtype)
            weight.assign(value)

    def pair_weights(self, p):
        """Pair p's slice as `{per-pair critic path: array}`."""
        return {path: ops.convert_to_numpy(getattr(self, name))[p]
                for name, path, _, _ in self._WEIGHTS}

    @classmethod
    def pair_weights_of(cls, critic):
        """A per-pair critic layer's weights as `{per-pair critic path: array}`."""
        out = {}
        for _, path, _, _ in cls._WEIGHTS:
            *attrs, _, index = path.split("/")
            layer = critic
            for attr in attrs:
                layer = getattr(layer, attr)
            out[path] = ops.convert_to_numpy(layer.weights[int(index)])
        return out

    def get_config(self):
        return {**super().get_config(), "pairs": [list(p) for p in self.pairs],
                "units": self.units}


def _kernel(d, u):
    return (d, u)


def _square(d, u):
    return (u, u)


def _vector(d, u):
    return (u,)


def _encoder_weights(side):
    # Names in the stacked layer, and where the per-pair MICritic's _Encoder kept them.
    return (
        (f"{side}_hidden_kernel", f"{side}_encoder/hidden/vars/0", _kernel, "glorot_uniform"),
        (f"{side}_hidden_bias", f"{side}_encoder/hidden/vars/1", _vector, "zeros"),
        (f"{side}_norm_gamma", f"{side}_encoder/norm/vars/0", _vector, "ones"),
        (f"{side}_norm_beta", f"{side}_encoder/norm/vars/1", _vector, "zeros"),
        (f"{side}_out_kernel", f"{side}_encoder/out/vars/0", _square, "glorot_uniform"),
        (f"{side}_out_bias", f"{side}_encoder/out/vars/1", _vector, "zeros"),
        (f"{side}_shortcut_kernel", f"{side}_encoder/shortcut/vars/0", _kernel,
         "glorot_uniform"),
        (f"{side}_shortcut_bias", f"{side}_encoder/shortcut/vars/1", _vector, "zeros"),
    )


@keras.saving.register_keras_serializable(package=PACKAGE)
class PairCritics(_PairLayer):
    """The InfoMin discriminators of all view pairs, one lower-bound critic per pair, batched.

    Pair p's critic is DIM's encode-and-dot critic (`MICritic(normalization="layer",
    scorer="dot")`): both pooled views go through a 1x1 MLP with a LayerNorm and a linear
    shortcut, the score is their dot product, and the estimator turns the `(B, B)` score
    matrix into an MI estimate. Here every weight has a leading pair axis P, so one einsum
    per Dense layer computes all pairs' encodings and one einsum all `(P, B, B)` scores.

    Args:
        pairs: the view pairs (i, j), in the order of the returned estimates.
        units: width of the encodings.
        estimator: "jsd", "dv", "infonce", "nwj" or a registered estimator.
        score_clip: None, "auto" or c: soft-clips every score (see `MICritic`).

    Calling it on pooled views `(B, M, D)` returns the `(P,)` estimates;
    `fit_and_estimate` returns (what the discriminator step maximizes, the estimates), both
    `(P,)` (the same here). Scores and estimates are float32 also under mixed precision.

    ```python
    critics = PairCritics(pairs=[(0, 1), (0, 2), (1, 2)], units=256, estimator="jsd")
    mi = critics(keras.random.normal((8, 3, 128)))   # (3,): I(V1;V2), I(V1;V3), I(V2;V3)
    ```
    """

    _WEIGHTS = _encoder_weights("global") + _encoder_weights("local")

    def __init__(self, pairs, units=512, estimator="jsd", score_clip=None, **kwargs):
        super().__init__(pairs, units=units, **kwargs)
        estimators.get(estimator)  # validates the name early
        self.estimator = estimator
        self.score_clip = check_score_clip(score_clip)

    def _encode(self, x, side):
        w = {name[len(side) + 1:]: getattr(self, name)
             for name, _, _, _ in self._WEIGHTS if name.startswith(side + "_")}
        h = self._dense(x, w["hidden_kernel"], w["hidden_bias"])
        # LayerNorm over the units, in float32 like keras.layers.LayerNormalization; each
        # pair has its own scale and offset.
        h32 = ops.cast(h, "float32")
        mean, variance = ops.moments(h32, axes=[-1], keepdims=True)
        inv = ops.rsqrt(variance + _LN_EPSILON) * ops.cast(w["norm_gamma"], "float32")
        h = ops.cast(h32 * inv + (ops.cast(w["norm_beta"], "float32") - mean * inv), x.dtype)
        h = ops.relu(h)
        return (self._dense(h, w["out_kernel"], w["out_bias"])
                + self._dense(x, w["shortcut_kernel"], w["shortcut_bias"]))

    def scores(self, pooled, gather_fn=None):
        """The `(P, B, B, 1)` scores (`(P, B, N, 1)` and the offset with `gather_fn`)."""
        x, y = self._pair_inputs(pooled)
        eg = ops.cast(self._encode(x, "global"), "float32")
        el = ops.cast(self._encode(y, "local"), "float32")
        offset = None
        if gather_fn is not None:
            el, offset = gather_fn(el)  # all-gathers along the batch axis
        # float32 scores also under mixed precision: bfloat16 keeps too few mantissa bits
        # for a logsumexp over the batch (as in MICritic).
        s = ops.einsum("apu,bpu->pab", eg, el)[..., None]
        return clip_scores(s, self.score_clip, candidates_axis=2), offset

    def call(self, pooled, training=None, gather_fn=None, return_fit=False):
        s, offset = self.scores(pooled, gather_fn=gather_fn)
        estimate = estimators.per_pair(self.estimator)(s, offset=offset)
        return (estimate, estimate) if return_fit else estimate

    def fit_and_estimate(self, pooled, training=None, gather_fn=None):
        """(what the discriminators' update maximizes, the estimates): both the estimates."""
        return self(pooled, training=training, gather_fn=gather_fn, return_fit=True)

    def compute_output_shape(self, input_shape):
        return (self.num_pairs,)

    def get_config(self):
        return {**super().get_config(), "estimator": self.estimator,
                "score_clip": self.score_clip}


@keras.saving.register_keras_serializable(package=PACKAGE)
class PairCLUB(_PairLayer):
    """CLUB upper bounds for all view pairs, one Gaussian q(v_j | v_i) per pair, batched.

    Pair p's slice is `layers.CLUB` (mean and log-variance heads, Linear -> ReLU -> Linear,
    log-variance squashed by tanh). Calling it on pooled views `(B, M, D)` returns the `(P,)`
    CLUB estimates; `fit_and_estimate` returns (q's log-likelihoods, the estimates).

    Args:
        pairs: the view pairs (i, j).
        units: hidden width of q's heads.
        sampled: one random negative per anchor (independent permutations per pair) instead
            of the whole batch.
        seed: seed of the partner permutations.

    ```python
    club = PairCLUB(pairs=[(0, 1)], units=64)
    log_likelihood, upper = club.fit_and_estimate(keras.random.normal((8, 2, 32)))
    ```
    """

    _WEIGHTS = (
        ("mu_hidden_kernel", "mu_hidden/vars/0", _kernel, "glorot_uniform"),
        ("mu_hidden_bias", "mu_hidden/vars/1", _vector, "zeros"),
        ("mu_out_kernel", "mu_out/vars/0", lambda d, u: (u, d), "glorot_uniform"),
        ("mu_out_bias", "mu_out/vars/1", lambda d, u: (d,), "zeros"),
        ("logvar_hidden_kernel", "logvar_hidden/vars/0", _kernel, "glorot_uniform"),
        ("logvar_hidden_bias", "logvar_hidden/vars/1", _vector, "zeros"),
        ("logvar_out_kernel", "logvar_out/vars/0", lambda d, u: (u, d), "glorot_uniform"),
        ("logvar_out_bias", "logvar_out/vars/1", lambda d, u: (d,), "zeros"),
    )

    def __init__(self, pairs, units=512, sampled=False, seed=None, **kwargs):
        super().__init__(pairs, units=units, **kwargs)
        self.sampled = bool(sampled)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.sampled else None

    def mu_logvar(self, x):
        """q's mean and log-variance (B, P, D) of every pair's second view, in float32."""
        mu = self._dense(ops.relu(self._dense(x, self.mu_hidden_kernel, self.mu_hidden_bias)),
                         self.mu_out_kernel, self.mu_out_bias)
        h = ops.relu(self._dense(x, self.logvar_hidden_kernel, self.logvar_hidden_bias))
        logvar = ops.tanh(self._dense(h, self.logvar_out_kernel, self.logvar_out_bias))
        return ops.cast(mu, "float32"), ops.cast(logvar, "float32")

    def partners(self, batch):
        """(P, B) partner indices: an independent random permutation per pair."""
        noise = keras.random.uniform((self.num_pairs, batch), seed=self.seed_generator)
        return ops.argsort(noise, axis=-1)

    def call(self, pooled, training=None, gather_fn=None, return_fit=False, partners=None):
        if gather_fn is not None:
            raise ValueError(
                "CLUB takes its negatives from the replica's own batch: it does not support "
                "cross_replica_negatives=True. Use a lower-bound InfoMin critic (e.g. "
                "infomin_critic='infonce') with cross-replica negatives, or turn them off."
            )
        x, y = self._pair_inputs(pooled)
        mu, logvar = self.mu_logvar(x)
        if partners is None and self.sampled:
            partners = self.partners(ops.shape(y)[0])
        # Pair p's slice is `CLUB`'s computation: the same functions, with the pair axis.
        estimate = club_estimate(mu, logvar, y, partners)
        if not return_fit:
            return estimate
        return gaussian_log_likelihood(mu, logvar, y), estimate

    def fit_and_estimate(self, pooled, training=None, gather_fn=None, partners=None):
        """(log-likelihoods, CLUB estimates), each (P,), from one pass of q."""
        return self(pooled, training=training, gather_fn=gather_fn, return_fit=True,
                    partners=partners)

    def log_likelihood(self, pooled):
        """(P,) mean log q(v_j | v_i) per pair: what fitting q maximizes."""
        return self.fit_and_estimate(pooled)[0]

    def compute_output_shape(self, input_shape):
        return (self.num_pairs,)

    def get_config(self):
        return {**super().get_config(), "sampled": self.sampled, "seed": self.seed}
