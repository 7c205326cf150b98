"""The ResNet-18 trunk (CIFAR stem) and the `resnet18` GPU recipe at lightly's protocol."""

import json

import keras
import numpy as np
import pytest

import keras_infobal as kib
from keras_infobal.models.trunks import get_trunk, resnet18_cifar
from keras_infobal.pretraining import resolve


def _expected_parameters(widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2)):
    """ResNet-18's parameters counted by hand: bias-free convs; 4 numbers per batch-norm
    channel (gamma, beta and the two moving statistics); a 1x1 projection where a block
    changes the width or the size."""
    total = 3 * 3 * 3 * widths[0] + 4 * widths[0]  # stem
    c_in = widths[0]
    for stage, (c, n) in enumerate(zip(widths, blocks)):
        for block in range(n):
            total += 3 * 3 * c_in * c + 4 * c + 3 * 3 * c * c + 4 * c
            if (stage > 0 and block == 0) or c_in != c:
                total += c_in * c + 4 * c
            c_in = c
    return total


def test_resnet18_cifar_has_resnet18_s_parameters_and_an_eighth_size_map():
    trunk = resnet18_cifar()
    assert trunk.count_params() == _expected_parameters() == 11_178_432
    for size in (32, 64):
        out = trunk(np.zeros((2, size, size, 3), "float32"))
        assert tuple(out.shape) == (2, size // 8, size // 8, 512)
    small = resnet18_cifar(widths=(8, 16), blocks=(1, 3))
    assert small.count_params() == _expected_parameters((8, 16), (1, 3))
    # Residual: the first block's output is ReLU(x + F(x)); zeroing F's last batch norm
    # (gamma = beta = 0) leaves ReLU(x) of the stem's output.
    stem = keras.Model(small.input, small.get_layer("stem_relu").output)
    block = keras.Model(small.input, small.get_layer("stage1_block1_out").output)
    bn = small.get_layer("stage1_block1_2_bn")
    bn.gamma.assign(np.zeros(8, "float32"))
    bn.beta.assign(np.zeros(8, "float32"))
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x)),
                               np.maximum(keras.ops.convert_to_numpy(stem(x)), 0), atol=1e-6)


def test_a_backbone_takes_the_trunk_by_name_and_saves_it(tmp_path):
    backbone = kib.InfoBalBackbone(trunk="resnet18_cifar", num_views=2, split="rows",
                                   image_shape=(32, 32, 3))
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype="uint8")
    assert tuple(backbone.views(x).shape) == (2, 2, 2, 4, 512)
    path = str(tmp_path / "b.keras")
    backbone.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(x)),
                               keras.ops.convert_to_numpy(backbone(x)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="resnet18_cifar"):
        get_trunk("resnet50")
    with pytest.raises(ValueError, match="one of each per stage"):
        resnet18_cifar(widths=(64, 128), blocks=(2,))


def test_the_resnet18_recipe_sets_lightly_s_protocol_and_the_run_s_options_win():
    run = resolve(recipe="resnet18")
    assert (run["batch_size"], run["epochs"]) == (512, 200)
    assert run["backbone"]["trunk"] == "resnet18_cifar"
    assert run["task"]["augmented_pairs"] and run["augmentation"]["crop"] == 0.5
    run = resolve(recipe="resnet18", epochs=3, batch_size=64)
    assert (run["batch_size"], run["epochs"]) == (64, 3)
    # The other recipes keep the defaults.
    assert resolve(recipe="dim_pairs")["batch_size"] == 64


def test_every_recipe_s_options_are_known_training_options():
    from keras_infobal.pretraining import DEFAULTS, RECIPES_FILE

    with open(RECIPES_FILE) as f:
        recipes = json.load(f)
    for name, recipe in recipes.items():
        assert set(recipe.get("options", {})) <= set(DEFAULTS), name
        assert set(recipe) <= {"description", "backbone", "task", "augmentation", "options"}
