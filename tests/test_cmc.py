"""CMC (keras_infobal/objectives/cmc.py): the views' pairwise MI, both directions, against a
numpy forward written here from the term's weights."""

import itertools
import json
import math

import keras
import numpy as np
import pytest
from keras import ops

from helpers import REFERENCES, bf16_matmul_unavailable, gradients
from keras_infobal.objectives.base import Encodings
from keras_infobal.objectives.cmc import CMC

B, M, VH, VW, C, D = 5, 3, 2, 3, 4, 6
LN_EPSILON = 1e-3  # keras.layers.LayerNormalization's default


def _views(b=B, m=M, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, m, VH, VW, C)).astype("float32")


def _term(b=B, m=M, seed=1, **kwargs):
    """A built CMC whose weights are spread (random, also LayerNorm's scale and offset), so
    that the encoders, the scores and the clip all matter."""
    kwargs.setdefault("units", 7)
    term = CMC(**kwargs)
    term.build(((b, m, VH, VW, C), (b, D)))
    rng = np.random.default_rng(seed)
    term.set_weights([rng.normal(size=w.shape).astype("float32") * 0.6
                      for w in term.get_weights()])
    return term


def _enc(views, paired=False, gather_fn=None):
    r = np.zeros((views.shape[0], D), "float32")
    return Encodings(views, r, paired, False, gather_fn)


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


# ----------------------------------------------------------------- numpy reference
def _ln_encoder(w, side, p, x):
    """Pair p's encode side ("global": view i, "local": view j), PairCritics' MICritic
    encoder: relu(LayerNorm(x W_h + b_h)) W_o + b_o + x W_s + b_s."""
    def g(name):
        return w[f"{side}_{name}"][p]

    h = x @ g("hidden_kernel") + g("hidden_bias")
    mean = h.mean(-1, keepdims=True)
    var = h.var(-1, keepdims=True)
    h = (h - mean) / np.sqrt(var + LN_EPSILON) * g("norm_gamma") + g("norm_beta")
    return (np.maximum(h, 0.0) @ g("out_kernel") + g("out_bias")
            + x @ g("shortcut_kernel") + g("shortcut_bias"))


def _clip(s, score_clip, n):
    if score_clip is None:
        return s
    c = 0.5 * math.log(n) + 2.0 if score_clip == "auto" else score_clip
    return c * np.tanh(s / c)


def _logsumexp(x, axis):
    top = x.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.exp(x - top).sum(axis=axis))


def _infonce(s, offset=0):
    """mean_a (s[a, a + offset] - logsumexp_n s[a, n]) + log N, for (B, N) scores."""
    b, n = s.shape
    positives = s[np.arange(b), np.arange(b) + offset]
    return float(np.mean(positives - _logsumexp(s, axis=1)) + math.log(n))


def _estimate(critic, s, offset=0):
    if critic == "infonce":
        return _infonce(s, offset)
    return REFERENCES[critic](s, offset if offset else None)


def reference(term, views, candidates=None, offset=0):
    """(value, {log name: pair estimate}) in float64. `candidates`: the views whose
    encodings the anchors are scored against (all replicas'), row a + offset being anchor
    a's own image; default the batch itself."""
    w = {v.path.split("/")[-1]: _numpy(v) for v in term.critics[0].weights}
    views = np.asarray(views, "float64")
    candidates = views if candidates is None else np.asarray(candidates, "float64")

    def pool(v):
        if term.view_pooling == "mean":
            return v.mean(axis=(2, 3))
        return v.reshape(v.shape[0], v.shape[1], -1)

    pooled, pooled_all = pool(views), pool(candidates)
    n = pooled_all.shape[0]
    logs = {}
    for p, (i, j) in enumerate(itertools.combinations(range(views.shape[1]), 2)):
        fi, gj = _ln_encoder(w, "global", p, pooled[:, i]), _ln_encoder(w, "local", p, pooled[:, j])
        fi_all = _ln_encoder(w, "global", p, pooled_all[:, i])
        gj_all = _ln_encoder(w, "local", p, pooled_all[:, j])
        forward = _clip(fi @ gj_all.T, term.score_clip, n)   # V_i anchors, V_j candidates
        backward = _clip(gj @ fi_all.T, term.score_clip, n)  # V_j anchors, V_i candidates
        logs[f"cmc_V{i + 1}_V{j + 1}"] = 0.5 * (_estimate(term.critic, forward, offset)
                                               + _estimate(term.critic, backward, offset))
    return float(np.mean(list(logs.values()))), logs


def _check(term, enc, expected, atol=1e-4):
    value, logs = term.estimate(enc)
    want_value, want_logs = expected
    assert sorted(logs) == sorted(want_logs) == sorted(term.log_names(enc.views.shape[1]))
    for name in want_logs:
        np.testing.assert_allclose(_numpy(logs[name]), want_logs[name], rtol=1e-4, atol=atol,
                                   err_msg=name)
    np.testing.assert_allclose(_numpy(value), want_value, rtol=1e-4, atol=atol)
    return value, logs


# ----------------------------------------------------------------------------- tests
@pytest.mark.backend
@pytest.mark.parametrize("critic", ["infonce", "jsd", "dv", "nwj"])
@pytest.mark.parametrize("score_clip", ["auto", None, 1.5])
def test_cmc_matches_the_numpy_reference(critic, score_clip):
    term = _term(critic=critic, score_clip=score_clip)
    views = _views()
    value, logs = _check(term, _enc(views), reference(term, views))
    assert ops.convert_to_numpy(value).dtype == np.float32
    if critic == "infonce":  # each direction at most log B
        assert all(_numpy(v) <= math.log(B) + 1e-6 for v in logs.values())


@pytest.mark.backend
def test_cmc_flatten_pooling_and_four_views():
    term = _term(m=4, view_pooling="flatten")
    views = _views(m=4, seed=3)
    _, logs = _check(term, _enc(views), reference(term, views))
    assert list(logs) == ["cmc_V1_V2", "cmc_V1_V3", "cmc_V1_V4", "cmc_V2_V3", "cmc_V2_V4",
                          "cmc_V3_V4"]
    assert term.critics[0].view_dim == VH * VW * C


@pytest.mark.backend
def test_cmc_both_directions_differ_for_infonce():
    """InfoNCE's two directions differ (the logsumexp over candidates of V_j, or of V_i): the
    term is their mean, not either one."""
    term = _term()
    views = _views()
    forward, backward, offset = term.pair_scores(_enc(views))
    assert offset is None
    one = [_infonce(_numpy(forward)[p, :, :, 0]) for p in range(3)]
    other = [_infonce(_numpy(backward)[p, :, :, 0]) for p in range(3)]
    assert min(abs(a - b) for a, b in zip(one, other)) > 1e-3
    np.testing.assert_allclose(_numpy(term.pair_estimates(_enc(views))),
                               (np.array(one) + np.array(other)) / 2, rtol=1e-5, atol=1e-5)


@pytest.mark.backend
def test_cmc_two_images_and_two_views():
    term = _term(b=2, m=2)
    views = _views(b=2, m=2, seed=4)
    _check(term, _enc(views), reference(term, views))


@pytest.mark.backend
def test_cmc_paired_batch_is_scored_as_one_batch():
    """With augmented pairs the stacked 2B images are one batch: an image's views are
    positives only within the same augmented image; the other augmentation is a negative."""
    term = _term(b=2 * B)
    views = _views(b=2 * B, seed=5)
    value, _ = _check(term, _enc(views, paired=True), reference(term, views))
    unpaired, _ = term.estimate(_enc(views))
    np.testing.assert_allclose(_numpy(value), _numpy(unpaired), rtol=1e-6, atol=1e-6)


@pytest.mark.backend
def test_cmc_gathers_both_sides_across_replicas():
    """A fake second replica holding the batch reversed: both directions score the
    replica's anchors against all 2B candidates of the gathered side (offset B)."""
    term = _term()
    views = _views(seed=6)

    def gather_fn(x):
        return ops.concatenate([ops.flip(x, axis=0), x], axis=0), B

    candidates = np.concatenate([views[::-1], views], axis=0)
    _check(term, _enc(views, gather_fn=gather_fn),
           reference(term, views, candidates=candidates, offset=B))

    def alone(x):  # one replica: gathering changes nothing
        return x, 0

    np.testing.assert_allclose(_numpy(term.estimate(_enc(views, gather_fn=alone))[0]),
                               _numpy(term.estimate(_enc(views))[0]), rtol=1e-5, atol=1e-6)


@pytest.mark.backend
def test_cmc_gradients_reach_the_views_and_the_critics():
    term = _term()
    views = keras.Variable(_views(seed=7), name="views")
    assert term.encoder_variables and not term.discriminator_variables
    assert len(term.encoder_variables) == len(term.trainable_variables)
    grads = gradients(lambda: term.estimate(_enc(views))[0],
                      [views] + list(term.encoder_variables))
    for g in grads:
        assert np.all(np.isfinite(g))
    assert np.abs(grads[0]).max() > 0
    assert sum(float(np.abs(g).max() > 0) for g in grads[1:]) == len(grads) - 1


@pytest.mark.backend
def test_cmc_config_round_trip_gives_the_same_estimate():
    term = _term(critic="dv", units=5, view_pooling="flatten", score_clip=2.5, weight=0.25)
    config = term.get_config()
    assert {k: config[k] for k in ("critic", "units", "view_pooling", "score_clip", "weight")} \
        == {"critic": "dv", "units": 5, "view_pooling": "flatten", "score_clip": 2.5,
            "weight": 0.25}
    restored = CMC.from_config(json.loads(json.dumps(config)))
    again = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(term))))
    views = _views(seed=8)
    for copy in (restored, again):
        assert type(copy) is CMC and copy.get_config() == config
        if not copy.built:  # deserialize_keras_object builds from the saved build config
            copy.build(((B, M, VH, VW, C), (B, D)))
        copy.set_weights(term.get_weights())
        np.testing.assert_allclose(_numpy(copy.estimate(_enc(views))[0]),
                                   _numpy(term.estimate(_enc(views))[0]), rtol=1e-6)
    assert [c.name for c in term.critics] == ["cmc_critics"]
    assert term.same_critics(config) and not term.same_critics({**config, "units": 6})
    assert term.coefficient == 0.25 and not term.adversarial


@pytest.mark.parametrize("kwargs, message", [
    (dict(critic="club"), "lower-bound estimator"),
    (dict(critic="mine"), "lower-bound estimator"),
    (dict(units=0), "`units` must be a positive integer"),
    (dict(units=True), "`units` must be a positive integer"),
    (dict(view_pooling="max"), "`view_pooling` must be 'mean' or 'flatten'"),
    (dict(score_clip=-1.0), "`score_clip` must be None"),
    (dict(weight=float("nan")), "`weight` must be a finite number"),
])
def test_cmc_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CMC(**kwargs)


def test_cmc_needs_two_views():
    term = CMC()
    with pytest.raises(ValueError, match=r"CMC scores pairs of views; the backbone has "
                                         r"num_views=1"):
        term.check_views(1, "rows")
    with pytest.raises(ValueError, match="at least 2 views"):
        CMC().build(((B, 1, VH, VW, C), (B, D)))
    term.check_views(2, "columns")  # any split with two views or more


@pytest.mark.bf16
def test_cmc_scores_in_float32_under_mixed_precision():
    if bf16_matmul_unavailable():
        pytest.skip(bf16_matmul_unavailable())
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        term = _term()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    views = _views(seed=9)
    value, logs = term.estimate(_enc(ops.cast(views, "bfloat16")))
    forward, _, _ = term.pair_scores(_enc(ops.cast(views, "bfloat16")))
    assert keras.backend.standardize_dtype(forward.dtype) == "float32"
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert all(w.dtype == "float32" for w in term.weights)
    np.testing.assert_allclose(_numpy(value), reference(term, views)[0], atol=0.1)


def test_cmc_traces_with_an_unknown_batch_size():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.function tracing")
    import tensorflow as tf

    term = _term()
    views = _views(seed=10)

    @tf.function(input_signature=[tf.TensorSpec((None, M, VH, VW, C), "float32")])
    def traced(v):
        def gather_fn(x):  # a second replica, gathered inside the graph
            return tf.concat([tf.reverse(x, [0]), x], axis=0), tf.shape(x)[0]

        alone = Encodings(v, None, False, False, None)  # the terms do not read R
        return (term.estimate(alone)[0],
                term.estimate(alone._replace(gather_fn=gather_fn))[0])

    value, gathered = traced(tf.constant(views))
    np.testing.assert_allclose(value.numpy(), reference(term, views)[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        gathered.numpy(), reference(term, views, np.concatenate([views[::-1], views]), B)[0],
        rtol=1e-4, atol=1e-4)


@pytest.mark.backend
def test_cmc_needs_two_images():
    term = _term(b=1)
    with pytest.raises(ValueError, match="at least 2 images per batch"):
        term.estimate(_enc(_views(b=1)))


def test_the_default_cmc_learns_where_clipped_scores_saturate():
    """CMC's default keeps raw scores: with 512 units the pair critics' dot products are far
    beyond an "auto" clip (c = ln(N) / 2 + 2), whose tanh then saturates, every score is +-c
    and the estimate sticks at 0. On images whose two halves share a colour, the default
    reaches more than 0.5 nats in 4 epochs (the clipped variant stays at 0.0)."""
    from helpers import tiny_backbone
    from keras_infobal import InfoBal

    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (256, 1, 1, 3))
    x = np.clip(colour + rng.normal(0, 30, (256, 16, 16, 3)), 0, 255).astype("uint8")
    keras.utils.set_random_seed(0)
    model = InfoBal(tiny_backbone(), objectives=[CMC(units=512)])
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = model.fit(x, batch_size=32, epochs=4, verbose=0).history
    assert history["cmc_V1_V2"][-1] > 0.5, history["cmc_V1_V2"]
