"""InfoBal's updates checked by what they do: direction, isolation, step counts, options."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import infomax_critics, infomin_critics, optimizers, ref_critic_scores, tiny
from keras_infobal.objectives.infomin import check_correlation_weights


def make(**kwargs):
    return tiny(**{**kwargs})


def snapshot(variables):
    return [np.array(v) for v in variables]


def n_changed(before, variables):
    return sum(not np.array_equal(b, np.array(v)) for b, v in zip(before, variables))


def pooled(model, views):
    """The discriminators' inputs by numpy: mean over a view's locations, or flattened."""
    v = np.asarray(views)
    if model.objectives[1].view_pooling == "mean":
        return v.mean(axis=(2, 3))
    return v.reshape(v.shape[0], v.shape[1], -1)


def infomin_objective(model, views):
    """sum_{i<j} beta_ij I_U(V_i; V_j), from the critics on numpy-pooled views."""
    p = pooled(model, views)
    # One batched layer holds every pair's critic; it returns the (P,) estimates.
    infomin = model.objectives[1]
    terms = np.asarray(infomin.critics[0](p, training=False))
    beta = check_correlation_weights(infomin.correlation_weights, model.num_views)
    return sum(beta[i, j] * float(t) for t, (i, j) in zip(terms, infomin.pairs, strict=True))


# ------------------------------------------------------------------ adversarial direction
@pytest.mark.parametrize("critic", ["jsd", "infonce"])
def test_discriminator_steps_raise_the_discriminator_objective(images, critic):
    keras.utils.set_random_seed(0)
    model = make(infomin_weight=1.0, critic=critic)
    # Plain small-step gradient ascent: every step must raise the objective.
    model.compile(optimizer=keras.optimizers.SGD(1e-3),
                  discriminator_optimizer=keras.optimizers.SGD(1e-2))
    views = model.backbone.encoder(tf.constant(images), training=False)
    values = [infomin_objective(model, views)]
    for _ in range(4):
        model.discriminator_step(views)
        values.append(infomin_objective(model, views))
    # A flipped sign in the update would lower it at every step.
    assert all(b > a for a, b in zip(values, values[1:])), values
    assert values[-1] > values[0] + 0.01, values


@pytest.mark.parametrize("critic", ["jsd", "dv"])
def test_encoder_steps_lower_the_infomin_term(images, critic):
    # alpha = 0 leaves only -lambda * InfoMin in J, so the encoder's update must lower it
    # (the discriminators stay fixed: they are not updated here).
    keras.utils.set_random_seed(0)
    model = make(infomin_weight=1.0, critic=critic, view_weights=[0.0, 0.0])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  discriminator_optimizer=keras.optimizers.Adam(1e-3))
    # Spread the critics' scores so their estimates respond.
    for v in infomin_critics(model).trainable_variables:
        v.assign(v * 3.0)
    x = tf.constant(images)
    disc_before = snapshot(model.discriminator_variables)

    def infomin_now():
        return infomin_objective(model, model.backbone.encoder(x, training=True))

    values = [infomin_now()]
    for _ in range(4):
        model.encoder_step(x)
        values.append(infomin_now())
    assert values[-1] < values[0] - 0.05, values
    assert n_changed(disc_before, model.discriminator_variables) == 0


def test_train_step_moves_both_terms_the_right_way(images):
    # Through fit: with alpha = 0 the encoder lowers what the discriminator raises; measured
    # on the fixed images with the other side held fixed (zero learning rate).
    keras.utils.set_random_seed(0)
    x = tf.constant(images)
    up = make(infomin_weight=1.0, critic="jsd")
    up.compile(optimizer=keras.optimizers.Adam(0.0),
               discriminator_optimizer=keras.optimizers.Adam(1e-2))
    views = up.backbone.encoder(x, training=False)
    before = infomin_objective(up, views)
    up.fit(images, batch_size=8, epochs=5, verbose=0, shuffle=False)
    assert infomin_objective(up, up.backbone.encoder(x, training=False)) > before + 0.05

    keras.utils.set_random_seed(0)
    down = make(infomin_weight=1.0, critic="jsd", view_weights=[0.0, 0.0])
    down.compile(optimizer=keras.optimizers.Adam(1e-2),
                 discriminator_optimizer=keras.optimizers.Adam(0.0))
    for v in infomin_critics(down).trainable_variables:
        v.assign(v * 3.0)
    before = infomin_objective(down, down.backbone.encoder(x, training=True))
    down.fit(images, batch_size=8, epochs=5, verbose=0, shuffle=False)
    assert infomin_objective(down, down.backbone.encoder(x, training=True)) < before - 0.05


def test_encoder_step_encodes_in_training_mode(images):
    # The encoder step's J is the objective of views encoded with training=True (batch
    # statistics in BatchNormalization), and the step updates the moving statistics.
    keras.utils.set_random_seed(0)
    model = make(infomin_weight=1.0)
    model.compile(optimizer=keras.optimizers.SGD(0.0),
                  discriminator_optimizer=keras.optimizers.SGD(0.0))
    x = tf.constant(images)
    moving = model.backbone.encoder.non_trainable_variables
    assert moving  # BatchNormalization's moving means and variances
    _, logs_ref = model.encoder_loss(model.backbone.encoder(x, training=True), training=True)
    j_ref = logs_ref["objective"]
    after_ref = snapshot(moving)
    loss, logs = model.encoder_step(x)
    assert float(logs["objective"]) == pytest.approx(float(j_ref), rel=1e-5, abs=1e-5)
    assert float(loss) == pytest.approx(-float(j_ref), rel=1e-5, abs=1e-5)
    assert n_changed(after_ref, moving) == len(moving)


# ------------------------------------------------------------------ isolation through fit
def test_fit_with_a_frozen_encoder_changes_only_the_discriminators(images):
    model = make(infomin_weight=1.0)
    model.compile(optimizer=keras.optimizers.Adam(0.0),
                  discriminator_optimizer=keras.optimizers.Adam(1e-2))
    enc, disc = model.encoder_variables, model.discriminator_variables
    enc_before, disc_before = snapshot(enc), snapshot(disc)
    model.fit(images, batch_size=4, epochs=1, verbose=0)
    assert n_changed(enc_before, enc) == 0
    assert n_changed(disc_before, disc) == len(disc)  # every discriminator weight trains
    # The discriminator optimizer holds state only for the discriminators' variables.
    ids = {id(v) for v in disc}
    assert {id(v) for v in model.discriminator_optimizer._trainable_variables} == ids


def test_fit_with_frozen_discriminators_changes_only_the_encoder(images):
    model = make(infomin_weight=1.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  discriminator_optimizer=keras.optimizers.Adam(0.0))
    enc, disc = model.encoder_variables, model.discriminator_variables
    enc_before, disc_before = snapshot(enc), snapshot(disc)
    model.fit(images, batch_size=4, epochs=1, verbose=0)
    assert n_changed(disc_before, disc) == 0
    assert n_changed(enc_before, enc) == len(enc)
    # The encoder side and the discriminators partition the trainable variables.
    assert len(enc) + len(disc) == len(model.trainable_variables)
    assert not {id(v) for v in enc} & {id(v) for v in disc}


@pytest.mark.parametrize("k", [1, 3])
def test_discriminator_iterations_are_k_per_step(images, k):
    model = make(infomin_weight=1.0, discriminator_steps=k)
    model.compile(**optimizers())
    model.fit(images, batch_size=4, epochs=2, verbose=0)  # 2 steps an epoch
    assert int(model.optimizer.iterations) == 4
    assert int(model.discriminator_optimizer.iterations) == 4 * k


def test_the_lambda_0_monitor_leaves_the_encoder_updates_unchanged(images):
    keras.utils.set_random_seed(0)
    plain = make(infomin_weight=0.0)
    tracked = make(infomin_weight=0.0)
    tracked.set_weights(plain.get_weights())
    plain.compile(optimizer=keras.optimizers.Adam(1e-2))
    tracked.compile(**optimizers(1e-2))
    plain.compile(optimizer=keras.optimizers.Adam(1e-2))
    for m in (plain, tracked):
        m.fit(images, batch_size=4, epochs=2, verbose=0, shuffle=False)
    assert int(tracked.discriminator_optimizer.iterations) == 4  # the monitor did train
    for a, b in zip(plain.encoder_variables, tracked.encoder_variables):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-6)
    # ... and the monitored discriminators are not what the encoder optimizes.
    assert n_changed(snapshot(plain.encoder_variables), tracked.encoder_variables) == 0


# ----------------------------------------------------------------- options reach behaviour
def _spread(critics, factor):
    for c in critics:
        for v in c.trainable_variables:
            v.assign(v * factor)


def _critics(scorer, clip):
    from keras_infobal import JSDCritic

    return [JSDCritic(units=16, scorer=scorer, score_clip=clip, name=f"infomax_critic_{i}")
            for i in (1, 2)]


@pytest.mark.parametrize("scorer", ["dot", "concat"])
@pytest.mark.parametrize("infomin_critic", ["jsd", "infonce"])
def test_score_clip_bounds_every_critic_the_model_builds(images, scorer, infomin_critic):
    clip = 0.5
    model = make(infomin_weight=1.0, critic=_critics(scorer, clip),
                 infomin_critic=infomin_critic, score_clip=clip)
    # The InfoMax critics, and the one layer holding the InfoMin critics of all pairs.
    critics = infomax_critics(model) + [infomin_critics(model)]
    assert len(critics) == 3 and infomin_critics(model).num_pairs == 1
    _spread(critics, 3.0)  # raw scores then exceed the clip by far
    views = model.backbone.encoder(tf.constant(images), training=False)
    r = model.backbone.aggregator(views, training=False)
    p = pooled(model, views)
    v = np.asarray(views)
    inputs = [[np.asarray(r), v[:, i].reshape(8, -1, v.shape[-1])] for i in range(2)]

    def scores(critic, i):
        if i < len(inputs):
            return np.asarray(critic.scores(inputs[i], training=False))
        return np.asarray(critic.scores(p)[0])  # (P, B, B, 1)

    for i, critic in enumerate(critics):
        clipped = scores(critic, i)
        critic.score_clip = None  # the raw scores of the same critic
        raw = scores(critic, i)
        critic.score_clip = clip
        assert np.abs(raw).max() > 2 * clip, critic.name
        assert np.abs(clipped).max() <= clip, critic.name  # tanh saturates to c in float32
        np.testing.assert_allclose(clipped, clip * np.tanh(raw / clip), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("scorer", ["dot", "concat"])
def test_infomax_critic_scores_match_numpy_reference(images, scorer):
    model = make(infomin_weight=0.0, critic=_critics(scorer, 3.0), score_clip=3.0)
    critic = infomax_critics(model)[0]
    critic_ref = type(critic)(units=critic.units, scorer=scorer, normalization="layer",
                              score_clip=3.0)
    views = np.asarray(model.backbone.encoder(tf.constant(images), training=False))
    g = np.asarray(model.backbone.aggregator(views, training=False))
    l = views[:, 0].reshape(8, -1, views.shape[-1])
    critic_ref([g, l])
    rng = np.random.default_rng(0)
    for v in critic_ref.trainable_variables:
        v.assign(rng.normal(scale=0.5, size=v.shape).astype("float32"))
    expected = ref_critic_scores(critic_ref, g, l)
    np.testing.assert_allclose(np.asarray(critic_ref.scores([g, l])), expected,
                               rtol=1e-4, atol=1e-4)


def test_correlation_weights_scale_each_pair_by_hand(images):
    beta = [[1.0, 2.0, 0.5], [2.0, 1.0, 0.0], [0.5, 0.0, 1.0]]
    kwargs = dict(num_views=3, split="separate", infomin_weight=0.7,
                  view_weights=[1.0, 0.5, 2.0])
    keras.utils.set_random_seed(0)
    weighted = make(correlation_weights=beta, **kwargs)
    plain = make(**kwargs)
    plain.set_weights(weighted.get_weights())
    for m in (weighted, plain):
        m.compile(**optimizers())
    lw = weighted.evaluate(images, batch_size=8, verbose=0, return_dict=True)
    lp = plain.evaluate(images, batch_size=8, verbose=0, return_dict=True)
    terms = {(i, j): lp[f"mi_V{i + 1}_V{j + 1}"] for i, j in ((0, 1), (0, 2), (1, 2))}
    infomax = lp["mi_R_V1"] + 0.5 * lp["mi_R_V2"] + 2.0 * lp["mi_R_V3"]
    assert lp["objective"] == pytest.approx(infomax - 0.7 * sum(terms.values()), abs=1e-4)
    by_hand = 2.0 * terms[0, 1] + 0.5 * terms[0, 2] + 0.0 * terms[1, 2]
    assert lw["discriminator_objective"] == pytest.approx(by_hand, abs=1e-4)
    assert lw["objective"] == pytest.approx(infomax - 0.7 * by_hand, abs=1e-4)
    # The difference is exactly lambda * sum (1 - beta_ij) I_ij: here not zero.
    assert abs(lw["objective"] - lp["objective"]) > 1e-3


def test_zero_correlation_weight_leaves_that_discriminator_untrained(images):
    beta = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
    model = make(num_views=3, split="separate", correlation_weights=beta)
    model.compile(**optimizers(1e-2))
    # Each pair's critic is slice p of the batched layer's stacked weights.
    variables = infomin_critics(model).trainable_variables
    before = snapshot(variables)
    model.fit(images, batch_size=4, epochs=1, verbose=0)
    moved = [sum(not np.array_equal(b[k], np.array(v)[k]) for b, v in zip(before, variables))
             for k in range(len(model.objectives[1].pairs))]
    # pairs (1,2), (1,3), (2,3): the (1,3) pair has weight 0, so no gradient reaches it.
    assert moved[1] == 0 and moved[0] > 0 and moved[2] > 0


@pytest.mark.parametrize("pooling", ["mean", "flatten"])
def test_view_pooling_feeds_the_discriminators(images, pooling):
    model = make(infomin_weight=1.0, view_pooling=pooling)
    model.compile(**optimizers())
    views = model.backbone.encoder(tf.constant(images), training=False)
    v = np.asarray(views)
    width = v.shape[-1] if pooling == "mean" else v.shape[2] * v.shape[3] * v.shape[4]
    assert infomin_critics(model).view_dim == width
    logs = model.evaluate(images, batch_size=8, verbose=0, return_dict=True)
    assert logs["mi_V1_V2"] == pytest.approx(infomin_objective(model, views), abs=1e-4)
    # Flattened views keep where a feature is: swapping two locations of view 2 changes
    # the estimate under "flatten" but not under "mean".
    swapped = v.copy()
    swapped[:, 1, 0, 0], swapped[:, 1, 1, 1] = v[:, 1, 1, 1], v[:, 1, 0, 0]
    changed = abs(infomin_objective(model, swapped) - infomin_objective(model, views)) > 1e-4
    assert changed == (pooling == "flatten")
