"""CLUB, the upper-bound InfoMin route: values against numpy, bounds on Gaussians, the model."""

import math

import keras
import numpy as np
import pytest

from keras_infobal import CLUB
from keras_infobal.layers.club import club_estimate, gaussian_log_likelihood
from keras_infobal.layers.critics import InfoNCECritic, JSDCritic
from keras_infobal.layers.pair_critics import PairCLUB

from helpers import TINY, infomin_critics, tiny
from keras_infobal.objectives.infomin import pool_views


def _np_log_q(mu, logvar, y):
    """log N(y; mu, diag exp(logvar)), summed over features, one value per row."""
    out = np.zeros(len(mu))
    for a in range(len(mu)):
        for d in range(mu.shape[1]):
            var = math.exp(logvar[a, d])
            out[a] += -0.5 * (y[a, d] - mu[a, d]) ** 2 / var - 0.5 * logvar[a, d] \
                - 0.5 * math.log(2 * math.pi)
    return out


def _np_club(mu, logvar, y, partners=None):
    """CLUB by its definition: mean_a log q(y_a|x_a) - mean_{a,b} log q(y_b|x_a)."""
    b = len(mu)
    pos = _np_log_q(mu, logvar, y).mean()
    if partners is None:
        neg = np.mean([_np_log_q(mu[a:a + 1], logvar[a:a + 1], y[c:c + 1])[0]
                       for a in range(b) for c in range(b)])
    else:
        neg = np.mean([_np_log_q(mu[a:a + 1], logvar[a:a + 1], y[partners[a]:partners[a] + 1])[0]
                       for a in range(b)])
    return pos - neg


@pytest.fixture
def qxy():
    rng = np.random.default_rng(3)
    # 5 anchors x 3 features: unequal counts of positives (5) and negatives (25).
    return (rng.normal(size=(5, 3)), rng.uniform(-0.9, 0.9, size=(5, 3)),
            rng.normal(size=(5, 3)))


def test_log_likelihood_matches_numpy(qxy):
    mu, logvar, y = qxy
    got = float(gaussian_log_likelihood(mu, logvar, y))
    np.testing.assert_allclose(got, _np_log_q(mu, logvar, y).mean(), rtol=1e-5)


def test_club_estimate_matches_its_definition(qxy):
    mu, logvar, y = qxy
    np.testing.assert_allclose(float(club_estimate(mu, logvar, y)), _np_club(mu, logvar, y),
                               rtol=1e-5, atol=1e-6)


def test_sampled_club_uses_the_given_partners(qxy):
    mu, logvar, y = qxy
    partners = np.array([3, 0, 4, 1, 2])
    got = float(club_estimate(mu, logvar, y, partners=partners))
    np.testing.assert_allclose(got, _np_club(mu, logvar, y, partners), rtol=1e-5, atol=1e-6)
    # Not the full estimate: the sampled one really uses one partner per anchor.
    assert abs(got - _np_club(mu, logvar, y)) > 1e-3


# ------------------------------------------------ the functions with a pair axis (PairCLUB's)
def _pair_qxy(pairs=3, b=5, d=4, seed=7):
    rng = np.random.default_rng(seed)
    scale = np.arange(1, pairs + 1)[None, :, None]  # pairs on different scales
    return (rng.normal(size=(b, pairs, d)) * scale, rng.uniform(-0.9, 0.9, size=(b, pairs, d)),
            rng.normal(size=(b, pairs, d)) * scale)


def _np_pair_log_q(mu, logvar, y):
    """(P,) mean log q per pair: a vectorized numpy reference, float64."""
    per_dim = -0.5 * ((y - mu) ** 2 / np.exp(logvar) + logvar + math.log(2 * math.pi))
    return per_dim.sum(axis=-1).mean(axis=0)


def _np_pair_club(mu, logvar, y, partners=None):
    """(P,) CLUB by its definition, every (anchor, negative) term written out, float64."""
    # log q(y_c | x_a) for every anchor a, candidate c and pair p: (B, B, P)
    log_q = -0.5 * (((y[None] - mu[:, None]) ** 2 / np.exp(logvar[:, None]))
                    + logvar[:, None] + math.log(2 * math.pi)).sum(axis=-1)
    b = len(mu)
    positive = log_q[np.arange(b), np.arange(b)]  # (B, P)
    if partners is None:
        negative = log_q.mean(axis=1)
    else:
        negative = np.stack([log_q[np.arange(b), partners[p], p]
                             for p in range(mu.shape[1])], axis=1)
    return (positive - negative).mean(axis=0)


@pytest.mark.backend
@pytest.mark.parametrize("sampled", [False, True])
def test_club_functions_with_a_pair_axis_are_each_pairs_and_numpy(sampled):
    mu, logvar, y = _pair_qxy()
    pairs, b = mu.shape[1], mu.shape[0]
    rng = np.random.default_rng(1)
    partners = np.stack([rng.permutation(b) for _ in range(pairs)]) if sampled else None
    got = keras.ops.convert_to_numpy(club_estimate(mu, logvar, y, partners))
    assert got.shape == (pairs,)
    each = [float(club_estimate(mu[:, p], logvar[:, p], y[:, p],
                                None if partners is None else partners[p]))
            for p in range(pairs)]
    np.testing.assert_allclose(got, each, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, _np_pair_club(mu, logvar, y, partners), rtol=1e-4,
                               atol=1e-4)
    # the loop reference of the per-pair function (above) agrees with the numpy one
    np.testing.assert_allclose(
        [_np_club(mu[:, p], logvar[:, p], y[:, p], None if partners is None else partners[p])
         for p in range(pairs)], _np_pair_club(mu, logvar, y, partners), rtol=1e-9)
    ll = keras.ops.convert_to_numpy(gaussian_log_likelihood(mu, logvar, y))
    assert ll.shape == (pairs,)
    np.testing.assert_allclose(ll, [float(gaussian_log_likelihood(mu[:, p], logvar[:, p],
                                                                  y[:, p]))
                                    for p in range(pairs)], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ll, _np_pair_log_q(mu, logvar, y), rtol=1e-5)
    np.testing.assert_allclose(_np_pair_log_q(mu, logvar, y),
                               [_np_log_q(mu[:, p], logvar[:, p], y[:, p]).mean()
                                for p in range(pairs)], rtol=1e-9)


@pytest.mark.backend
def test_club_function_gradients_with_a_pair_axis_are_each_pairs():
    from helpers import gradients

    mu, logvar, y = (keras.Variable(t.astype("float32")) for t in _pair_qxy(pairs=2, b=4, d=3))
    partners = np.array([[1, 2, 3, 0], [3, 2, 0, 1]])
    coef = np.array([1.0, -2.0], "float32")
    weights = keras.ops.convert_to_tensor(coef)
    for part in (None, partners):
        batched = gradients(
            lambda: keras.ops.sum(weights * club_estimate(mu, logvar, y, part)), [mu, logvar, y])
        looped = gradients(
            lambda: sum(float(coef[p]) * club_estimate(
                mu[:, p], logvar[:, p], y[:, p], None if part is None else part[p])
                for p in range(2)), [mu, logvar, y])
        for a, b in zip(batched, looped):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_club_functions_refuse_mismatched_ranks():
    mu, logvar, y = _pair_qxy()
    with pytest.raises(ValueError, match=r"must all be \(B, D\), or all \(B, P, D\)"):
        club_estimate(mu[:, 0], logvar, y)
    with pytest.raises(ValueError, match=r"must all be \(B, D\), or all \(B, P, D\)"):
        gaussian_log_likelihood(mu[..., None], logvar[..., None], y[..., None])
    with pytest.raises(ValueError, match=r"`partners` must be \(B,\) for \(B, D\) samples and "
                                         r"\(P, B\) for \(B, P, D\) ones; got shape \(5,\)"):
        club_estimate(mu, logvar, y, partners=np.arange(5))
    with pytest.raises(ValueError, match=r"got shape \(1, 5\)"):
        club_estimate(mu[:, 0], logvar[:, 0], y[:, 0], partners=np.arange(5)[None])


def test_club_layer_outputs_and_errors():
    club = CLUB(units=8)
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    ll, est = club.fit_and_estimate([x, y])
    mu, logvar = (keras.ops.convert_to_numpy(t) for t in club.mu_logvar(x))
    assert mu.shape == (4, 2) and np.all(np.abs(logvar) <= 1.0)  # tanh-squashed log-variance
    np.testing.assert_allclose(float(ll), _np_log_q(mu, logvar, y).mean(), rtol=1e-5)
    np.testing.assert_allclose(float(est), _np_club(mu, logvar, y), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="width"):
        club([np.ones((4, 5), "float32"), y])
    with pytest.raises(ValueError, match=r"\(B, D_x\)"):
        CLUB()([np.ones((4, 2, 3), "float32"), np.ones((4, 2), "float32")])
    with pytest.raises(ValueError, match="batch size"):
        club([np.ones((4, 3), "float32"), np.ones((3, 2), "float32")])
    with pytest.raises(ValueError, match="cross_replica_negatives"):
        club([x, y], gather_fn=lambda e: (e, 0))
    with pytest.raises(ValueError, match="positive integer"):
        CLUB(units=0)


def test_club_config_round_trip():
    club = CLUB(units=7, sampled=True, seed=3, name="q")
    again = CLUB.from_config(club.get_config())
    assert (again.units, again.sampled, again.seed, again.name) == (7, True, 3, "q")


def _fit(step_fn, steps):
    for _ in range(steps):
        step_fn()


def _gaussian_pairs(rng, n, d, rho):
    x = rng.normal(size=(n, d)).astype("float32")
    y = (rho * x + math.sqrt(1 - rho ** 2) * rng.normal(size=(n, d))).astype("float32")
    return x, y


@pytest.mark.slow
def test_club_upper_and_lower_bounds_on_correlated_gaussians():
    """Known MI -d/2 log(1 - rho^2): fitted CLUB lies above it, InfoNCE and JSD below it."""
    import tensorflow as tf

    d, rho, n = 4, 0.6, 512
    true_mi = -d / 2 * math.log(1 - rho ** 2)  # 0.893 nats
    # CLUB with the exact conditional: d rho^2 / (1 - rho^2) = 2.25 nats.
    exact_club = d * rho ** 2 / (1 - rho ** 2)
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    club = CLUB(units=64)
    nce = InfoNCECritic(units=64, normalization=None)
    jsd = JSDCritic(units=64, normalization=None)
    modules = {"club": club, "nce": nce, "jsd": jsd}
    opts = {k: keras.optimizers.Adam(3e-3) for k in modules}
    for m in modules.values():  # build outside the tape
        m(list(_gaussian_pairs(rng, 8, d, rho)))

    def step():
        x, y = _gaussian_pairs(rng, n, d, rho)
        for k, m in modules.items():
            with tf.GradientTape() as tape:
                target = m.log_likelihood([x, y]) if k == "club" else m([x, y])
                loss = -target
            opts[k].apply(tape.gradient(loss, m.trainable_variables), m.trainable_variables)

    _fit(step, 400)
    evals = {k: [] for k in modules}
    for _ in range(20):
        x, y = _gaussian_pairs(rng, n, d, rho)
        for k, m in modules.items():
            evals[k].append(float(m([x, y])))
    mean = {k: np.mean(v) for k, v in evals.items()}
    se = {k: np.std(v) / math.sqrt(len(v)) for k, v in evals.items()}
    assert mean["club"] > true_mi + 3 * se["club"], (mean, true_mi)
    assert abs(mean["club"] - exact_club) < 0.35, mean
    assert mean["nce"] < true_mi + 3 * se["nce"], (mean, true_mi)
    assert mean["nce"] > 0.5 * true_mi  # the critic learned something: it is a tight-ish bound
    assert mean["jsd"] < true_mi, mean


def test_club_fits_q_to_the_conditional_quickly():
    """A few hundred steps take the log-likelihood near the true conditional's entropy."""
    import tensorflow as tf

    d, rho = 2, 0.8
    rng = np.random.default_rng(1)
    keras.utils.set_random_seed(1)
    club = CLUB(units=32)
    opt = keras.optimizers.Adam(5e-3)
    club(list(_gaussian_pairs(rng, 8, d, rho)))  # build outside the tape
    for _ in range(300):
        x, y = _gaussian_pairs(rng, 256, d, rho)
        with tf.GradientTape() as tape:
            loss = -club.log_likelihood([x, y])
        opt.apply(tape.gradient(loss, club.trainable_variables), club.trainable_variables)
    x, y = _gaussian_pairs(rng, 4096, d, rho)
    # E log p(y|x) for y|x ~ N(rho x, 1 - rho^2): -d/2 (log(2 pi (1 - rho^2)) + 1).
    best = -d / 2 * (math.log(2 * math.pi * (1 - rho ** 2)) + 1)
    assert float(club.log_likelihood([x, y])) > best - 0.1
    exact = d * rho ** 2 / (1 - rho ** 2)
    assert abs(float(club([x, y])) - exact) < 0.3


# -- the model ------------------------------------------------------------------------------

def _model(**kw):
    cfg = dict(TINY, critic="infonce", infomin_critic="club", infomin_weight=0.5)
    cfg.update(kw)
    model = tiny(**cfg)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  discriminator_optimizer=keras.optimizers.Adam(1e-2))
    return model


def _images(n=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)


def _values(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def _changed(before, variables):
    return [not np.allclose(b, keras.ops.convert_to_numpy(v)) for b, v in zip(before, variables)]


@pytest.mark.parametrize("estimator", ["club", "club_sampled"])
def test_model_builds_club_in_the_discriminator_slot(estimator):
    model = _model(infomin_critic=estimator)
    # One layer holds the CLUB of every view pair (stacked on a pair axis).
    assert isinstance(infomin_critics(model), PairCLUB)
    assert infomin_critics(model).num_pairs == len(model.objectives[1].pairs) == 1
    assert infomin_critics(model).sampled == (estimator == "club_sampled")
    assert model.discriminator_variables  # q's variables
    assert not set(map(id, model.discriminator_variables)) & set(map(id, model.encoder_variables))


def test_q_step_changes_only_q_and_maximizes_likelihood():
    model = _model()
    views = model.backbone.encoder(_images(), training=False)
    pooled = pool_views(views, "mean")
    ll_before = float(infomin_critics(model).log_likelihood(pooled)[0])
    enc_before = _values(model.encoder_variables)
    q_before = _values(model.discriminator_variables)
    for _ in range(5):
        model.discriminator_step(views)
    assert not any(_changed(enc_before, model.encoder_variables))
    assert all(_changed(q_before, model.discriminator_variables))
    ll_after = float(infomin_critics(model).log_likelihood(pooled)[0])
    assert ll_after > ll_before  # q's step maximizes the likelihood, not the bound


def test_encoder_step_changes_only_the_encoder_and_subtracts_the_bound():
    model = _model()
    x = _images()
    q_before = _values(model.discriminator_variables)
    enc_before = _values(model.encoder_variables)
    views = model.backbone.encoder(x, training=True)
    _, logs = model.encoder_loss(views, training=True)
    j, infomax = logs["objective"], [logs["mi_R_V1"], logs["mi_R_V2"]]
    pooled = pool_views(views, "mean")
    club = float(infomin_critics(model)(pooled)[0])  # pair (V1, V2)
    # J = sum_i I(R; V_i) - lambda * I_CLUB(V1; V2) (alpha = beta = 1).
    np.testing.assert_allclose(float(j), float(sum(infomax)) - 0.5 * club, rtol=1e-4, atol=1e-4)
    model.encoder_step(x)
    assert not any(_changed(q_before, model.discriminator_variables))
    assert any(_changed(enc_before, model.encoder_variables))


def test_fit_alternates_and_the_encoder_lowers_the_bound():
    """Through fit: q's optimizer runs k steps per batch; the bound it logs is finite."""
    model = _model(discriminator_steps=2, infomin_weight=5.0)
    x = _images(32, seed=1)
    hist = model.fit(x, batch_size=16, epochs=3, verbose=0)
    assert int(model.discriminator_optimizer.iterations) == 2 * 2 * 3
    assert int(model.optimizer.iterations) == 2 * 3
    assert np.all(np.isfinite(hist.history["mi_V1_V2"]))
    # The discriminator objective is q's log-likelihood: it rises while q is being fitted.
    assert hist.history["discriminator_objective"][-1] > hist.history["discriminator_objective"][0]


def test_save_and_reload_keeps_q_and_its_optimizer(tmp_path):
    model = _model(infomin_critic="club_sampled")
    model.fit(_images(16), batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "club.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config()["infomin_critic"] == "club_sampled"
    assert isinstance(infomin_critics(loaded), PairCLUB) and infomin_critics(loaded).sampled
    for a, b in zip(model.discriminator_variables, loaded.discriminator_variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert int(loaded.discriminator_optimizer.iterations) == int(
        model.discriminator_optimizer.iterations) == 2
    for a, b in zip(model.discriminator_optimizer.variables,
                    loaded.discriminator_optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    loaded.fit(_images(16), batch_size=8, epochs=1, verbose=0)  # continues
    assert int(loaded.discriminator_optimizer.iterations) == 4


def test_bad_infomin_critic_names_the_choices():
    with pytest.raises(ValueError, match="club"):
        tiny(**dict(infomin_critic="clubb"))
