"""Exported models serve uint8 images and match predict: SavedModel, ONNX, torch."""

import importlib.util

import numpy as np
import pytest

import keras

from helpers import tiny_backbone
from keras_infobal.applications import InfoBalCIFAR

BACKEND = keras.backend.backend()


def images(n, size=32):
    return np.random.default_rng(n).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


@pytest.mark.skipif(BACKEND == "torch", reason="SavedModel export runs on TensorFlow and JAX")
@pytest.mark.backend
def test_saved_model_serves_uint8_images(tmp_path):
    import tensorflow as tf

    for name, model, size in (("cifar", InfoBalCIFAR(), 32),
                              ("backbone", tiny_backbone(image_shape=(24, 24, 3)), 24)):
        model.export(str(tmp_path / name))
        served = tf.saved_model.load(str(tmp_path / name))
        (spec,) = served.serve.concrete_functions[0].structured_input_signature[0]
        assert spec.dtype == tf.uint8 and tuple(spec.shape) == (None, size, size, 3)
        x = images(5, size)
        np.testing.assert_allclose(served.serve(tf.constant(x)).numpy(),
                                   model.predict(x, verbose=0), atol=1e-5)
    # A float32 signature is still one argument away.
    model = tiny_backbone(image_shape=(24, 24, 3))
    model.export(str(tmp_path / "f32"),
                 input_signature=[keras.InputSpec(shape=(None, 24, 24, 3), dtype="float32")])
    served = tf.saved_model.load(str(tmp_path / "f32"))
    x = images(3, 24)
    np.testing.assert_allclose(served.serve(tf.constant(x.astype(np.float32))).numpy(),
                               model.predict(x, verbose=0), atol=1e-5)


def test_export_of_an_unbuilt_model_says_build_it(tmp_path):
    from keras_infobal.models import InfoBalBackbone

    with pytest.raises(ValueError, match="Build the model"):
        InfoBalBackbone().export(str(tmp_path / "x"))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="ONNX export through tf2onnx")
@pytest.mark.skipif(not (importlib.util.find_spec("onnxruntime")
                         and importlib.util.find_spec("tf2onnx")),
                    reason="needs the [export] extra: pip install -e '.[export]'")
def test_onnx_export_runs_in_onnxruntime_like_predict(tmp_path):
    import onnxruntime

    model = InfoBalCIFAR()
    path = str(tmp_path / "model.onnx")
    model.export(path, format="onnx")
    session = onnxruntime.InferenceSession(path)
    (inp,) = session.get_inputs()
    assert inp.type == "tensor(uint8)"
    # The model's own names, not the traced function's ("args_0", "output_0").
    assert inp.name == "images"
    assert [o.name for o in session.get_outputs()] == ["predictions"]
    for n in (1, 6):  # a dynamic batch
        x = images(n)
        (got,) = session.run(None, {inp.name: x})
        np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)
    from keras_infobal import InfoBalBackbone

    backbone = InfoBalBackbone.from_preset("dim")
    backbone.export(path, format="onnx")
    session = onnxruntime.InferenceSession(path)
    assert [o.name for o in session.get_outputs()] == ["R"]
    (got,) = session.run(None, {"images": images(3)})
    np.testing.assert_allclose(got, backbone.predict(images(3), verbose=0), atol=1e-5)


@pytest.mark.skipif(BACKEND != "torch", reason="format='torch' exports on the PyTorch backend")
@pytest.mark.backend
def test_torch_export_serves_uint8_at_any_batch(tmp_path):
    import torch

    model = InfoBalCIFAR()
    path = str(tmp_path / "model.pt2")
    model.export(path, format="torch")
    program = torch.export.load(path).module()
    for n in (1, 7):
        x = images(n)
        got = program(torch.from_numpy(x)).detach().cpu().numpy()
        np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)
