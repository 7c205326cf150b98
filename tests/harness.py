"""A shared layer-test harness, modelled on keras-hub's `TestCase.run_layer_test`.

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
                   compare_saved_outputs=True, atol=1e-5):
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
    symbolic_shape = (expected_output_shape if not expected_output_shape
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
        np.testing.assert_allclose(np.asarray(loaded(input_data, training=False)),
                                   np.asarray(model(input_data, training=False)), atol=atol)
