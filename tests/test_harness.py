"""Every public layer, the backbone, the task and every preset through the shared harness
(tests/harness.py), keras-hub's way: the same checks for each."""

import numpy as np
import pytest

from harness import run_backbone_test, run_layer_test, run_preset_test, run_task_test
from helpers import TINY, tiny
from keras_infobal import (
    DVCritic,
    InfoNCECritic,
    JSDCritic,
    MICritic,
    NWJCritic,
    ViewAggregator,
    ViewEncoder,
)
from keras_infobal.layers import BatchNormalization
from keras_infobal.layers.club import CLUB
from keras_infobal.layers.pair_critics import PairCLUB, PairCritics
from keras_infobal.models import InfoBal, InfoBalBackbone, presets

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (2, 16, 16, 3)).astype("uint8")
VIEWS = RNG.normal(size=(3, 2, 4, 4, 8)).astype("float32")
CRITIC_INPUTS = [RNG.normal(size=(4, 3)).astype("float32"),
                 RNG.normal(size=(4, 2, 5)).astype("float32")]
PAIR = [RNG.normal(size=(4, 3)).astype("float32"), RNG.normal(size=(4, 2)).astype("float32")]


@pytest.mark.parametrize("split,m,shape,rescale", [
    ("rows", 2, (2, 2, 2, 4, 8), True),
    ("columns", 2, (2, 2, 4, 2, 8), True),
    ("grid", 4, (2, 4, 2, 2, 8), True),
    ("separate", 2, (2, 2, 4, 4, 8), True),
    ("rows", 1, (2, 1, 4, 4, 8), False),
])
def test_view_encoder(split, m, shape, rescale):
    n_trunks = m if split == "separate" else 1
    run_layer_test(ViewEncoder, dict(num_views=m, split=split, filters=(4, 8), rescale=rescale),
                   IMAGES,
                   shape, expected_num_trainable_weights=8 * n_trunks,  # 2x (conv w, b, bn g, b)
                   expected_num_non_trainable_weights=4 * n_trunks)


@pytest.mark.parametrize("mode,extra", [("concat", 0), ("mean", 0), ("attention", 2)])
@pytest.mark.parametrize("output_mode,shape", [("R", (3, 4)), ("fc", (3, 6)),
                                               ("conv", (3, 2 * 2 * 2 * 5))])
def test_view_aggregator(mode, extra, output_mode, shape):
    run_layer_test(ViewAggregator, dict(mode=mode, output_dim=4, fc_units=6, conv_filters=5,
                                        output_mode=output_mode),
                   VIEWS, shape, expected_num_trainable_weights=10 + extra,
                   expected_num_non_trainable_weights=4)


@pytest.mark.parametrize("cls,kwargs", [
    (MICritic, dict(estimator="nwj")),
    (JSDCritic, {}), (DVCritic, {}), (InfoNCECritic, {}), (NWJCritic, {}),
    (JSDCritic, dict(scorer="concat")),
    (InfoNCECritic, dict(score_clip=5.0, normalization="layer")),
])
def test_critics(cls, kwargs):
    # Scores and estimates are float32 also under mixed_bfloat16 (see MICritic._score).
    norm = kwargs.get("normalization", "batch")
    n_norm = {"batch": 2, "layer": 2, None: 0}[norm]
    concat = 2 if kwargs.get("scorer") == "concat" else 0
    run_layer_test(cls, dict(units=6, **kwargs), CRITIC_INPUTS, (),
                   expected_num_trainable_weights=2 * (6 + n_norm) + concat,
                   expected_num_non_trainable_weights=4 if norm == "batch" else 0,
                   mixed_output_dtype="float32", atol=1e-4)


@pytest.mark.parametrize("kwargs", [{}, dict(center=False, momentum=0.9)])
def test_batch_normalization(kwargs):
    run_layer_test(BatchNormalization, kwargs, VIEWS, VIEWS.shape,
                   expected_num_trainable_weights=1 if kwargs else 2,
                   expected_num_non_trainable_weights=2, mixed_output_dtype="bfloat16")


@pytest.mark.parametrize("sampled", [False, True])
def test_club(sampled):
    # The sampled variant draws its partners at random: its saved outputs are not compared.
    run_layer_test(CLUB, dict(units=5, sampled=sampled, seed=1), PAIR, (),
                   expected_num_trainable_weights=8, expected_num_non_trainable_weights=0,
                   mixed_output_dtype="float32", compare_saved_outputs=not sampled)


POOLED = RNG.normal(size=(4, 3, 5)).astype("float32")
PAIRS = [[0, 1], [0, 2], [1, 2]]


@pytest.mark.parametrize("cls,kwargs,weights", [
    (PairCritics, dict(estimator="jsd"), 16),  # 2 sides x (3 dense + LayerNorm) x 2
    (PairCritics, dict(estimator="infonce", score_clip=3.0), 16),
    (PairCLUB, dict(sampled=False), 8),
    (PairCLUB, dict(sampled=True, seed=2), 8),
])
def test_pair_layers(cls, kwargs, weights):
    # The batched InfoMin critics return the (P,) estimates of all pairs, in float32.
    run_layer_test(cls, dict(pairs=PAIRS, units=6, **kwargs), POOLED, (len(PAIRS),),
                   expected_num_trainable_weights=weights, mixed_output_dtype="float32",
                   compare_saved_outputs=not kwargs.get("sampled"), atol=1e-4,
                   output_has_batch_axis=False)


SMALL = {k: TINY[k] for k in ("filters", "conv_filters", "fc_units", "output_dim")}


@pytest.mark.parametrize("kwargs,image_shape,feature_shapes", [
    (dict(SMALL), (16, 16, 3), {"local": (4 * 4 * 16,), "conv": (2 * 1 * 2 * 16,)}),
    (dict(SMALL, num_views=4, split="grid", aggregator="attention"), (24, 16, 3),
     {"local": (6 * 4 * 16,), "conv": (4 * 2 * 1 * 16,), "fc": (32,)}),
    (dict(SMALL, num_views=2, split="columns", aggregator="mean"), (16, 32, 3),
     {"conv": (2 * 2 * 2 * 16,), "fc": (32,)}),
])
@pytest.mark.backend
def test_backbone(kwargs, image_shape, feature_shapes):
    run_backbone_test(InfoBalBackbone, kwargs, image_shape, (8,), feature_shapes)


@pytest.mark.backend
def test_backbone_around_a_keras_trunk():
    import keras

    def trunk():
        inputs = keras.Input((None, None, 3))
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
        return keras.Model(inputs, keras.layers.Conv2D(12, 3, strides=2, padding="same")(x))

    run_backbone_test(InfoBalBackbone, dict(SMALL, trunk=trunk()), (16, 16, 3), (8,),
                      {"local": (4 * 4 * 12,)})


@pytest.mark.backend
@pytest.mark.parametrize("kwargs,logs", [
    (dict(infomin_weight=1.0), ["mi_R_V1", "mi_R_V2", "mi_V1_V2", "discriminator_objective"]),
    (dict(infomin_weight=0.5, infomin_critic="club", num_views=4, split="grid"),
     ["mi_R_V4", "mi_V3_V4"]),
    (dict(infomin_weight=0.0), ["mi_R_V1", "mi_V1_V2"]),  # compiled with both: the monitor
])
def test_task(kwargs, logs):
    images = RNG.integers(0, 256, (8, 16, 16, 3)).astype("uint8")
    run_task_test(tiny(**kwargs), images, logs, images[:4])


@pytest.mark.backend
def test_task_on_augmented_pairs():
    import tensorflow as tf

    images = RNG.integers(0, 256, (8, 16, 16, 3)).astype("uint8")
    pairs = tf.data.Dataset.from_tensor_slices((images, images[::-1])).batch(4)
    run_task_test(tiny(augmented_pairs=True, critic="infonce"), pairs, ["mi_R_V1"], images[:4])


@pytest.mark.parametrize("name", presets.list_presets())
def test_builtin_presets(name):
    images = RNG.integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    backbone = run_preset_test(InfoBalBackbone, name, images, (4, 64))
    task = run_preset_test(InfoBal, name, images, (4, 64),
                           reference=backbone.predict(images, verbose=0),
                           load_kwargs={"critic_units": 512})
    assert task.get_config()["backbone"]["config"] == backbone.get_config()
