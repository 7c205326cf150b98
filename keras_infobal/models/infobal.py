"""The InfoBal model: multi-view InfoMax against InfoMin, trained adversarially."""

import itertools
import os
import sys

import keras
import numpy as np
from keras import ops

from keras_infobal import features as feature_registry
from keras_infobal.layers.critics import (
    critic_names,
    get_critic,
    get_pair_critics,
    infomin_critic_names,
)
from keras_infobal.layers.view_aggregator import ViewAggregator
from keras_infobal.layers.view_encoder import ViewEncoder
from keras_infobal.models.trainers import Trainer

PACKAGE = "keras_infobal"


def _validate_weights(view_weights, correlation_weights, num_views):
    if view_weights is None:
        alpha = np.ones(num_views, dtype="float32")
    else:
        alpha = np.asarray(view_weights, dtype="float32")
        if alpha.shape != (num_views,):
            raise ValueError(
                f"`view_weights` (alpha) must have one weight per view, shape ({num_views},); "
                f"got shape {alpha.shape}."
            )
    if correlation_weights is None:
        beta = np.ones((num_views, num_views), dtype="float32")
    else:
        beta = np.asarray(correlation_weights, dtype="float32")
        if beta.shape != (num_views, num_views):
            raise ValueError(
                f"`correlation_weights` (beta) must be a {num_views}x{num_views} matrix; got "
                f"shape {beta.shape}."
            )
        if not np.allclose(beta, beta.T):
            raise ValueError(
                "`correlation_weights` (beta) must be symmetric: beta[i][j] weights the pair "
                "(i, j) and beta[j][i] the same pair."
            )
    for name, w in (("view_weights", alpha), ("correlation_weights", beta)):
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(
                f"`{name}` must be finite and non-negative (a negative weight flips a "
                f"maximized term into a minimized one); got {w.tolist()}."
            )
    return alpha, beta


def load_infobal(path, safe_mode=True, **kwargs):
    """Loads an `InfoBal` model saved with `model.save(path)`; refuses other model classes.

    `safe_mode` stays True by default: a `.keras` file holding arbitrary code (a `Lambda`
    layer) is refused rather than run.
    """
    if not str(path).endswith(".keras"):
        raise ValueError(f"Expected a `.keras` file saved by `model.save`; got `{path}`.")
    if not os.path.exists(path):
        raise ValueError(f"`{path}` does not exist.")
    try:
        model = keras.models.load_model(path, safe_mode=safe_mode, **kwargs)
    except (OSError, EOFError, KeyError) as e:
        raise ValueError(
            f"`{path}` could not be read as a Keras model ({type(e).__name__}: {e}); it may be "
            "truncated or not a .keras file."
        ) from e
    except Exception as e:
        if "zip" in str(e).lower() or "BadZipFile" in type(e).__name__:
            raise ValueError(
                f"`{path}` is not a valid .keras archive ({e}); it may be truncated."
            ) from e
        raise
    if not isinstance(model, InfoBal):
        raise ValueError(
            f"`{path}` holds a {type(model).__name__} model, not an InfoBal model. Load it with "
            "keras.models.load_model instead."
        )
    return model


@keras.saving.register_keras_serializable(package=PACKAGE)
class InfoBal(Trainer, keras.Model):
    """InfoBal: maximize I(R; V_i) for each view, minimize I(V_i; V_j) between views.

    The encoder, aggregator and InfoMax critics maximize
    `J = sum_i alpha_i I_T(R; V_i) - lambda * sum_{i<j} beta_ij I_U(V_i; V_j)`;
    the InfoMin discriminators U maximize `sum_{i<j} beta_ij I_U(V_i; V_j)`. Each batch runs
    `discriminator_steps` discriminator updates, then one encoder update, each with its own
    optimizer. `infomin_weight=0` is the DIM (global/local) baseline: no discriminator runs.
    It trains on the TensorFlow, JAX and PyTorch backends alike (`KERAS_BACKEND`); each
    backend's update step is in `keras_infobal/models/trainers/`.

    Args:
        num_views: M. `split`: how the local map is split ("rows", "columns", "grid",
            "separate"); M=2 rows is the note's top/bottom setting, M=1 is plain DIM(L).
        aggregator: "concat", "mean" or "attention" (see `ViewAggregator`), or a
            `ViewAggregator` instance.
        encoder: optional `ViewEncoder` instance (e.g. `ViewEncoder(..., backbone=...)` around
            any Keras backbone); its `num_views`, `split` and `filters` replace those
            arguments.
        critic: InfoMax estimator, "jsd", "dv", "infonce" or "nwj".
        infomin_critic: InfoMin estimator; defaults to `critic`. A lower-bound critic
            ("jsd", "dv", "infonce", "nwj") is trained adversarially (it maximizes its
            estimate); "club" / "club_sampled" use the CLUB upper bound (`layers.CLUB`):
            its q(v_j | v_i) is fitted by maximum likelihood in the discriminator step and
            the encoder minimizes the bound (the note's "minimize the upper bound" route).
            Each view pair has its own discriminator; all M(M-1)/2 of them live in one
            batched layer, `model.infomin_critics` (`layers.PairCritics` /
            `layers.PairCLUB`, weights stacked on a pair axis), which returns the (P,)
            estimates of all pairs in `model.pairs` order from one call.
        critic_units: width of the critics' encodings.
        infomin_units: width of the InfoMin discriminators' encodings; defaults to
            `critic_units`. The M(M-1)/2 discriminators cost about
            `M(M-1)/2 * 2 * (2 D + units) * units` multiply-adds per image per pass (D: the
            pooled view width): at M = 8 and 512 units they cost more than all of DIM's
            critics, so e.g. `infomin_units=128` makes the InfoMin term cheap at many views.
        scorer: "dot" (encode-and-dot) or "concat" for the InfoMax critics.
        shared_critic: one InfoMax critic for all views instead of one per view.
        output_dim, fc_units, filters, conv_filters: sizes of R, the fc layer, the trunk's conv
            layers and the aggregator's conv layer (DIM: 64, 1024, (64, 128), 256).
        infomin_weight: lambda, the weight of the InfoMin term.
        view_weights: alpha, M non-negative weights (default all ones).
        correlation_weights: beta, a symmetric MxM non-negative matrix (default all ones).
        discriminator_steps: k, discriminator updates per encoder update.
        view_pooling: how a view becomes the discriminator's input: "mean" over its locations
            or "flatten".
        track_view_mi: train the discriminators even when `infomin_weight=0`, to log
            I(V_i;V_j) for the baseline without changing its encoder updates. Default: only
            when `infomin_weight > 0`.
        input_shape: (height, width, 3) of the images; the model is built right away. With
            None, call `model.build((None, H, W, 3))` before training.
        cross_replica_negatives: TensorFlow backend only: under tf.distribute, score each
            replica's anchors against the images of all replicas (all-gather), as one device
            with the global batch would; otherwise negatives come from the replica's own batch.
        synchronized_batch_norm: TensorFlow backend only: BatchNorm statistics over the
            global batch under tf.distribute (what one device with the global batch computes).
        augmented_pairs: batches are pairs `(x1, x2)` of two augmentations of the same
            images (`datasets.make_dataset(..., pairs=True)`); R of each is scored against
            the local views of the other (AMDIM's cross-view InfoMax). Prediction and
            features still take single images.
        score_clip: None, or c to soft-clip the critics' scores to (-c, c) (see `MICritic`).

    Example:

    ```python
    model = InfoBal(num_views=2, split="rows", critic="jsd", infomin_weight=1.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  discriminator_optimizer=keras.optimizers.Adam(1e-4))
    model.fit(uint8_image_dataset, epochs=10)
    r = model.predict(images)            # the global representation R
    feats = model.extract_features(images)  # {"conv", "fc", "R"}
    ```
    """

    def __init__(
        self,
        num_views=2,
        split="rows",
        aggregator="concat",
        critic="jsd",
        infomin_critic=None,
        critic_units=512,
        infomin_units=None,
        scorer="dot",
        shared_critic=False,
        output_dim=64,
        fc_units=1024,
        filters=(64, 128),
        conv_filters=256,
        infomin_weight=1.0,
        view_weights=None,
        correlation_weights=None,
        discriminator_steps=1,
        view_pooling="mean",
        track_view_mi=None,
        input_shape=(32, 32, 3),
        cross_replica_negatives=False,
        synchronized_batch_norm=False,
        augmented_pairs=False,
        score_clip=None,
        encoder=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        infomin_critic = critic if infomin_critic is None else infomin_critic
        if str(critic).lower() not in critic_names():
            raise ValueError(
                f"`critic` must be one of {list(critic_names())} (or an estimator added with "
                f"keras_infobal.estimators.register_estimator); got {critic!r}."
            )
        if str(infomin_critic).lower() not in infomin_critic_names():
            raise ValueError(
                f"`infomin_critic` must be one of {list(infomin_critic_names())} (a lower-bound "
                f"critic trained adversarially, or the CLUB upper bound); got "
                f"{infomin_critic!r}."
            )
        if infomin_units is not None and (isinstance(infomin_units, bool)
                                          or not isinstance(infomin_units, int)
                                          or infomin_units < 1):
            raise ValueError(
                "`infomin_units` must be None (the critics' `critic_units`) or a positive "
                f"integer; got {infomin_units!r}."
            )
        if not np.isfinite(infomin_weight) or infomin_weight < 0:
            raise ValueError(
                "`infomin_weight` (lambda) must be a finite number >= 0 (0 gives the DIM "
                f"baseline); got {infomin_weight!r}."
            )
        if not isinstance(discriminator_steps, int) or discriminator_steps < 1:
            raise ValueError(
                f"`discriminator_steps` must be a positive integer; got {discriminator_steps!r}."
            )
        if view_pooling not in ("mean", "flatten"):
            raise ValueError(f"`view_pooling` must be 'mean' or 'flatten'; got {view_pooling!r}.")
        self._check_backend_support(cross_replica_negatives, synchronized_batch_norm)
        self.cross_replica_negatives = bool(cross_replica_negatives)
        self.augmented_pairs = bool(augmented_pairs)
        self.score_clip = None if score_clip is None else float(score_clip)
        self.synchronized_batch_norm = bool(synchronized_batch_norm)
        # A keras-hub-style task: the encoder and the aggregator can be layer instances (any
        # backbone inside the ViewEncoder); the size arguments build the default ones.
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        if isinstance(aggregator, dict):
            aggregator = keras.saving.deserialize_keras_object(aggregator)
        if encoder is not None and not isinstance(encoder, ViewEncoder):
            raise ValueError(
                "`encoder` must be a keras_infobal.ViewEncoder (wrap your backbone: "
                f"ViewEncoder(num_views=..., split=..., backbone=...)); got {type(encoder).__name__}."
            )
        if not isinstance(aggregator, (str, ViewAggregator)):
            raise ValueError(
                "`aggregator` must be a mode name ('concat', 'mean', 'attention') or a "
                f"keras_infobal.ViewAggregator; got {type(aggregator).__name__}."
            )
        self._custom_encoder = encoder is not None
        self._custom_aggregator = isinstance(aggregator, ViewAggregator)
        if self._custom_encoder:
            num_views, split, filters = encoder.num_views, encoder.split, encoder.filters
            self.encoder = encoder
        else:
            self.encoder = ViewEncoder(num_views=num_views, split=split, filters=filters,
                                       synchronized_batch_norm=self.synchronized_batch_norm,
                                       name="view_encoder")
        if self._custom_aggregator:
            output_dim, fc_units = aggregator.output_dim, aggregator.fc_units
            conv_filters = aggregator.conv_filters
        alpha, beta = _validate_weights(view_weights, correlation_weights, num_views)
        self.num_views = num_views
        self.split = split
        self.aggregator_mode = aggregator.mode if self._custom_aggregator else aggregator
        self.critic = critic
        self.infomin_critic = infomin_critic
        self.critic_units = critic_units
        self.infomin_units = infomin_units
        self.scorer = scorer
        self.shared_critic = bool(shared_critic)
        self.output_dim = output_dim
        self.fc_units = fc_units
        self.filters = tuple(filters)
        self.conv_filters = conv_filters
        self.infomin_weight = float(infomin_weight)
        self.view_weights = None if view_weights is None else alpha.tolist()
        self.correlation_weights = None if correlation_weights is None else beta.tolist()
        self._alpha, self._beta = alpha, beta
        self.discriminator_steps = discriminator_steps
        self.view_pooling = view_pooling
        self.track_view_mi = track_view_mi
        if self._custom_aggregator:
            self.aggregator = aggregator
        else:
            self.aggregator = ViewAggregator(mode=aggregator, output_dim=output_dim,
                                             fc_units=fc_units, conv_filters=conv_filters,
                                             synchronized_batch_norm=self.synchronized_batch_norm,
                                             name="view_aggregator")
        n_critics = 1 if self.shared_critic else num_views
        self.infomax_critics = [
            get_critic(critic, units=critic_units, scorer=scorer,
                       normalization="sync_batch" if self.synchronized_batch_norm else "batch",
                       score_clip=score_clip, name=f"infomax_critic_{i + 1}")
            for i in range(n_critics)
        ]
        self.pairs = list(itertools.combinations(range(num_views), 2))
        # One layer holds the discriminators of all M(M-1)/2 pairs, their weights stacked on
        # a leading pair axis (layers/pair_critics.py); None with a single view.
        self.infomin_critics = get_pair_critics(
            infomin_critic, self.pairs,
            units=critic_units if infomin_units is None else infomin_units,
            score_clip=score_clip,
            name="infomin_critics") if self.pairs else None
        self._beta_pairs = np.array([self._beta[i, j] for i, j in self.pairs],
                                    dtype="float32")
        self.discriminator_optimizer = None
        names = ["loss", "objective"]
        names += [f"mi_R_V{i + 1}" for i in range(num_views)]
        if self.discriminator_active:
            names += [f"mi_V{i + 1}_V{j + 1}" for i, j in self.pairs]
            names += ["discriminator_objective"]
        self._trackers = {n: keras.metrics.Mean(name=n) for n in names}
        # Set by extract_features: predict_step then returns these feature layers.
        self._feature_layers = None
        self.image_shape = None if input_shape is None else tuple(input_shape)
        if self.image_shape is not None:
            if len(self.image_shape) != 3 or self.image_shape[-1] != 3:
                raise ValueError(
                    f"`input_shape` must be (height, width, 3); got {input_shape!r}."
                )
            # Built at construction, like keras.applications models: all variables exist
            # before any training function is traced.
            self.build((None,) + self.image_shape)

    @classmethod
    def from_preset(cls, name, **overrides):
        """The pretraining model of a shipped preset (encoder, aggregator, critics), ready to
        `compile` and `fit` on your own unlabeled images; see `applications.presets`.

        ```python
        model = InfoBal.from_preset("dim_pairs")
        model.compile(optimizer=keras.optimizers.Adam(1e-4))
        model.fit(kib.datasets.make_dataset(my_images, pairs=True, batch_size=64), epochs=5)
        ```
        """
        from keras_infobal.applications.presets import infobal_from_preset

        return infobal_from_preset(name, cls=cls, **overrides)

    def _check_backend_support(self, cross_replica_negatives, synchronized_batch_norm):
        if keras.backend.backend() == "tensorflow":
            return
        if cross_replica_negatives:
            raise self._unsupported(
                "cross_replica_negatives=True",
                "On JAX, keras.distribution.DataParallel computes each step on the global "
                "batch, so the negatives already come from every device: set "
                "cross_replica_negatives=False. On PyTorch, train on one device, or use "
                "KERAS_BACKEND=tensorflow with a tf.distribute strategy.")
        if synchronized_batch_norm:
            raise self._unsupported(
                "synchronized_batch_norm=True",
                "On JAX, keras.distribution.DataParallel already normalizes over the global "
                "batch: set synchronized_batch_norm=False. On PyTorch, train on one device, "
                "or use KERAS_BACKEND=tensorflow with a tf.distribute strategy.")

    # ----------------------------------------------------------------------------------
    @property
    def discriminator_active(self):
        """Whether the InfoMin discriminators train (lambda > 0, or track_view_mi)."""
        if not self.pairs:
            return False
        if self.track_view_mi is None:
            return self.infomin_weight > 0
        return bool(self.track_view_mi)

    @property
    def metrics(self):
        return list(self._trackers.values())

    @property
    def encoder_variables(self):
        """Variables the encoder step trains: encoder, aggregator, InfoMax critics."""
        out = self.encoder.trainable_variables + self.aggregator.trainable_variables
        for critic in self.infomax_critics:
            out += critic.trainable_variables
        return out

    @property
    def discriminator_variables(self):
        """Variables the discriminator step trains: the InfoMin critics."""
        if self.infomin_critics is None:
            return []
        return list(self.infomin_critics.trainable_variables)

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        # Layers passed in (or deserialized with their build config) may be built already.
        if not self.encoder.built:
            self.encoder.build(input_shape)
        views_shape = self.encoder.compute_output_shape(input_shape)
        if not self.aggregator.built:
            self.aggregator.build(views_shape)
        b, _, vh, vw, c = views_shape
        r_shape = (b, self.output_dim)
        for critic in self.infomax_critics:
            critic.build([r_shape, (b, vh * vw, c)])
        pooled = (b, self.num_views, c if self.view_pooling == "mean" else vh * vw * c)
        if self.infomin_critics is not None and not self.infomin_critics.built:
            self.infomin_critics.build(pooled)
        self.built = True
        if self.compiled:
            self._build_optimizers()

    def call(self, images, training=None):
        return self.aggregator(self.encoder(images, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def features(self, images, training=False):
        """The evaluation features of a batch: {"local", "conv", "fc", "R"}, the layers of
        `keras_infobal.features` (a subclass computing another one registers it there)."""
        views = self.encoder(images, training=training)
        feats = self.aggregator.features(views, training=training)
        feats["local"] = ops.reshape(views, (ops.shape(views)[0], -1))
        return feats

    def extract_features(self, images, layers=None, batch_size=256, verbose=0):
        """Features of `images` (array or batched dataset) as numpy arrays, keyed by layer.

        `layers`: names from `keras_infobal.features.names()`; default
        `features.probe_layers()` ("conv", "fc", "R").

        Runs `predict` with a `predict_step` that returns the feature dict, so it works on
        every backend and takes what `predict` takes (arrays, tf.data, PyTorch DataLoader).
        `verbose=1` shows a progress bar.

        ```python
        feats = model.extract_features(x_test, layers=("conv", "R"))  # {"conv": ..., "R": ...}
        ```
        """
        if layers is None:
            layers = feature_registry.probe_layers()
        layers = feature_registry.check_layers(layers)
        if _is_tf_dataset(images):
            batch_size = None  # a dataset is batched already
        # The predict function is traced for one output structure: drop it before and after.
        self._feature_layers = tuple(layers)
        self.predict_function = None
        try:
            out = self.predict(images, batch_size=batch_size, verbose=verbose)
        finally:
            self._feature_layers = None
            self.predict_function = None
        return {k: np.asarray(out[k]) for k in layers}

    def fit(self, x=None, *args, **kwargs):
        # A tf.data dataset shuffles itself; Keras would warn on every fit that its own
        # default shuffle=True is ignored.
        # `shuffle` is fit's 9th parameter: only default it when not given positionally.
        if _is_tf_dataset(x) and len(args) < 8:
            kwargs.setdefault("shuffle", False)
        return super().fit(x, *args, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Everything is built at construction and in compile(). Keras' symbolic build under
        # tf.distribute would all-reduce a data batch first, which fails for uint8 images
        # under MultiWorkerMirroredStrategy (collectives take no uint8).
        if self.built and self.optimizer is not None and self.optimizer.built:
            return
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _symbolic_build(self, iterator=None, data_batch=None):
        # (What the JAX and PyTorch trainers call.) Keras would build an unbuilt model from
        # a data batch there: ask for model.build on every backend alike.
        self._require_built()
        return super()._symbolic_build(iterator=iterator, data_batch=data_batch)

    # ----------------------------------------------------------------------------------
    def compile(self, optimizer="adam", discriminator_optimizer=None, **kwargs):
        """Like `keras.Model.compile`, plus the InfoMin discriminators' own optimizer.

        `discriminator_optimizer` is required when `infomin_weight > 0` (or
        `track_view_mi=True`). It is built here when the model is built, so the training
        function never creates variables while tracing (which `tf.distribute` requires).
        """
        for key in ("loss", "metrics"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"InfoBal computes its own objective and metrics; do not pass `{key}` to "
                    "compile()."
                )
        super().compile(optimizer=optimizer, **kwargs)
        if discriminator_optimizer is not None:
            discriminator_optimizer = keras.optimizers.get(discriminator_optimizer)
            if discriminator_optimizer is self.optimizer:
                raise ValueError(
                    "`discriminator_optimizer` must be a different optimizer instance from "
                    "`optimizer`: each update keeps its own state."
                )
        self.discriminator_optimizer = discriminator_optimizer
        self._compile_config.config["discriminator_optimizer"] = discriminator_optimizer
        if self.built:
            self._build_optimizers()

    def _build_optimizers(self):
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        if self.discriminator_optimizer is not None and not self.discriminator_optimizer.built:
            self.discriminator_optimizer.build(self.discriminator_variables)

    def compile_from_config(self, config):
        config = dict(config)
        for key in ("optimizer", "discriminator_optimizer"):
            config[key] = _portable_optimizer_config(config.get(key))
        config = keras.saving.deserialize_keras_object(config)
        if "jit_compile" in config:
            # `.keras` files move between backends, and Keras saves the saving backend's
            # resolved choice: True from JAX would mean torch.compile (minutes of C++
            # compilation) on PyTorch, False from TensorFlow an unjitted JAX step. "auto"
            # picks the loading backend's own default; pass jit_compile to compile() again to
            # choose otherwise.
            config["jit_compile"] = "auto"
        self.compile(**config)

    # ----------------------------------------------------------------------------------
    def _pool(self, views):
        if self.view_pooling == "mean":
            return ops.mean(views, axis=(2, 3))
        return ops.reshape(views, (ops.shape(views)[0], self.num_views, -1))

    def _infomin_terms(self, pooled, training):
        """The (P,) InfoMin estimates of all pairs, from one batched call."""
        return self.infomin_critics(pooled, training=training, gather_fn=self._gather_fn())

    def _infomin_fit_terms(self, pooled, training):
        """(what the discriminator step maximizes, the InfoMin estimates), each (P,)."""
        return self.infomin_critics.fit_and_estimate(pooled, training=training,
                                                     gather_fn=self._gather_fn())

    def _weighted_infomin(self, terms):
        """sum_{i<j} beta_ij * terms[p] over the (P,) per-pair terms."""
        return ops.sum(ops.convert_to_tensor(self._beta_pairs, dtype=terms.dtype) * terms)

    def _pair_logs(self, terms):
        return {f"mi_V{i + 1}_V{k + 1}": terms[p] for p, (i, k) in enumerate(self.pairs)}

    def _infomax_terms(self, views, r, training):
        b, m, vh, vw, c = views.shape
        gather_fn = self._gather_fn()
        terms = []
        for i in range(m):
            critic = self.infomax_critics[0 if self.shared_critic else i]
            local = ops.reshape(views[:, i], (-1, vh * vw, c))
            terms.append(critic([r, local], training=training, gather_fn=gather_fn))
        return terms

    def _objective(self, views, training):
        """J and its terms, on views computed by the encoder."""
        r = self.aggregator(views, training=training)
        if self.augmented_pairs:
            # The batch stacks two augmentations of the same images: R of each is scored
            # against the local views of the other, so the encoder must see through the
            # augmentation (AMDIM's cross-view InfoMax) instead of matching colours.
            v1, v2 = ops.split(views, 2, axis=0)
            r1, r2 = ops.split(r, 2, axis=0)
            infomax = [(a + b) / 2.0 for a, b in zip(self._infomax_terms(v2, r1, training),
                                                     self._infomax_terms(v1, r2, training))]
        else:
            infomax = self._infomax_terms(views, r, training)
        j = sum(float(self._alpha[i]) * t for i, t in enumerate(infomax))
        if self.infomin_weight > 0 and self.pairs:
            infomin = self._infomin_terms(self._pool(views), training)
            j = j - self.infomin_weight * self._weighted_infomin(infomin)
        return j, infomax

    def _check_data(self, data, single=False):
        """The batch of images to encode; with augmented pairs (unless `single`), both
        halves stacked."""
        self._require_built()
        if self.augmented_pairs and not single:
            return self._check_pair(data)
        x = data[0] if isinstance(data, (tuple, list)) else data
        if isinstance(x, dict):
            raise ValueError("InfoBal takes a batch of images, not a dict of inputs.")
        return self._check_images(x)

    def _require_built(self):
        if not self.built:
            raise ValueError(
                "This InfoBal model is not built: it was created with input_shape=None. Call "
                "model.build((None, height, width, 3)) before fit, evaluate or predict."
            )

    def _check_pair(self, data):
        if isinstance(data, (tuple, list)):
            # train_on_batch(x1, x2) arrives as Keras' (x, y, sample_weight) = (x1, x2, None).
            while len(data) > 2 and data[-1] is None:
                data = data[:-1]
        if not (isinstance(data, (tuple, list)) and len(data) == 2
                and not isinstance(data[0], dict) and not isinstance(data[1], dict)
                and len(data[0].shape) == len(data[1].shape) == 4):
            raise ValueError(
                "This model has augmented_pairs=True: each batch must be a pair (x1, x2) of "
                "two augmentations of the same images, both of shape (B, H, W, 3), e.g. from "
                "keras_infobal.datasets.make_dataset(images, pairs=True, ...)."
            )
        x1, x2 = (self._check_images(x) for x in data)
        message = "The two augmentations of a pair must have the same batch size"
        if (x1.shape[0] is not None and x2.shape[0] is not None
                and x1.shape[0] != x2.shape[0]):
            raise ValueError(f"{message}; got {x1.shape[0]} and {x2.shape[0]}.")
        # One encoder pass over both halves (_objective splits them again); the TensorFlow
        # trainer also checks the batch sizes when the traced function runs.
        return self._checked_pair(x1, x2, message)

    def _check_images(self, x):
        if len(x.shape) != 4:
            raise ValueError(
                f"InfoBal expects batches of images of shape (B, H, W, 3); got {tuple(x.shape)}."
            )
        dtype = keras.backend.standardize_dtype(x.dtype)
        if dtype not in ("uint8", "float16", "float32", "float64", "bfloat16", "int32"):
            raise ValueError(
                f"Images must be uint8 (or float in [0, 255]); got dtype {dtype}."
            )
        return x

    def _check_static_batch(self, x):
        """Raises when the known batch size is too small; returns the minimum size of x."""
        # With augmented pairs x stacks both halves: each half needs 2 images.
        need = 4 if self.augmented_pairs else 2
        if x.shape[0] is not None and x.shape[0] < need:
            raise ValueError(self._batch_message(x.shape[0] * 2 // need))
        return need

    @staticmethod
    def _batch_message(n):
        return (
            f"InfoBal needs at least 2 images per batch (got {n}): the other images of the batch "
            "are the negatives of every MI estimate. Use batch_size >= 2, and "
            "drop_remainder=True when batching a tf.data dataset."
        )

    def _require_discriminator_optimizer(self):
        if self.discriminator_optimizer is None:
            raise ValueError(
                f"This model trains InfoMin discriminators (infomin_weight={self.infomin_weight})"
                " but was compiled without `discriminator_optimizer`. Call "
                "model.compile(optimizer=..., discriminator_optimizer="
                "keras.optimizers.Adam(1e-4)), or set infomin_weight=0 for the DIM baseline."
            )

    def _discriminator_objective(self, pooled):
        """What the discriminator step maximizes on pooled views, and the per-pair estimates.

        Adversarial critics maximize their MI estimate; CLUB fits q by likelihood.
        """
        fits, terms = self._infomin_fit_terms(pooled, training=True)
        return self._weighted_infomin(fits), terms

    def _encoder_loss(self, views):
        """(loss, J, InfoMax terms) of the encoder step on views computed with training=True."""
        j, infomax = self._objective(views, training=True)
        loss = -j + sum(self.losses) if self.losses else -j
        return loss, j, infomax

    def _train_logs(self, loss, j, infomax, d_out):
        logs = {"loss": loss, "objective": j}
        logs.update({f"mi_R_V{i + 1}": t for i, t in enumerate(infomax)})
        if self.discriminator_active:
            d_objective, d_terms = d_out
            logs.update(self._pair_logs(d_terms))
            logs["discriminator_objective"] = d_objective
        return logs

    def _test_logs(self, data):
        x = self._check_data(data)
        self._check_static_batch(x)
        views = self.encoder(x, training=False)
        j, infomax = self._objective(views, training=False)
        logs = {"loss": -j, "objective": j}
        logs.update({f"mi_R_V{i + 1}": t for i, t in enumerate(infomax)})
        if self.discriminator_active:
            fits, terms = self._infomin_fit_terms(self._pool(views), training=False)
            logs.update(self._pair_logs(terms))
            logs["discriminator_objective"] = self._weighted_infomin(fits)
        return logs

    def _predict_outputs(self, data):
        # Prediction takes single images, also for a model trained on augmented pairs.
        x = self._check_data(data, single=True)
        if self._feature_layers is None:
            return self(x, training=False)
        feats = self.features(x, training=False)
        missing = [k for k in self._feature_layers if k not in feats]
        if missing:
            raise ValueError(
                f"The feature layer(s) {missing} are registered, but "
                f"{type(self).__name__}.features() does not compute them; it computes "
                f"{sorted(feats)}."
            )
        return {k: feats[k] for k in self._feature_layers}

    def _update_trackers(self, logs):
        for name, value in logs.items():
            self._trackers[name].update_state(value)
        results = {name: t.result() for name, t in self._trackers.items()}
        if self._multi_worker():
            # Keras reduces multi-worker logs with reduce("MEAN", axis=0), which needs a
            # batch axis: give each scalar one (the reduced value is a scalar again).
            results = {k: ops.reshape(v, (1,)) for k, v in results.items()}
        return results

    # ----------------------------------------------------------------------------------
    def load_own_variables(self, store):
        """Keras calls this on the model first when it loads a `.keras` or `.weights.h5`
        file: a file saved with the per-pair InfoMin layout (one critic layer per view pair)
        is migrated here to the batched layout (see `models/legacy.py`)."""
        super().load_own_variables(store)
        from keras_infobal.models import legacy

        legacy.stage(self, store)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "num_views": self.num_views,
            "split": self.split,
            "aggregator": self.aggregator_mode,
            "critic": self.critic,
            "infomin_critic": self.infomin_critic,
            "critic_units": self.critic_units,
            "infomin_units": self.infomin_units,
            "scorer": self.scorer,
            "shared_critic": self.shared_critic,
            "output_dim": self.output_dim,
            "fc_units": self.fc_units,
            "filters": list(self.filters),
            "conv_filters": self.conv_filters,
            "infomin_weight": self.infomin_weight,
            "view_weights": self.view_weights,
            "correlation_weights": self.correlation_weights,
            "discriminator_steps": self.discriminator_steps,
            "view_pooling": self.view_pooling,
            "track_view_mi": self.track_view_mi,
            "input_shape": None if self.image_shape is None else list(self.image_shape),
            "cross_replica_negatives": self.cross_replica_negatives,
            "synchronized_batch_norm": self.synchronized_batch_norm,
            "augmented_pairs": self.augmented_pairs,
            "score_clip": self.score_clip,
            # Layer instances given by the user are saved whole; the defaults are rebuilt
            # from the size arguments above.
            **({"encoder": keras.saving.serialize_keras_object(self.encoder)}
               if self._custom_encoder else {}),
            **({"aggregator": keras.saving.serialize_keras_object(self.aggregator)}
               if self._custom_aggregator else {}),
        }


def _is_tf_dataset(x):
    # Without importing TensorFlow: a tf.data dataset can only exist if it was imported.
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(x, tf.data.Dataset)


def _portable_optimizer_config(config):
    """An optimizer's config that loads on every backend.

    On PyTorch, Keras saves e.g. Adam as `keras.src.backend.torch.optimizers.torch_adam.Adam`,
    which other backends cannot run: name the public `keras.optimizers` class instead.
    """
    module = str(config.get("module", "")) if isinstance(config, dict) else ""
    if (module.startswith("keras.src.backend.")
            and hasattr(keras.optimizers, str(config.get("class_name")))):
        config = {**config, "module": "keras.optimizers"}
    return config
