"""InfoBalCIFAR: a pretrained CIFAR-10 encoder (InfoBal or DIM) in the keras.applications style."""

import os

import keras
import numpy as np

from keras_infobal import features as feature_registry
from keras_infobal.applications import presets
from keras_infobal.datasets import CIFAR10_CLASSES
from keras_infobal.evaluation import HEADS
from keras_infobal.layers.view_aggregator import ViewAggregator
from keras_infobal.layers.view_encoder import ViewEncoder

# The layers this model can output: the built-in feature layers ("local", "conv", "fc", "R").
FEATURE_LAYERS = feature_registry.NAMES
# Kept as module attributes for callers of earlier versions.
WEIGHTS_DIR = presets.WEIGHTS_DIR
sha256 = presets.sha256


def shipped_weights_path(variant=None):
    """The path of a preset's classifier weights, after checking its sha256."""
    return presets.checked_path(variant or presets.default_preset())


def _encoder_and_aggregator(backbone, output_mode):
    b = {**presets.DEFAULT_BACKBONE, **backbone}
    encoder = ViewEncoder(num_views=b["num_views"], split=b["split"], filters=tuple(b["filters"]),
                          name="view_encoder")
    aggregator = ViewAggregator(mode=b["aggregator"], output_dim=b["output_dim"],
                                fc_units=b["fc_units"], conv_filters=b["conv_filters"],
                                output_mode=output_mode, name="view_aggregator")
    return encoder, aggregator


def InfoBalCIFAR(
    include_top=True,
    weights="cifar10",
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=10,
    classifier_activation="softmax",
    feature_layer=None,
    variant=None,
    name=None,
):
    """A CIFAR-10 encoder pretrained with InfoBal (or the DIM baseline), as a `keras.Model`.

    The model takes uint8 (or float in [0, 255]) images of shape (32, 32, 3): preprocessing is
    inside the model. The encoder is DIM's CIFAR-10 encoder split into two views (top and
    bottom halves of the 8x8 local map); `feature_layer` picks the representation:
    "local" (8x8x128 map), "conv" (4096), "fc" (1024) or "R" (64, the global representation).

    Args:
        include_top: add the preset's classifier head (`presets.get_preset(v)["head"]`: a
            dense layer, or "mlp", DIM's evaluation classifier: dense 200 -> BN -> dropout
            0.1 -> ReLU -> dense). With `weights="cifar10"` it is the shipped head, trained
            on frozen features, so the model classifies CIFAR-10 out of the box. To
            fine-tune your own linear head, use include_top=False and add a Dense layer.
        weights: "cifar10" (shipped weights, sha256-checked), None (random init), or the path
            of a `.weights.h5` file saved from a model of the same configuration.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: optional; must be (32, 32, 3) with `weights="cifar10"`.
        pooling: for `feature_layer="local"`: None (the 8x8x128 map; flattened under the
            top), "avg" or "max". Must be None for the vector layers.
        classes: number of classes of the top; must be 10 with the shipped top.
        classifier_activation: activation of the top ("softmax", None for logits, ...).
        feature_layer: the layer the top (or the output) uses; None picks the shipped head's
            layer (the best under the linear probe) with the top, and "conv" without it.
        variant: the preset (`keras_infobal.applications.presets.list_presets()`). None
            (the default) is the most accurate shipped model, chosen on a validation split
            of the training set: "dim_pairs_long", trained with lambda = 0 (DIM(L),
            InfoNCE on augmented pairs), with DIM's evaluation classifier on its fc
            features (74.59% on the CIFAR-10 test set). "infobal"
            (lambda = 1) and "dim" (lambda = 0), both JSD at the same budget, are the
            note's comparison; see the
            README tables for every preset's objective, lambda and accuracy.
        name: model name.

    Example:

    ```python
    from keras_infobal.applications import InfoBalCIFAR, decode_predictions
    model = InfoBalCIFAR()                       # a CIFAR-10 classifier
    probs = model.predict(uint8_images)
    decode_predictions(probs, top=3)
    encoder = InfoBalCIFAR(include_top=False, feature_layer="fc")  # features
    ```
    """
    if variant is None:
        variant = presets.default_preset()
    preset = presets.get_preset(variant)  # raises, listing the presets, for unknown names
    if not (weights in {"cifar10", None} or isinstance(weights, (str, os.PathLike))):
        raise ValueError(
            "The `weights` argument should be either `None` (random initialization), "
            "`'cifar10'` (pre-training on CIFAR-10), or the path to the weights file to be "
            f"loaded. Received: weights={weights!r}"
        )
    if isinstance(weights, (str, os.PathLike)) and weights != "cifar10":
        weights = os.fspath(weights)
        if not os.path.exists(weights):
            raise ValueError(
                f"The `weights` argument names the file `{weights}`, which does not exist. "
                "Pass 'cifar10', None, or the path of an existing .weights.h5 file."
            )
        if not weights.endswith(".weights.h5"):
            raise ValueError(
                f"`weights` must be a Keras `.weights.h5` file (from `model.save_weights`); "
                f"got `{weights}`. For a whole `.keras` model use keras.models.load_model."
            )
    if weights == "cifar10" and include_top and classes != 10:
        raise ValueError(
            'If using `weights="cifar10"` with `include_top=True`, `classes` should be 10. '
            f"Received classes={classes}. Use include_top=False and add your own head."
        )
    shipped_layer = preset["feature_layer"] if weights == "cifar10" else None
    if feature_layer is None:
        feature_layer = (shipped_layer or "conv") if include_top else "conv"
    feature_registry.check_layers((feature_layer,), "feature_layer", allowed=FEATURE_LAYERS)
    if weights == "cifar10" and include_top:
        if feature_layer != shipped_layer:
            raise ValueError(
                f"The shipped classifier head reads the {shipped_layer!r} features; got "
                f"feature_layer={feature_layer!r}. Use feature_layer=None (or "
                f"{shipped_layer!r}), or include_top=False and train your own head."
            )
    if not isinstance(classes, int) or classes < 1:
        raise ValueError(f"`classes` must be a positive integer; got {classes!r}.")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max'; got {pooling!r}.")
    if pooling is not None and feature_layer != "local":
        raise ValueError(
            f"`pooling` applies to the spatial 'local' map only; feature_layer="
            f"{feature_layer!r} is already a vector. Use pooling=None."
        )
    if input_shape is None:
        input_shape = (32, 32, 3) if input_tensor is None else tuple(input_tensor.shape[1:])
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"`input_shape` must be (height, width, 3); got {input_shape}.")
    if weights is not None and input_shape != (32, 32, 3):
        raise ValueError(
            f"Pretrained weights need `input_shape=(32, 32, 3)`; got {input_shape}. Resize "
            "the images to 32x32, or use weights=None."
        )

    if input_tensor is None:
        inputs = keras.Input(shape=input_shape, name="images")
    elif not keras.backend.is_keras_tensor(input_tensor):
        inputs = keras.Input(tensor=input_tensor, shape=input_shape, name="images")
    else:
        inputs = input_tensor
    encoder, aggregator = _encoder_and_aggregator(
        preset["backbone"], feature_layer if feature_layer != "local" else "R")
    views = encoder(inputs)
    if feature_layer == "local":
        _, m, vh, vw, c = views.shape
        x = keras.layers.Reshape((m * vh, vw, c), name="local_map")(views)
        if pooling == "avg":
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        elif pooling == "max":
            x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
        elif include_top:
            x = keras.layers.Flatten(name="flatten")(x)
    else:
        x = aggregator(views)
    if include_top:
        x = _top(x, classes, classifier_activation, preset.get("head", "linear"))
    model = keras.Model(inputs, x, name=name or f"{variant}_cifar10")

    if weights == "cifar10":
        path = presets.checked_path(variant)
        # The shipped file holds every layer (encoder, aggregator, head): load it into the
        # canonical model, then copy the layers this configuration has.
        full = canonical_model(shipped_layer, backbone=preset["backbone"],
                               head=preset.get("head", "linear"))
        _load_keras_weights(full, path)
        for layer in model.layers:
            if layer.weights:
                layer.set_weights(full.get_layer(layer.name).get_weights())
    elif weights is not None:
        _load_keras_weights(model, weights)
    return model


def canonical_model(head_layer, classes=10, backbone=None, head="linear"):
    """The model a shipped weights file is saved from: every layer, the head on `head_layer`
    (a `head` from `evaluation.HEADS`)."""
    inputs = keras.Input((32, 32, 3), name="images")
    encoder, aggregator = _encoder_and_aggregator(
        backbone or {}, head_layer if head_layer != "local" else "R")
    views = encoder(inputs)
    aggregated = aggregator(views)
    if head_layer == "local":
        _, m, vh, vw, c = views.shape
        x = keras.layers.Reshape((m * vh, vw, c), name="local_map")(views)
        x = keras.layers.Flatten(name="flatten")(x)
    else:
        x = aggregated
    logits = _top(x, classes, "softmax", head)
    return keras.Model(inputs, [logits, aggregated], name="canonical")


def _top(x, classes, activation, head):
    """The classifier on the features: a dense layer, or DIM's evaluation classifier (the
    layer names match `evaluation.train_classifier`'s, which trains the shipped heads)."""
    if head == "mlp":
        x = keras.layers.Dense(200, name="head_dense")(x)
        x = keras.layers.BatchNormalization(name="head_bn")(x)
        x = keras.layers.Dropout(0.1, name="head_dropout")(x)
        x = keras.layers.ReLU(name="head_relu")(x)
    elif head != "linear":
        raise ValueError(f"A preset's `head` must be one of {HEADS}; got {head!r}.")
    return keras.layers.Dense(classes, activation=activation, name="predictions")(x)


def _load_keras_weights(model, path):
    import h5py

    try:
        with h5py.File(path, "r") as f:
            is_keras = "layers" in f or "vars" in f
    except OSError as e:
        raise ValueError(
            f"`{path}` is not a readable HDF5 weights file ({e}); it may be truncated or of "
            "another type. Pass a `.weights.h5` file written by `model.save_weights`."
        ) from e
    if not is_keras:
        raise ValueError(f"`{path}` is an HDF5 file but not a Keras 3 `.weights.h5` file.")
    try:
        model.load_weights(path)
    except Exception as e:
        raise ValueError(
            f"Could not load `{path}` into this model: {e}. The file must come from "
            "`save_weights` on a model built with the same arguments (include_top, "
            "feature_layer, pooling, classes)."
        ) from e


def decode_predictions(preds, top=5):
    """Turns (N, 10) CIFAR-10 probabilities into [(class_index, name, score), ...] per image."""
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != len(CIFAR10_CLASSES):
        raise ValueError(
            "`decode_predictions` expects a batch of CIFAR-10 predictions, shape (samples, 10); "
            f"got shape {preds.shape}."
        )
    results = []
    for row in preds:
        idx = np.argsort(row)[::-1][:top]
        results.append([(int(i), CIFAR10_CLASSES[i], float(row[i])) for i in idx])
    return results
