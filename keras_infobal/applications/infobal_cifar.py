"""InfoBalCIFAR: a pretrained CIFAR-10 encoder (InfoBal or DIM) in the keras.applications style."""

import os

import keras
import numpy as np

from keras_infobal import features as feature_registry
from keras_infobal.datasets import CIFAR10_CLASSES
from keras_infobal.evaluation import HEADS
from keras_infobal.layers.view_aggregator import ViewAggregator
from keras_infobal.layers.view_encoder import ViewEncoder
from keras_infobal.models import presets
from keras_infobal.models.infobal_backbone import InfoBalBackbone, ServesUint8
from keras_infobal.models.keras_seams import all_layers

# The layers this model can output: the built-in feature layers ("local", "conv", "fc", "R").
FEATURE_LAYERS = feature_registry.NAMES


def InfoBalCIFAR(
    include_top=True,
    weights="cifar10",
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=10,
    classifier_activation="softmax",
    feature_layer=None,
    preset=None,
    name=None,
):
    """A CIFAR-10 encoder pretrained with InfoBal (or the DIM baseline), as a `keras.Model`.

    The model takes uint8 (or float in [0, 255]) images of shape (32, 32, 3): preprocessing is
    inside the model. The encoder is the preset's `InfoBalBackbone` (DIM's CIFAR-10 encoder
    split into two views, the top and bottom halves of the 8x8 local map, for the built-in
    presets); `feature_layer` picks the representation: "local" (8x8x128 map), "conv"
    (4096), "fc" (1024) or "R" (64, the global representation).

    Args:
        include_top: add the preset's classifier head (`metadata["classifier"]["head"]`: a
            dense layer, or "mlp", DIM's evaluation classifier: dense 200 -> BN -> dropout
            0.1 -> ReLU -> dense). With `weights="cifar10"` it is the shipped head, trained
            on frozen features, so the model classifies CIFAR-10 out of the box. To
            fine-tune your own linear head, use include_top=False and add a Dense layer.
        weights: "cifar10" (the preset's weights, sha256-checked), None (random init), or the
            path of a `.weights.h5` file saved from a model of the same configuration.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: optional; must be the preset's image shape, (32, 32, 3), with weights.
        pooling: for `feature_layer="local"`: None (the map; flattened under the top), "avg"
            or "max". Must be None for the vector layers.
        classes: number of classes of the top; must be 10 with the shipped top.
        classifier_activation: activation of the top ("softmax", None for logits, ...).
        feature_layer: the layer the top (or the output) uses; None picks the shipped head's
            layer with the top, and "conv" without it.
        preset: a built-in preset (`keras_infobal.models.presets.list_presets()`) or a preset
            folder. None is the built-in preset with the best validation accuracy (never
            chosen on the test set); the README's table lists every preset's objective,
            lambda and accuracy. "infobal" (lambda = 1) and "dim" (lambda = 0), JSD at the
            same budget, are the note's comparison.
        name: model name.

    ```python
    from keras_infobal.applications import InfoBalCIFAR, decode_predictions
    model = InfoBalCIFAR()                       # a CIFAR-10 classifier
    decode_predictions(model.predict(uint8_images), top=3)
    encoder = InfoBalCIFAR(include_top=False, feature_layer="fc")  # features
    ```
    """
    if preset is None:
        preset = presets.default_preset()
    metadata = presets.load_metadata(preset)  # raises, listing the presets, for unknown names
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
    classifier = metadata.get("classifier")
    if weights == "cifar10" and include_top and classifier is None:
        raise ValueError(
            f"The preset {preset!r} ships no classifier head: use include_top=False."
        )
    if weights == "cifar10" and include_top and classes != classifier["classes"]:
        raise ValueError(
            f'If using `weights="cifar10"` with `include_top=True`, `classes` should be '
            f"{classifier['classes']}. Received classes={classes}. Use include_top=False and "
            "add your own head."
        )
    shipped_layer = classifier["feature_layer"] if (weights == "cifar10" and classifier) else None
    if feature_layer is None:
        feature_layer = (shipped_layer or "conv") if include_top else "conv"
    feature_registry.check_layers((feature_layer,), "feature_layer", allowed=FEATURE_LAYERS)
    if weights == "cifar10" and include_top and feature_layer != shipped_layer:
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
    backbone = InfoBalBackbone.from_preset(preset, load_weights=weights == "cifar10")
    if input_shape is None:
        input_shape = (backbone.image_shape if input_tensor is None
                       else tuple(input_tensor.shape[1:]))
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(f"`input_shape` must be (height, width, 3); got {input_shape}.")
    if weights is not None and input_shape != tuple(backbone.image_shape):
        size = "x".join(str(d) for d in backbone.image_shape[:2])
        raise ValueError(
            f"Pretrained weights need `input_shape={tuple(backbone.image_shape)}`; got "
            f"{input_shape}. Resize the images to {size}, or use weights=None."
        )

    if input_tensor is None:
        inputs = keras.Input(shape=input_shape, name="images")
    elif not keras.backend.is_keras_tensor(input_tensor):
        inputs = keras.Input(tensor=input_tensor, shape=input_shape, name="images")
    else:
        inputs = input_tensor
    # Fresh layers of the backbone's configuration (the aggregator outputting the chosen
    # feature layer), with the backbone's weights.
    encoder = ViewEncoder.from_config(backbone.encoder.get_config())
    aggregator = ViewAggregator.from_config({
        **backbone.aggregator.get_config(),
        "output_mode": feature_layer if feature_layer != "local" else "R"})
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
    head_layers = []
    if include_top:
        # The preset's head architecture, with or without its weights.
        x, head_layers = _top(x, classes, classifier_activation,
                              classifier["head"] if classifier else "linear")
    model = ImageModel(inputs, x, name=name or f"{os.path.basename(str(preset))}_cifar10")

    if weights == "cifar10":
        encoder.set_weights(backbone.encoder.get_weights())
        if feature_layer != "local":
            aggregator.set_weights(backbone.aggregator.get_weights())
        if include_top:
            folder = presets.checked_folder(preset)
            presets.load_layers(os.path.join(folder, presets.CLASSIFIER_FILE),
                                [layer for layer in head_layers if layer.weights])
    elif weights is not None:
        _load_keras_weights(model, weights)
    return model


def unfreeze(model, batch_norm=False):
    """Makes `model` (e.g. an `InfoBalCIFAR` encoder frozen for a linear head) trainable for
    fine-tuning, its BatchNormalization layers excepted unless `batch_norm=True`: frozen
    (`trainable=False`), Keras runs them in inference mode, on their pretrained moving
    statistics. Keras' transfer-learning guide keeps them so: unfrozen, they normalize with
    the statistics of each fine-tuning batch, which undoes part of the pretraining. Calling the encoder with `training=False` inside another functional model does not do
    it in Keras 3.15: the outer model's `training` replaces it. Returns `model`.

    ```python
    unfreeze(encoder)
    clf.compile(optimizer=keras.optimizers.Adam(1e-5), loss="sparse_categorical_crossentropy")
    ```
    """
    model.trainable = True
    if not batch_norm:
        for layer in all_layers(model):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    return model


@keras.saving.register_keras_serializable(package="keras_infobal")
class ImageModel(ServesUint8, keras.Model):
    """The functional model `InfoBalCIFAR` returns: a plain functional `keras.Model` (it
    saves, loads and fine-tunes as one) whose `export` serves uint8 images by default."""

    def _serving_image_shape(self):
        return tuple(self.inputs[0].shape[1:])

    def _serving_output_name(self):
        # "predictions" with the classifier, else the feature layer's own name.
        return self.layers[-1].name


def _top(x, classes, activation, head):
    """The classifier on the features: a dense layer, or DIM's evaluation classifier (the
    layer names match `evaluation.train_classifier`'s, which trains the shipped heads).
    Returns (output, the head's layers)."""
    layers = []
    if head == "mlp":
        layers = [keras.layers.Dense(200, name="head_dense"),
                  keras.layers.BatchNormalization(name="head_bn"),
                  keras.layers.Dropout(0.1, name="head_dropout"),
                  keras.layers.ReLU(name="head_relu")]
    elif head != "linear":
        raise ValueError(f"A preset's classifier `head` must be one of {HEADS}; got {head!r}.")
    layers.append(keras.layers.Dense(classes, activation=activation, name="predictions"))
    for layer in layers:
        x = layer(x)
    return x, layers


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
