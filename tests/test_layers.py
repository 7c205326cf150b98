import keras
import numpy as np
import pytest

from helpers import ref_critic_scores, ref_dv, ref_jsd
from keras_infobal import (
    DVCritic,
    InfoNCECritic,
    JSDCritic,
    MICritic,
    NWJCritic,
    ViewAggregator,
    ViewEncoder,
)


def roundtrip(layer, *inputs):
    """Serializes a built layer, rebuilds it from config, copies weights; returns both outputs."""
    out = layer(*inputs) if len(inputs) == 1 else layer(list(inputs))
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    clone(*inputs) if len(inputs) == 1 else clone(list(inputs))
    clone.set_weights(layer.get_weights())
    out2 = clone(*inputs) if len(inputs) == 1 else clone(list(inputs))
    assert type(clone) is type(layer)
    assert clone.get_config() == layer.get_config()
    return np.asarray(out), np.asarray(out2)


# ----------------------------------------------------------------------------- ViewEncoder
@pytest.mark.parametrize(
    "split,m,expected",
    [
        ("rows", 1, (1, 8, 8, 128)),
        ("rows", 2, (2, 4, 8, 128)),
        ("rows", 8, (8, 1, 8, 128)),
        ("columns", 2, (2, 8, 4, 128)),
        ("grid", 4, (4, 4, 4, 128)),
        ("grid", 8, (8, 4, 2, 128)),
        ("grid", 16, (16, 2, 2, 128)),
        ("separate", 3, (3, 8, 8, 128)),
    ],
)
def test_view_encoder_shapes(split, m, expected):
    enc = ViewEncoder(num_views=m, split=split)
    x = np.zeros((2, 32, 32, 3), dtype="uint8")
    out = enc(x)
    assert tuple(out.shape) == (2,) + expected
    assert enc.compute_output_shape((2, 32, 32, 3)) == (2,) + expected


def test_view_encoder_splits_are_the_map_cut_into_parts():
    enc = ViewEncoder(num_views=1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    fmap = np.asarray(enc.local_map(x))
    for split, m in (("rows", 2), ("columns", 2), ("grid", 4)):
        other = ViewEncoder(num_views=m, split=split)
        other.build(x.shape)
        other.set_weights(enc.get_weights())
        v = np.asarray(other(x))
        if split == "rows":
            np.testing.assert_allclose(v[:, 0], fmap[:, :4], atol=1e-5)
            np.testing.assert_allclose(v[:, 1], fmap[:, 4:], atol=1e-5)
        elif split == "columns":
            np.testing.assert_allclose(v[:, 1], fmap[:, :, 4:], atol=1e-5)
        else:  # quadrants: top-left, top-right, bottom-left, bottom-right
            np.testing.assert_allclose(v[:, 1], fmap[:, :4, 4:], atol=1e-5)
            np.testing.assert_allclose(v[:, 2], fmap[:, 4:, :4], atol=1e-5)


def test_separate_split_has_one_trunk_per_view():
    shared = ViewEncoder(num_views=1, split="rows", filters=(4, 8))
    separate = ViewEncoder(num_views=3, split="separate", filters=(4, 8))
    shared.build((None, 32, 32, 3))
    separate.build((None, 32, 32, 3))
    assert len(separate.trainable_weights) == 3 * len(shared.trainable_weights)


def test_view_encoder_errors():
    with pytest.raises(ValueError, match="does not divide the local map's height 8"):
        ViewEncoder(num_views=3, split="rows").build((None, 32, 32, 3))
    with pytest.raises(ValueError, match="does not divide"):
        ViewEncoder(num_views=6, split="grid").build((None, 32, 32, 3))
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\).*rank 3"):
        ViewEncoder()(np.zeros((32, 32, 3), "uint8"))
    with pytest.raises(ValueError, match="3 channels"):
        ViewEncoder()(np.zeros((2, 32, 32, 1), "uint8"))
    with pytest.raises(ValueError, match="too small"):
        ViewEncoder(num_views=1)(np.zeros((2, 2, 2, 3), "uint8"))
    with pytest.raises(ValueError, match="split"):
        ViewEncoder(split="diagonal")
    with pytest.raises(ValueError, match="num_views"):
        ViewEncoder(num_views=0)


@pytest.mark.parametrize("split,m", [("rows", 2), ("grid", 4), ("separate", 2)])
def test_view_encoder_roundtrip(split, m):
    x = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype("uint8")
    a, b = roundtrip(ViewEncoder(num_views=m, split=split, filters=(4, 8)), x)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_view_encoder_rescales_0_255_to_minus_1_1():
    # uint8 input through rescale=True equals float input already in [-1, 1] through
    # rescale=False with the same weights; the map is x / 127.5 - 1 (0 -> -1, 255 -> 1).
    x = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype("uint8")
    x[0, 0, 0] = (0, 255, 127)
    scaled = x.astype("float32") / 127.5 - 1.0
    assert scaled[0, 0, 0, 0] == -1.0 and scaled[0, 0, 0, 1] == 1.0
    on = ViewEncoder(num_views=2, filters=(4, 8))
    off = ViewEncoder(num_views=2, filters=(4, 8), rescale=False)
    a = np.asarray(on(x))
    off(scaled)
    off.set_weights(on.get_weights())
    np.testing.assert_allclose(np.asarray(off(scaled)), a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(on.local_map(x)),
                               np.asarray(off.local_map(scaled)), rtol=1e-5, atol=1e-5)
    # Without rescaling, raw 0..255 values give other views: the option is not ignored.
    assert not np.allclose(np.asarray(off(x.astype("float32"))), a, atol=1e-3)
    # Float images in [0, 255] are rescaled like uint8 ones.
    np.testing.assert_allclose(np.asarray(on(x.astype("float32"))), a, rtol=1e-5, atol=1e-5)


def test_view_encoder_grid_shape_is_the_squarest_grid():
    from keras_infobal.layers.view_encoder import grid_shape

    expected = {1: (1, 1), 2: (1, 2), 3: (1, 3), 4: (2, 2), 6: (2, 3), 8: (2, 4), 9: (3, 3),
                12: (3, 4), 16: (4, 4), 7: (1, 7)}
    assert {m: grid_shape(m) for m in expected} == expected


@pytest.mark.parametrize("split,m", [("rows", 2), ("rows", 4), ("rows", 8), ("columns", 2),
                                     ("columns", 4), ("grid", 2), ("grid", 4), ("grid", 8),
                                     ("grid", 16)])
def test_view_encoder_every_view_is_its_part_of_the_map(split, m):
    """Every view against numpy slices of the one-view map: rows top to bottom, columns left
    to right, grid cells row-major."""
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    whole = ViewEncoder(num_views=1, filters=(4, 8))
    fmap = np.asarray(whole.local_map(x))  # (2, 8, 8, 8)
    enc = ViewEncoder(num_views=m, split=split, filters=(4, 8))
    enc.build(x.shape)
    enc.set_weights(whole.get_weights())
    views = np.asarray(enc(x))
    gr, gc = {"rows": (m, 1), "columns": (1, m)}.get(
        split, {2: (1, 2), 4: (2, 2), 8: (2, 4), 16: (4, 4)}[m])
    vh, vw = 8 // gr, 8 // gc
    assert views.shape == (2, m, vh, vw, 8)
    for k in range(m):
        r, c = divmod(k, gc)
        np.testing.assert_allclose(views[:, k], fmap[:, r * vh:(r + 1) * vh, c * vw:(c + 1) * vw],
                                   atol=1e-6)


def test_view_encoder_splits_that_do_not_divide_the_map_say_so():
    for split, m, message in (("rows", 3, "does not divide the local map's height 8"),
                              ("columns", 3, "does not divide the local map's width 8"),
                              ("columns", 5, "use a divisor of 8 for split='columns'"),
                              ("grid", 6, "makes a 2x3 grid, which does not divide"),
                              ("grid", 3, "makes a 1x3 grid")):
        with pytest.raises(ValueError, match=message):
            ViewEncoder(num_views=m, split=split, filters=(4, 8)).build((None, 32, 32, 3))
    # 4x8 maps (32x64 images): grid 8 divides (2x4), rows 8 does not.
    assert ViewEncoder(num_views=8, split="grid", filters=(4, 8)).view_shape(
        (None, 32, 64, 3)) == (4, 4, 8)
    assert ViewEncoder(num_views=2, split="columns", filters=(4, 8)).view_shape(
        (None, 32, 64, 3)) == (8, 8, 8)


def test_view_encoder_map_shape_rounds_odd_sides_up():
    # Three stride-2 "same" convolutions: 30 -> 15 -> 8 -> 4 and 18 -> 9 -> 5 -> 3, by hand;
    # the channels are the last of the three filters.
    enc = ViewEncoder(num_views=1, filters=(4, 8, 16))
    assert enc.map_shape((None, 30, 18, 3)) == (4, 3, 16)
    out = enc.local_map(np.zeros((2, 30, 18, 3), "uint8"))
    assert tuple(out.shape) == (2, 4, 3, 16)


def test_view_encoder_refuses_images_too_small_on_either_side():
    enc = ViewEncoder(num_views=1, filters=(4, 8))  # halves twice: at least 4x4
    for shape, size in (((None, 3, 8, 3), "3x8"), ((None, 8, 3, 3), "8x3")):
        with pytest.raises(ValueError, match=f"Images of {size} are too small.*at least 4x4"):
            enc.view_shape(shape)
    assert enc.view_shape((None, 4, 4, 3)) == (1, 1, 8)
    deeper = ViewEncoder(num_views=1, filters=(4, 8, 16))  # halves three times: 8x8
    with pytest.raises(ValueError, match="Images of 7x16 are too small.*at least 8x8"):
        deeper.view_shape((None, 7, 16, 3))
    assert deeper.view_shape((None, 8, 8, 3)) == (1, 1, 16)


def test_view_encoder_unknown_image_size():
    # One view, or one trunk per view, needs no cut: the size may stay unknown.
    unknown = (None, None, None, 3)
    assert ViewEncoder(num_views=1, filters=(4, 8)).view_shape(unknown) == (None, None, 8)
    assert ViewEncoder(num_views=2, split="separate",
                       filters=(4, 8)).view_shape(unknown) == (None, None, 8)
    for shape in (unknown, (None, 32, None, 3), (None, None, 32, 3)):
        with pytest.raises(ValueError, match="needs a known image size"):
            ViewEncoder(num_views=2, split="rows", filters=(4, 8)).view_shape(shape)


def test_view_encoder_trunk_layer_names():
    one = ViewEncoder(num_views=2, split="rows", filters=(4, 8))
    one.build((None, 16, 16, 3))
    assert [layer.name for layer in one.trunks[0]] == ["conv0", "bn0", "conv1", "bn1"]
    # build() builds every layer: 2 x (kernel, bias) + 2 x (gamma, beta, mean, variance)
    assert len(one.weights) == 12 and all(layer.built for layer in one.trunks[0])
    # DIM's trunk: 4x4 kernels, stride 2
    assert [tuple(layer.kernel.shape) for layer in one.trunks[0][::2]] == [(4, 4, 3, 4),
                                                                           (4, 4, 4, 8)]
    assert all(layer.strides == (2, 2) for layer in one.trunks[0][::2])
    two = ViewEncoder(num_views=2, split="separate", filters=(4, 8))
    two.build((None, 16, 16, 3))
    assert [[layer.name for layer in t] for t in two.trunks] == [
        ["view0_conv0", "view0_bn0", "view0_conv1", "view0_bn1"],
        ["view1_conv0", "view1_bn0", "view1_conv1", "view1_bn1"]]
    assert len(two.weights) == 24


def test_view_encoder_local_map_of_separate_split_is_the_first_trunks():
    x = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3)).astype("uint8")
    enc = ViewEncoder(num_views=2, split="separate", filters=(4, 8))
    views = np.asarray(enc(x, training=False))
    fmap = np.asarray(enc.local_map(x, training=False))
    np.testing.assert_allclose(fmap, views[:, 0], atol=1e-6)
    assert not np.allclose(fmap, views[:, 1], atol=1e-3)


# -------------------------------------------------------------------------- ViewAggregator
@pytest.mark.parametrize("mode", ["concat", "mean", "attention"])
def test_aggregator_shapes_and_features(mode):
    views = np.random.default_rng(0).normal(size=(3, 2, 4, 8, 128)).astype("float32")
    agg = ViewAggregator(mode=mode)
    r = agg(views)
    assert tuple(r.shape) == (3, 64)
    feats = agg.features(views)
    assert tuple(feats["conv"].shape) == (3, 4096)  # DIM's 4x4x256 conv layer
    assert tuple(feats["fc"].shape) == (3, 1024)
    np.testing.assert_allclose(np.asarray(feats["R"]), np.asarray(r), atol=1e-5)
    assert agg.compute_output_shape((3, 2, 4, 8, 128)) == (3, 64)


def test_attention_weights_are_a_distribution_over_views():
    views = np.random.default_rng(0).normal(size=(3, 4, 4, 4, 16)).astype("float32")
    agg = ViewAggregator(mode="attention", fc_units=8, conv_filters=8)
    agg(views)
    w = np.asarray(agg.view_weights(views))
    assert w.shape == (3, 4)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="attention"):
        ViewAggregator(mode="mean").view_weights(views)
    # A mode name read from a file is an equal string, not the same object.
    built = ViewAggregator(mode="".join(["atten", "tion"]), fc_units=8, conv_filters=8)
    built(views)
    assert np.asarray(built.view_weights(views)).shape == (3, 4)


def test_mean_mode_is_invariant_to_view_order():
    views = np.random.default_rng(0).normal(size=(3, 2, 4, 4, 16)).astype("float32")
    agg = ViewAggregator(mode="mean", fc_units=8, conv_filters=8)
    a = np.asarray(agg(views))
    b = np.asarray(agg(views[:, ::-1]))
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("mode", ["concat", "mean", "attention"])
def test_aggregator_roundtrip(mode):
    views = np.random.default_rng(0).normal(size=(3, 2, 4, 4, 16)).astype("float32")
    a, b = roundtrip(ViewAggregator(mode=mode, fc_units=8, conv_filters=8, output_dim=4), views)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_aggregator_errors():
    with pytest.raises(ValueError, match=r"\(B, M, h, w, C\)"):
        ViewAggregator()(np.zeros((2, 8, 8, 128), "float32"))
    agg = ViewAggregator(fc_units=8, conv_filters=8)
    agg(np.zeros((2, 2, 4, 4, 16), "float32"))
    with pytest.raises(ValueError, match="built for 2 views of 16 channels"):
        agg(np.zeros((2, 2, 4, 4, 32), "float32"))
    with pytest.raises(ValueError, match="mode"):
        ViewAggregator(mode="sum")
    with pytest.raises(ValueError, match="output_mode"):
        ViewAggregator(output_mode="logits")


def _bn(x, layer):
    """Inference-mode BatchNormalization by numpy, from the layer's weights."""
    gamma, beta, mean, var = (np.asarray(w) for w in layer.weights)
    return gamma * (x - mean) / np.sqrt(var + layer.epsilon) + beta


def _spread_bn_statistics(agg, rng):
    for layer in (agg.conv_norm, agg.fc_norm):
        for w, lo, hi in zip(layer.weights, (0.5, -0.5, -0.5, 0.5), (1.5, 0.5, 0.5, 2.0)):
            w.assign(rng.uniform(lo, hi, w.shape).astype("float32"))


@pytest.mark.parametrize("mode", ["concat", "mean", "attention"])
def test_aggregator_features_match_numpy(mode):
    """conv, fc and R of every mode, in inference mode, against numpy from the weights (only
    the 4x4 stride-2 convolution itself is Keras' Conv2D)."""
    rng = np.random.default_rng(3)
    b, m, h, w, c = 3, 3, 4, 4, 16
    views = rng.normal(size=(b, m, h, w, c)).astype("float32")
    agg = ViewAggregator(mode=mode, fc_units=8, conv_filters=8, output_dim=5)
    agg(views)
    _spread_bn_statistics(agg, rng)
    for layer in ([agg.view_score] if mode == "attention" else []):
        layer.kernel.assign(3.0 * rng.normal(size=layer.kernel.shape).astype("float32"))
    assert tuple(agg.conv.kernel.shape) == (4, 4, c, 8) and agg.conv.strides == (2, 2)
    conv_map = np.asarray(agg.conv(views.reshape(b * m, h, w, c)))  # (B*M, 2, 2, 8)
    conv = np.maximum(_bn(conv_map, agg.conv_norm), 0).reshape(b, m, -1)  # (B, M, 32)
    w_fc, b_fc = (np.asarray(v) for v in agg.fc.weights)
    if mode == "concat":
        fc = np.maximum(_bn(conv.reshape(b, -1) @ w_fc + b_fc, agg.fc_norm), 0)
    else:
        hv = np.maximum(_bn(conv @ w_fc + b_fc, agg.fc_norm), 0)  # (B, M, 8), shared fc
        if mode == "mean":
            fc = hv.mean(axis=1)
        else:
            w_s, b_s = (np.asarray(v) for v in agg.view_score.weights)
            score = (hv @ w_s + b_s)[..., 0]  # (B, M)
            a = np.exp(score - score.max(1, keepdims=True))
            a /= a.sum(1, keepdims=True)
            assert a.max() - a.min() > 0.2  # the weights differ, so a wrong pooling shows
            fc = (a[..., None] * hv).sum(axis=1)
            np.testing.assert_allclose(np.asarray(agg.view_weights(views)), a, atol=1e-5)
    w_h, b_h = (np.asarray(v) for v in agg.head.weights)
    feats = agg.features(views, training=False)
    np.testing.assert_allclose(np.asarray(feats["conv"]), conv.reshape(b, -1), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(feats["fc"]), fc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(feats["R"]), fc @ w_h + b_h, rtol=1e-4, atol=1e-5)


def test_aggregator_conv_feature_shapes_round_odd_sides_up():
    # 4x4 stride-2 "same": 8 x 5 views -> 4 x 3 maps of conv_filters channels, by hand.
    agg = ViewAggregator(fc_units=8, conv_filters=6)
    shapes = agg.feature_shapes((3, 2, 8, 5, 16))
    assert shapes == {"conv": (3, 2 * 4 * 3 * 6), "fc": (3, 8), "R": (3, 64)}
    feats = agg.features(np.zeros((3, 2, 8, 5, 16), "float32"))
    assert {k: tuple(v.shape) for k, v in feats.items()} == shapes


def test_aggregator_refuses_views_it_was_not_built_for():
    agg = ViewAggregator(fc_units=8, conv_filters=8)
    agg(np.zeros((2, 2, 4, 4, 16), "float32"))
    for m, c in ((3, 16), (1, 16), (2, 8), (2, 32)):
        with pytest.raises(ValueError, match="built for 2 views of 16 channels"):
            agg(np.zeros((2, m, 4, 4, c), "float32"))
    # Wide views (ints above CPython's small-int cache) are compared by value.
    wide = ViewAggregator(fc_units=4, conv_filters=4)
    wide(np.zeros((1, 2, 2, 2, 300), "float32"))
    assert tuple(wide(np.zeros((1, 2, 2, 2, 300), "float32")).shape) == (1, 64)


# --------------------------------------------------------------------------------- critics
CRITIC_CLASSES = [JSDCritic, DVCritic, InfoNCECritic, NWJCritic]


@pytest.mark.parametrize("cls", CRITIC_CLASSES)
@pytest.mark.parametrize("local_shape", [(6, 5), (6, 3, 5), (6, 2, 2, 5)])
def test_critic_returns_a_scalar_and_full_score_tensor(cls, local_shape):
    rng = np.random.default_rng(0)
    g = rng.normal(size=(6, 4)).astype("float32")
    l = rng.normal(size=local_shape).astype("float32")
    critic = cls(units=8)
    mi = critic([g, l])
    assert tuple(mi.shape) == ()
    n_loc = int(np.prod(local_shape[1:-1])) if len(local_shape) > 2 else 1
    assert tuple(critic.scores([g, l]).shape) == (6, 6, n_loc)


def test_critic_scores_are_encode_and_dot():
    # Reference from the critic's weights in numpy (tests/helpers.py), not from its own
    # encoder layers, so a bug in the encoders or the scorer cannot cancel out.
    rng = np.random.default_rng(0)
    g = rng.normal(size=(4, 3)).astype("float32")
    l = rng.normal(size=(4, 2, 5)).astype("float32")
    critic = JSDCritic(units=6, normalization="layer")
    critic([g, l])
    for v in critic.trainable_variables:
        v.assign(rng.normal(scale=0.5, size=v.shape).astype("float32"))
    expected = ref_critic_scores(critic, g, l)
    np.testing.assert_allclose(np.asarray(critic.scores([g, l])), expected, rtol=1e-4,
                               atol=1e-4)
    assert float(critic([g, l])) == pytest.approx(ref_jsd(expected), abs=1e-4)


def test_score_clip_is_a_soft_tanh_clip_of_the_dot_scores():
    rng = np.random.default_rng(0)
    g = 10 * rng.normal(size=(4, 3)).astype("float32")
    l = 10 * rng.normal(size=(4, 2, 5)).astype("float32")
    plain = InfoNCECritic(units=6, normalization="layer")
    clipped = InfoNCECritic(units=6, normalization="layer", score_clip=2.0)
    plain([g, l])
    clipped([g, l])
    clipped.set_weights(plain.get_weights())
    raw = np.asarray(plain.scores([g, l]))
    assert np.abs(raw).max() > 2.0  # the clip has something to do
    np.testing.assert_allclose(np.asarray(clipped.scores([g, l])), 2.0 * np.tanh(raw / 2.0),
                               rtol=1e-5, atol=1e-5)
    from keras_infobal import estimators

    np.testing.assert_allclose(float(clipped([g, l])),
                               float(estimators.infonce(2.0 * np.tanh(raw / 2.0))), atol=1e-5)
    assert clipped.get_config()["score_clip"] == 2.0
    for bad in (0, -1.0, "10"):
        with pytest.raises(ValueError, match="score_clip"):
            JSDCritic(score_clip=bad)


def test_concat_scorer():
    # An MLP on [e_g; e_l] per pair, checked against the numpy reference with loops.
    rng = np.random.default_rng(0)
    g = rng.normal(size=(4, 3)).astype("float32")
    l = rng.normal(size=(4, 2, 5)).astype("float32")
    critic = DVCritic(units=6, scorer="concat", normalization=None)
    critic([g, l])
    for v in critic.trainable_variables:
        v.assign(rng.normal(scale=0.5, size=v.shape).astype("float32"))
    expected = ref_critic_scores(critic, g, l)
    assert tuple(critic.scores([g, l]).shape) == (4, 4, 2)
    np.testing.assert_allclose(np.asarray(critic.scores([g, l])), expected, rtol=1e-4,
                               atol=1e-4)
    assert float(critic([g, l])) == pytest.approx(ref_dv(expected), abs=1e-4)


@pytest.mark.parametrize("cls", CRITIC_CLASSES + [MICritic])
def test_critic_roundtrip(cls):
    rng = np.random.default_rng(0)
    g = rng.normal(size=(4, 3)).astype("float32")
    l = rng.normal(size=(4, 2, 5)).astype("float32")
    kwargs = {"estimator": "nwj"} if cls is MICritic else {}
    a, b = roundtrip(cls(units=6, normalization="layer", **kwargs), g, l)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_critic_errors():
    rng = np.random.default_rng(0)
    g = rng.normal(size=(4, 3)).astype("float32")
    l = rng.normal(size=(4, 2, 5)).astype("float32")
    critic = JSDCritic(units=6)
    critic([g, l])
    with pytest.raises(ValueError, match="Channel mismatch"):
        critic([g, rng.normal(size=(4, 2, 7)).astype("float32")])
    with pytest.raises(ValueError, match="at least 2 images"):
        JSDCritic(units=6)([g[:1], l[:1]])
    with pytest.raises(ValueError, match="two inputs"):
        JSDCritic(units=6).build((4, 3))
    with pytest.raises(ValueError, match=r"local input must have shape \(B, C\)"):
        JSDCritic(units=6)([g, np.zeros((4, 1, 1, 1, 5), "float32")])
    with pytest.raises(ValueError, match="always uses the 'jsd'"):
        JSDCritic(estimator="dv")
    with pytest.raises(ValueError, match="Unknown MI estimator"):
        MICritic(estimator="mine")
    with pytest.raises(ValueError, match="scorer"):
        MICritic(scorer="bilinear")
