"""CPC (keras_infobal/objectives/cpc.py): row bands predicting the rows below, against a
numpy forward written here, with loops, from the term's weights."""

import json
import math

import keras
import numpy as np
import pytest
from keras import ops

from helpers import bf16_matmul_unavailable, gradients
from keras_infobal.objectives.base import Encodings
from keras_infobal.objectives.cpc import CPC

B, M, VH, VW, C, D = 4, 3, 3, 2, 3, 5


def _views(b=B, m=M, vh=VH, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(b, m, vh, VW, C)).astype("float32")


def _term(b=B, m=M, vh=VH, seed=1, **kwargs):
    """A built CPC with spread random weights (biases too), so every part matters."""
    kwargs.setdefault("units", 6)
    term = CPC(**kwargs)
    term.build(((b, m, vh, VW, C), (b, D)))
    rng = np.random.default_rng(seed)
    term.set_weights([rng.normal(size=w.shape).astype("float32") * 0.5
                      for w in term.get_weights()])
    return term


def _enc(views, paired=False, gather_fn=None):
    return Encodings(views, np.zeros((views.shape[0], D), "float32"), paired, False, gather_fn)


def _numpy(x):
    return np.asarray(ops.convert_to_numpy(x), dtype="float64")


# ----------------------------------------------------------------- numpy reference
def _w(layer):
    return [np.asarray(w, "float64") for w in layer.get_weights()]


def _infonce_row(row, positive):
    top = max(row)
    return row[positive] - (top + math.log(sum(math.exp(v - top) for v in row)))


def reference(term, views, candidates=None, offset=0):
    """(value, {cpc_k{k}: mean over band pairs}) in float64, by loops over band pairs,
    steps, images and columns. `candidates`: the images whose targets are the candidates
    (all replicas'), image a's own at a + offset."""
    w1, b1, w2, b2 = _w(term.critics[0])        # cpc_context: hidden, out
    (kernel,) = _w(term.critics[1])             # cpc_predictors: (K, U, U)
    wt, bt = _w(term.critics[2])                # cpc_targets
    views = np.asarray(views, "float64")
    candidates = views if candidates is None else np.asarray(candidates, "float64")
    b, m, vh, vw, c = views.shape
    n = candidates.shape[0]
    clip = (None if term.score_clip is None
            else 0.5 * math.log(n) + 2.0 if term.score_clip == "auto" else term.score_clip)
    estimates = np.zeros((term.steps, m - 1))
    for i in range(m - 1):
        for k in range(term.steps):
            total = 0.0
            for l in range(vw):
                # The targets: row k of band i+1 (k + 1 rows below band i), column l.
                z = [candidates[e, i + 1, k, l] @ wt + bt for e in range(n)]
                for a in range(b):
                    column = views[a, i, :, l, :].reshape(-1)   # h rows x C channels
                    context = np.maximum(column @ w1 + b1, 0.0) @ w2 + b2
                    prediction = context @ kernel[k]
                    row = [float(prediction @ z[e]) for e in range(n)]
                    if clip is not None:
                        row = [clip * math.tanh(v / clip) for v in row]
                    total += _infonce_row(row, a + offset) + math.log(n)
            estimates[k, i] = total / (b * vw)
    logs = {f"cpc_k{k + 1}": float(estimates[k].mean()) for k in range(term.steps)}
    return float(estimates.mean()), logs


def _check(term, enc, expected, atol=1e-4):
    value, logs = term.estimate(enc)
    want_value, want_logs = expected
    assert list(logs) == list(want_logs) == term.log_names(enc.views.shape[1])
    for name in want_logs:
        np.testing.assert_allclose(_numpy(logs[name]), want_logs[name], rtol=1e-4, atol=atol,
                                   err_msg=name)
    np.testing.assert_allclose(_numpy(value), want_value, rtol=1e-4, atol=atol)
    return value, logs


# ----------------------------------------------------------------------------- tests
@pytest.mark.backend
@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("score_clip", ["auto", None, 1.5])
def test_cpc_matches_the_numpy_reference(steps, score_clip):
    term = _term(steps=steps, score_clip=score_clip)
    views = _views()
    value, logs = _check(term, _enc(views), reference(term, views))
    assert ops.convert_to_numpy(value).dtype == np.float32
    assert all(_numpy(v) <= math.log(B) + 1e-6 for v in logs.values())  # InfoNCE <= log B
    assert list(logs) == [f"cpc_k{k + 1}" for k in range(steps)]


@pytest.mark.backend
def test_cpc_two_images_two_bands():
    term = _term(b=2, m=2, vh=2, steps=2)
    views = _views(b=2, m=2, vh=2, seed=2)
    _check(term, _enc(views), reference(term, views))


@pytest.mark.backend
def test_cpc_steps_differ_and_bands_average():
    """Each step has its own predictor and target row: the logs differ, and the value is the
    mean over steps (and band pairs)."""
    term = _term(steps=3)
    views = _views(seed=3)
    value, logs = term.estimate(_enc(views))
    per_step = [_numpy(logs[f"cpc_k{k}"]) for k in (1, 2, 3)]
    assert min(abs(a - b) for a, b in zip(per_step, per_step[1:])) > 1e-3
    np.testing.assert_allclose(_numpy(value), np.mean(per_step), rtol=1e-5)
    estimates = _numpy(term.step_estimates(_enc(views)))
    assert estimates.shape == (3, M - 1)
    np.testing.assert_allclose(estimates.mean(axis=1), per_step, rtol=1e-5)


@pytest.mark.backend
def test_cpc_gathers_the_targets_across_replicas():
    """A fake second replica holding the batch reversed: each prediction is scored against
    the targets of all 2B images (offset B)."""
    term = _term()
    views = _views(seed=4)

    def gather_fn(x):
        return ops.concatenate([ops.flip(x, axis=0), x], axis=0), B

    _check(term, _enc(views, gather_fn=gather_fn),
           reference(term, views, candidates=np.concatenate([views[::-1], views]), offset=B))


@pytest.mark.backend
def test_cpc_paired_batch_is_scored_as_one_batch():
    term = _term(b=2 * B)
    views = _views(b=2 * B, seed=5)
    value, _ = _check(term, _enc(views, paired=True), reference(term, views))
    np.testing.assert_allclose(_numpy(value), _numpy(term.estimate(_enc(views))[0]),
                               rtol=1e-6)


@pytest.mark.backend
def test_cpc_gradients_reach_the_views_and_the_networks():
    term = _term()
    views = keras.Variable(_views(seed=6), name="views")
    assert term.encoder_variables and not term.discriminator_variables
    grads = gradients(lambda: term.estimate(_enc(views))[0],
                      [views] + list(term.encoder_variables))
    for g in grads:
        assert np.all(np.isfinite(g))
        assert np.abs(g).max() > 0
    # Only band 1 .. M-1's first `steps` rows are targets; band M-1's rows feed contexts.
    view_grads = grads[0]
    assert np.abs(view_grads[:, M - 1, 2:]).max() == 0  # the last band's rows below step 2
    assert np.abs(view_grads[:, 0]).max() > 0


@pytest.mark.backend
def test_cpc_config_round_trip_gives_the_same_estimate():
    term = _term(units=5, steps=3, score_clip=3.0, weight=0.5)
    config = term.get_config()
    assert {k: config[k] for k in ("units", "steps", "score_clip", "weight")} == {
        "units": 5, "steps": 3, "score_clip": 3.0, "weight": 0.5}
    restored = CPC.from_config(json.loads(json.dumps(config)))
    again = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(term))))
    views = _views(seed=7)
    for copy in (restored, again):
        assert type(copy) is CPC and copy.get_config() == config
        if not copy.built:  # deserialize_keras_object builds from the saved build config
            copy.build(((B, M, VH, VW, C), (B, D)))
        copy.set_weights(term.get_weights())
        np.testing.assert_allclose(_numpy(copy.estimate(_enc(views))[0]),
                                   _numpy(term.estimate(_enc(views))[0]), rtol=1e-6)
    assert [c.name for c in term.critics] == ["cpc_context", "cpc_predictors", "cpc_targets"]
    assert [w.shape for w in term.critics[1].weights] == [(3, 5, 5)]
    assert term.same_critics(config) and not term.same_critics({**config, "steps": 2})
    assert term.coefficient == 0.5 and not term.adversarial


@pytest.mark.parametrize("kwargs, message", [
    (dict(units=0), "`units` must be a positive integer"),
    (dict(units=2.0), "`units` must be a positive integer"),
    (dict(steps=0), r"`steps` \(how many rows ahead"),
    (dict(steps=True), r"`steps` \(how many rows ahead"),
    (dict(score_clip="big"), "`score_clip` must be None"),
    (dict(weight=float("inf")), "`weight` must be a finite number"),
])
def test_cpc_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CPC(**kwargs)


@pytest.mark.parametrize("num_views, split", [(2, "columns"), (4, "grid"), (1, "rows"),
                                              (2, "separate")])
def test_cpc_needs_row_views(num_views, split):
    with pytest.raises(ValueError, match=(
            rf"needs split='rows' and num_views >= 2; the backbone has num_views={num_views}, "
            rf"split='{split}'. Use a backbone such as InfoBalBackbone\(num_views=2, "
            r"split='rows'\)")):
        CPC().check_views(num_views, split)
    CPC().check_views(2, "rows")
    CPC().check_views(8, "rows")


def test_cpc_steps_cannot_exceed_the_band_height():
    with pytest.raises(ValueError, match=r"CPC\(steps=4\) predicts 4 rows of the band below, "
                                         r"but the bands \(views\) have 3 rows.*steps <= 3"):
        CPC(steps=4).build(((B, M, 3, VW, C), (B, D)))
    with pytest.raises(ValueError, match="num_views >= 2"):
        CPC().build(((B, 1, 3, VW, C), (B, D)))
    CPC(steps=3).build(((B, M, 3, VW, C), (B, D)))


@pytest.mark.bf16
def test_cpc_scores_in_float32_under_mixed_precision():
    if bf16_matmul_unavailable():
        pytest.skip(bf16_matmul_unavailable())
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        term = _term()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    views = _views(seed=8)
    s, _ = term.step_scores(_enc(ops.cast(views, "bfloat16")))
    value, _ = term.estimate(_enc(ops.cast(views, "bfloat16")))
    assert keras.backend.standardize_dtype(s.dtype) == "float32"
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert all(w.dtype == "float32" for w in term.weights)
    np.testing.assert_allclose(_numpy(value), reference(term, views)[0], atol=0.1)


def test_cpc_traces_with_an_unknown_batch_size():
    if keras.backend.backend() != "tensorflow":
        pytest.skip("tf.function tracing")
    import tensorflow as tf

    term = _term()
    views = _views(seed=9)

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
def test_cpc_needs_two_images():
    term = _term(b=1)
    with pytest.raises(ValueError, match="at least 2 images per batch"):
        term.estimate(_enc(_views(b=1)))
