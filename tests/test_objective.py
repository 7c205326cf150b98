"""InfoBal's objective and its pieces, called eagerly, against references composed by hand.

The references pool the views with numpy and call each critic on its own inputs, then weigh
the critics' values with the alpha and beta written out here; nothing is read back from
`encoder_loss` and the objective terms. Eager and small, so it runs in seconds: it is also the fast
test selection of the mutation runs of `keras_infobal/models/infobal.py` (dev/MUTATION.md).
"""

import numpy as np
import pytest
import tensorflow as tf

from helpers import TINY, infomax_critics, infomin_critics, tiny
from keras_infobal import InfoBal
from keras_infobal.layers.registry import get_infomin_critic
from keras_infobal.objectives.infomin import pool_views

ALPHA = [1.0, 0.5, 2.0]
BETA = [[1.0, 2.0, 0.5], [2.0, 1.0, 3.0], [0.5, 3.0, 1.0]]
LAM = 0.7


def make(**kwargs):
    base = dict(num_views=3, split="separate", infomin_weight=LAM, view_weights=ALPHA,
                correlation_weights=BETA)
    return tiny(**{**base, **kwargs})


def spread(critics, factor=3.0):
    for c in critics:
        for v in c.trainable_variables:
            v.assign(v * factor)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8)


def per_pair_critic(model, p, dim, units=TINY["critic_units"]):
    """Pair p's discriminator as the stand-alone per-pair critic layer (an implementation
    independent of the batched `PairCritics`), with pair p's weights."""
    infomin = model.objectives[1]
    crit = get_infomin_critic(infomin.critic, units=units, score_clip=infomin.score_clip)
    crit.build([(None, dim), (None, dim)])
    for path, value in infomin_critics(model).pair_weights(p).items():
        *attrs, _, index = path.split("/")
        layer = crit
        for attr in attrs:
            layer = getattr(layer, attr)
        layer.weights[int(index)].assign(value)
    return crit


def objective(model, views, training=False):
    """(J, the InfoMax terms by view) as `encoder_loss` logs them."""
    _, logs = model.encoder_loss(views, training=training)
    return logs["objective"], [logs[f"mi_R_V{i + 1}"] for i in range(model.num_views)]


def by_hand(model, views, pooling="mean", infomin_units=TINY["critic_units"], training=False):
    """(J, InfoMax terms, InfoMin terms by pair) from numpy pooling and the critics' calls."""
    v = np.asarray(views)
    b, m, vh, vw, c = v.shape
    r = model.backbone.aggregator(views, training=training)
    infomax = [float(infomax_critics(model)[i]([r, v[:, i].reshape(b, vh * vw, c)],
                                               training=training)) for i in range(m)]
    p = v.mean(axis=(2, 3)) if pooling == "mean" else v.reshape(b, m, -1)
    assert model.objectives[1].pairs == [(0, 1), (0, 2), (1, 2)]
    infomin = {(i, j): float(per_pair_critic(model, k, p.shape[-1], infomin_units)(
                   [p[:, i], p[:, j]], training=False))
               for k, (i, j) in enumerate(model.objectives[1].pairs)}
    j = sum(a * t for a, t in zip(ALPHA, infomax))
    j -= LAM * sum(BETA[i][k] * t for (i, k), t in infomin.items())
    return j, infomax, infomin


@pytest.mark.parametrize("pooling", ["mean", "flatten"])
def test_objective_weighs_every_term_by_hand(images, pooling):
    # Raw scores: with the default soft clip, the 3x critic weights of `spread` saturate it
    # for some initializations (every pair's score equal, every estimate the same), and the
    # distinctness check below could not tell a swapped pair.
    model = make(view_pooling=pooling, score_clip=None)
    spread(infomax_critics(model) + [infomin_critics(model)])  # terms of clearly different sizes
    views = model.backbone.encoder(tf.constant(images), training=False)
    j_ref, infomax_ref, infomin_ref = by_hand(model, views, pooling)
    assert len(set(np.round(infomax_ref, 4))) == 3 and len(set(np.round(
        list(infomin_ref.values()), 4))) == 3  # distinct, so a swapped index shows
    j, infomax = objective(model, views)
    np.testing.assert_allclose([float(t) for t in infomax], infomax_ref, rtol=1e-5, atol=1e-5)
    assert float(j) == pytest.approx(j_ref, rel=1e-5, abs=1e-5)

    # The discriminators' side: beta-weighted fits and the per-pair estimates, pair order.
    pooled = pool_views(views, pooling)
    fit, logs = model.discriminator_objective(views, training=False)
    terms = [logs[f"mi_V{i + 1}_V{k + 1}"] for i, k in infomin_ref]
    np.testing.assert_allclose([float(t) for t in terms], list(infomin_ref.values()),
                               rtol=1e-5, atol=1e-5)
    weighted = sum(BETA[i][k] * t for (i, k), t in infomin_ref.items())
    assert float(fit) == pytest.approx(weighted, rel=1e-5, abs=1e-5)
    assert float(logs["discriminator_objective"]) == pytest.approx(float(fit), rel=1e-6)
    # The encoder's loss is -J (no regularization losses here).
    loss, logs = model.encoder_loss(views, training=False)
    assert not model.losses
    assert float(loss) == pytest.approx(-float(logs["objective"]), rel=1e-6)
    assert float(logs["loss"]) == pytest.approx(float(loss), rel=1e-6)
    # Pooled views by numpy: the mean over a view's locations, or all of them in order.
    v = np.asarray(views)
    expected = v.mean(axis=(2, 3)) if pooling == "mean" else v.reshape(8, 3, -1)
    np.testing.assert_allclose(np.asarray(pooled), expected, rtol=1e-5, atol=1e-6)


def test_one_critic_instance_is_shared_by_every_view(images):
    from keras_infobal import JSDCritic

    model = make(critic=JSDCritic(units=16), infomin_weight=0.0)
    assert len(model.objectives[0].critics) == 1
    views = model.backbone.encoder(tf.constant(images), training=False)
    v = np.asarray(views)
    r = model.backbone.aggregator(views, training=False)
    crit = model.objectives[0].critics[0]
    ref = [float(crit([r, v[:, i].reshape(8, -1, v.shape[-1])], training=False))
           for i in range(3)]
    j, infomax = objective(model, views)
    np.testing.assert_allclose([float(t) for t in infomax], ref, rtol=1e-5, atol=1e-5)
    # lambda = 0: J is the alpha-weighted InfoMax sum alone.
    assert float(j) == pytest.approx(sum(a * t for a, t in zip(ALPHA, ref)), rel=1e-5)


def test_augmented_pairs_score_each_half_against_the_other(images):
    model = tiny(**{"augmented_pairs": True, "infomin_weight": 0.0,
                       "view_weights": [1.0, 3.0]})
    spread(infomax_critics(model))
    x = tf.constant(images)  # halves: images 0-3 and 4-7 stand in for two augmentations
    views = model.backbone.encoder(x, training=False)
    v = np.asarray(views)
    r = np.asarray(model.backbone.aggregator(views, training=False))
    b, m, vh, vw, c = v.shape

    def term(i, r_rows, v_rows):
        return float(infomax_critics(model)[i]([r[r_rows], v[v_rows, i].reshape(4, -1, c)],
                                               training=False))

    first, second = slice(0, 4), slice(4, 8)
    ref = [(term(i, first, second) + term(i, second, first)) / 2 for i in range(m)]
    j, infomax = objective(model, views)
    np.testing.assert_allclose([float(t) for t in infomax], ref, rtol=1e-5, atol=1e-5)
    assert float(j) == pytest.approx(ref[0] + 3.0 * ref[1], rel=1e-5, abs=1e-5)


def test_variable_sets_and_when_the_discriminators_train():
    model = make()
    enc = {id(v) for v in model.backbone.encoder.trainable_variables
           + model.backbone.aggregator.trainable_variables}
    assert len(infomax_critics(model)) == 3
    for c in infomax_critics(model):
        enc |= {id(v) for v in c.trainable_variables}
    disc = set()
    disc |= {id(v) for v in infomin_critics(model).trainable_variables}
    assert infomin_critics(model).num_pairs == 3 and disc
    assert {id(v) for v in model.encoder_variables} == enc
    assert len(model.encoder_variables) == len(enc)
    assert {id(v) for v in model.discriminator_variables} == disc
    assert len(model.discriminator_variables) == len(disc)
    # lambda > 0 trains them; lambda = 0 only when compiled with a discriminator optimizer
    # (the monitor of I(V_i; V_j)).
    import keras

    for lam, monitor, active in [(0.7, False, True), (0.0, False, False), (0.0, True, True)]:
        m = tiny(**{"infomin_weight": lam, "image_shape": None})
        m.compile(optimizer="adam",
                  discriminator_optimizer=keras.optimizers.Adam() if monitor else None)
        assert m.discriminator_active is active, (lam, monitor)  # before the build
        m.build((None, 16, 16, 3))
        assert m.discriminator_active is active, (lam, monitor)
    single = tiny(**{"num_views": 1, "split": "rows", "infomin_weight": 1.0,
                     "image_shape": None})
    single.compile(optimizer="adam", discriminator_optimizer=keras.optimizers.Adam())
    assert single.discriminator_active is False
    single.build((None, 16, 16, 3))
    assert not single.objectives[1].pairs and single.discriminator_active is False


def test_encoder_loss_adds_the_regularization_losses(images):
    import keras

    model = make(infomin_weight=0.0)
    views = model.backbone.encoder(tf.constant(images), training=False)
    model.backbone.aggregator(views)  # built
    kernel = model.backbone.aggregator.trainable_variables[0]
    kernel.regularizer = keras.regularizers.L2(0.05)
    reg = 0.05 * float(np.sum(np.asarray(kernel) ** 2))  # by numpy
    assert reg > 1e-3
    loss, logs = model.encoder_loss(views)
    assert float(loss) == pytest.approx(-float(logs["objective"]) + reg, rel=1e-5, abs=1e-6)


def test_infomin_units_sets_only_the_discriminators_width(images):
    """`infomin_units=8` gives 8-unit discriminators (the stand-alone 8-unit per-pair critic
    reproduces every InfoMin term) and leaves the InfoMax critics at `critic_units`."""
    assert TINY["critic_units"] == 16
    model = make(infomin_units=8)
    hidden = infomin_critics(model).pair_weights(0)["global_encoder/hidden/vars/0"]
    assert hidden.shape[-1] == 8
    assert len(infomax_critics(model)) == 3
    assert all(c.global_encoder.hidden.units == 16 for c in infomax_critics(model))
    spread(infomax_critics(model) + [infomin_critics(model)])
    views = model.backbone.encoder(tf.constant(images), training=False)
    j_ref, _, infomin_ref = by_hand(model, views, infomin_units=8)
    _, logs = model.discriminator_objective(views, training=False)
    terms = [logs[f"mi_V{i + 1}_V{k + 1}"] for i, k in infomin_ref]
    np.testing.assert_allclose([float(t) for t in terms], list(infomin_ref.values()),
                               rtol=1e-5, atol=1e-5)
    j, _ = objective(model, views)
    assert float(j) == pytest.approx(j_ref, rel=1e-5, abs=1e-5)
    # Saved in the config; None (the default) follows critic_units.
    again = InfoBal.from_config(model.get_config())
    assert again.get_config()["infomin_units"] == 8 and infomin_critics(again).units == 8
    default = make()
    assert default.get_config()["infomin_units"] is None
    assert infomin_critics(default).units == 16
    for bad in (0, -4, 2.5, True, "8"):
        with pytest.raises(ValueError, match="infomin_units"):
            make(infomin_units=bad)


def _spread_moving_statistics(model, rng):
    """Moving means/variances far from the batch's, so training and inference mode differ."""
    for layer in model._flatten_layers():
        if isinstance(layer, __import__("keras").layers.BatchNormalization):
            layer.moving_mean.assign(rng.uniform(-1, 1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(2, 4, layer.moving_variance.shape))


def test_encoder_loss_scores_in_training_mode(images):
    """The encoder step's J uses batch statistics (training=True) in the aggregator and the
    InfoMax critics, as `fit` trains them; composed by hand in that mode."""
    model = make()
    spread(infomax_critics(model) + [infomin_critics(model)])
    views = model.backbone.encoder(tf.constant(images), training=False)
    _spread_moving_statistics(model, np.random.default_rng(2))
    j_train, _, _ = by_hand(model, views, training=True)
    j_eval, _, _ = by_hand(model, views, training=False)
    assert abs(j_train - j_eval) > 1e-2  # the mode matters here
    _, logs = model.encoder_loss(views)
    assert float(logs["objective"]) == pytest.approx(j_train, rel=1e-5, abs=1e-5)


def test_the_dim_baseline_never_evaluates_the_discriminators(images, monkeypatch):
    model = make(infomin_weight=0.0)
    views = model.backbone.encoder(tf.constant(images), training=False)
    j_ref, infomax_ref, _ = by_hand(model, views)

    def refuse(*args, **kwargs):
        raise AssertionError("lambda = 0: the InfoMin critics must not run")

    monkeypatch.setattr(type(infomin_critics(model)), "call", refuse)
    j, _ = objective(model, views)
    assert float(j) == pytest.approx(sum(a * t for a, t in zip(ALPHA, infomax_ref)), rel=1e-5)


def test_view_pooling_read_from_a_file_is_compared_by_value(images):
    # A name from a JSON config is an equal string, not the same object as the literal.
    model = make(view_pooling="".join(["me", "an"]))
    views = model.backbone.encoder(tf.constant(images), training=False)
    pooling = model.objectives[1].view_pooling
    np.testing.assert_allclose(np.asarray(pool_views(views, pooling)),
                               np.asarray(views).mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
