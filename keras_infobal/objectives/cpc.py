"""CPC on row views: a context network over one band of rows predicts the next band's rows.

van den Oord, Li, Vinyals. "Representation Learning with Contrastive Predictive Coding",
arXiv 1807.03748 (2018); for images, Henaff, Srinivas, De Fauw, Razavi, Doersch, Eslami, van
den Oord, "Data-Efficient Image Recognition with Contrastive Predictive Coding" (2019): a
context network summarizes the rows seen so far and linear predictors W_k predict the local
features k rows below, each prediction scored with InfoNCE against the features of the
batch's other images at the same location. Tschannen et al. (ICLR 2020) read it beside DIM
and CMC as one way of maximizing MI between views of an image; the note's top/bottom split
(`InfoBalBackbone(num_views=2, split="rows")`) is CPC's setting.

With split="rows" the backbone's M views are horizontal bands of the local map, top to
bottom, each (h, w, C). For every consecutive pair of bands (i, i+1) and every step
k = 1..`steps`, the context of band i's column l predicts band i+1's feature at row k-1,
column l (k rows below band i's last row). Logs `cpc_k{k}` (mean over the band pairs).
"""

import keras
from keras import ops

from keras_infobal import estimators
from keras_infobal.estimators import check_score_clip, clip_scores
from keras_infobal.objectives.base import PACKAGE, ObjectiveTerm


class _ContextNetwork(keras.layers.Layer):
    """CPC's context network, column by column: a column of a band (its h rows x C
    channels, flattened row by row) -> Dense(units) -> ReLU -> Dense(units)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.hidden = keras.layers.Dense(self.units, name="hidden")
        self.out = keras.layers.Dense(self.units, name="out")
        self.hidden.build(input_shape)
        self.out.build(tuple(input_shape[:-1]) + (self.units,))

    def call(self, columns):
        return self.out(ops.relu(self.hidden(columns)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)


class _Predictors(keras.layers.Layer):
    """CPC's linear predictors W_1..W_K (no bias), stacked in one (K, U, U) kernel:
    context (B, M-1, w, U) -> predictions (K, B, M-1, w, U), prediction k = context @ W_k."""

    def __init__(self, steps, units, **kwargs):
        super().__init__(**kwargs)
        self.steps = steps
        self.units = units

    def build(self, input_shape):
        # Each step's (U, U) matrix initialized with its own fans, as a Dense kernel.
        self.kernel = self.add_weight(
            shape=(self.steps, self.units, self.units), name="kernel",
            initializer=lambda shape, dtype=None: ops.stack(
                [keras.initializers.GlorotUniform()(shape[1:], dtype=dtype)
                 for _ in range(shape[0])]))

    def call(self, context):
        return ops.einsum("bmwu,kuv->kbmwv", context, ops.cast(self.kernel, context.dtype))


@keras.saving.register_keras_serializable(package=PACKAGE)
class CPC(ObjectiveTerm):
    """Contrastive Predictive Coding across row views, maximized (see the module).

    For each consecutive pair of bands (i, i+1) (views, top to bottom) and each image b:

    - context `c[b, l] = Dense(relu(Dense(column l of band i)))`, (B, w, U): the column's h
      rows x C channels flattened, so each column's context sees the whole band above;
    - predictions `p_k[b, l] = c[b, l] @ W_k`, k = 1..steps (one bias-free Dense per step);
    - targets `z_k[b, l] = Dense(band i+1[b, row k-1, column l])`, (B, w, U), one target
      encoder shared by the steps;
    - scores `s_k[a, b, l] = p_k[a, l] . z_k[b, l]` (float32, clipped by `score_clip`): the
      positive is the same image, the negatives the batch's other images at the same
      column;
    - `I_k = InfoNCE(s_k)` (at most log B).

    The context network, the predictors and the target encoder are shared by all band
    pairs (as CPC shares them over positions). The term's value is the **mean** of `I_k`
    over the steps and the band pairs; `SIGN` is +1: the encoder and the term's networks
    maximize `weight * value`. Logs `cpc_k{k}`: `I_k` averaged over the band pairs.

    Cross-replica negatives (`enc.gather_fn`): the targets z are all-gathered, and each
    replica's predictions are scored against the N targets of all replicas (InfoNCE with
    the replica's offset; at most log N).

    Augmented pairs (`enc.paired`): the stacked batch of 2B images is one batch (an image's
    rows predict its own lower rows; the other augmentation is a negative).

    The networks, saved with a preset by name: `cpc_context` (the context network),
    `cpc_predictors` (W_1..W_K), `cpc_targets` (the target encoder); the prefix is the
    term's name.

    Args:
        units: width U of the context, predictions and targets.
        steps: how many rows below the upper band are predicted (k = 1..steps); at most
            the bands' height h.
        score_clip: bounds the scores ("auto", a number c, or None; see `MICritic`).
        weight: the term's weight in J (default 1).

    ```python
    model = InfoBal(InfoBalBackbone(num_views=2, split="rows"),
                    objectives=[InfoMax("infonce"), CPC(steps=2, weight=0.5)])
    ```
    """

    CRITIC_KEYS = ("units", "steps", "score_clip")

    def __init__(self, units=256, steps=2, score_clip="auto", weight=1.0, **kwargs):
        kwargs.setdefault("name", "cpc")
        super().__init__(weight=weight, **kwargs)
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"CPC's `units` must be a positive integer; got {units!r}.")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(
                "CPC's `steps` (how many rows ahead the context predicts) must be a positive "
                f"integer; got {steps!r}.")
        self.units = units
        self.steps = steps
        self.score_clip = check_score_clip(score_clip)

    def log_names(self, num_views):
        return [f"cpc_k{k + 1}" for k in range(self.steps)]

    def check_views(self, num_views, split):
        if split != "rows" or num_views < 2:
            raise ValueError(
                "CPC predicts the rows of one horizontal band from the band above: it needs "
                "split='rows' and num_views >= 2; the backbone has "
                f"num_views={num_views}, split={split!r}. Use a backbone such as "
                "InfoBalBackbone(num_views=2, split='rows'), or leave CPC out of "
                "`objectives`.")

    def build_term(self, views_shape, global_dim):
        b, m, vh, vw, c = views_shape
        if m < 2:
            self.check_views(m, "rows")
        if self.steps > vh:
            raise ValueError(
                f"CPC(steps={self.steps}) predicts {self.steps} rows of the band below, but "
                f"the bands (views) have {vh} rows (views {vh}x{vw}x{c}). Use steps <= {vh}, "
                "fewer views, or larger images.")
        self.context = _ContextNetwork(self.units, name=f"{self.name}_context")
        self.predictors = _Predictors(self.steps, self.units, name=f"{self.name}_predictors")
        self.targets = keras.layers.Dense(self.units, name=f"{self.name}_targets")
        self.context.build((b, m - 1, vw, vh * c))
        self.predictors.build((b, m - 1, vw, self.units))
        self.targets.build((b, m - 1, self.steps, vw, c))
        self.critics = [self.context, self.predictors, self.targets]

    def step_scores(self, enc):
        """The (K, M-1, B, N, w) scores (N = B without `gather_fn`) and the offset:
        `[k, i, a, n, l]` scores image a's prediction k from band i at column l against
        candidate n's target, row k-1 of band i+1, at column l."""
        views = enc.views
        _, m, vh, vw, c = views.shape
        # Band i's columns: (B, M-1, w, h*C), each column's rows then channels.
        columns = ops.reshape(ops.transpose(views[:, :-1], (0, 1, 3, 2, 4)),
                              (-1, m - 1, vw, vh * c))
        context = self.context(columns)                                   # (B, M-1, w, U)
        predictions = ops.cast(self.predictors(context), "float32")       # (K, B, M-1, w, U)
        targets = ops.cast(self.targets(views[:, 1:, :self.steps]), "float32")  # (B, M-1, K, w, U)
        offset = None
        if enc.gather_fn is not None:
            targets, offset = enc.gather_fn(targets)
        # float32 scores also under mixed precision (as MICritic's).
        s = ops.einsum("kailu,niklu->kianl", predictions, targets)
        return clip_scores(s, self.score_clip, candidates_axis=3), offset

    def step_estimates(self, enc):
        """(K, M-1) InfoNCE estimates, one per step and band pair."""
        s, offset = self.step_scores(enc)
        k, pairs = s.shape[0], s.shape[1]
        flat = ops.reshape(s, (k * pairs, -1) + tuple(ops.shape(s)[3:]))  # (K(M-1), B, N, w)
        return ops.reshape(estimators.per_pair("infonce")(flat, offset=offset), (k, pairs))

    def estimate(self, enc):
        terms = self.step_estimates(enc)
        per_step = ops.mean(terms, axis=1)
        return ops.mean(terms), {f"cpc_k{k + 1}": per_step[k] for k in range(self.steps)}

    def get_config(self):
        return {**super().get_config(), "units": self.units, "steps": self.steps,
                "score_clip": self.score_clip}
