"""InfoBalBackbone: images to M views and the global representation R, as one Keras model."""

import copy
import inspect
import json
import os
import sys

import keras
import numpy as np
from keras import ops

from keras_infobal import features as feature_registry
from keras_infobal.layers.view_aggregator import MODES, ViewAggregator
from keras_infobal.layers.view_encoder import ViewEncoder
from keras_infobal.models import presets

PACKAGE = "keras_infobal"


def is_tf_dataset(x):
    # Without importing TensorFlow: a tf.data dataset can only exist if it was imported.
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(x, tf.data.Dataset)


def check_image_shape(image_shape, argument="image_shape"):
    """`image_shape` as a (height, width, 3) tuple of positive ints."""
    shape = tuple(image_shape)
    if len(shape) != 3 or shape[-1] != 3 or any(
            not isinstance(d, (int, np.integer)) or isinstance(d, bool) or d < 1
            for d in shape):
        raise ValueError(
            f"`{argument}` must be (height, width, 3): RGB images, channels last, of a known "
            f"size; got {image_shape!r}. Tile grayscale images to 3 channels first "
            "(`np.repeat(images, 3, axis=-1)`)."
        )
    return tuple(int(d) for d in shape)


def image_shape_of(data):
    """The (H, W, C) of the images in `data` (an array, a tensor, a tf.data dataset of images
    or of tuples of them), or None when it cannot be read without iterating."""
    if is_tf_dataset(data):
        spec = data.element_spec
        while isinstance(spec, (tuple, list)):
            spec = spec[0]
        shape = tuple(spec.shape)
    elif isinstance(data, (tuple, list)) and data and hasattr(data[0], "shape"):
        shape = tuple(data[0].shape)
    elif hasattr(data, "shape"):
        shape = tuple(data.shape)
    else:
        return None
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        return None
    return tuple(int(d) for d in shape[1:])


class ServesUint8:
    """`export` with a uint8 serving signature by default: the exported artifact takes the
    images as they are stored (uint8 `(B, H, W, 3)`, H x W the size the model was built
    for), as `predict` does. Pass `input_signature` for another one (e.g. float32)."""

    def _serving_image_shape(self):
        raise NotImplementedError

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None,
               **kwargs):
        """Keras' `Model.export` (formats "tf_saved_model", "onnx" (needs the `[export]`
        extra), "torch" on the PyTorch backend, ...), serving uint8 images by default.

        ```python
        model.export("served/")            # SavedModel, serve(uint8 images) -> outputs
        model.export("model.onnx", format="onnx")
        ```
        """
        if input_signature is None:
            shape = self._serving_image_shape()
            if shape is None:
                raise ValueError("Build the model (call it, fit it, or pass image_shape) "
                                 "before exporting it: the serving signature needs its "
                                 "image size.")
            input_signature = [keras.InputSpec(shape=(None,) + tuple(shape), dtype="uint8")]
        if format == "torch" and "dynamic_shapes" not in kwargs:
            # torch.export would otherwise specialize the program to its sample batch of 1.
            import torch

            kwargs["dynamic_shapes"] = {0: torch.export.Dim("batch", max=1 << 16)}
        out = super().export(filepath, format=format, verbose=verbose,
                             input_signature=input_signature, **kwargs)
        if format == "onnx":
            # tf2onnx names the tensors after the traced function ("args_0", "output_0"):
            # a serving client reads these names, so give them the model's own.
            _rename_onnx_io(filepath, "images", self._serving_output_name())
        return out

    def _serving_output_name(self):
        return "R"


def _rename_onnx_io(path, input_name, output_name):
    """Renames the single input and output of the ONNX graph at `path`, everywhere they are
    referenced."""
    import onnx

    model = onnx.load(path)
    graph = model.graph
    renames = {}
    if len(graph.input) == 1:
        renames[graph.input[0].name] = input_name
    if len(graph.output) == 1:
        renames[graph.output[0].name] = output_name
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        value.name = renames.get(value.name, value.name)
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = renames.get(name, name)
        for i, name in enumerate(node.output):
            node.output[i] = renames.get(name, name)
    onnx.checker.check_model(model)
    onnx.save(model, path)


class FeatureExtractor(ServesUint8):
    """What the backbone and the pretraining task share: the image-size check of the data at
    the boundary, and `extract_features`, a functional model of `self.features` (public
    Keras only, every backend) run with `predict`."""

    def _serving_image_shape(self):
        return self._image_model().image_shape if self.built else None

    def _prepare_for(self, data):
        """Builds the model for the images of `data`, or checks their size against the built
        one, before Keras traces a step (TensorFlow would otherwise create the variables
        inside its traced function, and a traced function sees relaxed shapes)."""
        from keras_infobal.datasets import check_pixel_range

        # The same rule as load_images and make_dataset: floats in [0, 1] are refused.
        check_pixel_range(data[0] if isinstance(data, (tuple, list)) and data else data)
        shape = image_shape_of(data)
        if shape is None:
            return
        if self.built:
            self._image_model().check_images((None,) + shape)
        else:
            self.build((None,) + shape)

    def predict(self, x, *args, **kwargs):
        self._prepare_for(x)
        return super().predict(x, *args, **kwargs)

    def predict_on_batch(self, x):
        self._prepare_for(x)
        return super().predict_on_batch(x)

    def extract_features(self, images, layers=None, batch_size=256, verbose=0):
        """Features of `images` (array or batched dataset) as numpy arrays, keyed by layer.

        `layers`: names from `keras_infobal.features.names()`; default
        `features.probe_layers()` ("conv", "fc", "R"). Takes what `predict` takes (arrays,
        tf.data, PyTorch DataLoader); `verbose=1` shows a progress bar.

        ```python
        feats = model.extract_features(x_test, layers=("conv", "R"))  # {"conv": ..., "R": ...}
        ```
        """
        if layers is None:
            layers = feature_registry.probe_layers()
        layers = feature_registry.check_layers(layers)
        if is_tf_dataset(images):
            batch_size = None  # a dataset is batched already
        self._prepare_for(images)
        if not self.built:
            raise ValueError("This model is not built and the image size cannot be read "
                             "from the data: call model.build((None, H, W, 3)) first.")
        dtype = getattr(images, "dtype", None)
        dtype = "uint8" if dtype is not None and str(dtype).endswith("uint8") else "float32"
        extractor = self._feature_extractor(dtype, tuple(layers))
        out = extractor.predict(images, batch_size=batch_size, verbose=verbose)
        return {k: np.asarray(out[k]) for k in layers}

    def _feature_extractor(self, dtype, layers):
        """The functional model of `features` for one input dtype and set of layers, built
        once: a new model per call would trace its predict function again every call."""
        # object.__setattr__: a cache of models must not be tracked as the model's own layers.
        cache = self.__dict__.get("_feature_extractors")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_feature_extractors", cache)
        key = (dtype, layers, tuple(self.image_shape))
        if key not in cache:
            inputs = keras.Input(self.image_shape, dtype=dtype, name="images")
            feats = self.features(inputs, training=False)
            missing = [k for k in layers if k not in feats]
            if missing:
                raise ValueError(
                    f"The feature layer(s) {missing} are registered, but "
                    f"{type(self).__name__}.features() does not compute them; it computes "
                    f"{sorted(feats)}."
                )
            cache[key] = keras.Model(inputs, {k: feats[k] for k in layers})
        return cache[key]


@keras.saving.register_keras_serializable(package=PACKAGE)
class InfoBalBackbone(FeatureExtractor, keras.Model):
    """The InfoBal encoder: images -> M views (`ViewEncoder`) -> R (`ViewAggregator`).

    Calling it returns R, the global representation `(B, output_dim)`; `views(images)`
    gives the `(B, M, h, w, C)` views the InfoMax and InfoMin terms score, and
    `features(images)` the evaluation features `{"local", "conv", "fc", "R"}`. Images are
    uint8 (or float in [0, 255]), `(B, H, W, 3)`, at any size the trunk and split allow: the
    size comes from `image_shape`, or from the first batch the model sees (`fit`, `predict`,
    a call, or `build((None, H, W, 3))`). Once built, other sizes are refused with an error
    naming both, before any inner layer runs.

    Args:
        num_views: M. `split` says how the trunk's local map becomes views: "rows",
            "columns", "grid", "separate" (one trunk per view) or a name registered with
            `layers.register_split`. M=2 rows is the note's top/bottom setting; M=1 is DIM(L).
        filters: the channels of DIM's trunk (conv 4x4/2, BN, ReLU each).
        trunk: optional Keras layer or model mapping images to a feature map `(B, h, w, C)`,
            or the name of one in `models.trunks.TRUNKS` ("resnet18_cifar": ResNet-18 with
            the CIFAR stem, a 4x4x512 map of a 32x32 image), used instead of DIM's trunk
            (`filters` is then ignored), e.g.
            `keras.applications.ResNet50(include_top=False, weights=None)`.
        rescale: how pixels in [0, 255] reach the trunk: "auto" (default) scales them to
            [-1, 1] unless the trunk scales its own (keras.applications'
            `include_preprocessing=True`, detected by `layers.trunk_scales_inputs`); True
            always scales, False never (see `ViewEncoder`).
        aggregator: how views become R: "concat" (DIM's head), "mean" or "attention".
        conv_filters, fc_units, output_dim: the aggregator's conv, fc and R widths
            (DIM: 256, 1024, 64).
        image_shape: `(height, width, 3)`; None builds from the data.

    ```python
    backbone = InfoBalBackbone(num_views=2, split="rows", image_shape=(64, 64, 3))
    r = backbone(images)                         # (B, 64)
    feats = backbone.extract_features(images)    # {"conv", "fc", "R"}
    backbone = InfoBalBackbone.from_preset("dim_pairs_long")   # CIFAR-10 weights
    ```
    """

    def __init__(self, num_views=2, split="rows", filters=(64, 128), trunk=None,
                 aggregator="concat", conv_filters=256, fc_units=1024, output_dim=64,
                 image_shape=None, rescale="auto", **kwargs):
        super().__init__(**kwargs)
        if aggregator not in MODES:
            raise ValueError(f"`aggregator` must be one of {MODES}; got {aggregator!r}.")
        if isinstance(trunk, dict):  # a serialized trunk, e.g. from a JSON run config
            trunk = keras.saving.deserialize_keras_object(copy.deepcopy(trunk))
        elif isinstance(trunk, str):  # a named trunk (models/trunks.py), e.g. "resnet18_cifar"
            from keras_infobal.models.trunks import get_trunk

            trunk = get_trunk(trunk)
        # The layers check their own arguments (num_views, split, filters, trunk, widths).
        self.encoder = ViewEncoder(num_views=num_views, split=split, filters=filters,
                                   backbone=trunk, rescale=rescale, name="view_encoder")
        self.aggregator = ViewAggregator(mode=aggregator, output_dim=output_dim,
                                         fc_units=fc_units, conv_filters=conv_filters,
                                         name="view_aggregator")
        self.image_shape = None
        if image_shape is not None:
            # Built at construction, like keras.applications models.
            self.build((None,) + check_image_shape(image_shape))

    # -- the architecture, read from the layers (one source) ------------------------------
    def _image_model(self):
        return self

    @property
    def num_views(self):
        return self.encoder.num_views

    @property
    def split(self):
        return self.encoder.split

    @property
    def output_dim(self):
        return self.aggregator.output_dim

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.image_shape is None:
            self.check_images(shape)  # rank and channels, with their fixes
        image_shape = check_image_shape(shape[1:], "the images' shape (H, W, C)")
        if not self.encoder.built:
            self.encoder.build(shape)
        views_shape = self.encoder.compute_output_shape(shape)
        if not self.aggregator.built:
            self.aggregator.build(views_shape)
        self.image_shape = image_shape
        self.built = True

    def check_images(self, shape):
        """Raises a ValueError naming both sizes when images of `shape` are not what this
        model was built for (before any inner layer runs)."""
        shape = tuple(shape)
        if len(shape) != 4:
            raise ValueError(
                f"Expected a batch of images (B, H, W, 3); got shape {shape}. Add a batch "
                "axis for a single image (`images[None]`)."
            )
        if shape[-1] != 3:
            raise ValueError(
                f"Expected RGB images (B, H, W, 3); got {shape[-1]} channels, shape {shape}. "
                "Tile grayscale images to 3 channels (`np.repeat(images, 3, axis=-1)`)."
            )
        if self.image_shape is None:
            return
        built, got = self.image_shape[:2], tuple(shape[1:3])
        if any(g is not None and b != g for b, g in zip(built, got)):
            raise ValueError(
                f"This model was built for {built[0]}x{built[1]} images; got {got[0]}x{got[1]} "
                f"(batch shape {shape}). Resize the images to {built[0]}x{built[1]} "
                f"(keras.layers.Resizing), or build a new model for them: "
                f"InfoBalBackbone(..., image_shape=({got[0]}, {got[1]}, 3))."
            )

    def views(self, images, training=None):
        """The views `(B, M, h, w, C)` of a batch of images."""
        self.check_images(images.shape)
        return self.encoder(images, training=training)

    def call(self, images, training=None):
        return self.aggregator(self.views(images, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def features(self, images, training=False):
        """The evaluation features of a batch: {"local", "conv", "fc", "R"}, the layers of
        `keras_infobal.features` (a subclass computing another one registers it there)."""
        return self.features_of_views(self.views(images, training=training), training)

    def features_of_views(self, views, training=False):
        feats = self.aggregator.features(views, training=training)
        # The view sizes are static (the backbone is built for one image size): a static
        # shape also holds in the functional model of extract_features.
        feats["local"] = ops.reshape(views, (-1, int(np.prod(views.shape[1:]))))
        return feats

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_views": self.num_views,
            "split": self.split,
            "filters": list(self.encoder.filters),
            "trunk": None if self.encoder.backbone is None
            else keras.saving.serialize_keras_object(self.encoder.backbone),
            "aggregator": self.aggregator.mode,
            "conv_filters": self.aggregator.conv_filters,
            "fc_units": self.aggregator.fc_units,
            "output_dim": self.output_dim,
            "image_shape": None if self.image_shape is None else list(self.image_shape),
            "rescale": self.encoder.rescale,
        }

    @classmethod
    def from_config(cls, config):
        # Keras' deserialization consumes nested configs: work on a copy.
        config = copy.deepcopy(config)
        if isinstance(config.get("trunk"), dict):
            config["trunk"] = keras.saving.deserialize_keras_object(config["trunk"])
        return cls(**config)

    # -- presets ------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, preset, load_weights=True, **overrides):
        """A backbone from a built-in preset name (`presets.list_presets()`) or a preset
        folder written by `save_to_preset`; every file is checked against the sha256 in its
        `metadata.json` first. `overrides` replace constructor arguments of the preset's
        config; the weights must still fit (e.g. `rescale`).

        ```python
        backbone = InfoBalBackbone.from_preset("dim_pairs_long")
        backbone = InfoBalBackbone.from_preset("my_run/preset")
        ```
        """
        folder = presets.checked_folder(preset)
        allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise ValueError(f"`from_preset` overrides are constructor arguments "
                             f"{sorted(allowed)}; got {unknown}.")
        with open(os.path.join(folder, presets.CONFIG_FILE)) as f:
            serialized = json.load(f)
        serialized["config"].update(overrides)
        backbone = keras.saving.deserialize_keras_object(serialized)
        if not isinstance(backbone, cls):
            raise ValueError(
                f"The preset `{folder}` holds a {type(backbone).__name__}, not a {cls.__name__}."
            )
        if load_weights:
            if not backbone.built:
                raise ValueError(f"The preset `{folder}` has no image_shape in its config.")
            presets.load_weights(backbone, os.path.join(folder, presets.WEIGHTS_FILE))
        return backbone

    def save_to_preset(self, folder, **metadata):
        """Writes `folder/config.json` (this model's config), `model.weights.h5` and
        `metadata.json` (sha256 of every file, library versions, and `metadata`, e.g.
        validation accuracy or the command that trained it). `from_preset(folder)` reads it
        back."""
        if not self.built:
            raise ValueError("Build the backbone (call it, fit it, or pass image_shape) "
                             "before saving it as a preset.")
        os.makedirs(folder, exist_ok=True)
        presets.write_config(self, os.path.join(folder, presets.CONFIG_FILE))
        self.save_weights(os.path.join(folder, presets.WEIGHTS_FILE))
        presets.write_metadata(folder, **metadata)
        return folder
