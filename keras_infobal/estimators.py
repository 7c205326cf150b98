"""Mutual-information estimators on an in-batch score matrix.

Every function takes `scores` of shape `(B, B)` or `(B, B, L)`: `scores[a, b, l]` is the
critic's score for the pair (first input of image `a`, second input of image `b` at location
`l`). Entries with `a == b` are positives, all others negatives. With `offset=k`, `scores` may be
rectangular, `(B, N, L)` with `N >= B` candidates (gathered from all replicas), and row `a`'s
positive is column `a + k`. Each returns a scalar estimate
in nats (a lower bound on MI, or for JSD a proxy with the same maximizer).

Example:

```python
import numpy as np
from keras_infobal import estimators
scores = np.array([[2.0, -1.0], [0.0, 3.0]])
estimators.infonce(scores)  # mean_a(s_aa - logsumexp_b s_ab) + log B
```
"""

import math

import keras
from keras import ops


def _check_scores(scores, offset=None):
    scores = ops.convert_to_tensor(scores)
    dtype = keras.backend.standardize_dtype(scores.dtype)
    # cast also turns a variable into a plain tensor, which every op below accepts.
    scores = ops.cast(scores, dtype if dtype.startswith(("float", "bfloat")) else "float32")
    shape = scores.shape
    if len(shape) not in (2, 3):
        raise ValueError(
            "Expected a score matrix of shape (B, B) or a score tensor of shape (B, B, L); "
            f"got rank {len(shape)}, shape {tuple(shape)}."
        )
    if offset is None and shape[0] is not None and shape[1] is not None and shape[0] != shape[1]:
        raise ValueError(
            f"The score matrix must be square in its first two axes (B, B); got {tuple(shape)}."
        )
    if shape[0] is not None and shape[0] < 2:
        raise ValueError(
            "MI estimation needs at least 2 images per batch: the other images of the batch "
            f"are the negatives. Got a batch of {shape[0]}; use batch_size >= 2 (and "
            "drop_remainder=True on tf.data so the last batch is not of size 1)."
        )
    if len(shape) == 2:
        scores = ops.expand_dims(scores, -1)
    return scores


def _masks(scores, offset=None):
    b, n = ops.shape(scores)[0], ops.shape(scores)[1]
    if offset is None:
        eye = ops.eye(b, dtype=scores.dtype)
    else:
        # Rectangular (B, N) scores against N >= B candidates (e.g. gathered from all
        # replicas): row a's positive is column a + offset.
        eye = ops.one_hot(ops.arange(b) + ops.cast(offset, "int32"), n, dtype=scores.dtype)
    pos = ops.expand_dims(eye, -1) * ops.ones_like(scores)
    return pos, 1.0 - pos


def positive_negative_means(scores, offset=None):
    """Means of the positive and of the negative scores (a diagnostic); `offset` as above."""
    scores = _check_scores(scores, offset)
    pos, neg = _masks(scores, offset)
    return ops.sum(scores * pos) / ops.sum(pos), ops.sum(scores * neg) / ops.sum(neg)


def jsd(scores, offset=None):
    """Jensen-Shannon estimator (DIM, f-GAN): `E_pos[-sp(-s)] - E_neg[sp(s)]`."""
    scores = _check_scores(scores, offset)
    pos, neg = _masks(scores, offset)
    e_pos = ops.sum(-ops.softplus(-scores) * pos) / ops.sum(pos)
    e_neg = ops.sum(ops.softplus(scores) * neg) / ops.sum(neg)
    return e_pos - e_neg


def dv(scores, offset=None):
    """Donsker-Varadhan (MINE): `E_pos[s] - log E_neg[exp(s)]`, via logsumexp (never raw exp)."""
    scores = _check_scores(scores, offset)
    pos, neg = _masks(scores, offset)
    e_pos = ops.sum(scores * pos) / ops.sum(pos)
    # Masked entries get a very negative score instead of -inf so gradients stay finite.
    masked = ops.where(neg > 0, scores, ops.full_like(scores, -1e30))
    log_mean_exp = ops.logsumexp(ops.reshape(masked, (-1,))) - ops.log(ops.sum(neg))
    return e_pos - log_mean_exp


def infonce(scores, offset=None):
    """InfoNCE (CPC): `mean_{a,l}(s_aal - logsumexp_b s_abl) + log N`; at most log N.

    N is the number of candidates per anchor: B, or all replicas' images with `offset`.
    """
    scores = _check_scores(scores, offset)
    n = ops.cast(ops.shape(scores)[1], scores.dtype)
    pos, _ = _masks(scores, offset)
    diag = ops.sum(scores * pos, axis=1)  # (B, L): s_aal
    lse = ops.logsumexp(scores, axis=1)  # (B, L)
    return ops.mean(diag - lse) + ops.log(n)


def nwj(scores, offset=None):
    """NWJ (f-divergence, KL): `E_pos[s] - exp(-1) E_neg[exp(s)]`.

    The second term is computed as `exp(logsumexp(s_neg) - log(n_neg) - 1)`; it overflows to
    inf only when the estimate itself is -inf, and scores are clipped at 80 (`exp(79)` is
    finite in float32) so gradients stay finite for any input.
    """
    scores = _check_scores(scores, offset)
    pos, neg = _masks(scores, offset)
    e_pos = ops.sum(scores * pos) / ops.sum(pos)
    clipped = ops.minimum(scores, 80.0)
    masked = ops.where(neg > 0, clipped, ops.full_like(scores, -1e30))
    log_mean_exp = ops.logsumexp(ops.reshape(masked, (-1,))) - ops.log(ops.sum(neg))
    return e_pos - ops.exp(log_mean_exp - 1.0)


ESTIMATORS = {"jsd": jsd, "dv": dv, "infonce": infonce, "nwj": nwj}


# ----------------------------------------------------------------- one estimate per pair
# The batched InfoMin critics (`layers.PairCritics`) score all view pairs at once: scores of
# shape (P, B, N, L), one (B, N, L) tensor per pair. These give each pair's estimate, the
# same as the functions above on `scores[p]`, with the pair axis kept (no Python loop).

def _pair_masks(scores, offset=None):
    b, n = ops.shape(scores)[1], ops.shape(scores)[2]
    if offset is None:
        eye = ops.eye(b, dtype=scores.dtype)
    else:
        eye = ops.one_hot(ops.arange(b) + ops.cast(offset, "int32"), n, dtype=scores.dtype)
    pos = eye[None, :, :, None] * ops.ones_like(scores)
    return pos, 1.0 - pos


def _pair_jsd(scores, offset=None):
    pos, neg = _pair_masks(scores, offset)
    axes = (1, 2, 3)
    e_pos = ops.sum(-ops.softplus(-scores) * pos, axis=axes) / ops.sum(pos, axis=axes)
    e_neg = ops.sum(ops.softplus(scores) * neg, axis=axes) / ops.sum(neg, axis=axes)
    return e_pos - e_neg


def _pair_log_mean_exp_neg(scores, neg):
    masked = ops.where(neg > 0, scores, ops.full_like(scores, -1e30))
    flat = ops.reshape(masked, (ops.shape(scores)[0], -1))
    return ops.logsumexp(flat, axis=1) - ops.log(ops.sum(neg, axis=(1, 2, 3)))


def _pair_dv(scores, offset=None):
    pos, neg = _pair_masks(scores, offset)
    e_pos = ops.sum(scores * pos, axis=(1, 2, 3)) / ops.sum(pos, axis=(1, 2, 3))
    return e_pos - _pair_log_mean_exp_neg(scores, neg)


def _pair_infonce(scores, offset=None):
    n = ops.cast(ops.shape(scores)[2], scores.dtype)
    pos, _ = _pair_masks(scores, offset)
    diag = ops.sum(scores * pos, axis=2)  # (P, B, L)
    lse = ops.logsumexp(scores, axis=2)  # (P, B, L)
    return ops.mean(diag - lse, axis=(1, 2)) + ops.log(n)


def _pair_nwj(scores, offset=None):
    pos, neg = _pair_masks(scores, offset)
    e_pos = ops.sum(scores * pos, axis=(1, 2, 3)) / ops.sum(pos, axis=(1, 2, 3))
    log_mean_exp = _pair_log_mean_exp_neg(ops.minimum(scores, 80.0), neg)
    return e_pos - ops.exp(log_mean_exp - 1.0)


_PAIR_ESTIMATORS = {jsd: _pair_jsd, dv: _pair_dv, infonce: _pair_infonce, nwj: _pair_nwj}


def per_pair(name):
    """`f(scores (P, B, N, L), offset=None) -> (P,)`: estimator `name` on each pair's scores.

    The built-in estimators keep the pair axis in their reductions; a registered estimator
    is applied to each `scores[p]` in turn (P is static, so this unrolls when traced).

    ```python
    per_pair("infonce")(scores)   # == stack([infonce(scores[p]) for p in range(P)])
    ```
    """
    fn = get(name)
    batched = _PAIR_ESTIMATORS.get(fn)
    if batched is not None:
        return batched

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
