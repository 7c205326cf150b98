"""MI critics against numpy references built from their weights (no critic code reused)."""

import keras
import numpy as np
import pytest

from helpers import REFERENCES, ref_critic_encoder, ref_critic_scores
from keras_infobal import DVCritic, InfoNCECritic, JSDCritic, MICritic, NWJCritic
from keras_infobal.layers import critics as critics_module
from keras_infobal.layers import registry

CLASSES = {"jsd": JSDCritic, "dv": DVCritic, "infonce": InfoNCECritic, "nwj": NWJCritic}


def _inputs(b=4, d=3, locs=2, c=5, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(b, d)).astype("float32"),
            rng.normal(size=(b, locs, c)).astype("float32"))


def _randomize(layer, seed=1, scale=0.5):
    # Random weights everywhere (biases and norm parameters too), so no term is zero.
    rng = np.random.default_rng(seed)
    for v in layer.trainable_variables:
        v.assign(rng.normal(scale=scale, size=v.shape).astype("float32"))


@pytest.mark.parametrize("normalization", ["layer", None])
@pytest.mark.parametrize("scorer", ["dot", "concat"])
@pytest.mark.parametrize("clip", [None, 1.5])
def test_scores_match_numpy_reference(normalization, scorer, clip):
    g, l = _inputs()
    critic = MICritic(units=6, scorer=scorer, normalization=normalization, score_clip=clip)
    critic([g, l])
    _randomize(critic)
    expected = ref_critic_scores(critic, g, l)
    got = np.asarray(critic.scores([g, l]))
    assert got.shape == (4, 4, 2)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    if clip is not None:
        assert np.abs(got).max() <= clip


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_estimate_is_the_named_estimator_of_the_reference_scores(name):
    g, l = _inputs(b=5, seed=2)
    critic = CLASSES[name](units=6, normalization="layer")
    critic([g, l])
    _randomize(critic, seed=3)
    expected = REFERENCES[name](ref_critic_scores(critic, g, l))
    assert float(critic([g, l])) == pytest.approx(expected, abs=1e-3)
    fit, estimate = critic.fit_and_estimate([g, l])
    assert float(fit) == pytest.approx(expected, abs=1e-3)
    assert float(estimate) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("local_shape", [(4, 5), (4, 2, 5), (4, 1, 2, 5)])
def test_local_inputs_of_rank_2_3_4_are_the_same_locations(local_shape):
    g, l3 = _inputs(locs=2)
    critic = JSDCritic(units=6, normalization="layer")
    critic([g, l3])
    _randomize(critic)
    l = l3[:, :1].reshape(local_shape) if local_shape == (4, 5) else l3.reshape(local_shape)
    flat = l.reshape(4, -1, 5)
    np.testing.assert_allclose(np.asarray(critic.scores([g, l])),
                               ref_critic_scores(critic, g, flat), rtol=1e-4, atol=1e-4)


def test_gather_fn_scores_against_all_gathered_locals():
    # gather_fn stands in for an all-gather across 2 replicas: this replica's rows are the
    # second half, so its positives are columns 4..7 (offset 4).
    g, l = _inputs(b=4, seed=4)
    _, other = _inputs(b=4, seed=5)
    critic = InfoNCECritic(units=6, normalization="layer")
    critic([g, l])
    _randomize(critic)

    def gather(encodings):
        encoded_other = ref_critic_encoder(critic.local_encoder, other).astype("float32")
        return np.concatenate([encoded_other, np.asarray(encodings)], axis=0), 4

    scores, offset = critic.scores([g, l], gather_fn=gather)
    assert offset == 4 and tuple(scores.shape) == (4, 8, 2)
    full = ref_critic_scores(critic, g, np.concatenate([other, l]))
    np.testing.assert_allclose(np.asarray(scores), full, rtol=1e-4, atol=1e-4)
    expected = REFERENCES["infonce"](full, offset=4)
    assert float(critic([g, l], gather_fn=gather)) == pytest.approx(expected, abs=1e-3)
    fit, estimate = critic.fit_and_estimate([g, l], gather_fn=gather)
    assert float(estimate) == pytest.approx(expected, abs=1e-3)


def test_normalization_option_picks_the_norm_layer():
    g, l = _inputs()
    critic = JSDCritic(units=6, normalization="batch")
    critic([g, l])
    norm = critic.global_encoder.norm
    assert isinstance(norm, keras.layers.BatchNormalization)
    assert not norm.synchronized
    sync = JSDCritic(units=6, normalization="sync_batch")
    sync([g, l])
    assert sync.global_encoder.norm.synchronized
    layer = JSDCritic(units=6, normalization="layer")
    layer([g, l])
    assert isinstance(layer.local_encoder.norm,
                      keras.layers.LayerNormalization)


def test_factories_pass_their_options_on():
    c = registry.get_critic("NWJ", units=7, scorer="concat", score_clip=2.0)
    assert isinstance(c, NWJCritic)
    assert (c.units, c.scorer, c.score_clip, c.estimator) == (7, "concat", 2.0, "nwj")
    d = registry.get_infomin_critic("dv", units=5, score_clip=3.0, name="u")
    assert isinstance(d, DVCritic) and d.name == "u"
    assert (d.units, d.normalization, d.score_clip) == (5, "layer", 3.0)
    club = registry.get_infomin_critic("club_sampled", units=4, name="q")
    assert type(club).__name__ == "CLUB" and club.sampled and club.units == 4
    assert not registry.get_infomin_critic("CLUB", units=4).sampled
    # The documented defaults: 512 units, no clip, LayerNorm for the discriminators.
    default = registry.get_infomin_critic("jsd")
    assert (default.units, default.score_clip, default.normalization) == (512, None, "layer")
    assert registry.get_infomin_critic("club").units == 512
    assert registry.infomin_critic_names() == ("dv", "infonce", "jsd", "nwj", "club",
                                               "club_sampled")
    assert registry.critic_names() == ("dv", "infonce", "jsd", "nwj")
    assert registry.is_upper_bound("CLUB_sampled") and not registry.is_upper_bound("jsd")
    with pytest.raises(ValueError, match=r"Unknown critic 'mine'; expected one of \['dv', "):
        registry.get_critic("mine")
    with pytest.raises(ValueError, match="Unknown critic 'club'"):  # not an InfoMax critic
        registry.get_critic("club")
    with pytest.raises(ValueError, match=r"Unknown InfoMin critic 'mine'; expected one of "
                                         r"\['dv', 'infonce', 'jsd', 'nwj', 'club', "
                                         r"'club_sampled'\]"):
        registry.get_infomin_critic("mine")


def test_layer_normalized_critic_holds_no_state():
    # The InfoMin critics use LayerNorm so that calling them (in the encoder step) cannot
    # change them: two calls in training mode give the same value and the same variables.
    g, l = _inputs()
    critic = registry.get_infomin_critic("jsd", units=6)
    first = float(critic([g, l[:, 0]], training=True))
    before = [np.array(v) for v in critic.variables]
    assert float(critic([g, l[:, 0]], training=True)) == pytest.approx(first, abs=1e-6)
    assert all(np.array_equal(b, np.array(v)) for b, v in zip(before, critic.variables))
    assert not critic.non_trainable_variables


def test_batch_mismatch_message_names_both_sizes():
    g, l = _inputs(b=4)
    with pytest.raises(ValueError, match=r"must share the batch size; got 4 and 3\."):
        JSDCritic(units=6)([g, l[:3]])


@pytest.mark.parametrize("which,width", [("global", 2), ("global", 4), ("local", 4),
                                         ("local", 6)])
def test_channel_mismatch_is_caught_for_narrower_and_wider_inputs(which, width):
    g, l = _inputs()  # built for global dim 3 and local dim 5
    critic = JSDCritic(units=6)
    critic([g, l])
    rng = np.random.default_rng(0)
    if which == "global":
        g = rng.normal(size=(4, width)).astype("float32")
    else:
        l = rng.normal(size=(4, 2, width)).astype("float32")
    got = f"got {width} and 5" if which == "global" else f"got 3 and {width}"
    with pytest.raises(ValueError, match="Channel mismatch: this critic was built for global "
                                         f"dim 3 and local dim 5, {got}\\."):
        critic([g, l])


def test_traced_call_with_one_unknown_batch_size():
    # The batch check compares only known sizes: an unknown global batch (as in a traced
    # function) is not a mismatch, and the estimate is the same.
    import tensorflow as tf

    g, l = _inputs()
    critic = JSDCritic(units=6, normalization="layer")
    eager = float(critic([g, l]))
    traced = tf.function(lambda a, b: critic([a, b]),
                         input_signature=[tf.TensorSpec((None, 3)), tf.TensorSpec((4, 2, 5))])
    assert float(traced(g, l)) == pytest.approx(eager, abs=1e-5)
    # and the other way round: an unknown local batch
    traced = tf.function(lambda a, b: critic([a, b]),
                         input_signature=[tf.TensorSpec((4, 3)), tf.TensorSpec((None, 2, 5))])
    assert float(traced(g, l)) == pytest.approx(eager, abs=1e-5)


def test_local_inputs_of_another_rank_are_refused():
    from keras_infobal.layers.critics import _flatten_locals

    for shape in ((4,), (4, 2, 2, 2, 5)):
        with pytest.raises(ValueError, match=r"rank 2 \(B, C\), 3 \(B, L, C\) or 4"):
            _flatten_locals(np.zeros(shape, "float32"), "local")


def test_synchronized_batch_norm_name_read_from_a_file():
    # A name from a JSON config is an equal string, not the same object as the literal.
    critic = JSDCritic(units=4, normalization="".join(["sync_", "batch"]))
    critic.build([(None, 3), (None, 2, 5)])
    assert critic.global_encoder.norm.synchronized and critic.local_encoder.norm.synchronized


def test_wide_inputs_are_not_a_channel_mismatch():
    # Widths above 256 are distinct int objects in CPython: the check must compare values.
    rng = np.random.default_rng(0)
    g = rng.normal(size=(3, 300)).astype("float32")
    l = rng.normal(size=(3, 2, 260)).astype("float32")
    critic = JSDCritic(units=4)
    critic([g, l])
    g2 = np.array(g)  # a new array: its shape holds new int objects
    assert np.isfinite(float(critic([g2, np.array(l)])))


def test_batch_mismatch_either_way_and_wide_batches():
    g, l = _inputs(b=4)
    with pytest.raises(ValueError, match=r"must share the batch size; got 3 and 4\."):
        JSDCritic(units=6)([g[:3], l])  # fewer global rows than local
    # Batches above CPython's small-int cache are compared by value.
    g, l = _inputs(b=300, locs=1)
    assert np.isfinite(float(JSDCritic(units=4)([g, l])))


def test_global_inputs_of_another_rank_are_refused_when_built():
    g, l = _inputs()
    critic = JSDCritic(units=6)
    critic([g, l])
    for bad in (g[:, 0], g[:, :, None]):
        with pytest.raises(ValueError, match=r"global input must have shape \(B, D\)"):
            critic([bad, l])


def test_option_names_read_from_a_file_are_compared_by_value():
    # Names from a JSON config are equal strings, not the same objects as the literals.
    g, l = _inputs()
    layer = JSDCritic(units=4, normalization="".join(["lay", "er"]))
    layer.build([g.shape, l.shape])
    assert isinstance(layer.global_encoder.norm, keras.layers.LayerNormalization)
    for scorer in ("dot", "concat"):
        plain = JSDCritic(units=4, scorer=scorer, normalization="layer")
        read = JSDCritic(units=4, scorer="".join(scorer), normalization="layer")
        read.scorer = "".join([scorer[:1], scorer[1:]])  # a fresh, equal string
        plain([g, l])
        read([g, l])
        read.set_weights(plain.get_weights())
        np.testing.assert_allclose(np.asarray(read.scores([g, l])),
                                   np.asarray(plain.scores([g, l])), rtol=1e-6)


def test_only_the_concat_scorer_has_a_pair_score_layer():
    g, l = _inputs()
    dot, concat = JSDCritic(units=4), JSDCritic(units=4, scorer="concat")
    dot.build([g.shape, l.shape])
    concat.build([g.shape, l.shape])
    assert not hasattr(dot, "pair_hidden")
    assert len(concat.weights) == len(dot.weights) + 2  # the pair score's kernel and bias
