"""ViewEncoder: images to M views of a local feature map."""

import math

import keras
from keras import ops

from keras_infobal.layers.batch_normalization import BatchNormalization

PACKAGE = "keras_infobal"


def grid_shape(num_views):
    """The (rows, cols) grid for `num_views` views, as square as possible (4 -> 2x2, 8 -> 2x4)."""
    rows = int(math.isqrt(num_views))
    while num_views % rows:
        rows -= 1
    return rows, num_views // rows


# -- splits: how a (B, h, w, C) local map becomes (B, M, vh, vw, C) views -------------------
# A split is registered once, by name, with two functions:
#   view_shape(h, w, c, m) -> (vh, vw, c), raising a ValueError that says how to fix a bad M;
#   cut(fmap, m, vh, vw, c) -> the (B, m, vh, vw, c) views.
# `per_view_trunk=True` gives every view its own trunk over the whole image instead.
SPLIT_REGISTRY = {}


def register_split(name, view_shape, cut=None, per_view_trunk=False):
    """Registers a way to cut the local map into views; `ViewEncoder(split=name)` then uses it.

    ```python
    def diagonal_shape(h, w, c, m): ...
    def diagonal_cut(fmap, m, vh, vw, c): ...
    register_split("diagonal", diagonal_shape, diagonal_cut)
    ```
    """
    if not per_view_trunk and cut is None:
        raise ValueError(f"Split {name!r} needs a `cut` function (or per_view_trunk=True).")
    SPLIT_REGISTRY[name] = dict(view_shape=view_shape, cut=cut, per_view_trunk=per_view_trunk)
    return name


def _rows_shape(h, w, c, m):
    if h % m:
        raise ValueError(
            f"num_views={m} does not divide the local map's height {h} (map {h}x{w}x{c}); "
            f"use a divisor of {h} for split='rows'."
        )
    return h // m, w, c


def _rows_cut(fmap, m, vh, vw, c):
    return ops.reshape(fmap, (-1, m, vh, vw, c))


def _columns_shape(h, w, c, m):
    if w % m:
        raise ValueError(
            f"num_views={m} does not divide the local map's width {w} (map {h}x{w}x{c}); use "
            f"a divisor of {w} for split='columns'."
        )
    return h, w // m, c


def _columns_cut(fmap, m, vh, vw, c):
    v = ops.reshape(fmap, (-1, vh, m, vw, c))
    return ops.transpose(v, (0, 2, 1, 3, 4))


def _grid_shape(h, w, c, m):
    gr, gc = grid_shape(m)
    if h % gr or w % gc:
        raise ValueError(
            f"num_views={m} makes a {gr}x{gc} grid, which does not divide the local map "
            f"{h}x{w}; use a grid that divides it (4, or 16 for an 8x8 map)."
        )
    return h // gr, w // gc, c


def _grid_cut(fmap, m, vh, vw, c):
    gr, gc = grid_shape(m)
    v = ops.reshape(fmap, (-1, gr, vh, gc, vw, c))
    v = ops.transpose(v, (0, 1, 3, 2, 4, 5))
    return ops.reshape(v, (-1, m, vh, vw, c))


register_split("rows", _rows_shape, _rows_cut)
register_split("columns", _columns_shape, _columns_cut)
register_split("grid", _grid_shape, _grid_cut)
register_split("separate", lambda h, w, c, m: (h, w, c), per_view_trunk=True)
SPLITS = tuple(SPLIT_REGISTRY)  # the built-in names, in order


def trunk_scales_inputs(trunk):
    """Whether `trunk` scales its own input pixels: a `Rescaling` or `Normalization` layer
    comes before its first layer with weights, as in keras.applications models built with
    `include_preprocessing=True` (MobileNetV3, EfficientNetV2, ConvNeXt). Nested models are
    searched in order."""

    def scan(layer):
        # True: a scaling layer comes first; False: a layer with weights; None: neither.
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            return True
        children = getattr(layer, "layers", None)
        if children:  # a Model, Sequential or Pipeline: its layers in order
            for child in children:
                found = scan(child)
                if found is not None:
                    return found
            return None
        if isinstance(layer, keras.layers.InputLayer):
            return None
        # An unbuilt layer has no weights yet: count it as one that has (a conv before any
        # scaling layer), not as a weightless one.
        return False if layer.weights or not layer.built else None

    return bool(scan(trunk))


@keras.saving.register_keras_serializable(package=PACKAGE)
class ViewEncoder(keras.layers.Layer):
    """Maps images to `num_views` views of DIM's local feature map.

    The default trunk is DIM's CIFAR-10 encoder up to its local layer: conv 4x4/2 64 ->
    conv 4x4/2 128, each with BatchNorm and ReLU, giving an 8x8x128 map for 32x32 images.
    The map is then split into views:

    - `"rows"`: `num_views` horizontal stripes (2 = the note's top/bottom halves);
    - `"columns"`: vertical stripes;
    - `"grid"`: a grid of blocks (4 = quadrants, 8 = 2x4, 16 = 4x4);
    - `"separate"`: one trunk per view, each seeing the whole image (the note's theta_i).

    Output: `(B, num_views, h, w, C)`, every view a set of `h*w` local vectors.

    Args:
        num_views: M, the number of views.
        split: one of "rows", "columns", "grid", "separate".
        filters: channels of the trunk's conv layers; the last is C.
        rescale: how images in [0, 255] (uint8 or float) reach the trunk. True: scaled to
            [-1, 1] here. False: passed as they are (a trunk that scales its own inputs).
            "auto" (default): True, unless `backbone` scales its own inputs
            (`trunk_scales_inputs`: keras.applications' `include_preprocessing=True`), so
            pixels are never scaled twice.
        backbone: optional Keras layer or model mapping (rescaled) images to a feature map
            (B, h, w, C), used as the trunk instead of DIM's convs (`filters` is then
            ignored); with split="separate" every view gets a copy (same config, own
            weights). Splits are registered with `register_split`.

    Example:

    ```python
    encoder = ViewEncoder(num_views=2, split="rows")
    views = encoder(images)  # (B, 2, 4, 8, 128) for 32x32 images
    trunk = keras.Sequential([keras.layers.Conv2D(32, 3, strides=4, padding="same")])
    encoder = ViewEncoder(num_views=4, split="grid", backbone=trunk)  # any feature map
    ```
    """

    def __init__(self, num_views=2, split="rows", filters=(64, 128), rescale="auto",
                 backbone=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f"`num_views` must be a positive integer; got {num_views!r}.")
        if split not in SPLIT_REGISTRY:
            raise ValueError(
                f"`split` must be one of {tuple(SPLIT_REGISTRY)} (or a name registered with "
                f"register_split); got {split!r}."
            )
        if backbone is not None and not isinstance(backbone, keras.layers.Layer):
            raise ValueError(
                "`backbone` must be a Keras layer or model that maps images to a feature map "
                f"(B, h, w, C); got {type(backbone).__name__}."
            )
        self.backbone = backbone
        filters = tuple(int(f) for f in filters)
        if not filters or min(filters) < 1:
            raise ValueError(f"`filters` must be a non-empty list of positive ints; got {filters}.")
        if rescale not in (True, False, "auto"):
            raise ValueError(f"`rescale` must be True, False or 'auto'; got {rescale!r}.")
        self.num_views = num_views
        self.split = split
        self.filters = filters
        self.rescale = rescale
        # Decided once, from the trunk as given: the copies of split="separate" match it.
        self.scales_inputs = rescale if rescale != "auto" else (
            backbone is None or not trunk_scales_inputs(backbone))

    def _check_input_shape(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 4:
            raise ValueError(
                "ViewEncoder expects a batch of images of shape (B, H, W, 3); got rank "
                f"{len(shape)}, shape {shape}. Add a batch axis for a single image "
                "(e.g. `images[None]`)."
            )
        if shape[-1] != 3:
            raise ValueError(
                f"ViewEncoder expects RGB images with 3 channels last (B, H, W, 3); got {shape}."
            )
        return shape

    def map_shape(self, input_shape):
        """The (h, w, C) of the local map for images of `input_shape`."""
        shape = self._check_input_shape(input_shape)
        if self.backbone is not None:
            out = tuple(self.backbone.compute_output_shape(shape))
            if len(out) != 4:
                raise ValueError(
                    "The backbone must return a feature map (B, h, w, C) (no pooling); for "
                    f"images {shape} it returns shape {out}."
                )
            return out[1], out[2], out[3]
        h, w = shape[1], shape[2]
        for _ in self.filters:
            h = None if h is None else -(-h // 2)
            w = None if w is None else -(-w // 2)
        return h, w, self.filters[-1]

    def view_shape(self, input_shape):
        """The (h, w, C) of each view for images of `input_shape`; checks that M divides."""
        h, w, c = self.map_shape(input_shape)
        min_side = 1 if self.backbone is not None else 2 ** len(self.filters)
        if (h is not None and input_shape[1] < min_side) or (
            w is not None and input_shape[2] < min_side
        ):
            raise ValueError(
                f"Images of {input_shape[1]}x{input_shape[2]} are too small for this trunk: it "
                f"halves them {len(self.filters)} times; use images of at least "
                f"{min_side}x{min_side} (32x32 for CIFAR)."
            )
        m = self.num_views
        split = SPLIT_REGISTRY[self.split]
        if split["per_view_trunk"] or m == 1:
            return h, w, c
        if h is None or w is None:
            raise ValueError(
                f"The '{self.split}' split needs a known image size; got {tuple(input_shape)}."
            )
        return split["view_shape"](h, w, c, m)

    def _make_trunk(self, prefix):
        layers = []
        for i, f in enumerate(self.filters):
            layers.append(
                keras.layers.Conv2D(f, 4, strides=2, padding="same", name=f"{prefix}conv{i}")
            )
            layers.append(BatchNormalization(name=f"{prefix}bn{i}"))
        return layers

    def _make_backbone_trunk(self, index):
        if index == 0:
            return [self.backbone]
        # One copy per view: the same architecture, its own weights.
        copy = self.backbone.__class__.from_config(self.backbone.get_config())
        return [copy]

    def build(self, input_shape):
        shape = self._check_input_shape(input_shape)
        self.view_shape(shape)
        n_trunks = self.num_views if SPLIT_REGISTRY[self.split]["per_view_trunk"] else 1
        if self.backbone is not None:
            self.trunks = [self._make_backbone_trunk(i) for i in range(n_trunks)]
            for trunk in self.trunks:
                if not trunk[0].built:
                    trunk[0].build(shape)
            return
        self.trunks = [self._make_trunk(f"view{i}_" if n_trunks > 1 else "")
                       for i in range(n_trunks)]
        for trunk in self.trunks:
            s = shape
            for layer in trunk:
                layer.build(s)
                s = layer.compute_output_shape(s)

    def _run_trunk(self, trunk, x, training):
        if self.backbone is not None:
            return trunk[0](x, training=training)
        for i in range(0, len(trunk), 2):
            x = ops.relu(trunk[i + 1](trunk[i](x), training=training))
        return x

    def local_map(self, images, training=None):
        """The trunk's local map (B, h, w, C); with split='separate', the first trunk's."""
        if not self.built:
            self.build(tuple(images.shape))
        return self._run_trunk(self.trunks[0], self._preprocess(images), training)

    def _preprocess(self, images):
        self._check_input_shape(images.shape)
        x = ops.cast(images, self.compute_dtype)
        if self.scales_inputs:
            x = x / 127.5 - 1.0
        return x

    def call(self, images, training=None):
        x = self._preprocess(images)
        vh, vw, c = self.view_shape(images.shape)
        m = self.num_views
        split = SPLIT_REGISTRY[self.split]
        if split["per_view_trunk"]:
            views = [self._run_trunk(t, x, training) for t in self.trunks]
            return ops.stack(views, axis=1)
        fmap = self._run_trunk(self.trunks[0], x, training)
        if m == 1:
            return ops.expand_dims(fmap, 1)
        return split["cut"](fmap, m, vh, vw, c)

    def compute_output_shape(self, input_shape):
        vh, vw, c = self.view_shape(input_shape)
        return (input_shape[0], self.num_views, vh, vw, c)

    def get_config(self):
        return {
            **super().get_config(),
            "num_views": self.num_views,
            "split": self.split,
            "filters": list(self.filters),
            "rescale": self.rescale,
            "backbone": None if self.backbone is None
            else keras.saving.serialize_keras_object(self.backbone),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("backbone") is not None:
            config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)
