"""ViewAggregator: M views to the global representation R."""

import keras
from keras import ops

from keras_infobal import features as feature_registry
from keras_infobal.layers.batch_normalization import BatchNormalization

PACKAGE = "keras_infobal"
MODES = ("concat", "mean", "attention")
# The feature layers this layer computes (keras_infobal/features.py): "conv", "fc", "R".
OUTPUTS = feature_registry.produced_by("ViewAggregator")


@keras.saving.register_keras_serializable(package=PACKAGE)
class ViewAggregator(keras.layers.Layer):
    """Aggregates views `(B, M, h, w, C)` into the global representation R `(B, output_dim)`.

    Every view first goes through the same conv 4x4/2 (`conv_filters`, BN, ReLU): DIM's third
    conv layer, so that with `mode="concat"` and the rows split this is DIM's encoder head. Then:

    - `"concat"`: the views' conv outputs are flattened and concatenated ("conv" features),
      then dense `fc_units` (BN, ReLU) ("fc" features), then dense `output_dim` (R = DIM's Y);
    - `"mean"`: each view goes through a shared dense `fc_units` (BN, ReLU); the view vectors
      are averaged ("fc"), then dense `output_dim`;
    - `"attention"`: like "mean", but a learned score per view vector gives softmax weights
      over the views, and the weighted sum is "fc".

    Args:
        mode: "concat", "mean" or "attention".
        output_dim: width of R (DIM's Y is 64).
        fc_units: width of the fc layer (DIM: 1024).
        conv_filters: channels of the per-view conv (DIM: 256).
        output_mode: what `call` returns: "R" (default), or the "conv" or "fc" features.

    Example:

    ```python
    aggregator = ViewAggregator(mode="concat", output_dim=64)
    r = aggregator(views)                # (B, 64)
    feats = aggregator.features(views)   # {"conv": ..., "fc": ..., "R": ...}
    ```
    """

    def __init__(self, mode="concat", output_dim=64, fc_units=1024, conv_filters=256,
                 output_mode="R", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}; got {mode!r}.")
        feature_registry.check_layers((output_mode,), "output_mode", allowed=OUTPUTS)
        self.output_mode = output_mode
        for name, value in (("output_dim", output_dim), ("fc_units", fc_units),
                            ("conv_filters", conv_filters)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer; got {value!r}.")
        self.mode = mode
        self.output_dim = output_dim
        self.fc_units = fc_units
        self.conv_filters = conv_filters

    def _check_shape(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) != 5:
            raise ValueError(
                "ViewAggregator expects views of shape (B, M, h, w, C), as ViewEncoder returns; "
                f"got rank {len(shape)}, shape {shape}."
            )
        if any(d is None for d in shape[1:]):
            raise ValueError(f"The view shape (M, h, w, C) must be known; got {shape}.")
        return shape

    def _conv_shape(self, shape):
        _, m, h, w, _ = shape
        return m, -(-h // 2), -(-w // 2), self.conv_filters

    def build(self, input_shape):
        shape = self._check_shape(input_shape)
        _, m, h, w, c = shape
        self.num_views, self.view_channels = m, c
        self.conv = keras.layers.Conv2D(self.conv_filters, 4, strides=2, padding="same",
                                        name="conv")
        self.conv_norm = BatchNormalization(name="conv_norm")
        self.conv.build((None, h, w, c))
        _, ch, cw, cf = self._conv_shape(shape)
        self.conv_norm.build((None, ch, cw, cf))
        per_view = ch * cw * cf
        self.fc = keras.layers.Dense(self.fc_units, name="fc")
        self.fc_norm = BatchNormalization(name="fc_norm")
        self.fc.build((None, m * per_view) if self.mode == "concat" else (None, m, per_view))
        self.fc_norm.build((None, self.fc_units))
        if self.mode == "attention":
            self.view_score = keras.layers.Dense(1, name="view_score")
            self.view_score.build((None, m, self.fc_units))
        self.head = keras.layers.Dense(self.output_dim, name="head")
        self.head.build((None, self.fc_units))

    def _conv_and_view_vectors(self, views, training):
        shape = self._check_shape(views.shape)
        if not self.built:  # features() / view_weights() before the first call
            self.build(shape)
        _, m, h, w, c = shape
        if m != self.num_views or c != self.view_channels:
            raise ValueError(
                f"This aggregator was built for {self.num_views} views of {self.view_channels} "
                f"channels; got {m} views of {c} channels."
            )
        x = ops.reshape(views, (-1, h, w, c))
        x = ops.relu(self.conv_norm(self.conv(x), training=training))
        _, ch, cw, cf = self._conv_shape(shape)
        per_view = ops.reshape(x, (-1, m, ch * cw * cf))
        conv = ops.reshape(per_view, (-1, m * ch * cw * cf))
        if self.mode == "concat":
            return conv, None
        hv = self.fc(per_view)  # (B, M, fc_units)
        # One BN over all views' vectors: the views share the fc weights.
        hv = ops.reshape(
            ops.relu(self.fc_norm(ops.reshape(hv, (-1, self.fc_units)), training=training)),
            (-1, m, self.fc_units),
        )
        return conv, hv

    def features(self, views, training=None):
        """A dict of the "conv", "fc" and "R" features (the evaluation layers)."""
        conv, hv = self._conv_and_view_vectors(views, training)
        if self.mode == "concat":
            fc = ops.relu(self.fc_norm(self.fc(conv), training=training))
        elif self.mode == "mean":
            fc = ops.mean(hv, axis=1)
        else:
            fc = ops.sum(ops.softmax(self.view_score(hv), axis=1) * hv, axis=1)
        return {"conv": conv, "fc": fc, "R": self.head(fc)}

    def view_weights(self, views, training=None):
        """Attention mode: the per-view softmax weights (B, M)."""
        if self.mode != "attention":
            raise ValueError("view_weights() exists only for mode='attention'.")
        _, hv = self._conv_and_view_vectors(views, training)
        return ops.squeeze(ops.softmax(self.view_score(hv), axis=1), -1)

    def call(self, views, training=None):
        return self.features(views, training=training)[self.output_mode]

    def compute_output_shape(self, input_shape):
        return self.feature_shapes(input_shape)[self.output_mode]

    def feature_shapes(self, input_shape):
        """Shapes of the "conv", "fc" and "R" features for views of `input_shape`."""
        shape = self._check_shape(input_shape)
        m, ch, cw, cf = self._conv_shape(shape)
        b = shape[0]
        return {"conv": (b, m * ch * cw * cf), "fc": (b, self.fc_units), "R": (b, self.output_dim)}

    def get_config(self):
        return {
            **super().get_config(),
            "mode": self.mode,
            "output_dim": self.output_dim,
            "fc_units": self.fc_units,
            "conv_filters": self.conv_filters,
            "output_mode": self.output_mode,
        }
