import math

import numpy as np
import pytest
import tensorflow as tf

from helpers import (REFERENCES, ref_club, ref_club_heads, ref_dv, ref_gaussian_log_likelihood,
                     ref_means)
from keras_infobal import estimators
from keras_infobal.layers import club

S = np.array([[2.0, -1.0], [0.0, 3.0]], dtype="float32")


def sp(x):
    return math.log1p(math.exp(x))


# Hand-computed on S: positives 2 and 3, negatives -1 and 0.
EXPECTED = {
    "jsd": (-(sp(-2) + sp(-3)) / 2) - (sp(-1) + sp(0)) / 2,  # = -0.590962
    "dv": 2.5 - math.log((math.exp(-1) + 1) / 2),  # = 2.879885
    "infonce": ((2 - math.log(math.exp(2) + math.exp(-1)))
                + (3 - math.log(1 + math.exp(3)))) / 2 + math.log(2),  # = 0.644560
    "nwj": 2.5 - math.exp(-1) * (math.exp(-1) + 1) / 2,  # = 2.248393
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_value_on_hand_made_matrix(name):
    value = float(estimators.get(name)(S))
    assert value == pytest.approx(EXPECTED[name], abs=1e-5)


def test_literal_reference_numbers():
    # The same references written out, so a wrong formula above cannot hide a wrong estimator.
    assert float(estimators.jsd(S)) == pytest.approx(-0.590962, abs=1e-5)
    assert float(estimators.dv(S)) == pytest.approx(2.879885, abs=1e-5)
    assert float(estimators.infonce(S)) == pytest.approx(0.644560, abs=1e-5)
    assert float(estimators.nwj(S)) == pytest.approx(2.248393, abs=1e-5)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_local_axis_averages_locations(name):
    # Two identical locations give the same estimate as one.
    s3 = np.stack([S, S], axis=-1)
    assert float(estimators.get(name)(s3)) == pytest.approx(EXPECTED[name], abs=1e-5)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_better_separated_positives_raise_the_estimate(name):
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(6, 6)).astype("float32")
    values = [float(estimators.get(name)(noise + gap * np.eye(6, dtype="float32")))
              for gap in (0.0, 1.0, 3.0)]
    assert values[0] < values[1] < values[2]


def test_infonce_is_bounded_by_log_batch():
    s = 50.0 * np.eye(4, dtype="float32")
    assert float(estimators.infonce(s)) == pytest.approx(math.log(4), abs=1e-4)
    assert float(estimators.infonce(s)) <= math.log(4) + 1e-6


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("scale", [1e2, 1e3, 1e4, -1e4])
def test_finite_values_and_gradients_for_huge_scores(name, scale):
    rng = np.random.default_rng(2)
    s = tf.Variable(scale * rng.uniform(-1, 1, size=(5, 5, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        value = estimators.get(name)(s)
    grad = tape.gradient(value, s)
    assert np.isfinite(float(value))
    assert np.all(np.isfinite(grad.numpy()))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_batch_of_one_is_a_clear_error(name):
    with pytest.raises(ValueError, match="at least 2 images"):
        estimators.get(name)(np.ones((1, 1), dtype="float32"))


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="rank"):
        estimators.jsd(np.ones((4,), dtype="float32"))
    with pytest.raises(ValueError, match="square"):
        estimators.dv(np.ones((3, 4), dtype="float32"))
    with pytest.raises(ValueError, match="Unknown MI estimator"):
        estimators.get("mine")


# ------------------------------------------------------- independent numpy references
# Larger and rectangular inputs: with B > 2 the positives (B) and negatives (B^2 - B) have
# different counts, so a wrong denominator cannot pass; with `offset` the positive of row a
# is column a + offset of a (B, N) matrix with N > B.

def _random_scores(shape, seed, scale=2.0):
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype("float32")


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("shape", [(3, 3), (5, 5), (4, 4, 3)])
def test_value_matches_numpy_reference_square(name, shape):
    s = _random_scores(shape, seed=sum(shape))
    assert float(estimators.get(name)(s)) == pytest.approx(REFERENCES[name](s), abs=1e-4)


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("shape,offset", [((3, 6), 0), ((3, 6), 3), ((2, 8), 4),
                                          ((3, 9, 2), 6), ((4, 8, 3), 4)])
def test_value_matches_numpy_reference_with_offset(name, shape, offset):
    s = _random_scores(shape, seed=shape[1] + offset)
    got = float(estimators.get(name)(s, offset=offset))
    assert got == pytest.approx(REFERENCES[name](s, offset=offset), abs=1e-4)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_offset_picks_the_shifted_column_as_positive(name):
    # A large score only at (a, a + offset): the estimate sees it as the positive. At
    # offset 0 of the same matrix those entries are negatives and the estimate is low.
    b, n, offset = 3, 6, 3
    s = _random_scores((b, n), seed=7, scale=0.5)
    s[np.arange(b), np.arange(b) + offset] += 5.0
    shifted = float(estimators.get(name)(s, offset=offset))
    unshifted = float(estimators.get(name)(s, offset=0))
    assert shifted == pytest.approx(REFERENCES[name](s, offset=offset), abs=1e-4)
    assert unshifted == pytest.approx(REFERENCES[name](s, offset=0), abs=1e-4)
    assert shifted > unshifted + 1.0


def test_infonce_uses_log_of_the_candidate_count_with_offset():
    # Perfectly separated rectangular scores: InfoNCE reaches log N (N candidates, not B).
    b, n = 2, 8
    s = np.zeros((b, n), dtype="float32")
    s[np.arange(b), np.arange(b) + 2] = 60.0
    assert float(estimators.infonce(s, offset=2)) == pytest.approx(math.log(n), abs=1e-4)


@pytest.mark.parametrize("shape,offset", [((4, 4), None), ((3, 3, 2), None), ((3, 6), 3),
                                          ((2, 6, 2), 2)])
def test_positive_negative_means(shape, offset):
    s = _random_scores(shape, seed=11)
    pos, neg = estimators.positive_negative_means(s, offset=offset)
    ref_pos, ref_neg = ref_means(s, offset=offset)
    assert float(pos) == pytest.approx(ref_pos, abs=1e-5)
    assert float(neg) == pytest.approx(ref_neg, abs=1e-5)


def test_positive_negative_means_default_is_the_diagonal():
    s = np.array([[4.0, 1.0, 1.0], [2.0, 5.0, 2.0], [3.0, 3.0, 6.0]], dtype="float32")
    pos, neg = estimators.positive_negative_means(s)
    assert float(pos) == pytest.approx(5.0)  # (4 + 5 + 6) / 3
    assert float(neg) == pytest.approx(2.0)  # (1 + 1 + 2 + 2 + 3 + 3) / 6


def test_literal_values_on_a_3x3_matrix():
    # Written-out numbers for one 3x3 matrix (checked against the loop references once),
    # so a mistake shared by reference and estimator cannot hide.
    s = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0], [-0.5, 1.0, 0.0]], dtype="float32")
    # positives 1, 2, 0 (mean 1); negatives 0, -1, 0.5, 0, -0.5, 1 (mean 0)
    assert float(estimators.dv(s)) == pytest.approx(
        1.0 - math.log((2 + math.exp(-1) + math.exp(0.5) + math.exp(-0.5) + math.e) / 6),
        abs=1e-5)
    assert float(estimators.nwj(s)) == pytest.approx(
        1.0 - math.exp(-1) * (2 + math.exp(-1) + math.exp(0.5) + math.exp(-0.5) + math.e) / 6,
        abs=1e-5)
    assert float(estimators.dv(s)) == pytest.approx(ref_dv(s), abs=1e-5)


def test_score_dtype_and_rank_handling():
    # Integer scores are cast to float32; a bfloat16 matrix keeps its dtype.
    ints = np.array([[2, 0, 0], [0, 2, 0], [0, 0, 2]], dtype="int32")
    assert float(estimators.dv(ints)) == pytest.approx(ref_dv(ints.astype("float64")), abs=1e-5)
    bf = tf.constant(np.eye(3) * 2.0, dtype=tf.bfloat16)
    assert estimators.jsd(bf).dtype == tf.bfloat16
    with pytest.raises(ValueError, match="rank"):
        estimators.jsd(np.ones((2, 2, 2, 2, 1), dtype="float32"))


def test_get_accepts_callables_and_any_case():
    assert estimators.get("InfoNCE") is estimators.infonce
    assert estimators.get(estimators.nwj) is estimators.nwj
    assert estimators.LOG2 == pytest.approx(math.log(2.0))


# ------------------------------------------------------------- CLUB functions and layer
# CLUB's estimate is checked here against loop references; tests/test_club.py covers its
# use inside InfoBal.

def _gaussian_inputs(b, d, seed):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(b, d)).astype("float32")
    logvar = rng.uniform(-1, 1, size=(b, d)).astype("float32")
    y = (mu + rng.normal(size=(b, d))).astype("float32")
    return mu, logvar, y


@pytest.mark.parametrize("b,d", [(3, 2), (5, 4)])
def test_gaussian_log_likelihood_matches_reference(b, d):
    mu, logvar, y = _gaussian_inputs(b, d, seed=b)
    got = float(club.gaussian_log_likelihood(mu, logvar, y))
    assert got == pytest.approx(ref_gaussian_log_likelihood(mu, logvar, y), abs=1e-4)


@pytest.mark.parametrize("b,d", [(3, 2), (6, 3)])
def test_club_estimate_matches_reference(b, d):
    mu, logvar, y = _gaussian_inputs(b, d, seed=10 + b)
    got = float(club.club_estimate(mu, logvar, y))
    assert got == pytest.approx(ref_club(mu, logvar, y), abs=1e-4)
    partners = np.roll(np.arange(b), 1)
    got = float(club.club_estimate(mu, logvar, y, partners=partners))
    assert got == pytest.approx(ref_club(mu, logvar, y, partners), abs=1e-4)


def test_club_layer_matches_reference_from_its_weights():
    import itertools

    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 3)).astype("float32")
    y = rng.normal(size=(4, 2)).astype("float32")
    layer = club.CLUB(units=5)
    layer([x, y])
    for v in layer.trainable_variables:  # spread the weights so every head matters
        v.assign(rng.normal(size=v.shape).astype("float32"))
    mu, logvar = ref_club_heads(layer, x)
    got_mu, got_logvar = layer.mu_logvar(x)
    np.testing.assert_allclose(np.asarray(got_mu), mu, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(got_logvar), logvar, rtol=1e-4, atol=1e-4)
    assert float(layer([x, y])) == pytest.approx(ref_club(mu, logvar, y), abs=1e-3)
    ll, est = layer.fit_and_estimate([x, y])
    assert float(ll) == pytest.approx(ref_gaussian_log_likelihood(mu, logvar, y), abs=1e-3)
    assert float(layer.log_likelihood([x, y])) == pytest.approx(float(ll), abs=1e-5)
    assert float(est) == pytest.approx(ref_club(mu, logvar, y), abs=1e-3)
    # The sampled variant uses one partner per anchor from a permutation of the batch.
    sampled = club.CLUB(units=5, sampled=True, seed=0)
    sampled([x, y])
    sampled.set_weights(layer.get_weights())
    candidates = [ref_club(mu, logvar, y, p) for p in itertools.permutations(range(4))]
    for _ in range(3):
        value = float(sampled([x, y]))
        assert min(abs(value - c) for c in candidates) < 1e-3
        # fit_and_estimate draws its partners the same way (a permutation of the batch).
        ll, value = sampled.fit_and_estimate([x, y])
        assert min(abs(float(value) - c) for c in candidates) < 1e-3
        assert float(ll) == pytest.approx(ref_gaussian_log_likelihood(mu, logvar, y), abs=1e-3)


# ------------------------------------------------ dtypes, messages and partial shapes
# These pin behaviour the mutation run (dev/MUTATION.md) found unchecked.

@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("offset", [None, 1])
def test_float_scores_keep_their_dtype(name, offset):
    # float64 and bfloat16 estimates stay in that dtype (with and without offset): only
    # non-float scores are cast to float32.
    s = _random_scores((3, 4) if offset else (3, 3), seed=5)
    for dtype in (tf.float64, tf.bfloat16, tf.float16):
        value = estimators.get(name)(tf.constant(s, dtype=dtype), offset=offset)
        assert value.dtype == dtype, (name, dtype)
    value = estimators.get(name)(tf.constant(s, dtype=tf.float64), offset=offset)
    assert float(value) == pytest.approx(REFERENCES[name](s, offset=offset), abs=1e-9)


def test_error_messages_are_exact():
    with pytest.raises(ValueError, match=r"^Expected a score matrix of shape \(B, B\) or a "
                                         r"score tensor of shape \(B, B, L\) \(or \(P, B, B, "
                                         r"L\): one per view pair\); got rank 1, shape "
                                         r"\(4,\)\.$"):
        estimators.jsd(np.ones((4,), dtype="float32"))
    with pytest.raises(ValueError, match=r"^MI estimation needs at least 2 images per batch: "
                                         r"the other images of the batch are the negatives\. "
                                         r"Got a batch of 1; use batch_size >= 2 \(and "
                                         r"drop_remainder=True on tf\.data so the last batch "
                                         r"is not of size 1\)\.$"):
        estimators.jsd(np.ones((1, 1), dtype="float32"))


def test_a_single_anchor_against_many_candidates_is_still_refused():
    # (1, N) rectangular scores: the batch, not the candidate count, must be >= 2.
    with pytest.raises(ValueError, match="Got a batch of 1;"):
        estimators.infonce(np.ones((1, 4), dtype="float32"), offset=0)


def test_traced_scores_with_an_unknown_batch():
    # Inside a traced function the batch axis may be None: no static checks may trip on it.
    for name in sorted(REFERENCES):
        fn = tf.function(estimators.get(name),
                         input_signature=[tf.TensorSpec((None, 3), tf.float32)])
        s = _random_scores((3, 3), seed=9)
        assert float(fn(s)) == pytest.approx(REFERENCES[name](s), abs=1e-4)
        fn = tf.function(lambda x, f=estimators.get(name): f(x, offset=1),
                         input_signature=[tf.TensorSpec((None, 5, 2), tf.float32)])
        s = _random_scores((3, 5, 2), seed=9)
        assert float(fn(s)) == pytest.approx(REFERENCES[name](s, offset=1), abs=1e-4)


def test_nwj_counts_scores_above_80_as_80():
    # The documented clip at 80 (exp(79) is finite in float32).
    s = np.zeros((3, 3), dtype="float32")
    s[0, 1] = 80.0
    at_clip = float(estimators.nwj(s))
    s[0, 1] = 80.5
    assert float(estimators.nwj(s)) == pytest.approx(at_clip, rel=1e-6)
    assert at_clip == pytest.approx(-math.exp(-1) * (math.exp(80.0) + 5) / 6, rel=1e-5)


@pytest.mark.parametrize("x_shape,y_shape", [((4,), (4, 2)), ((4, 3, 1), (4, 2)),
                                             ((4, 3), (4,)), ((4, 3), (4, 2, 1))])
def test_club_refuses_inputs_that_are_not_matrices(x_shape, y_shape):
    with pytest.raises(ValueError, match=r"CLUB takes \[x, y\] of shapes \(B, D_x\) and "
                                         r"\(B, D_y\)"):
        club.CLUB(units=3).build([x_shape, y_shape])


def test_club_build_builds_both_heads():
    layer = club.CLUB(units=3)
    layer.build([(None, 4), (None, 2)])
    # mu and log-variance heads: Dense(4 -> 3) then Dense(3 -> 2), kernel and bias each
    assert sorted(tuple(w.shape) for w in layer.weights) == sorted(
        [(4, 3), (3,), (3, 2), (2,)] * 2)


# ------------------------------------------------ per pair: the batched InfoMin estimates
@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("shape,offset", [((3, 4, 4, 1), None), ((3, 3, 3, 2), None),
                                          ((3, 3, 6, 2), 3), ((2, 2, 8, 1), 4)])
def test_per_pair_matches_numpy_reference_per_pair(name, shape, offset):
    """`per_pair(name)` on (P, B, N, L) scores: each pair's estimate is the numpy
    reference on that pair's (B, N, L) slice; pairs on different scales, so a reduction over
    the wrong axis (mixing pairs) shows."""
    s = _random_scores(shape, seed=sum(shape) + (offset or 0))
    s *= np.arange(1, shape[0] + 1, dtype="float32")[:, None, None, None]
    got = np.asarray(estimators.per_pair(name)(s, offset=offset))
    assert got.shape == (shape[0],)
    expected = [REFERENCES[name](s[p], offset=offset) for p in range(shape[0])]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_per_pair_nwj_clips_like_nwj():
    s = _random_scores((2, 3, 3, 1), seed=5)
    s[1, 0, 1, 0] = 85.0  # a negative above the clip at 80
    got = np.asarray(estimators.per_pair("nwj")(s))
    expected = [float(estimators.nwj(s[p])) for p in range(2)]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert np.isfinite(got).all()


def test_per_pair_of_a_registered_estimator_applies_it_to_each_pair():
    def diagonal_mean(scores, offset=None):
        b = scores.shape[0]
        shift = 0 if offset is None else int(offset)
        return np.mean([scores[a, a + shift] for a in range(b)])

    estimators.register_estimator("diagonal_mean_test", diagonal_mean)
    try:
        s = _random_scores((3, 2, 5, 1), seed=9)
        got = np.asarray(estimators.per_pair("diagonal_mean_test")(s, offset=2))
        np.testing.assert_allclose(got, [np.mean([s[p, 0, 2], s[p, 1, 3]]) for p in range(3)],
                                   rtol=1e-6)
    finally:
        del estimators.ESTIMATORS["diagonal_mean_test"]


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("shape,offset", [((2, 3, 3, 1), None), ((2, 2, 5, 1), 2)])
def test_per_pair_keeps_the_scores_dtype(name, shape, offset):
    s = _random_scores(shape, seed=3, scale=1.0)
    for dtype in ("float16", "float64"):
        got = estimators.per_pair(name)(s.astype(dtype), offset=offset)
        assert got.dtype == tf.as_dtype(dtype)
        np.testing.assert_allclose(np.asarray(got, "float64"),
                                   np.asarray(estimators.per_pair(name)(s, offset=offset)),
                                   rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_per_pair_of_a_built_in_takes_a_dynamic_number_of_pairs(name):
    # The built-in estimators reduce over the pair axis (no Python loop over pairs), so the
    # number of pairs may be unknown when traced.
    s = _random_scores((3, 3, 3, 1), seed=4)
    fn = tf.function(lambda x: estimators.per_pair(name)(x),
                     input_signature=[tf.TensorSpec((None, 3, 3, 1))])
    np.testing.assert_allclose(np.asarray(fn(s)),
                               [REFERENCES[name](s[p]) for p in range(3)], rtol=1e-4, atol=1e-4)


def test_register_estimator_errors_and_re_registration():
    def mine(scores, offset=None):
        return estimators.jsd(scores, offset=offset)

    with pytest.raises(ValueError, match="must be a function of the score tensor; got 3"):
        estimators.register_estimator("mine_test", 3)
    estimators.register_estimator("mine_test", mine)
    try:
        assert estimators.register_estimator("Mine_Test", mine) is mine  # same: fine
        with pytest.raises(ValueError, match="named 'mine_test' is already registered"):
            estimators.register_estimator("mine_test", lambda scores, offset=None: scores)
    finally:
        del estimators.ESTIMATORS["mine_test"]


# ------------------------------------------- one implementation, with and without pair axis
# Each estimator is written once on (P, B, N, L) scores. Its (P,) result must be the stack
# of its own results on each pair's (B, N, L) scores, and an independent vectorized numpy
# reference (below, in float64; not the loop references of helpers.py).

def _np_logsumexp(x, axis):
    top = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(x - top), axis=axis))


def _np_pos_neg(s, offset):
    """Each pair's positives and negatives, (P, B * L) and (P, (N - 1) * B * L)."""
    p, b, n, locs = s.shape
    is_pos = np.zeros((b, n), dtype=bool)
    is_pos[np.arange(b), np.arange(b) + (offset or 0)] = True
    return s[:, is_pos].reshape(p, -1), s[:, ~is_pos].reshape(p, -1)


def _np_softplus(x):
    return np.logaddexp(0.0, x)


def np_pair_jsd(s, offset=None):
    pos, neg = _np_pos_neg(s, offset)
    return np.mean(-_np_softplus(-pos), axis=1) - np.mean(_np_softplus(neg), axis=1)


def np_pair_dv(s, offset=None):
    pos, neg = _np_pos_neg(s, offset)
    return np.mean(pos, axis=1) - (_np_logsumexp(neg, 1) - np.log(neg.shape[1]))


def np_pair_nwj(s, offset=None):
    pos, neg = _np_pos_neg(s, offset)
    return np.mean(pos, axis=1) - np.exp(-1.0) * np.mean(np.exp(np.minimum(neg, 80.0)), axis=1)


def np_pair_infonce(s, offset=None):
    b, n = s.shape[1], s.shape[2]
    rows = np.arange(b)
    diag = s[:, rows, rows + (offset or 0), :]  # (P, B, L)
    return np.mean(diag - _np_logsumexp(s, 2), axis=(1, 2)) + np.log(n)


NP_PAIR = {"jsd": np_pair_jsd, "dv": np_pair_dv, "infonce": np_pair_infonce, "nwj": np_pair_nwj}
PAIR_CASES = [((3, 4, 4, 1), None), ((2, 3, 3, 2), None), ((3, 3, 6, 2), 3), ((2, 2, 8, 1), 4),
              ((1, 5, 5, 3), None), ((1, 3, 7, 1), 2)]


def _pair_scores(shape, seed):
    # Pairs on different scales, so a reduction that mixes pairs shows.
    s = _random_scores(shape, seed=seed)
    return s * np.arange(1, shape[0] + 1, dtype="float32")[:, None, None, None]


@pytest.mark.backend
@pytest.mark.parametrize("name", sorted(NP_PAIR))
@pytest.mark.parametrize("shape,offset", PAIR_CASES)
def test_pair_axis_is_the_stack_of_each_pairs_estimate_and_the_numpy_reference(name, shape,
                                                                              offset):
    from keras import ops

    s = _pair_scores(shape, seed=sum(shape) + (offset or 0))
    fn = estimators.get(name)
    got = ops.convert_to_numpy(fn(s, offset=offset))
    assert got.shape == (shape[0],)
    stacked = [float(ops.convert_to_numpy(fn(s[p], offset=offset))) for p in range(shape[0])]
    np.testing.assert_allclose(got, stacked, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, NP_PAIR[name](s.astype("float64"), offset),
                               rtol=1e-4, atol=1e-4)
    # ... and (B, N) scores, the L = 1 case of rank 2, against the same references.
    if shape[-1] == 1:
        flat = [float(ops.convert_to_numpy(fn(s[p, ..., 0], offset=offset)))
                for p in range(shape[0])]
        np.testing.assert_allclose(flat, stacked, rtol=1e-6, atol=1e-6)
    # The loop references of helpers.py, per pair, agree too.
    np.testing.assert_allclose(got, [REFERENCES[name](s[p], offset=offset)
                                     for p in range(shape[0])], rtol=1e-4, atol=1e-4)


@pytest.mark.backend
@pytest.mark.parametrize("name", sorted(NP_PAIR))
def test_numpy_pair_references_agree_with_the_loop_references(name):
    # The two kinds of references are written independently; they must agree on their own.
    s = _pair_scores((2, 3, 5, 2), seed=21).astype("float64")
    np.testing.assert_allclose(NP_PAIR[name](s, 2), [REFERENCES[name](s[p], offset=2)
                                                     for p in range(2)], rtol=1e-10)


@pytest.mark.backend
@pytest.mark.parametrize("name", sorted(NP_PAIR))
@pytest.mark.parametrize("offset", [None, 1])
def test_pair_axis_gradients_match_each_pair_and_finite_differences(name, offset):
    import keras
    from keras import ops

    from helpers import gradients

    shape = (3, 3, 4 if offset else 3, 2)
    s0 = _pair_scores(shape, seed=13)
    scores = keras.Variable(s0, name="scores")
    coef = np.array([1.0, -2.0, 0.5], "float32")  # distinct weights: a mixed-up pair shows
    weights = ops.convert_to_tensor(coef)
    fn = estimators.get(name)
    batched = gradients(lambda: ops.sum(weights * fn(scores, offset=offset)), [scores])[0]
    looped = gradients(lambda: sum(float(coef[p]) * fn(scores[p], offset=offset)
                                   for p in range(3)), [scores])[0]
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-6)
    # Central differences of the float64 numpy reference.
    ref = np.zeros(shape)
    base = s0.astype("float64")
    for index in np.ndindex(*shape):
        step = np.zeros(shape)
        step[index] = 1e-5
        ref[index] = (np.dot(coef, NP_PAIR[name](base + step, offset))
                      - np.dot(coef, NP_PAIR[name](base - step, offset))) / 2e-5
    np.testing.assert_allclose(batched, ref, rtol=1e-3, atol=1e-4)


@pytest.mark.backend
def test_per_pair_of_a_built_in_is_the_estimator_itself():
    for name in sorted(NP_PAIR):
        assert estimators.per_pair(name) is estimators.get(name)
    assert not hasattr(estimators, "_PAIR_ESTIMATORS")
    assert not [n for n in vars(estimators) if n.startswith("_pair_")]


@pytest.mark.backend
def test_pair_axis_positive_negative_means():
    from keras import ops

    s = _pair_scores((2, 3, 5, 2), seed=17)
    pos, neg = (ops.convert_to_numpy(t) for t in estimators.positive_negative_means(s, offset=1))
    np_pos, np_neg = _np_pos_neg(s.astype("float64"), 1)
    np.testing.assert_allclose(pos, np_pos.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(neg, np_neg.mean(axis=1), rtol=1e-5)


def test_pair_axis_shape_errors():
    with pytest.raises(ValueError,
                       match=r"square in its batch and candidate axes .*\(2, 3, 4, 1\)"):
        estimators.dv(np.ones((2, 3, 4, 1), "float32"))
    with pytest.raises(ValueError, match="Got a batch of 1;"):
        estimators.jsd(np.ones((2, 1, 4, 1), "float32"), offset=0)
    with pytest.raises(ValueError, match=r"at least one pair; got \(0, 3, 3, 1\)"):
        estimators.infonce(np.ones((0, 3, 3, 1), "float32"))
    with pytest.raises(ValueError, match="got rank 5"):
        estimators.nwj(np.ones((1, 2, 3, 3, 1), "float32"))


def test_pair_axis_with_unknown_batch_and_pairs_when_traced():
    for name in sorted(NP_PAIR):
        fn = tf.function(lambda x, f=estimators.get(name): f(x, offset=2),
                         input_signature=[tf.TensorSpec((None, None, 6, 2), tf.float32)])
        s = _pair_scores((3, 3, 6, 2), seed=19)
        np.testing.assert_allclose(fn(s).numpy(), NP_PAIR[name](s.astype("float64"), 2),
                                   rtol=1e-4, atol=1e-4)
