"""The batched InfoMin critics (layers/pair_critics.py) against the per-pair layers whose
computation they batch."""

import os
import tempfile
import warnings

import h5py
import keras
import numpy as np
import pytest
from keras import ops

from harness import run_mixed_precision_test, run_serialization_test
from helpers import gradients, optimizers, tiny
from keras_infobal import load_infobal
from keras_infobal.layers import PairCLUB, PairCritics
from keras_infobal.layers.club import club_estimate
from keras_infobal.objectives.infomin import pool_views
from keras_infobal.layers.registry import get_infomin_critic, get_pair_critics

PAIRS = [(0, 1), (0, 2), (1, 2), (2, 0)]
ESTIMATORS = ["jsd", "dv", "infonce", "nwj", "club", "club_sampled"]


def _per_pair_and_batched(estimator, score_clip, units=6, dim=5, views=3):
    rng = np.random.default_rng(1)
    pooled = keras.Variable(rng.normal(size=(7, views, dim)).astype("float32") * 2.0,
                            name="pooled")
    batched = get_pair_critics(estimator, PAIRS, units=units, score_clip=score_clip)
    batched.build((None, views, dim))
    critics = [get_infomin_critic(estimator, units=units, score_clip=score_clip)
               for _ in PAIRS]
    for p, critic in enumerate(critics):
        critic.build([(None, dim), (None, dim)])
        # Spread the weights so the scores (and the clip) matter.
        for w in critic.weights:
            w.assign(rng.normal(size=w.shape).astype("float32") * 0.7)
        batched.set_pair_weights(p, type(batched).pair_weights_of(critic))
    return pooled, critics, batched


@pytest.mark.backend
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("score_clip", [None, 1.5])
def test_batched_critics_match_the_per_pair_critics(estimator, score_clip):
    if score_clip is not None and estimator.startswith("club"):
        pytest.skip("CLUB has no scores to clip")
    pooled, critics, batched = _per_pair_and_batched(estimator, score_clip)
    sampled = estimator == "club_sampled"
    # The sampled variant's random partners are fixed: one permutation per pair.
    partners = np.stack([np.random.default_rng(p).permutation(pooled.shape[0])
                         for p in range(len(PAIRS))])
    partners = ops.convert_to_tensor(partners.astype("int32"))
    kwargs = {"partners": partners} if sampled else {}

    def per_pair():
        fits, estimates = [], []
        for p, (critic, (i, j)) in enumerate(zip(critics, PAIRS)):
            x, y = pooled[:, i], pooled[:, j]
            if sampled:
                mu, logvar = critic.mu_logvar(x)
                fits.append(critic.log_likelihood([x, y]))
                estimates.append(club_estimate(mu, logvar, y, partners[p]))
            else:
                fit, estimate = critic.fit_and_estimate([x, y], training=True)
                fits.append(fit)
                estimates.append(estimate)
        return ops.stack(fits), ops.stack(estimates)

    def together():
        return batched.fit_and_estimate(pooled, training=True, **kwargs)

    for a, b in zip(per_pair(), together()):
        np.testing.assert_allclose(ops.convert_to_numpy(b), ops.convert_to_numpy(a),
                                   rtol=1e-5, atol=1e-5)
    if estimator.startswith("club"):  # q's log-likelihood alone, as the fit step reads it
        np.testing.assert_allclose(
            ops.convert_to_numpy(batched.log_likelihood(pooled)),
            [float(c.log_likelihood([pooled[:, i], pooled[:, j]]))
             for c, (i, j) in zip(critics, PAIRS)], rtol=1e-5, atol=1e-5)
    # Distinct weights per pair (like beta_ij) so a pair mixed up with another shows.
    coef = ops.convert_to_tensor(np.array([1.0, -2.0, 0.5, 3.0], "float32"))
    for k in (0, 1):  # the discriminator's objective, then the estimate the encoder sees
        def loss_a():
            return ops.sum(coef * per_pair()[k])

        def loss_b():
            return ops.sum(coef * together()[k])

        per_vars = [v for c in critics for v in c.trainable_variables]
        grads_a = gradients(loss_a, per_vars + [pooled])
        grads_b = gradients(loss_b, list(batched.trainable_variables) + [pooled])
        np.testing.assert_allclose(grads_b[-1], grads_a[-1], rtol=1e-4, atol=1e-5)
        paths = [path for _, path, _, _ in batched._WEIGHTS]
        assert list(type(batched).pair_weights_of(critics[0])) == paths
        for (name, path, _, _), g in zip(batched._WEIGHTS, grads_b[:-1]):
            per = _grads_by_path(critics, grads_a, path)
            np.testing.assert_allclose(g, np.stack(per), rtol=1e-4, atol=1e-5, err_msg=name)


def _grads_by_path(critics, grads, path):
    """Each pair's gradient of the per-pair weight stored at `path` (old layout)."""
    *attrs, _, index = path.split("/")
    out, start = [], 0
    for critic in critics:
        layer = critic
        for attr in attrs:
            layer = getattr(layer, attr)
        target = layer.weights[int(index)]
        variables = critic.trainable_variables
        out.append(grads[start + [id(v) for v in variables].index(id(target))])
        start += len(variables)
    return out


@pytest.mark.backend
def test_sampled_partners_are_one_permutation_per_pair():
    club = PairCLUB(PAIRS, units=4, sampled=True, seed=3)
    partners = ops.convert_to_numpy(club.partners(9))
    assert partners.shape == (len(PAIRS), 9)
    for row in partners:
        assert sorted(row.tolist()) == list(range(9))
    assert len({tuple(r) for r in partners}) > 1  # independent draws, not one shared one


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_config_round_trip_and_mixed_precision(estimator):
    layer = get_pair_critics(estimator, PAIRS, units=4, score_clip=None, name="u")
    run_serialization_test(layer)
    config = layer.get_config()
    assert config["pairs"] == [list(p) for p in PAIRS]
    pooled = np.random.default_rng(0).normal(size=(5, 3, 4)).astype("float32")
    run_mixed_precision_test(type(layer), {k: v for k, v in config.items()
                                           if k not in ("name", "dtype", "trainable")},
                             pooled, "float32")


def test_pair_layers_refuse_bad_input():
    with pytest.raises(ValueError, match="pairs"):
        PairCritics([], units=4)
    with pytest.raises(ValueError, match="pairs"):
        PairCritics([(1, 1)], units=4)
    layer = PairCritics([(0, 3)], units=4)
    with pytest.raises(ValueError, match="need more than the 2 views given"):
        layer(np.zeros((4, 2, 5), "float32"))
    for cls in (PairCritics, PairCLUB):
        built = cls([(0, 1)], units=4)
        built(np.zeros((4, 2, 5), "float32"))
        for shape in ((4, 2, 6), (4, 2, 4), (4, 10), (4, 5), (4, 2, 3, 5)):  # width, rank
            with pytest.raises(ValueError, match=r"built for pooled views \(B, M, 5\)"):
                built(np.zeros(shape, "float32"))
        # Nothing staged from an old file: an empty store is refused (Keras' own check).
        with pytest.raises(ValueError, match="variables"):
            built.load_own_variables({})
        for shape in ((None, 5), (None, 2, 5, 1)):
            with pytest.raises(ValueError, match=r"takes the pooled views \(B, M, D\)"):
                cls([(0, 1)], units=4).build(shape)
        # The largest view index must be below M, also with an unknown batch size.
        for pairs in ([(0, 2)], [(1, 2)]):
            with pytest.raises(ValueError, match="need more than the 2 views given"):
                cls(pairs, units=4).build((None, 2, 5))
        wide = cls([(0, 1)], units=4)  # D above CPython's small-int cache: compared by value
        wide(np.zeros((4, 2, 300), "float32"))
        assert tuple(wide(np.zeros((4, 2, 300), "float32")).shape) == (1,)
        # An unknown number of views is checked when the views arrive, not at build.
        lazy = cls([(0, 1)], units=4)
        lazy.build((None, None, 5))
        assert lazy.view_dim == 5


@pytest.mark.backend
def test_model_saves_and_loads_the_batched_layout(images):
    model = tiny(num_views=4, infomin_critic="dv", score_clip=4.0)
    assert isinstance(model.objectives[1].critics[0], PairCritics)
    assert model.objectives[1].critics[0].num_pairs == 6
    model.compile(**optimizers())
    model.fit(images, batch_size=len(images), epochs=1, verbose=0)  # optimizer state to keep
    pooled = pool_views(model.backbone.encoder(images, training=False), "mean")
    before = ops.convert_to_numpy(model.objectives[1].critics[0](pooled, training=False))
    with tempfile.TemporaryDirectory() as tmp:
        model.save(os.path.join(tmp, "m.keras"))
        model.save_weights(os.path.join(tmp, "m.weights.h5"))
        with h5py.File(os.path.join(tmp, "m.weights.h5")) as f:
            # One stacked layer: its weights in one group, no per-pair layers.
            group = f["layers/info_min/critics/pair_critics"]
            assert sorted(group.keys()) == ["vars"] and len(group["vars"]) == len(
                model.objectives[1].critics[0].weights)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing to migrate: no warning, nothing lost
            loaded = load_infobal(os.path.join(tmp, "m.keras"))
        for attr in ("optimizer", "discriminator_optimizer"):
            saved, read = getattr(model, attr).variables, getattr(loaded, attr).variables
            assert int(getattr(loaded, attr).iterations) == 1
            assert len(saved) == len(read)
            for a, b in zip(saved, read):
                np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
        again = tiny(num_views=4, infomin_critic="dv", score_clip=4.0)
        again.load_weights(os.path.join(tmp, "m.weights.h5"))
    assert loaded.get_config() == model.get_config()
    for m in (loaded, again):
        pooled = pool_views(m.backbone.encoder(images, training=False), "mean")
        np.testing.assert_allclose(ops.convert_to_numpy(m.objectives[1].critics[0](pooled)),
                                   before, rtol=1e-6)


# ------------------------------------------------------------------- XLA, mixed precision
def _sgd_step(infomin_critic, jit_compile, images):
    keras.utils.set_random_seed(0)
    model = tiny(num_views=4, infomin_weight=1.0, infomin_critic=infomin_critic,
                    score_clip=5.0)
    # SGD, not Adam: Adam's first step is lr * sign(g), which turns float noise in a
    # near-zero gradient into a full step.
    model.compile(optimizer=keras.optimizers.SGD(1e-2),
                  discriminator_optimizer=keras.optimizers.SGD(1e-2), jit_compile=jit_compile)
    logs = model.fit(images, batch_size=8, epochs=1, verbose=0, shuffle=False).history
    return model, logs


# Not club_sampled: TensorFlow's stateless RNG picks another algorithm under XLA, so the
# random partners (and the step) differ from the plain step's while equally valid.
@pytest.mark.parametrize("infomin_critic", ["jsd", "club"])
def test_infobal_step_under_xla_matches_the_plain_step(images, infomin_critic):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("jit_compile=True is XLA on TensorFlow")
    plain, plain_logs = _sgd_step(infomin_critic, False, images)
    xla, xla_logs = _sgd_step(infomin_critic, True, images)
    assert xla.train_function is not None
    assert len(plain.weights) == len(xla.weights)
    for a, b in zip(plain.weights, xla.weights):
        np.testing.assert_allclose(ops.convert_to_numpy(b), ops.convert_to_numpy(a),
                                   rtol=1e-4, atol=1e-5, err_msg=a.path)
    for key in plain_logs:
        np.testing.assert_allclose(xla_logs[key], plain_logs[key], rtol=1e-4, atol=1e-5)


@pytest.mark.bf16
def test_infobal_step_under_xla_and_mixed_bfloat16(images):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("jit_compile=True is XLA on TensorFlow")
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model, logs = _sgd_step("jsd", True, images)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    layer = model.objectives[1].critics[0]
    assert layer.compute_dtype == "bfloat16"
    assert all(v.dtype == "float32" for v in layer.weights)
    assert all(np.isfinite(v[-1]) for v in logs.values())
    assert len([k for k in logs if k.startswith("mi_V")]) == 6
