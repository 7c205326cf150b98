"""The InfoBal pretraining task: multi-view InfoMax against InfoMin, trained adversarially.

The task holds a backbone (`InfoBalBackbone`: the architecture) and the objective (critics,
lambda, alpha, beta, k, pooling, score clip). The objective is written once here in
`keras.ops`; each backend's two update steps are in `models/trainers/`.
"""

import copy
import inspect
import itertools
import numbers
import json
import os

import keras
import numpy as np
from keras import ops

from keras_infobal.layers.critics import (
    MICritic,
    check_score_clip,
    critic_names,
    get_critic,
    get_pair_critics,
    infomin_critic_names,
    UPPER_BOUNDS,
)
from keras_infobal.models import presets
from keras_infobal.models.infobal_backbone import (
    FeatureExtractor,
    InfoBalBackbone,
    is_tf_dataset,
)
from keras_infobal.models.keras_seams import KerasSeams, all_layers
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


def _infomax_critics(critic, num_views, critic_units, score_clip):
    """(estimator name, the InfoMax critic layers) from InfoBal's `critic` argument."""
    if isinstance(critic, dict) or (isinstance(critic, list) and critic
                                    and isinstance(critic[0], dict)):
        critic = keras.saving.deserialize_keras_object(copy.deepcopy(critic))
    if isinstance(critic, MICritic):
        return critic.estimator, [critic]  # one critic shared by all views
    if isinstance(critic, (list, tuple)):
        if len(critic) != num_views or not all(isinstance(c, MICritic) for c in critic):
            raise ValueError(
                f"`critic` as a list must hold one MICritic per view ({num_views}); got "
                f"{[type(c).__name__ for c in critic]}."
            )
        names = {c.name for c in critic}
        if len(names) != len(critic):
            raise ValueError(f"The critics of a `critic` list need distinct names; got {names}.")
        return critic[0].estimator, list(critic)
    if str(critic).lower() not in critic_names():
        raise ValueError(
            f"`critic` must be one of {list(critic_names())} (or an estimator added with "
            "keras_infobal.estimators.register_estimator), an MICritic shared by all views, "
            f"or a list of one MICritic per view; got {critic!r}."
        )
    return critic, [get_critic(critic, units=critic_units, score_clip=score_clip,
                               name=f"infomax_critic_{i + 1}") for i in range(num_views)]


@keras.saving.register_keras_serializable(package=PACKAGE)
class InfoBal(KerasSeams, Trainer, FeatureExtractor, keras.Model):
    """InfoBal: maximize I(R; V_i) for each view, minimize I(V_i; V_j) between views.

    The backbone (encoder, aggregator) and the InfoMax critics maximize
    `J = sum_i alpha_i I_T(R; V_i) - lambda * sum_{i<j} beta_ij I_U(V_i; V_j)`;
    the InfoMin discriminators U maximize `sum_{i<j} beta_ij I_U(V_i; V_j)`. Each batch runs
    `discriminator_steps` discriminator updates, then one encoder update, each with its own
    optimizer. `infomin_weight=0` is the DIM (global/local) baseline: no discriminator runs,
    unless `compile` is given a `discriminator_optimizer`, when they train as a monitor of
    I(V_i; V_j) without changing the encoder's updates. It trains on the TensorFlow, JAX and
    PyTorch backends alike (`KERAS_BACKEND`).

    Args:
        backbone: an `InfoBalBackbone` (the architecture: views, trunk, aggregator, image
            size); None builds the default one (DIM's CIFAR-10 encoder, 2 row views), sized
            from the data.
        critic: the InfoMax estimator, "jsd", "dv", "infonce", "nwj" (or one registered
            with `estimators.register_estimator`): one critic per view. Or an `MICritic`
            instance shared by all views, or a list of one `MICritic` per view (e.g.
            `scorer="concat"`).
        infomin_critic: the InfoMin estimator; defaults to `critic`'s. A lower-bound critic
            is trained adversarially (it maximizes its estimate); "club" / "club_sampled"
            use the CLUB upper bound, whose q(v_j | v_i) is fitted by maximum likelihood. All
            M(M-1)/2 pair discriminators live in one batched layer, `model.infomin_critics`.
        critic_units: width of the named critics' encodings.
        infomin_units: width of the InfoMin discriminators (default `critic_units`); they
            cost about `M(M-1)/2 * 2 * (2 D + units) * units` multiply-adds per image and pass.
        infomin_weight: lambda, the weight of the InfoMin term, any finite number: above 0
            the views' MI is minimized (InfoBal), 0 is DIM, below 0 it is maximized: the
            encoder then raises the discriminators' estimate of I(V_i; V_j), which is CMC's
            objective (Tian et al., 2019: MI between views maximized) on InfoBal's critics.
            Lambda < 0 needs a lower-bound `infomin_critic` (CLUB's upper bound is refused).
        view_weights: alpha, M non-negative weights (default all ones).
        correlation_weights: beta, a symmetric MxM non-negative matrix (default all ones).
        discriminator_steps: k, discriminator updates per encoder update.
        view_pooling: how a view becomes the discriminator's input: "mean" over its
            locations or "flatten".
        score_clip: how the critics' scores are bounded: "auto" (default) soft-clips them to
            (-c, c) with c = ln(N) / 2 + 2 for N candidates (N = the batch), so every MI
            estimate stays within ln(N) + 5 nats of zero with any backbone; a number c clips
            at c (the dim_pairs recipes use 20); None leaves them raw (the note's setting).
        augmented_pairs: batches are pairs `(x1, x2)` of two augmentations of the same
            images (`datasets.make_dataset(..., pairs=True)`); R of each is scored against the
            local views of the other (AMDIM's cross-view InfoMax). Prediction and features
            still take single images.
        augmentation: None (default: batches arrive augmented, e.g. from
            `datasets.make_dataset`, whose `tf.data` pipeline runs on the CPU), or an
            augmentation run inside the train step, on the device, on backend tensors: a
            dict of `augmentation.augmentation_pipeline` options (e.g. `{"color_jitter": 0.5,
            "grayscale": 0.2, "seed": 0}`) or any Keras layer called with `training=True`.
            Batches are then single images (uint8 or float in [0, 255]); with
            `augmented_pairs=True` the layer draws both augmentations of each image.
            `evaluate` scores the objective on the same draws; `predict` and features take
            the images as they are.
        Multi-scale InfoMax (AMDIM's) comes from the backbone: with
        `InfoBalBackbone(local_scales=(1, 2, 4))` R is also scored against each view's
        pooled locations, one critic per view and pooled scale (`scale_critics`), each
        view's term the mean over its scales.

    ```python
    model = InfoBal(InfoBalBackbone(num_views=2, split="rows"), critic="jsd",
                    infomin_weight=1.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  discriminator_optimizer=keras.optimizers.Adam(1e-4))
    model.fit(uint8_image_dataset, epochs=10)   # any image size the backbone allows
    r = model.predict(images)                   # the global representation R
    feats = model.extract_features(images)      # {"conv", "fc", "R"}
    ```
    """

    def __init__(self, backbone=None, critic="jsd", infomin_critic=None, critic_units=512,
                 infomin_units=None, infomin_weight=1.0, view_weights=None,
                 correlation_weights=None, discriminator_steps=1, view_pooling="mean",
                 score_clip="auto", augmented_pairs=False, augmentation=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            # Keras' deserialization consumes nested configs: work on a copy.
            backbone = keras.saving.deserialize_keras_object(copy.deepcopy(backbone))
        if backbone is None:
            backbone = InfoBalBackbone(name="backbone")
        if not isinstance(backbone, InfoBalBackbone):
            raise ValueError(
                "`backbone` must be a keras_infobal.InfoBalBackbone (wrap your own network "
                "with InfoBalBackbone(trunk=...)); got "
                f"{type(backbone).__name__}."
            )
        num_views = backbone.num_views
        if not isinstance(critic_units, int) or critic_units < 1:
            raise ValueError(f"`critic_units` must be a positive integer; got {critic_units!r}.")
        if infomin_units is not None and (isinstance(infomin_units, bool)
                                          or not isinstance(infomin_units, int)
                                          or infomin_units < 1):
            raise ValueError(
                "`infomin_units` must be None (the critics' `critic_units`) or a positive "
                f"integer; got {infomin_units!r}."
            )
        if (isinstance(infomin_weight, bool) or not isinstance(infomin_weight, numbers.Real)
                or not np.isfinite(infomin_weight)):
            raise ValueError(
                "`infomin_weight` (lambda) must be a finite number (> 0: InfoBal, 0: the DIM "
                f"baseline, < 0: the views' MI maximized, CMC); got {infomin_weight!r}."
            )
        if not isinstance(discriminator_steps, int) or discriminator_steps < 1:
            raise ValueError(
                f"`discriminator_steps` must be a positive integer; got {discriminator_steps!r}."
            )
        if view_pooling not in ("mean", "flatten"):
            raise ValueError(f"`view_pooling` must be 'mean' or 'flatten'; got {view_pooling!r}.")
        self.backbone = backbone
        self.score_clip = check_score_clip(score_clip)
        estimator, self.infomax_critics = _infomax_critics(critic, num_views, critic_units,
                                                           self.score_clip)
        if self.local_scales != (1,) and not isinstance(critic, str):
            raise ValueError(
                "A backbone with `local_scales` other than (1,) needs a named `critic` (e.g. "
                "'infonce'): each scale gets critics of its own, built like the named ones; "
                f"got a critic instance {type(critic).__name__}.")
        # The critics of the pooled scales, view-major (`_scale_critic(i, k)` reads them).
        self.scale_critics = [
            get_critic(estimator, units=critic_units, score_clip=self.score_clip,
                       name=f"infomax_critic_{i + 1}_pool{size}")
            for i in range(num_views) for size in backbone.pooled_scales]
        self._critic_spec = (critic if isinstance(critic, str)
                             else keras.saving.serialize_keras_object(critic))
        infomin_critic = estimator if infomin_critic is None else infomin_critic
        if infomin_weight < 0 and str(infomin_critic).lower() in UPPER_BOUNDS:
            raise ValueError(
                f"infomin_weight={infomin_weight} < 0 maximizes the views' MI, but "
                f"`infomin_critic` {infomin_critic!r} is the CLUB upper bound, which an encoder "
                "can raise without sharing information. Use a lower-bound critic (e.g. "
                "infomin_critic='infonce', CMC's) with lambda < 0.")
        if str(infomin_critic).lower() not in infomin_critic_names():
            raise ValueError(
                f"`infomin_critic` must be one of {list(infomin_critic_names())} (a lower-bound "
                f"critic trained adversarially, or the CLUB upper bound); got "
                f"{infomin_critic!r}."
            )
        alpha, beta = _validate_weights(view_weights, correlation_weights, num_views)
        self.critic = estimator
        self.infomin_critic = infomin_critic
        self.critic_units = critic_units
        self.infomin_units = infomin_units
        self.infomin_weight = float(infomin_weight)
        self.view_weights = None if view_weights is None else alpha.tolist()
        self.correlation_weights = None if correlation_weights is None else beta.tolist()
        self._alpha, self._beta = alpha, beta
        self.discriminator_steps = discriminator_steps
        self.view_pooling = view_pooling
        self.augmented_pairs = bool(augmented_pairs)
        self.augmentation, self._augmentation_spec = _device_augmentation(augmentation)
        self.pairs = list(itertools.combinations(range(num_views), 2))
        # One layer holds the discriminators of all M(M-1)/2 pairs, their weights stacked on
        # a leading pair axis (layers/pair_critics.py); None with a single view.
        self.infomin_critics = get_pair_critics(
            infomin_critic, self.pairs,
            units=critic_units if infomin_units is None else infomin_units,
            score_clip=self.score_clip, name="infomin_critics") if self.pairs else None
        self._beta_pairs = np.array([self._beta[i, j] for i, j in self.pairs],
                                    dtype="float32")
        self.discriminator_optimizer = None
        self.discriminator_lr_ratio = None
        self.cross_replica_negatives = False
        self.synchronized_batch_norm = False
        # Every metric exists from the start, so saved files have one layout; train_step
        # logs those of the terms it computes.
        names = ["loss", "objective"] + [f"mi_R_V{i + 1}" for i in range(num_views)]
        if self.pairs:
            names += [f"mi_V{i + 1}_V{j + 1}" for i, j in self.pairs]
            names += ["discriminator_objective"]
        self._trackers = {n: keras.metrics.Mean(name=n) for n in names}
        if backbone.built:
            # All variables exist before any training function is traced.
            self.build((None,) + tuple(backbone.image_shape))

    # -- the architecture is the backbone's ------------------------------------------------
    # (Methods, not properties: Keras' saving walks properties, and would save these twice.)
    def _image_model(self):
        return self.backbone

    @property
    def num_views(self):
        return self.backbone.num_views

    @property
    def image_shape(self):
        return self.backbone.image_shape

    @property
    def local_scales(self):
        return self.backbone.local_scales

    @property
    def discriminator_active(self):
        """Whether the InfoMin discriminators train: lambda > 0, or a
        `discriminator_optimizer` was compiled (the monitor of the DIM baseline)."""
        if not self.pairs:
            return False
        return self.infomin_weight != 0 or self.discriminator_optimizer is not None

    @property
    def metrics(self):
        return list(self._trackers.values())

    @property
    def encoder_variables(self):
        """Variables the encoder step trains: backbone, InfoMax critics."""
        out = list(self.backbone.trainable_variables)
        for critic in self.infomax_critics + self.scale_critics:
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
        self.backbone.check_images(input_shape)
        if not self.backbone.built:
            self.backbone.build(input_shape)
        views_shape = self.backbone.encoder.compute_output_shape(input_shape)
        b, m, vh, vw, c = views_shape
        for critic in self.infomax_critics:
            if not critic.built:
                critic.build([(b, self.backbone.output_dim), (b, vh * vw, c)])
        for i in range(m):
            for k, size in enumerate(self.backbone.pooled_scales):
                critic = self._scale_critic(i, k)
                if not critic.built:
                    critic.build([(b, self.backbone.output_dim),
                                  (b, (vh - size + 1) * (vw - size + 1), c)])
        pooled = (b, m, c if self.view_pooling == "mean" else vh * vw * c)
        if self.infomin_critics is not None and not self.infomin_critics.built:
            self.infomin_critics.build(pooled)
        self.built = True
        if self.compiled:
            self._build_optimizers()

    def call(self, images, training=None):
        return self.backbone(images, training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.backbone.output_dim)

    def features(self, images, training=False):
        """The evaluation features of a batch: {"local", "conv", "fc", "R"}."""
        return self.backbone.features(images, training=training)

    def fit(self, x=None, *args, **kwargs):
        self._prepare_for(x)
        # A tf.data dataset shuffles itself; Keras would warn on every fit that its own
        # default shuffle=True is ignored.
        # `shuffle` is fit's 9th parameter: only default it when not given positionally.
        if is_tf_dataset(x) and len(args) < 8:
            kwargs.setdefault("shuffle", False)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        self._prepare_for(x)
        return super().evaluate(x, *args, **kwargs)

    def train_on_batch(self, x=None, *args, **kwargs):
        self._prepare_for(x)
        return super().train_on_batch(x, *args, **kwargs)

    def test_on_batch(self, x=None, *args, **kwargs):
        self._prepare_for(x)
        return super().test_on_batch(x, *args, **kwargs)

    # -- compile: both optimizers, and how replicas share the batch ----------------------
    def compile(self, optimizer="adam", discriminator_optimizer=None,
                discriminator_lr_ratio="auto", cross_replica_negatives=False,
                synchronized_batch_norm=False, auto_scale_loss=True, **kwargs):
        """Like `keras.Model.compile`, plus the InfoMin discriminators' own optimizer, how its
        learning rate follows the encoder's, and two `tf.distribute` options.

        Args:
            discriminator_optimizer: required when `infomin_weight != 0`; at lambda = 0 it
                makes the discriminators train as a monitor of I(V_i; V_j). Built here when
                the model is built, so the training function never creates variables while
                tracing (which `tf.distribute` requires).
            discriminator_lr_ratio: how Keras' learning-rate callbacks and schedules reach
                the discriminators. "auto" (default): when `discriminator_optimizer` has a
                constant learning rate, it follows the encoder optimizer's current rate
                (its schedule, `ReduceLROnPlateau`, `LearningRateScheduler`) at the ratio
                the two rates have here; a discriminator optimizer with a schedule of its
                own keeps it, and so does one beside an encoder rate of 0 (frozen). A positive number: the discriminators' rate is that number
                times the encoder's at every step. None: the two rates are independent.
            cross_replica_negatives: TensorFlow only: under tf.distribute, score each
                replica's anchors against the images of all replicas (all-gather), as one
                device with the global batch would.
            synchronized_batch_norm: TensorFlow only: every BatchNormalization of the
                model normalizes over the global batch under tf.distribute.
            auto_scale_loss: as in Keras: under the "mixed_float16" dtype policy, both
                optimizers are wrapped in a `keras.optimizers.LossScaleOptimizer` (dynamic
                loss scaling; a step whose gradients overflow is skipped and the scale
                halved).
        """
        for key in ("loss", "metrics"):
            if kwargs.get(key) is not None:
                raise ValueError(
                    f"InfoBal computes its own objective and metrics; do not pass `{key}` to "
                    "compile()."
                )
        self._check_backend_support(cross_replica_negatives, synchronized_batch_norm)
        super().compile(optimizer=optimizer, auto_scale_loss=auto_scale_loss, **kwargs)
        if discriminator_optimizer is not None:
            discriminator_optimizer = keras.optimizers.get(discriminator_optimizer)
            if discriminator_optimizer is self.optimizer or (
                    isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
                    and discriminator_optimizer is self.optimizer.inner_optimizer):
                raise ValueError(
                    "`discriminator_optimizer` must be a different optimizer instance from "
                    "`optimizer`: each update keeps its own state."
                )
            if (auto_scale_loss and self.dtype_policy.name == "mixed_float16"
                    and not isinstance(discriminator_optimizer,
                                       keras.optimizers.LossScaleOptimizer)):
                # What Keras' compile does for `optimizer`: float16 gradients underflow.
                discriminator_optimizer = keras.optimizers.LossScaleOptimizer(
                    discriminator_optimizer, name="discriminator_loss_scale_optimizer")
        self.discriminator_optimizer = discriminator_optimizer
        self.discriminator_lr_ratio = _discriminator_lr_ratio(
            discriminator_lr_ratio, self.optimizer, discriminator_optimizer)
        self.cross_replica_negatives = bool(cross_replica_negatives)
        self.synchronized_batch_norm = bool(synchronized_batch_norm)
        for layer in all_layers(self):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = self.synchronized_batch_norm
        if self.built:
            self._build_optimizers()

    def get_compile_config(self):
        config = super().get_compile_config()
        if config:  # Keras gives {} for an uncompiled model: nothing to add
            config = dict(config)
            config["discriminator_optimizer"] = (
                None if self.discriminator_optimizer is None
                else keras.saving.serialize_keras_object(self.discriminator_optimizer))
            # The resolved ratio: "auto" would be resolved again against rates that have
            # moved since (a schedule's step, a callback's change).
            config["discriminator_lr_ratio"] = self.discriminator_lr_ratio
            config["cross_replica_negatives"] = self.cross_replica_negatives
            config["synchronized_batch_norm"] = self.synchronized_batch_norm
        return config

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
        if keras.backend.backend() != "tensorflow":
            # tf.distribute options of a file saved on TensorFlow do nothing elsewhere.
            config["cross_replica_negatives"] = False
            config["synchronized_batch_norm"] = False
        self.compile(**config)

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

    def _build_optimizers(self):
        if not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        if self.discriminator_optimizer is not None and not self.discriminator_optimizer.built:
            self.discriminator_optimizer.build(self.discriminator_variables)

    # -- the objective, in keras.ops (what every backend's update steps call) ----------------
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

    def _scale_critic(self, i, k):
        """The critic of view i at the k-th pooled scale."""
        return self.scale_critics[i * len(self.backbone.pooled_scales) + k]

    def _infomax_terms(self, views, r, training):
        b, m, vh, vw, c = views.shape
        gather_fn = self._gather_fn()
        terms = []
        shared = len(self.infomax_critics) == 1
        for i in range(m):
            critic = self.infomax_critics[0 if shared else i]
            local = ops.reshape(views[:, i], (-1, vh * vw, c))
            scale_terms = [critic([r, local], training=training, gather_fn=gather_fn)]
            for k, size in enumerate(self.backbone.pooled_scales):
                # Pooled inside the view (valid padding): the scale never mixes two views.
                pooled = ops.average_pool(views[:, i], size, strides=1, padding="valid")
                n = (vh - size + 1) * (vw - size + 1)
                scale_terms.append(self._scale_critic(i, k)(
                    [r, ops.reshape(pooled, (-1, n, c))], training=training,
                    gather_fn=gather_fn))
            terms.append(scale_terms[0] if len(scale_terms) == 1
                         else sum(scale_terms) / float(len(scale_terms)))
        return terms

    def _objective(self, views, training):
        """J and its terms, on views computed by the encoder."""
        r = self.backbone.aggregator(views, training=training)
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
        if self.infomin_weight != 0 and self.pairs:
            infomin = self._infomin_terms(self._pool(views), training)
            j = j - self.infomin_weight * self._weighted_infomin(infomin)
        return j, infomax

    def augment_batch(self, images):
        """The batch the encoder trains on: `images` as they are, or, with `augmentation`,
        its draw on the device (two draws stacked, with `augmented_pairs`), in [0, 255]."""
        if self.augmentation is None:
            return images

        def draw():
            out = ops.cast(self.augmentation(images, training=True), "float32")
            return ops.clip(out, 0.0, 255.0)

        if self.augmented_pairs:
            return ops.concatenate([draw(), draw()], axis=0)
        return draw()

    # -- input checks, at the boundary ---------------------------------------------------------
    def _check_data(self, data, single=False):
        """The batch of images to encode; with augmented pairs (unless `single`), both
        halves stacked."""
        if self.augmented_pairs and not single and self.augmentation is None:
            return self._check_pair(data)
        if isinstance(data, (tuple, list)):
            x = data[0]
            second = data[1] if len(data) > 1 else None
            if (not single and second is not None and hasattr(second, "shape")
                    and len(second.shape) == 4):
                if self.augmentation is not None:
                    raise ValueError(
                        "This model augments its batches inside the train step "
                        "(`augmentation` is set), but the batch is a pair (x1, x2) of image "
                        "batches. Pass batches of single images (make_dataset(..., "
                        "pairs=False)), or build the task with augmentation=None.")
                raise ValueError(
                    "This model takes single images, but the batch is a pair (x1, x2) of image "
                    "batches (e.g. from make_dataset(..., pairs=True)). Build the task with "
                    "InfoBal(..., augmented_pairs=True) to train on augmented pairs, or make "
                    "the dataset with pairs=False."
                )
        else:
            x = data
        if isinstance(x, dict):
            raise ValueError("InfoBal takes a batch of images, not a dict of inputs.")
        return self._check_images(x)

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
        self.backbone.check_images(x.shape)
        return x

    def _check_static_batch(self, x):
        """Raises when the known batch size is too small; returns the minimum size of x."""
        # With augmented pairs x stacks both halves: each half needs 2 images.
        need = 4 if self.augmented_pairs and self.augmentation is None else 2
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

    # -- what the update steps compute ---------------------------------------------------------
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
        views = self.backbone.views(self.augment_batch(x), training=False)
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
        return self(self._check_data(data, single=True), training=False)

    def _update_trackers(self, logs):
        for name, value in logs.items():
            self._trackers[name].update_state(value)
        results = {name: self._trackers[name].result() for name in logs}
        if self._multi_worker():
            # Keras reduces multi-worker logs with reduce("MEAN", axis=0), which needs a
            # batch axis: give each scalar one (the reduced value is a scalar again).
            results = {k: ops.reshape(v, (1,)) for k, v in results.items()}
        return results

    # -- config and presets ----------------------------------------------------------------------
    def objective_config(self):
        """The task's arguments without the backbone (what a preset's task.json holds)."""
        return {
            "critic": self._critic_spec,
            "infomin_critic": self.infomin_critic,
            "critic_units": self.critic_units,
            "infomin_units": self.infomin_units,
            "infomin_weight": self.infomin_weight,
            "view_weights": self.view_weights,
            "correlation_weights": self.correlation_weights,
            "discriminator_steps": self.discriminator_steps,
            "view_pooling": self.view_pooling,
            "score_clip": self.score_clip,
            "augmented_pairs": self.augmented_pairs,
            "augmentation": self._augmentation_spec,
        }

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                **self.objective_config()}

    @classmethod
    def from_preset(cls, preset, backbone_overrides=None, **overrides):
        """The pretraining task of a preset (name or folder), ready to `compile` and `fit` on
        your own unlabeled images: its backbone (with `backbone_overrides`, see
        `InfoBalBackbone.from_preset`), its objective (`task.json`) with `overrides` over it,
        and its critics where the preset ships them and `overrides` keep their kind and
        width (others, and the critics of scales the preset lacks, start fresh, with a
        warning).

        ```python
        model = InfoBal.from_preset("dim_pairs_long", infomin_weight=0.03)
        model.compile(optimizer=keras.optimizers.Adam(1e-4),
                      discriminator_optimizer=keras.optimizers.Adam(1e-4))
        model.fit(kib.datasets.make_dataset(my_images, pairs=True, batch_size=64), epochs=5)
        ```
        """
        folder = presets.checked_folder(preset)
        allowed = set(inspect.signature(cls.__init__).parameters) - {"self", "backbone",
                                                                     "kwargs"}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise ValueError(
                f"`from_preset` takes objective overrides {sorted(allowed)}; got {unknown}. "
                "Architecture changes that keep the weights (e.g. local_scales) go in "
                "`backbone_overrides`; for another architecture, build "
                "InfoBal(backbone=InfoBalBackbone(...)) instead."
            )
        backbone = InfoBalBackbone.from_preset(folder, **(backbone_overrides or {}))
        task_path = os.path.join(folder, presets.TASK_FILE)
        saved = {}
        if os.path.exists(task_path):
            with open(task_path) as f:
                saved = json.load(f)
        model = cls(backbone=backbone, **{**saved, **overrides})
        fresh = []
        critics_path = os.path.join(folder, presets.CRITICS_FILE)
        if saved and os.path.exists(critics_path):
            now = model.objective_config()
            layers = []
            if all(now[k] == saved.get(k) for k in ("critic", "critic_units", "score_clip")):
                layers += model.infomax_critics
                # A preset continued at more local scales has no critics for the new ones.
                shipped = presets.layer_names(critics_path)
                layers += [c for c in model.scale_critics if c.name in shipped]
                new_scales = [c.name for c in model.scale_critics if c.name not in shipped]
                if new_scales:
                    fresh.append(f"the critics of scales the preset lacks ({new_scales})")
            else:
                fresh.append("InfoMax critics")
            if model.infomin_critics is not None:
                if (now["infomin_critic"], _infomin_width(now), now["score_clip"]) == (
                        saved.get("infomin_critic"), _infomin_width(saved),
                        saved.get("score_clip")):
                    layers.append(model.infomin_critics)
                else:
                    fresh.append("InfoMin critics")
            presets.load_layers(critics_path, layers)
        else:
            fresh.append("critics (this preset ships its backbone only)")
        if fresh:
            import warnings

            warnings.warn(f"InfoBal.from_preset({preset!r}): {', '.join(fresh)} start from a "
                          "random initialization.", stacklevel=2)
        return model

    def save_to_preset(self, folder, **metadata):
        """Writes the backbone's preset files, `task.json` (the objective) and
        `critics.weights.h5` (InfoMax and InfoMin critics), then `metadata.json`."""
        self.backbone.save_to_preset(folder)
        with open(os.path.join(folder, presets.TASK_FILE), "w") as f:
            json.dump(self.objective_config(), f, indent=2)
            f.write("\n")
        layers = list(self.infomax_critics) + list(self.scale_critics)
        if self.infomin_critics is not None:
            layers.append(self.infomin_critics)
        presets.save_layers(os.path.join(folder, presets.CRITICS_FILE), layers)
        presets.write_metadata(folder, **metadata)
        return folder


def _device_augmentation(augmentation):
    """(the augmentation layer or None, what the config saves) from InfoBal's
    `augmentation` argument."""
    if augmentation is None:
        return None, None
    if isinstance(augmentation, dict) and "class_name" in augmentation:
        # A saved layer: Keras' deserialization consumes nested configs, so a copy.
        augmentation = keras.saving.deserialize_keras_object(copy.deepcopy(augmentation))
    if isinstance(augmentation, dict):
        from keras_infobal.augmentation import augmentation_pipeline

        known = set(inspect.signature(augmentation_pipeline).parameters) - {"name"}
        unknown = sorted(set(augmentation) - known)
        if unknown:
            raise ValueError(
                f"`augmentation` options {unknown} are not augmentation_pipeline's; it takes "
                f"{sorted(known)}.")
        return (augmentation_pipeline(**augmentation, name="device_augmentation"),
                dict(augmentation))
    if isinstance(augmentation, keras.layers.Layer):
        return augmentation, keras.saving.serialize_keras_object(augmentation)
    raise ValueError(
        "`augmentation` must be None, a dict of keras_infobal.augmentation."
        "augmentation_pipeline options (e.g. {'color_jitter': 0.5, 'seed': 0}) or a Keras "
        f"layer; got {type(augmentation).__name__}.")


def _constant_rate(optimizer):
    """The optimizer's learning rate as a float when it is a constant (a variable that
    callbacks set), else None (a schedule or a callable)."""
    rate = optimizer.learning_rate
    return _as_float(rate) if isinstance(rate, keras.Variable) else None


def _as_float(value):
    # float() of the variable or tensor itself: through numpy, a Keras Variable warns on
    # every backend (its __array__ takes no `copy`), and so do some backends' tensors.
    try:
        return float(value)
    except TypeError:  # a tf.distribute MirroredVariable has no __float__
        return float(value.numpy())


def _discriminator_lr_ratio(ratio, optimizer, discriminator_optimizer):
    """`compile`'s `discriminator_lr_ratio` resolved: a float, or None (independent)."""
    if discriminator_optimizer is None or ratio is None:
        return None
    own = _constant_rate(discriminator_optimizer)
    if isinstance(ratio, str) and ratio == "auto":
        if own is None:
            return None  # the discriminators follow their own schedule
        encoder_rate = _as_float(optimizer.learning_rate)
        if not encoder_rate > 0:
            return None  # a frozen encoder (rate 0): no ratio to keep; the rates are apart
        return own / encoder_rate
    if (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
            or not np.isfinite(ratio) or ratio <= 0):
        raise ValueError(
            "`discriminator_lr_ratio` must be 'auto', a positive finite number (the "
            "discriminators' rate over the encoder's) or None (independent rates); got "
            f"{ratio!r}.")
    if own is None:
        raise ValueError(
            f"discriminator_lr_ratio={ratio} sets the discriminators' rate from the encoder's, "
            "but `discriminator_optimizer` has a learning-rate schedule of its own. Give it a "
            "constant learning rate, or pass discriminator_lr_ratio=None to keep its schedule.")
    return float(ratio)


def _infomin_width(objective):
    """The InfoMin discriminators' width of an objective config (infomin_units, or the
    critics' critic_units)."""
    if objective.get("infomin_units") is None:
        return objective.get("critic_units")
    return objective["infomin_units"]


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
