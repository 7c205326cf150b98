"""Shared test helpers: the tiny model config, optimizers, paths and numpy references.

Tests import these from here, not from `conftest` (pytest may import conftest under another
module name, and worker scripts run outside pytest).
"""

import math
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_TAR = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10-jpeg.tar.gz")

# A small configuration: the same architecture, narrow, so tests run in seconds.
TINY = dict(filters=(8, 16), conv_filters=16, fc_units=32, output_dim=8, critic_units=16,
            input_shape=(16, 16, 3))


def optimizers(lr=1e-3):
    import keras

    return dict(optimizer=keras.optimizers.Adam(lr),
                discriminator_optimizer=keras.optimizers.Adam(lr))


# ----------------------------------------------------------------- numpy MI references
# Written with explicit loops over the entries, independently of keras_infobal.estimators'
# masks and reductions, so a wrong denominator or a wrong positive index shows up.

def _split(scores, offset):
    """Lists of positive and negative entries of a (B, N) or (B, N, L) score array."""
    s = np.asarray(scores, dtype="float64")
    if s.ndim == 2:
        s = s[:, :, None]
    b, n, locs = s.shape
    shift = 0 if offset is None else int(offset)
    pos, neg = [], []
    for a in range(b):
        for c in range(n):
            for l in range(locs):
                (pos if c == a + shift else neg).append(float(s[a, c, l]))
    return s, pos, neg


def _softplus(x):
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _log_mean_exp(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values) / len(values))


def ref_means(scores, offset=None):
    _, pos, neg = _split(scores, offset)
    return sum(pos) / len(pos), sum(neg) / len(neg)


def ref_jsd(scores, offset=None):
    _, pos, neg = _split(scores, offset)
    return (sum(-_softplus(-v) for v in pos) / len(pos)
            - sum(_softplus(v) for v in neg) / len(neg))


def ref_dv(scores, offset=None):
    _, pos, neg = _split(scores, offset)
    return sum(pos) / len(pos) - _log_mean_exp(neg)


def ref_nwj(scores, offset=None):
    _, pos, neg = _split(scores, offset)
    return sum(pos) / len(pos) - math.exp(-1.0) * sum(math.exp(v) for v in neg) / len(neg)


def ref_infonce(scores, offset=None):
    s, _, _ = _split(scores, offset)
    b, n, locs = s.shape
    shift = 0 if offset is None else int(offset)
    total = 0.0
    for a in range(b):
        for l in range(locs):
            row = [float(s[a, c, l]) for c in range(n)]
            total += row[a + shift] - (_log_mean_exp(row) + math.log(n))
    return total / (b * locs) + math.log(n)


REFERENCES = {"jsd": ref_jsd, "dv": ref_dv, "infonce": ref_infonce, "nwj": ref_nwj}
