"""Encode-and-dot MI critics (DIM's local critic), one class per estimator.

The names that pick a critic ("jsd", ..., and the CLUB upper bounds) are in
`keras_infobal.layers.registry`, which builds the critics of this module, `club.py` and
`pair_critics.py`; the score clip they share is `estimators.check_score_clip`/`clip_scores`.
"""

import keras
from keras import ops

from keras_infobal import estimators
from keras_infobal.estimators import check_score_clip, clip_scores
from keras_infobal.layers.batch_normalization import BatchNormalization

PACKAGE = "keras_infobal"


def _flatten_locals(x, name):
    """(B, C) -> (B, 1, C); (B, L, C) stays; (B, H, W, C) -> (B, H*W, C)."""
    rank = len(x.shape)
    if rank == 2:
        return ops.expand_dims(x, 1)
    if rank == 3:
        return x
    if rank == 4:
        return ops.reshape(x, (-1, x.shape[1] * x.shape[2], x.shape[3]))
    raise ValueError(
        f"The critic's {name} input must have rank 2 (B, C), 3 (B, L, C) or 4 (B, H, W, C); "
        f"got shape {tuple(x.shape)}."
    )


class _Encoder(keras.layers.Layer):
    """DIM's 1x1 encoder: Dense -> BN -> ReLU -> Dense, plus a linear shortcut."""

    def __init__(self, units, normalization="batch", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.normalization = normalization

    def build(self, input_shape):
        self.hidden = keras.layers.Dense(self.units, name="hidden")
        if self.normalization in ("batch", "sync_batch"):
            self.norm = BatchNormalization(
                synchronized=self.normalization == "sync_batch", name="norm")
        elif self.normalization == "layer":
            self.norm = keras.layers.LayerNormalization(name="norm")
        else:
            self.norm = keras.layers.Identity(name="norm")
        self.out = keras.layers.Dense(self.units, name="out")
        self.shortcut = keras.layers.Dense(self.units, name="shortcut")
        self.hidden.build(input_shape)
        hidden_shape = tuple(input_shape[:-1]) + (self.units,)
        self.norm.build(hidden_shape)
        self.out.build(hidden_shape)
        self.shortcut.build(input_shape)

    def call(self, x, training=None):
        h = ops.relu(self.norm(self.hidden(x), training=training))
        return self.out(h) + self.shortcut(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "normalization": self.normalization}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MICritic(keras.layers.Layer):
    """Critic T(g, l) that scores every (global, local) pair in a batch and returns an MI estimate.

    Inputs are `[g, l]`: `g` of shape `(B, D)` and `l` of shape `(B, C)`, `(B, L, C)` or
    `(B, H, W, C)`. Both go through DIM's encoder (1x1 MLP with a linear shortcut). With
    `scorer="dot"` the score is the dot product of the encodings (DIM's encode-and-dot); with
    `scorer="concat"` it is a one-hidden-layer MLP on the concatenated pair
    (concat-and-convolve; it costs `B*B*L*units` activations). Same-image pairs are positives;
    the rest of the batch provides the negatives.

    Args:
        units: width of the encodings (DIM uses 2048; 512 is a good CPU default).
        estimator: "jsd", "dv", "infonce" or "nwj".
        scorer: "dot" or "concat".
        normalization: in the encoders, "batch" (DIM), "sync_batch" (batch statistics over
            all replicas under tf.distribute), "layer" or None. "layer" keeps no running
            statistics, so calling the critic never changes its state.
        score_clip: None, c > 0 to soft-clip every score to (-c, c) with
            `c * tanh(s / c)` (AMDIM's stabilizer: unbounded dot products let InfoNCE and DV
            estimates swing from epoch to epoch), or "auto" for c = ln(N) / 2 + 2 with N
            candidates per score row (`clip_scores`).

    Calling it with `gather_fn=f` (as `InfoBal(cross_replica_negatives=True)` does under
    tf.distribute) scores each global vector against the local vectors `f` gathers from all
    replicas: `f(local_encodings) -> (all_encodings, offset of this replica's rows)`.

    Example:

    ```python
    critic = MICritic(units=256, estimator="jsd")
    mi = critic([keras.random.normal((8, 64)), keras.random.normal((8, 16, 128))])
    ```
    """

    def __init__(self, units=512, estimator="jsd", scorer="dot", normalization="batch",
                 score_clip=None, **kwargs):
        super().__init__(**kwargs)
        self.score_clip = check_score_clip(score_clip)
        if normalization not in ("batch", "sync_batch", "layer", None):
            raise ValueError(
                "`normalization` must be 'batch', 'sync_batch', 'layer' or None; got "
                f"{normalization!r}."
            )
        self.normalization = normalization
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"`units` must be a positive integer; got {units!r}.")
        if scorer not in ("dot", "concat"):
            raise ValueError(f"`scorer` must be 'dot' or 'concat'; got {scorer!r}.")
        estimators.get(estimator)  # validates the name early
        self.units = units
        self.estimator = estimator
        self.scorer = scorer

    def _split_shapes(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2 or not all(
            isinstance(s, (list, tuple)) for s in input_shape
        ):
            raise ValueError(
                "A critic takes two inputs [global (B, D), local (B, [L,] C)]; "
                f"got input shape {input_shape}."
            )
        g, l = (tuple(s) for s in input_shape)
        if len(g) != 2:
            raise ValueError(f"The global input must have shape (B, D); got {g}.")
        if len(l) not in (2, 3, 4):
            raise ValueError(
                f"The local input must have shape (B, C), (B, L, C) or (B, H, W, C); got {l}."
            )
        return g, l

    def build(self, input_shape):
        g, l = self._split_shapes(input_shape)
        self.global_dim, self.local_dim = g[-1], l[-1]
        l3 = (l[0], None, l[-1])
        self.global_encoder = _Encoder(self.units, self.normalization, name="global_encoder")
        self.local_encoder = _Encoder(self.units, self.normalization, name="local_encoder")
        self.global_encoder.build(g)
        self.local_encoder.build(l3)
        if self.scorer == "concat":
            self.pair_hidden = keras.layers.Dense(1, name="pair_score")
            self.pair_hidden.build((None, self.units))

    def _encode(self, inputs, training):
        g, l = inputs
        if not self.built:
            self.build([tuple(g.shape), tuple(l.shape)])
        if len(g.shape) != 2:
            raise ValueError(f"The global input must have shape (B, D); got {tuple(g.shape)}.")
        l = _flatten_locals(l, "local")
        if g.shape[-1] != self.global_dim or l.shape[-1] != self.local_dim:
            raise ValueError(
                f"Channel mismatch: this critic was built for global dim {self.global_dim} and "
                f"local dim {self.local_dim}, got {g.shape[-1]} and {l.shape[-1]}. "
                "Use a new critic for inputs of another width."
            )
        if g.shape[0] is not None and l.shape[0] is not None and g.shape[0] != l.shape[0]:
            raise ValueError(
                f"Global and local inputs must share the batch size; got {g.shape[0]} and "
                f"{l.shape[0]}."
            )
        return (
            self.global_encoder(g, training=training),
            self.local_encoder(l, training=training),
        )

    def scores(self, inputs, training=None, gather_fn=None):
        """The `(B, B, L)` score tensor; `[a, b, l]` scores global `a` against local `(b, l)`.

        With `gather_fn`, returns `(scores (B, N, L), offset)` against all gathered locals.
        """
        eg, el = self._encode(inputs, training)
        offset = None
        if gather_fn is not None:
            el, offset = gather_fn(el)
            return self._score(eg, el), offset
        return self._score(eg, el)

    def _score(self, eg, el):
        # Scores and estimates are computed in float32 also under a mixed-precision policy:
        # bfloat16 keeps 8 bits of mantissa, too few for a logsumexp over the batch.
        if self.scorer == "dot":
            s = ops.einsum("ad,bld->abl", ops.cast(eg, "float32"), ops.cast(el, "float32"))
        else:
            # An MLP on the concatenated encodings [e_g; e_l] whose first layer is a sum: only
            # the (B, B, L, units) pairwise sum is materialized, never the concatenation.
            h = ops.relu(eg[:, None, None, :] + el[None, :, :, :])
            s = ops.cast(ops.squeeze(self.pair_hidden(h), -1), "float32")
        return clip_scores(s, self.score_clip)

    def call(self, inputs, training=None, gather_fn=None):
        estimator = estimators.get(self.estimator)
        if gather_fn is None:
            return estimator(self.scores(inputs, training=training))
        scores, offset = self.scores(inputs, training=training, gather_fn=gather_fn)
        return estimator(scores, offset=offset)

    def fit_and_estimate(self, inputs, training=None, gather_fn=None):
        """(what the critic's own update maximizes, the MI estimate): both the estimate.

        The batched InfoMin layers (`PairCritics`, `PairCLUB`) have the same method for
        all pairs at once; `CLUB` returns its log-likelihood and its upper bound instead.
        """
        value = self(inputs, training=training, gather_fn=gather_fn)
        return value, value

    def compute_output_shape(self, input_shape):
        self._split_shapes(input_shape)
        return ()

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "estimator": self.estimator,
            "scorer": self.scorer,
            "normalization": self.normalization,
            "score_clip": self.score_clip,
        }


class _FixedEstimatorCritic(MICritic):
    ESTIMATOR = None

    def __init__(self, units=512, scorer="dot", normalization="batch", score_clip=None,
                 **kwargs):
        if kwargs.pop("estimator", self.ESTIMATOR) != self.ESTIMATOR:
            raise ValueError(
                f"{type(self).__name__} always uses the {self.ESTIMATOR!r} estimator; use "
                "MICritic(estimator=...) for another one."
            )
        super().__init__(units=units, estimator=self.ESTIMATOR, scorer=scorer,
                         normalization=normalization, score_clip=score_clip, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("estimator")
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class JSDCritic(_FixedEstimatorCritic):
    """Encode-and-dot critic with the Jensen-Shannon estimator (DIM's default).

    ```python
    mi = JSDCritic(units=512)([global_vectors, local_map])
    ```
    """

    ESTIMATOR = "jsd"


@keras.saving.register_keras_serializable(package=PACKAGE)
class DVCritic(_FixedEstimatorCritic):
    """Encode-and-dot critic with the Donsker-Varadhan estimator (MINE), via logsumexp.

    ```python
    mi = DVCritic(units=512)([global_vectors, local_map])
    ```
    """

    ESTIMATOR = "dv"


@keras.saving.register_keras_serializable(package=PACKAGE)
class InfoNCECritic(_FixedEstimatorCritic):
    """Encode-and-dot critic with the InfoNCE estimator (CPC); at most log(batch size).

    ```python
    mi = InfoNCECritic(units=512)([global_vectors, local_map])
    ```
    """

    ESTIMATOR = "infonce"


@keras.saving.register_keras_serializable(package=PACKAGE)
class NWJCritic(_FixedEstimatorCritic):
    """Encode-and-dot critic with the NWJ estimator.

    ```python
    mi = NWJCritic(units=512)([global_vectors, local_map])
    ```
    """

    ESTIMATOR = "nwj"


# Which name builds which critic (and CLUB) is in layers/registry.py, the one table of names.
