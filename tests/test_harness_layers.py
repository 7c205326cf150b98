"""Every layer of the package through the shared harness (tests/harness.py)."""

import numpy as np
import pytest

from harness import run_layer_test
from keras_infobal import (
    DVCritic,
    InfoNCECritic,
    JSDCritic,
    MICritic,
    NWJCritic,
    ViewAggregator,
    ViewEncoder,
)
from keras_infobal.layers.club import CLUB

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


@pytest.mark.parametrize("sampled", [False, True])
def test_club(sampled):
    # The sampled variant draws its partners at random: its saved outputs are not compared.
    run_layer_test(CLUB, dict(units=5, sampled=sampled, seed=1), PAIR, (),
                   expected_num_trainable_weights=8, expected_num_non_trainable_weights=0,
                   mixed_output_dtype="float32", compare_saved_outputs=not sampled)
