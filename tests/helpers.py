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
            image_shape=(16, 16, 3))
BACKBONE_KEYS = ("num_views", "split", "filters", "trunk", "aggregator", "conv_filters",
                 "fc_units", "output_dim", "image_shape")


def tiny(cls=None, **kwargs):
    """A small InfoBal (or subclass `cls`): TINY updated by `kwargs`, the backbone's keys
    going to its InfoBalBackbone and the rest to the task."""
    from keras_infobal import InfoBal, InfoBalBackbone

    config = {**TINY, **kwargs}
    backbone = InfoBalBackbone(**{k: config.pop(k) for k in BACKBONE_KEYS if k in config})
    return (cls or InfoBal)(backbone, **config)


def tiny_backbone(**kwargs):
    """The backbone of `tiny(**kwargs)`."""
    from keras_infobal import InfoBalBackbone

    config = {**TINY, **kwargs}
    return InfoBalBackbone(**{k: config[k] for k in BACKBONE_KEYS if k in config})


def infomax_critics(model):
    """The critics of the InfoMax term (`model.objectives[0]`) that score R against the
    views' own locations: its first M critics, or the one critic all views share."""
    term = model.objectives[0]
    return term.critics[:len(term.critics) - model.num_views * len(term.pooled_scales)]


def scale_critics(model):
    """The InfoMax term's critics of the pooled scales, view-major
    (`infomax_critic_{i}_pool{size}`): its critics after the views' own."""
    term = model.objectives[0]
    return term.critics[len(term.critics) - model.num_views * len(term.pooled_scales):]


def infomin_critics(model):
    """The InfoMin term's batched pair critics (`PairCritics` / `PairCLUB`)."""
    return model.objectives[1].critics[0]


def bf16_matmul_unavailable():
    """Why bfloat16 matmuls cannot run in this process, or None.

    TensorFlow 2.21 routes bfloat16 matmuls to oneDNN's AVX512_BF16 kernels whenever the CPU
    has AVX512_BF16, even when `ONEDNN_MAX_CPU_ISA` caps oneDNN below it; oneDNN then has no
    kernel and the process dies with SIGSEGV (a plain `tf.matmul` of two bfloat16 tensors
    does it). A real AVX2-only CPU takes TensorFlow's own bfloat16 path and runs these tests;
    only the emulated AVX2 run (`ONEDNN_MAX_CPU_ISA=AVX2` on an AVX-512 host) cannot.
    """
    cap = _emulated_cap_on_a_cpu_with("avx512_bf16")
    if cap is None:
        return None
    return (f"ONEDNN_MAX_CPU_ISA={cap} on an AVX512_BF16 CPU: TensorFlow's bfloat16 matmul "
            "crashes in oneDNN there (tests/helpers.bf16_matmul_unavailable)")


def _emulated_cap_on_a_cpu_with(flag):
    """The ONEDNN_MAX_CPU_ISA cap when it is below AVX-512 on a CPU that has `flag`, with
    TensorFlow the backend (the emulated AVX2 run); else None."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if not cap or cap.startswith("AVX512") or cap in ("ALL", "DEFAULT"):
        return None
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return None
    try:
        with open("/proc/cpuinfo") as f:
            has_flag = flag in f.read()
    except OSError:
        has_flag = False
    return cap if has_flag else None


def fp16_conv_unavailable():
    """Why float16 convolutions cannot run in this process, or None.

    TensorFlow 2.21 routes float16 convolutions to oneDNN's AVX512_FP16 kernels whenever the
    CPU has AVX512_FP16, also when `ONEDNN_MAX_CPU_ISA` caps oneDNN below it; oneDNN then has
    no kernel ("could not create a primitive descriptor for the convolution forward
    propagation primitive", seen on a 2-core Intel Xeon, family 6, model 207). As with
    bfloat16 (`bf16_matmul_unavailable`), only the emulated AVX2 run on such a host hits it.
    """
    cap = _emulated_cap_on_a_cpu_with("avx512_fp16")
    if cap is None:
        return None
    return (f"ONEDNN_MAX_CPU_ISA={cap} on an AVX512_FP16 CPU: TensorFlow's float16 convolution "
            "finds no oneDNN kernel there (tests/helpers.fp16_conv_unavailable)")


def optimizers(lr=1e-3):
    import keras

    return dict(optimizer=keras.optimizers.Adam(lr),
                discriminator_optimizer=keras.optimizers.Adam(lr))


def gradients(fn, variables):
    """d fn() / d variables as numpy arrays, on whichever backend runs the tests."""
    import keras
    from keras import ops

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = fn()
        grads = tape.gradient(loss, variables)
    elif backend == "torch":
        import torch

        grads = torch.autograd.grad(fn(), [v.value for v in variables])
    else:
        import jax

        def pure(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return fn()

        grads = jax.grad(pure)([v.value for v in variables])
    return [ops.convert_to_numpy(g) for g in grads]


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


# ------------------------------------------------------------ numpy CLUB references

def ref_gaussian_log_likelihood(mu, logvar, y):
    """mean_a sum_d log N(y_ad; mu_ad, exp(logvar_ad)), by loops."""
    mu, logvar, y = (np.asarray(t, dtype="float64") for t in (mu, logvar, y))
    total = 0.0
    for a in range(y.shape[0]):
        for d in range(y.shape[1]):
            var = math.exp(logvar[a, d])
            total += -0.5 * ((y[a, d] - mu[a, d]) ** 2 / var + logvar[a, d]
                             + math.log(2 * math.pi))
    return total / y.shape[0]


def ref_club(mu, logvar, y, partners=None):
    """CLUB: mean_a [log q(y_a|x_a) - mean_{b in negatives(a)} log q(y_b|x_a)] (up to the
    terms that cancel), by loops; negatives are all b, or the single partners[a]."""
    mu, logvar, y = (np.asarray(t, dtype="float64") for t in (mu, logvar, y))
    n, dims = y.shape

    def log_q(b, a):  # log q(y_b | x_a) without the normalizer, which cancels
        return sum(-0.5 * (y[b, d] - mu[a, d]) ** 2 / math.exp(logvar[a, d])
                   for d in range(dims))

    total = 0.0
    for a in range(n):
        negatives = range(n) if partners is None else [int(partners[a])]
        total += log_q(a, a) - sum(log_q(b, a) for b in negatives) / len(negatives)
    return total / n


def ref_club_heads(club, x):
    """q's (mu, logvar) computed in numpy from a CLUB layer's weights."""
    x = np.asarray(x, dtype="float64")
    w1, b1 = (np.asarray(v, "float64") for v in club.mu_hidden.get_weights())
    w2, b2 = (np.asarray(v, "float64") for v in club.mu_out.get_weights())
    w3, b3 = (np.asarray(v, "float64") for v in club.logvar_hidden.get_weights())
    w4, b4 = (np.asarray(v, "float64") for v in club.logvar_out.get_weights())
    mu = np.maximum(x @ w1 + b1, 0.0) @ w2 + b2
    logvar = np.tanh(np.maximum(x @ w3 + b3, 0.0) @ w4 + b4)
    return mu, logvar


# ------------------------------------------------------- numpy critic reference

def _np_weights(layer):
    return [np.asarray(w, dtype="float64") for w in layer.get_weights()]


def ref_critic_encoder(encoder, x):
    """DIM's 1x1 encoder (critics._Encoder) in numpy from its weights:
    relu(norm(x W_h + b_h)) W_o + b_o + x W_s + b_s, norm being LayerNorm, BatchNorm at
    inference (its moving statistics) or the identity."""
    x = np.asarray(x, dtype="float64")
    wh, bh = _np_weights(encoder.hidden)
    wo, bo = _np_weights(encoder.out)
    ws, bs = _np_weights(encoder.shortcut)
    h = x @ wh + bh
    if encoder.normalization == "layer":
        gamma, beta = _np_weights(encoder.norm)
        mean = h.mean(-1, keepdims=True)
        var = h.var(-1, keepdims=True)
        h = (h - mean) / np.sqrt(var + encoder.norm.epsilon) * gamma + beta
    elif encoder.normalization == "batch":
        gamma, beta, moving_mean, moving_var = _np_weights(encoder.norm)
        h = (h - moving_mean) / np.sqrt(moving_var + encoder.norm.epsilon) * gamma + beta
    elif encoder.normalization is not None:
        raise ValueError("reference written for normalization 'layer', 'batch' or None")
    return np.maximum(h, 0.0) @ wo + bo + x @ ws + bs


def ref_critic_scores(critic, g, l):
    """(B, B, L) scores of an MICritic computed in numpy from its weights, with loops over
    the pairs; l of shape (B, L, C)."""
    eg = ref_critic_encoder(critic.global_encoder, g)
    el = ref_critic_encoder(critic.local_encoder, l)
    b, locs = el.shape[0], el.shape[1]
    s = np.zeros((eg.shape[0], b, locs))
    if critic.scorer == "concat":
        w, bias = _np_weights(critic.pair_hidden)
    for a in range(eg.shape[0]):
        for c in range(b):
            for k in range(locs):
                if critic.scorer == "dot":
                    s[a, c, k] = float(np.dot(eg[a], el[c, k]))
                else:
                    s[a, c, k] = float(np.maximum(eg[a] + el[c, k], 0.0) @ w[:, 0] + bias[0])
    if critic.score_clip is not None:
        s = critic.score_clip * np.tanh(s / critic.score_clip)
    return s
