"""Mutual-information estimators on an in-batch score tensor, with an optional pair axis.

Every function takes `scores` of shape `(B, B)` or `(B, B, L)`: `scores[a, b, l]` is the
critic's score for the pair (first input of image `a`, second input of image `b` at location
`l`). Entries with `a == b` are positives, all others negatives. With `offset=k`, `scores` may be
rectangular, `(B, N, L)` with `N >= B` candidates (gathered from all replicas), and row `a`'s
positive is column `a + k`. Each returns a scalar estimate
in nats (a lower bound on MI, or for JSD a proxy with the same maximizer).

Scores of rank 4, `(P, B, N, L)`, are one such tensor per view pair (the batched InfoMin
critics, `layers.PairCritics`); the estimators then return the `(P,)` estimates, pair p's
being the estimate on `scores[p]`. Each estimator is written once, on this rank-4 form; a
rank-2 or rank-3 input is the case P = 1 (its pair axis is added, then dropped).

Example:

```python
import numpy as np
from keras_infobal import estimators
scores = np.array([[2.0, -1.0], [0.0, 3.0]])
estimators.infonce(scores)  # mean_a(s_aa - logsumexp_b s_ab) + log B
estimators.infonce(np.stack([scores, 2 * scores])[..., None])  # (2,): one per pair
```

The critics' score clip (`check_score_clip`, `clip_scores`) lives here too, so the per-pair
and the batched critic layers share it without importing each other.
"""

import math

import keras
from keras import ops

_SHAPES = ("Expected a score matrix of shape (B, B) or a score tensor of shape (B, B, L) "
           "(or (P, B, B, L): one per view pair)")


def _check_scores(scores, offset=None):
    """`scores` as a float tensor of rank 3 `(B, N, L)` (a rank-2 input gets L = 1) or, for
    per-pair scores, of rank 4 `(P, B, N, L)`; a ValueError says what is wrong."""
    scores = ops.convert_to_tensor(scores)
    dtype = keras.backend.standardize_dtype(scores.dtype)
    # cast also turns a variable into a plain tensor, which every op below accepts.
    scores = ops.cast(scores, dtype if dtype.startswith(("float", "bfloat")) else "float32")
    shape = tuple(scores.shape)
    if len(shape) not in (2, 3, 4):
        raise ValueError(f"{_SHAPES}; got rank {len(shape)}, shape {shape}.")
    if len(shape) == 4 and shape[0] == 0:
        raise ValueError(f"Per-pair scores (P, B, N, L) need at least one pair; got {shape}.")
    batch, candidates = shape[1:3] if len(shape) == 4 else shape[:2]
    if offset is None and batch is not None and candidates is not None and batch != candidates:
        raise ValueError(
            f"The score matrix must be square in its batch and candidate axes (B, B); got "
            f"{shape}."
        )
    if batch is not None and batch < 2:
        raise ValueError(
            "MI estimation needs at least 2 images per batch: the other images of the batch "
            f"are the negatives. Got a batch of {batch}; use batch_size >= 2 (and "
            "drop_remainder=True on tf.data so the last batch is not of size 1)."
        )
    if len(shape) == 2:
        scores = ops.expand_dims(scores, -1)
    return scores


def _masks(scores, offset=None):
    """Positive and negative masks shaped like `scores`, (B, N, L) or (P, B, N, L)."""
    b, n = ops.shape(scores)[-3], ops.shape(scores)[-2]
    if offset is None:
        eye = ops.eye(b, dtype=scores.dtype)
    else:
        # Rectangular (B, N) scores against N >= B candidates (e.g. gathered from all
        # replicas): row a's positive is column a + offset.
        eye = ops.one_hot(ops.arange(b) + ops.cast(offset, "int32"), n, dtype=scores.dtype)
    pos = ops.expand_dims(eye, -1) * ops.ones_like(scores)  # broadcasts over the pairs
    return pos, 1.0 - pos


def _pairs(scores, offset):
    """(the checked scores as (P, B, N, L), whether a pair axis was added to them)."""
    scores = _check_scores(scores, offset)
    if len(scores.shape) == 4:
        return scores, False
    return ops.expand_dims(scores, 0), True


def _unpair(value, added):
    """The (P,) estimates, or the scalar where `_pairs` added the pair axis."""
    return value[0] if added else value


_ALL = (1, 2, 3)  # every axis of a pair's (B, N, L) scores


def _mean(values, mask):
    return ops.sum(values * mask, axis=_ALL) / ops.sum(mask, axis=_ALL)


def _log_mean_exp(scores, neg):
    """log mean over each pair's negatives of exp(score), via logsumexp (never raw exp)."""
    # Masked entries get a very negative score instead of -inf so gradients stay finite.
    masked = ops.where(neg > 0, scores, ops.full_like(scores, -1e30))
    flat = ops.reshape(masked, (ops.shape(scores)[0], -1))
    return ops.logsumexp(flat, axis=1) - ops.log(ops.sum(neg, axis=_ALL))


def positive_negative_means(scores, offset=None):
    """Means of the positive and of the negative scores (a diagnostic); `offset` as above."""
    scores, added = _pairs(scores, offset)
    pos, neg = _masks(scores, offset)
    return _unpair(_mean(scores, pos), added), _unpair(_mean(scores, neg), added)


def jsd(scores, offset=None):
    """Jensen-Shannon estimator (DIM, f-GAN): `E_pos[-sp(-s)] - E_neg[sp(s)]`."""
    scores, added = _pairs(scores, offset)
    pos, neg = _masks(scores, offset)
    return _unpair(_mean(-ops.softplus(-scores), pos) - _mean(ops.softplus(scores), neg), added)


def dv(scores, offset=None):
    """Donsker-Varadhan (MINE): `E_pos[s] - log E_neg[exp(s)]`, via logsumexp (never raw exp)."""
    scores, added = _pairs(scores, offset)
    pos, neg = _masks(scores, offset)
    return _unpair(_mean(scores, pos) - _log_mean_exp(scores, neg), added)


def infonce(scores, offset=None):
    """InfoNCE (CPC): `mean_{a,l}(s_aal - logsumexp_b s_abl) + log N`; at most log N.

    N is the number of candidates per anchor: B, or all replicas' images with `offset`.
    """
    scores, added = _pairs(scores, offset)
    n = ops.cast(ops.shape(scores)[2], scores.dtype)
    pos, _ = _masks(scores, offset)
    diag = ops.sum(scores * pos, axis=2)  # (P, B, L): s_aal
    lse = ops.logsumexp(scores, axis=2)  # (P, B, L)
    return _unpair(ops.mean(diag - lse, axis=(1, 2)) + ops.log(n), added)


def nwj(scores, offset=None):
    """NWJ (f-divergence, KL): `E_pos[s] - exp(-1) E_neg[exp(s)]`.

    The second term is computed as `exp(logsumexp(s_neg) - log(n_neg) - 1)`; it overflows to
    inf only when the estimate itself is -inf, and scores are clipped at 80 (`exp(79)` is
    finite in float32) so gradients stay finite for any input.
    """
    scores, added = _pairs(scores, offset)
    pos, neg = _masks(scores, offset)
    log_mean_exp = _log_mean_exp(ops.minimum(scores, 80.0), neg)
    return _unpair(_mean(scores, pos) - ops.exp(log_mean_exp - 1.0), added)


ESTIMATORS = {"jsd": jsd, "dv": dv, "infonce": infonce, "nwj": nwj}
# The built-in estimators take per-pair scores (P, B, N, L) themselves.
_PAIR_AXIS = (jsd, dv, infonce, nwj)


def per_pair(name):
    """`f(scores (P, B, N, L), offset=None) -> (P,)`: estimator `name` on each pair's scores.

    A built-in estimator is returned as it is: it keeps the pair axis in its reductions. A
    registered estimator, written for (B, N[, L]) scores, is applied to each `scores[p]` in
    turn (P is static, so this unrolls when traced).

    ```python
    per_pair("infonce")(scores)   # == stack([infonce(scores[p]) for p in range(P)])
    ```
    """
    fn = get(name)
    if fn in _PAIR_AXIS:
        return fn

    def looped(scores, offset=None):
        return ops.stack([ops.cast(fn(scores[p], offset=offset), "float32")
                          for p in range(scores.shape[0])])

    return looped


def register_estimator(name, fn):
    """Adds an MI estimator `fn(scores, offset=None) -> nats` under `name`; `MICritic`,
    `InfoBal(critic=name)` and `InfoBal(infomin_critic=name)` then accept it.

    ```python
    def tuba(scores, offset=None): ...
    estimators.register_estimator("tuba", tuba)
    model = kib.InfoBal(critic="tuba")
    ```
    """
    key = str(name).lower()
    if not callable(fn):
        raise ValueError(f"An estimator must be a function of the score tensor; got {fn!r}.")
    if key in ESTIMATORS and ESTIMATORS[key] is not fn:
        raise ValueError(f"An estimator named {key!r} is already registered.")
    ESTIMATORS[key] = fn
    return fn


def get(name):
    """Returns the estimator function for `name` ('jsd', 'dv', 'infonce' or 'nwj')."""
    if callable(name):
        return name
    key = str(name).lower()
    if key not in ESTIMATORS:
        raise ValueError(
            f"Unknown MI estimator {name!r}; expected one of {sorted(ESTIMATORS)}."
        )
    return ESTIMATORS[key]


LOG2 = math.log(2.0)


# ------------------------------------------------------------------------- score clipping
def check_score_clip(score_clip):
    """`score_clip` as None, "auto" or a positive float; a ValueError says what it takes."""
    if score_clip is None or score_clip == "auto":
        return score_clip
    if isinstance(score_clip, bool) or not (isinstance(score_clip, (int, float))
                                            and score_clip > 0):
        raise ValueError(
            "`score_clip` must be None (raw scores), 'auto' (bounded by the batch: "
            f"c = ln(N) / 2 + 2) or a positive number c; got {score_clip!r}."
        )
    return float(score_clip)


def clip_scores(s, score_clip, candidates_axis=1):
    """Soft-clips scores to (-c, c) with c * tanh(s / c).

    c is `score_clip`, or with "auto" ln(N) / 2 + 2 for the N candidates along
    `candidates_axis` (the negatives and the positive of each row; 2 for per-pair scores
    (P, B, N, L)): the JSD, DV and InfoNCE estimates then stay within ln(N) + 5 nats of zero
    whatever the encoder's features look like (for scores in (-c, c) they lie in
    [-2 softplus(c), 2c], and 2 softplus(c) < 2c + 0.2 for c >= 2.3). NWJ's e^(T - 1) term is
    not bounded this way."""
    if score_clip is None:
        return s
    if score_clip == "auto":
        n = ops.cast(ops.shape(s)[candidates_axis], "float32")
        c = 0.5 * ops.log(n) + 2.0
    else:
        c = score_clip
    return c * ops.tanh(s / c)
