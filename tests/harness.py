"""A shared test harness, modelled on keras-hub's `TestCase` (`run_layer_test`,
`run_backbone_test`, `run_task_test`, `run_preset_test`).

`run_layer_test` checks, from one call: the config round trip (`get_config` ->
`from_config`, and `serialize_keras_object` through JSON), building, the symbolic output
shape (batch axis unknown), the eager output shape and `compute_output_shape`, dtypes under
the `mixed_bfloat16` policy, and a `.keras` save/load that gives back the same outputs.
"""

import json
import os
import tempfile

import keras
import numpy as np
import pytest
from keras import ops


def _map(fn, data):
    return [fn(x) for x in data] if isinstance(data, (list, tuple)) else fn(data)


def _shape_of(data):
    return _map(lambda x: tuple(x.shape), data)


def _none_batch(shape):
    return (None,) + tuple(shape[1:])


def run_serialization_test(layer):
    """get_config -> from_config and serialize -> JSON -> deserialize give the same config."""
    cls = type(layer)
    config = layer.get_config()
    as_json = json.dumps(config, sort_keys=True)
    revived = cls.from_config(config)
    assert type(revived) is cls
    assert json.dumps(revived.get_config(), sort_keys=True) == as_json
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is cls
    assert json.dumps(revived.get_config(), sort_keys=True) == as_json


def run_layer_test(cls, init_kwargs, input_data, expected_output_shape,
                   expected_num_trainable_weights=None, expected_num_non_trainable_weights=None,
                   mixed_output_dtype="bfloat16", run_saving_check=True,
                   compare_saved_outputs=True, atol=1e-5, output_has_batch_axis=True):
    """Runs the checks above for `cls(**init_kwargs)` called on `input_data`.

    `input_data`: an array, or a list of arrays for layers called on `[a, b]`.
    `expected_output_shape`: the eager output shape (a tuple; `()` for an estimate); the
    symbolic shape is the same with the batch axis unknown (a scalar stays `()`).
    `mixed_output_dtype`: the output dtype under mixed_bfloat16 ("float32" for layers that
    compute their result in float32 on purpose, like the critics).
    Returns the eager output of the float32 layer.
    """
    expected_output_shape = tuple(expected_output_shape)
    run_serialization_test(cls(**init_kwargs))

    # Build from shapes.
    layer = cls(**init_kwargs)
    layer.build(_shape_of(input_data))
    assert layer.built
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights, (
            len(layer.trainable_weights))
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights, (
            len(layer.non_trainable_weights))

    # Symbolic call with an unknown batch size.
    layer = cls(**init_kwargs)
    symbolic = _map(lambda x: keras.KerasTensor(_none_batch(x.shape), dtype=x.dtype),
                    input_data)
    out = layer(symbolic)
    symbolic_shape = (expected_output_shape
                      if not (expected_output_shape and output_has_batch_axis)
                      else _none_batch(expected_output_shape))
    assert tuple(out.shape) == symbolic_shape, (tuple(out.shape), symbolic_shape)

    # Eager call, and compute_output_shape for the concrete input shapes.
    layer = cls(**init_kwargs)
    output = layer(input_data)
    assert tuple(output.shape) == expected_output_shape, tuple(output.shape)
    assert tuple(layer.compute_output_shape(_shape_of(input_data))) == expected_output_shape
    assert keras.backend.standardize_dtype(output.dtype) == "float32"

    run_mixed_precision_test(cls, init_kwargs, input_data, mixed_output_dtype)
    if run_saving_check:
        run_saving_test(layer, input_data, compare_saved_outputs, atol)
    return output


def run_mixed_precision_test(cls, init_kwargs, input_data, output_dtype):
    """Under mixed_bfloat16: float32 variables, bfloat16 sublayers, the expected output dtype.

    The global policy is set (and restored), as InfoBal does while it builds its layers:
    the layers create their sublayers in `build`, where the global policy applies.
    """
    from helpers import bf16_matmul_unavailable

    if bf16_matmul_unavailable():  # the other checks of the layer still run
        return
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = cls(**init_kwargs)
        output = layer(input_data)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.backend.standardize_dtype(output.dtype) == output_dtype, output.dtype
    assert layer.weights, "a layer with no weights cannot be checked for dtypes"
    for weight in layer.weights:
        if "float" in weight.dtype:
            assert weight.dtype == "float32", (weight.path, weight.dtype)
    for sublayer in layer._flatten_layers():
        assert sublayer.compute_dtype == "bfloat16", sublayer.name
        assert sublayer.variable_dtype == "float32", sublayer.name


def run_saving_test(layer, input_data, compare_outputs=True, atol=1e-5):
    """Saves a model wrapping `layer` to .keras, loads it, compares inference outputs."""
    inputs = _map(lambda x: keras.Input(shape=x.shape[1:], batch_size=x.shape[0],
                                        dtype=x.dtype), input_data)
    model = keras.Model(inputs, layer(inputs))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layer.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
    restored = [l for l in loaded._flatten_layers() if type(l) is type(layer)]
    assert len(restored) == 1
    assert restored[0].get_config() == layer.get_config()
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if compare_outputs:
        np.testing.assert_allclose(ops.convert_to_numpy(loaded(input_data, training=False)),
                                   ops.convert_to_numpy(model(input_data, training=False)), atol=atol)


# ----------------------------------------------------------------- models (keras-hub's shape)
def _images(shape, n=4, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n,) + tuple(shape)).astype("uint8")


def _fresh(cls, init_kwargs, **extra):
    """`cls(**init_kwargs, **extra)` with a fresh copy of every layer argument (a trunk),
    so the models a check builds share no layer."""
    kwargs = {k: (type(v).from_config(v.get_config()) if isinstance(v, keras.layers.Layer)
                  else v) for k, v in init_kwargs.items()}
    return cls(**kwargs, **extra)


def _other_size(image_shape):
    return (image_shape[0] + 8, image_shape[1] + 8, image_shape[2])


def run_backbone_test(cls, init_kwargs, image_shape, expected_output_shape,
                      expected_feature_shapes=None):
    """keras-hub's `run_backbone_test` for an image backbone: config round trip, symbolic and
    eager shapes, the size taken from the data, another size refused, mixed precision,
    `.keras` and preset round trips that give the same outputs."""
    from helpers import bf16_matmul_unavailable
    from keras_infobal.models import presets

    images = _images(image_shape)
    run_serialization_test(_fresh(cls, init_kwargs, image_shape=image_shape))
    # Symbolic, built from the image shape given.
    backbone = _fresh(cls, init_kwargs, image_shape=image_shape)
    out = backbone(keras.Input(image_shape, dtype="uint8"))
    assert tuple(out.shape) == (None,) + tuple(expected_output_shape)
    # Eager, built from the data.
    lazy = _fresh(cls, init_kwargs)
    assert not lazy.built
    output = lazy(images)
    assert lazy.image_shape == tuple(image_shape)
    assert tuple(output.shape) == (len(images),) + tuple(expected_output_shape)
    assert tuple(lazy.compute_output_shape(images.shape)) == tuple(output.shape)
    assert lazy.get_config()["image_shape"] == list(image_shape)
    feats = lazy.extract_features(images, layers=("local", "conv", "fc", "R"))
    np.testing.assert_allclose(feats["R"], keras.ops.convert_to_numpy(lazy(images, training=False)), atol=1e-5)
    if expected_feature_shapes:
        for name, shape in expected_feature_shapes.items():
            assert feats[name].shape == (len(images),) + tuple(shape), (name, feats[name].shape)
    other = _other_size(image_shape)
    size = f"{image_shape[0]}x{image_shape[1]}"
    with pytest.raises(ValueError, match=f"built for {size} images; got {other[0]}x{other[1]}"):
        lazy(_images(other))
    with pytest.raises(ValueError, match=f"built for {size} images"):
        lazy.predict(_images(other), verbose=0)
    if not bf16_matmul_unavailable():
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            mixed = _fresh(cls, init_kwargs, image_shape=image_shape)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        assert all(w.dtype == "float32" for w in mixed.weights if "float" in w.dtype)
        assert keras.backend.standardize_dtype(mixed(images).dtype) == "bfloat16"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "backbone.keras")
        lazy.save(path)
        loaded = keras.models.load_model(path)
        assert type(loaded) is cls
        assert json.loads(json.dumps(loaded.get_config())) == json.loads(
            json.dumps(lazy.get_config()))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images, training=False)),
                                   keras.ops.convert_to_numpy(lazy(images, training=False)), atol=1e-5)
        folder = os.path.join(tmp, "preset")
        lazy.save_to_preset(folder, note="harness")
        assert presets.load_metadata(folder)["note"] == "harness"
        run_preset_test(cls, folder, images, (len(images),) + tuple(expected_output_shape),
                        reference=keras.ops.convert_to_numpy(lazy(images, training=False)))
    return output


def run_task_test(task, train_data, expected_logs, single_images):
    """keras-hub's `run_task_test` for the pretraining task `task` (built, uncompiled):
    config round trip, fit with both optimizers, predict, `.keras` save and load with both
    optimizers' state, and training that continues the same way from the loaded file."""
    from helpers import optimizers

    cls = type(task)
    config = json.loads(json.dumps(task.get_config()))
    revived = cls.from_config(config)
    assert json.dumps(revived.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True)
    task.compile(**optimizers())
    logs = task.fit(train_data, epochs=1, verbose=0, shuffle=False).history
    assert set(expected_logs) <= set(logs), (sorted(logs), expected_logs)
    assert all(np.isfinite(v[-1]) for v in logs.values())
    r = task.predict(single_images, verbose=0)
    assert r.shape == (len(single_images), task.backbone.output_dim)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "task.keras")
        task.save(path)
        loaded = keras.models.load_model(path)
    assert type(loaded) is cls and loaded.get_config() == task.get_config()
    np.testing.assert_allclose(loaded.predict(single_images, verbose=0), r, atol=1e-5)
    for a, b in ((task.optimizer, loaded.optimizer),
                 (task.discriminator_optimizer, loaded.discriminator_optimizer)):
        assert int(a.iterations) == int(b.iterations) > 0
        for va, vb in zip(a.variables, b.variables):
            np.testing.assert_allclose(np.asarray(va), np.asarray(vb), atol=1e-7)


def run_preset_test(cls, preset, input_data, expected_output_shape, reference=None,
                    load_kwargs=None):
    """keras-hub's `run_preset_test`: `cls.from_preset(preset)` loads with its files
    checked, gives outputs of the expected shape (and equal to `reference`), and a changed
    file is refused by name."""
    import shutil

    from keras_infobal.models import presets

    model = cls.from_preset(preset, **(load_kwargs or {}))
    output = np.asarray(model.predict(input_data, verbose=0))
    assert output.shape == tuple(expected_output_shape), output.shape
    if reference is not None:
        np.testing.assert_allclose(output, reference, atol=1e-5)
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "copy")
        shutil.copytree(presets.preset_folder(preset), copy)
        with open(os.path.join(copy, presets.WEIGHTS_FILE), "ab") as f:
            f.write(b"\0")
        with pytest.raises(ValueError, match="model.weights.h5` does not match its recorded"):
            cls.from_preset(copy, **(load_kwargs or {}))
        os.remove(os.path.join(copy, presets.WEIGHTS_FILE))
        with pytest.raises(ValueError, match="model.weights.h5` is missing"):
            cls.from_preset(copy, **(load_kwargs or {}))
    return model
