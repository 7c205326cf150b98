"""The InfoBal model: multi-view InfoMax against InfoMin, trained adversarially."""

import itertools
import os

import keras
import numpy as np
from keras import ops

from keras_infobal.layers.critics import CRITICS, INFOMIN_CRITICS, get_critic, get_infomin_critic
from keras_infobal.layers.view_aggregator import ViewAggregator
from keras_infobal.layers.view_encoder import ViewEncoder

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
class InfoBal(keras.Model):
    """InfoBal: maximize I(R; V_i) for each view, minimize I(V_i; V_j) between views.

    The encoder, aggregator and InfoMax critics maximize
    `J = sum_i alpha_i I_T(R; V_i) - lambda * sum_{i<j} beta_ij I_U(V_i; V_j)`;
    the InfoMin discriminators U maximize `sum_{i<j} beta_ij I_U(V_i; V_j)`. Each batch runs
    `discriminator_steps` discriminator updates, then one encoder update, each with its own
    optimizer. `infomin_weight=0` is the DIM (global/local) baseline: no discriminator runs.

    Args:
        num_views: M. `split`: how the local map is split ("rows", "columns", "grid",
            "separate"); M=2 rows is the note's top/bottom setting, M=1 is plain DIM(L).
        aggregator: "concat", "mean" or "attention" (see `ViewAggregator`).
        critic: InfoMax estimator, "jsd", "dv", "infonce" or "nwj".
        infomin_critic: InfoMin estimator; defaults to `critic`. A lower-bound critic
            ("jsd", "dv", "infonce", "nwj") is trained adversarially (it maximizes its
            estimate); "club" / "club_sampled" use the CLUB upper bound (`layers.CLUB`):
            its q(v_j | v_i) is fitted by maximum likelihood in the discriminator step and
            the encoder minimizes the bound (the note's "minimize the upper bound" route).
        critic_units: width of the critics' encodings.
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
        cross_replica_negatives: under tf.distribute, score each replica's anchors against
            the images of all replicas (all-gather), as one device with the global batch
            would; otherwise negatives come from the replica's own batch.
        synchronized_batch_norm: BatchNorm statistics over the global batch under
            tf.distribute (what one device with the global batch computes).
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        infomin_critic = critic if infomin_critic is None else infomin_critic
        if str(critic).lower() not in CRITICS:
            raise ValueError(f"`critic` must be one of {sorted(CRITICS)}; got {critic!r}.")
        if str(infomin_critic).lower() not in INFOMIN_CRITICS:
            raise ValueError(
                f"`infomin_critic` must be one of {list(INFOMIN_CRITICS)} (a lower-bound "
                f"critic trained adversarially, or the CLUB upper bound); got "
                f"{infomin_critic!r}."
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
        self.cross_replica_negatives = bool(cross_replica_negatives)
        self.augmented_pairs = bool(augmented_pairs)
        self.score_clip = None if score_clip is None else float(score_clip)
        self.synchronized_batch_norm = bool(synchronized_batch_norm)
        self.encoder = ViewEncoder(num_views=num_views, split=split, filters=filters,
                                   synchronized_batch_norm=self.synchronized_batch_norm,
                                   name="view_encoder")
        alpha, beta = _validate_weights(view_weights, correlation_weights, num_views)
        self.num_views = num_views
        self.split = split
        self.aggregator_mode = aggregator
        self.critic = critic
        self.infomin_critic = infomin_critic
        self.critic_units = critic_units
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
        self.infomin_critics = [
            get_infomin_critic(infomin_critic, units=critic_units, score_clip=score_clip,
                               name=f"infomin_critic_{i + 1}_{j + 1}")
            for i, j in self.pairs
        ]
        self.discriminator_optimizer = None
        names = ["loss", "objective"]
        names += [f"mi_R_V{i + 1}" for i in range(num_views)]
        if self.discriminator_active:
            names += [f"mi_V{i + 1}_V{j + 1}" for i, j in self.pairs]
            names += ["discriminator_objective"]
        self._trackers = {n: keras.metrics.Mean(name=n) for n in names}
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
        out = []
        for critic in self.infomin_critics:
            out += critic.trainable_variables
        return out

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.encoder.build(input_shape)
        views_shape = self.encoder.compute_output_shape(input_shape)
        self.aggregator.build(views_shape)
        b, _, vh, vw, c = views_shape
        r_shape = (b, self.output_dim)
        for critic in self.infomax_critics:
            critic.build([r_shape, (b, vh * vw, c)])
        pooled = (b, c if self.view_pooling == "mean" else vh * vw * c)
        for critic in self.infomin_critics:
            critic.build([pooled, pooled])
        self.built = True
        if self.compiled:
            self._build_optimizers()

    def call(self, images, training=None):
        return self.aggregator(self.encoder(images, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def features(self, images, training=False):
        """The evaluation features of a batch: {"local", "conv", "fc", "R"}."""
        views = self.encoder(images, training=training)
        feats = self.aggregator.features(views, training=training)
        feats["local"] = ops.reshape(views, (ops.shape(views)[0], -1))
        return feats

    def extract_features(self, images, layers=("conv", "fc", "R"), batch_size=256, verbose=0):
        """Features of `images` (array or batched dataset) as numpy arrays, keyed by layer.

        `verbose=1` shows a progress bar.
        """
        import tensorflow as tf

        unknown = set(layers) - {"local", "conv", "fc", "R"}
        if unknown:
            raise ValueError(
                f"Unknown feature layers {sorted(unknown)}; choose from local, conv, fc, R."
            )
        if isinstance(images, tf.data.Dataset):
            ds = images
        else:
            ds = tf.data.Dataset.from_tensor_slices(images).batch(batch_size)

        @tf.function(autograph=False)
        def step(x):
            f = self.features(x, training=False)
            return {k: f[k] for k in layers}

        out = {k: [] for k in layers}
        n_batches = int(ds.cardinality())
        bar = keras.utils.Progbar(n_batches if n_batches > 0 else None) if verbose else None
        for batch in ds:
            if isinstance(batch, (tuple, list)):
                batch = batch[0]
            for k, v in step(batch).items():
                out[k].append(v.numpy())
            if bar is not None:
                bar.add(1)
        return {k: np.concatenate(v) for k, v in out.items()}

    def fit(self, x=None, *args, **kwargs):
        import tensorflow as tf

        # A tf.data dataset shuffles itself; Keras would warn on every fit that its own
        # default shuffle=True is ignored.
        # `shuffle` is fit's 9th parameter: only default it when not given positionally.
        if isinstance(x, tf.data.Dataset) and len(args) < 8:
            kwargs.setdefault("shuffle", False)
        return super().fit(x, *args, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Everything is built at construction and in compile(). Keras' symbolic build under
        # tf.distribute would all-reduce a data batch first, which fails for uint8 images
        # under MultiWorkerMirroredStrategy (collectives take no uint8).
        if self.built and self.optimizer is not None and self.optimizer.built:
            return
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

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
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)

    # ----------------------------------------------------------------------------------
    def _pool(self, views):
        if self.view_pooling == "mean":
            return ops.mean(views, axis=(2, 3))
        return ops.reshape(views, (ops.shape(views)[0], self.num_views, -1))

    def _gather_fn(self):
        """All-gathers local encodings across replicas, when asked and when distributed."""
        if not self.cross_replica_negatives:
            return None
        import tensorflow as tf

        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            return None

        def gather(encodings):
            offset = ctx.replica_id_in_sync_group * tf.shape(encodings)[0]
            return ctx.all_gather(encodings, axis=0), offset

        return gather

    def _infomin_terms(self, pooled, training):
        gather_fn = self._gather_fn()
        return [
            critic([pooled[:, i], pooled[:, j]], training=training, gather_fn=gather_fn)
            for critic, (i, j) in zip(self.infomin_critics, self.pairs)
        ]

    def _infomin_fit_terms(self, pooled, training):
        """Per pair: (what the discriminator step maximizes, the InfoMin estimate)."""
        gather_fn = self._gather_fn()
        return [
            critic.fit_and_estimate([pooled[:, i], pooled[:, j]], training=training,
                                    gather_fn=gather_fn)
            for critic, (i, j) in zip(self.infomin_critics, self.pairs)
        ]

    def _weighted_infomin(self, terms):
        return sum(float(self._beta[i, j]) * t for t, (i, j) in zip(terms, self.pairs))

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
        if not (isinstance(data, (tuple, list)) and len(data) == 2
                and not isinstance(data[0], dict) and not isinstance(data[1], dict)
                and len(data[0].shape) == len(data[1].shape) == 4):
            raise ValueError(
                "This model has augmented_pairs=True: each batch must be a pair (x1, x2) of "
                "two augmentations of the same images, both of shape (B, H, W, 3), e.g. from "
                "keras_infobal.datasets.make_dataset(images, pairs=True, ...)."
            )
        import tensorflow as tf

        x1, x2 = (self._check_images(x) for x in data)
        message = "The two augmentations of a pair must have the same batch size"
        if (x1.shape[0] is not None and x2.shape[0] is not None
                and x1.shape[0] != x2.shape[0]):
            raise ValueError(f"{message}; got {x1.shape[0]} and {x2.shape[0]}.")
        # Traced functions may relax the batch size to None: check it when it runs too.
        with tf.control_dependencies([
            tf.debugging.assert_equal(tf.shape(x1)[0], tf.shape(x2)[0], message=message)
        ]):
            # One encoder pass over both halves; _objective splits them again.
            return ops.concatenate([x1, x2], axis=0)

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

    def _replicas(self):
        import tensorflow as tf

        return tf.distribute.get_strategy().num_replicas_in_sync

    def _check_static_batch(self, x):
        """Raises when the known batch size is too small; returns the minimum size of x."""
        # With augmented pairs x stacks both halves: each half needs 2 images.
        need = 4 if self.augmented_pairs else 2
        if x.shape[0] is not None and x.shape[0] < need:
            raise ValueError(self._batch_message(x.shape[0] * 2 // need))
        return need

    def _assert_batch(self, x):
        import tensorflow as tf

        need = self._check_static_batch(x)
        return tf.debugging.assert_greater_equal(
            tf.shape(x)[0], need, message=self._batch_message("1")
        )

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

    def discriminator_step(self, views):
        """One update of the InfoMin discriminators on (fixed) views; returns their terms."""
        import tensorflow as tf

        self._require_discriminator_optimizer()
        pooled = tf.stop_gradient(self._pool(views))
        variables = self.discriminator_variables
        with tf.GradientTape() as tape:
            fits, terms = zip(*self._infomin_fit_terms(pooled, training=True))
            # Adversarial critics maximize their MI estimate; CLUB fits q by likelihood.
            loss = -self._weighted_infomin(fits) / self._replicas()
        grads = tape.gradient(loss, variables)
        self.discriminator_optimizer.apply(grads, variables)
        return self._weighted_infomin(fits), list(terms)

    def encoder_step(self, images, before_update=None):
        """One update of encoder, aggregator and InfoMax critics; returns (loss, J, InfoMax terms).

        `before_update(views)` runs on this step's views before the encoder's objective, off
        the gradient tape: `train_step` runs the discriminator steps there, so both updates
        share one encoder pass and the discriminators never change the encoder's gradient.
        """
        import tensorflow as tf

        variables = self.encoder_variables
        with tf.GradientTape() as tape:
            views = self.encoder(images, training=True)
            if before_update is not None:
                with tape.stop_recording():
                    before_update(views)
            j, infomax = self._objective(views, training=True)
            loss = -j + sum(self.losses) if self.losses else -j
            scaled = loss / self._replicas()
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        return loss, j, infomax

    def train_step(self, data):
        import tensorflow as tf

        x = self._check_data(data)
        with tf.control_dependencies([self._assert_batch(x)]):
            x = tf.identity(x)
        d_out = []
        before_update = None
        if self.discriminator_active:
            self._require_discriminator_optimizer()

            def before_update(views):
                for _ in range(self.discriminator_steps):
                    d_out[:] = self.discriminator_step(views)

        loss, j, infomax = self.encoder_step(x, before_update=before_update)
        logs = {"loss": loss, "objective": j}
        logs.update({f"mi_R_V{i + 1}": t for i, t in enumerate(infomax)})
        if self.discriminator_active:
            d_objective, d_terms = d_out
            logs.update({f"mi_V{i + 1}_V{k + 1}": t for t, (i, k) in zip(d_terms, self.pairs)})
            logs["discriminator_objective"] = d_objective
        return self._update_trackers(logs)

    def test_step(self, data):
        x = self._check_data(data)
        self._check_static_batch(x)
        views = self.encoder(x, training=False)
        j, infomax = self._objective(views, training=False)
        logs = {"loss": -j, "objective": j}
        logs.update({f"mi_R_V{i + 1}": t for i, t in enumerate(infomax)})
        if self.discriminator_active:
            fits, terms = zip(*self._infomin_fit_terms(self._pool(views), training=False))
            logs.update({f"mi_V{i + 1}_V{k + 1}": t for t, (i, k) in zip(terms, self.pairs)})
            logs["discriminator_objective"] = self._weighted_infomin(fits)
        return self._update_trackers(logs)

    def _update_trackers(self, logs):
        for name, value in logs.items():
            self._trackers[name].update_state(value)
        results = {name: t.result() for name, t in self._trackers.items()}
        if self._multi_worker():
            # Keras reduces multi-worker logs with reduce("MEAN", axis=0), which needs a
            # batch axis: give each scalar one (the reduced value is a scalar again).
            results = {k: ops.reshape(v, (1,)) for k, v in results.items()}
        return results

    @staticmethod
    def _multi_worker():
        import tensorflow as tf

        strategy = tf.distribute.get_strategy()
        return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
            strategy.extended._in_multi_worker_mode()
        )

    def predict_step(self, data):
        # Prediction takes single images, also for a model trained on augmented pairs.
        return self(self._check_data(data, single=True), training=False)

    # ----------------------------------------------------------------------------------
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
        }
