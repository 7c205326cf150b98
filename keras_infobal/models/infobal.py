"""The InfoBal pretraining task: objective terms composed over one backbone.

The task holds a backbone (`InfoBalBackbone`: the architecture) and a list of objective
terms (`keras_infobal.objectives`: DIM's InfoMax, InfoMin, CMC, CPC), each a small module
with its critics; the objective is written once, in `keras.ops`, in those modules. Each
backend's update steps are in `models/trainers/`, and call only this class's public methods.
"""

import copy
import inspect
import json
import os

import keras
from keras import ops

from keras_infobal.models import presets
from keras_infobal.models.batches import BatchInput
from keras_infobal.models.infobal_backbone import FeatureExtractor, InfoBalBackbone
from keras_infobal.models.keras_seams import KerasSeams
from keras_infobal.models.trainers import Trainer
from keras_infobal.models.two_optimizers import TwoOptimizers
from keras_infobal.objectives import CMC, CPC, InfoMax, InfoMin, ObjectiveTerm
from keras_infobal.objectives.base import Encodings, check_weight

PACKAGE = "keras_infobal"

TERMS = {cls.__name__: cls for cls in (InfoMax, InfoMin, CMC, CPC)}
# The shorthand arguments that build the default terms, InfoMax + InfoMin, and their defaults.
SHORTHAND = dict(critic="jsd", infomin_critic=None, critic_units=512, infomin_units=None,
                 infomin_weight=1.0, view_weights=None, correlation_weights=None,
                 local_scales=(1,), view_pooling="mean", score_clip="auto")


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


def default_objectives(critic="jsd", infomin_critic=None, critic_units=512, infomin_units=None,
                       infomin_weight=1.0, view_weights=None, correlation_weights=None,
                       local_scales=(1,), view_pooling="mean", score_clip="auto"):
    """InfoBal's two terms from its shorthand arguments: `[InfoMax, InfoMin]`."""
    infomax = InfoMax(critic=critic, critic_units=critic_units, view_weights=view_weights,
                      local_scales=local_scales, score_clip=score_clip)
    infomin = InfoMin(critic=infomax.estimator if infomin_critic is None else infomin_critic,
                      units=critic_units if infomin_units is None else infomin_units,
                      correlation_weights=correlation_weights, view_pooling=view_pooling,
                      score_clip=score_clip,
                      weight=check_weight(infomin_weight, "infomin_weight (lambda)"))
    return [infomax, infomin]


def _objective_terms(objectives):
    """The `objectives` argument as a list of `ObjectiveTerm`s (configs deserialized)."""
    if isinstance(objectives, (ObjectiveTerm, dict)):
        objectives = [objectives]
    if not isinstance(objectives, (list, tuple)) or not objectives:
        raise ValueError(
            "`objectives` must be a non-empty list of keras_infobal.objectives terms (e.g. "
            f"[InfoMax('infonce'), CMC()]); got {objectives!r}.")
    terms = []
    for term in objectives:
        if isinstance(term, dict):
            # Keras' deserialization consumes nested configs: work on a copy.
            # A term's class name alone ({"class_name": "CMC", "config": {...}}) is enough:
            # the package's terms are known by name.
            term = keras.saving.deserialize_keras_object(copy.deepcopy(term),
                                                         custom_objects=TERMS)
        if not isinstance(term, ObjectiveTerm):
            raise ValueError(
                "Every entry of `objectives` must be a keras_infobal.objectives term "
                f"(InfoMax, InfoMin, CMC, CPC, or a subclass of ObjectiveTerm); got "
                f"{type(term).__name__}.")
        terms.append(term)
    names = [t.name for t in terms]
    if len(set(names)) != len(names):
        raise ValueError(f"The objective terms need distinct names; got {names}.")
    return terms


@keras.saving.register_keras_serializable(package=PACKAGE)
class InfoBal(KerasSeams, BatchInput, TwoOptimizers, Trainer, FeatureExtractor, keras.Model):
    """InfoBal: maximize I(R; V_i) for each view, minimize I(V_i; V_j) between views.

    By default the backbone (encoder, aggregator) and the InfoMax critics maximize
    `J = sum_i alpha_i I_T(R; V_i) - lambda * sum_{i<j} beta_ij I_U(V_i; V_j)`;
    the InfoMin discriminators U maximize `sum_{i<j} beta_ij I_U(V_i; V_j)`. Each batch runs
    `discriminator_steps` discriminator updates, then one encoder update, each with its own
    optimizer. `infomin_weight` (lambda) takes any finite value: above 0 the views' MI is
    minimized (InfoBal), 0 is the DIM (global/local) baseline (no discriminator runs, unless
    `compile` is given a `discriminator_optimizer`: they then train as a monitor of
    I(V_i; V_j)), below 0 it is maximized (CMC's objective on InfoBal's critics; needs a
    lower-bound `infomin_critic`). It trains on the TensorFlow, JAX and PyTorch backends.

    `objectives` composes other objectives from the terms of `keras_infobal.objectives`
    (Tschannen et al., ICLR 2020: DIM, CMC and CPC as MI between views): J is the sum of
    each term's sign x weight x estimate; the shorthand arguments below then stay unset.

    Args:
        backbone: an `InfoBalBackbone` (the architecture: views, trunk, aggregator, image
            size); None builds the default one (DIM's CIFAR-10 encoder, 2 row views), sized
            from the data.
        objectives: None (the two terms the shorthand arguments describe), or a list of
            terms, e.g. `[InfoMax("infonce"), CMC(weight=0.5)]`, `[CPC()]`.
        critic: the InfoMax estimator, "jsd", "dv", "infonce", "nwj" (or one registered
            with `estimators.register_estimator`): one critic per view. Or an `MICritic`
            instance shared by all views, or a list of one `MICritic` per view.
        infomin_critic: the InfoMin estimator; defaults to `critic`'s. A lower-bound critic
            is trained adversarially (it maximizes its estimate); "club" / "club_sampled"
            use the CLUB upper bound, whose q(v_j | v_i) is fitted by maximum likelihood.
        critic_units: width of the named critics' encodings.
        infomin_units: width of the InfoMin discriminators (default `critic_units`).
        infomin_weight: lambda, any finite number (see above).
        view_weights: alpha, M non-negative weights (default all ones).
        correlation_weights: beta, a symmetric MxM non-negative matrix (default all ones).
        local_scales: AMDIM's multi-scale InfoMax: with `(1, 2, 4)` R is also scored against
            each view's locations pooled over 2x2 and 4x4 windows (`objectives.InfoMax`).
        view_pooling: how a view becomes the discriminators' input: "mean" over its
            locations or "flatten".
        score_clip: how the critics' scores are bounded: "auto" (default) soft-clips them to
            (-c, c) with c = ln(N) / 2 + 2 for N candidates; a number c clips at c; None
            leaves them raw (the note's setting).
        discriminator_steps: k, discriminator updates per encoder update.
        augmented_pairs: batches are pairs `(x1, x2)` of two augmentations of the same
            images (`datasets.make_dataset(..., pairs=True)`); R of each is scored against the
            local views of the other (AMDIM's cross-view InfoMax). Prediction and features
            still take single images.
        augmentation: None (batches arrive augmented, e.g. from `datasets.make_dataset`), or
            an augmentation run inside the train step, on the device: a dict of
            `augmentation.augmentation_pipeline` options (e.g. `{"color_jitter": 0.5,
            "seed": 0}`) or any Keras layer called with `training=True`. Batches are then
            single images; with `augmented_pairs=True` the layer draws both augmentations.

    ```python
    model = InfoBal(InfoBalBackbone(num_views=2, split="rows"), critic="jsd",
                    infomin_weight=1.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  discriminator_optimizer=keras.optimizers.Adam(1e-4))
    model.fit(uint8_image_dataset, epochs=10)   # any image size the backbone allows
    r = model.predict(images)                   # the global representation R
    feats = model.extract_features(images)      # {"conv", "fc", "R"}
    cmc = InfoBal(objectives=[objectives.CMC()])  # another objective, the same workflow
    ```
    """

    def __init__(self, backbone=None, objectives=None, critic="jsd", infomin_critic=None,
                 critic_units=512, infomin_units=None, infomin_weight=1.0, view_weights=None,
                 correlation_weights=None, local_scales=(1,), discriminator_steps=1,
                 view_pooling="mean", score_clip="auto", augmented_pairs=False,
                 augmentation=None, **kwargs):
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
        shorthand = dict(critic=critic, infomin_critic=infomin_critic,
                         critic_units=critic_units, infomin_units=infomin_units,
                         infomin_weight=infomin_weight, view_weights=view_weights,
                         correlation_weights=correlation_weights,
                         local_scales=local_scales, view_pooling=view_pooling,
                         score_clip=score_clip)
        if objectives is None:
            terms = default_objectives(**shorthand)
            # What the config saves: critic instances serialized (an attribute holding a
            # layer would be tracked, and saved, a second time).
            self.shorthand = dict(shorthand, critic=terms[0].critic_spec,
                                  local_scales=list(terms[0].local_scales))
        else:
            given = sorted(k for k, v in shorthand.items() if _differs(v, SHORTHAND[k]))
            if given:
                raise ValueError(
                    f"Pass either `objectives` or the shorthand arguments of the default "
                    f"terms, not both; got objectives and {given}. Set them on the terms "
                    "instead, e.g. objectives=[InfoMax(critic='infonce'), InfoMin(weight=0.1)].")
            self.shorthand = None
            terms = _objective_terms(objectives)
        if not isinstance(discriminator_steps, int) or discriminator_steps < 1:
            raise ValueError(
                f"`discriminator_steps` must be a positive integer; got {discriminator_steps!r}."
            )
        for term in terms:
            term.check_views(backbone.num_views, backbone.split)
        self.backbone = backbone
        self.objectives = terms
        self.infomin_weight = sum(t.weight for t in terms if isinstance(t, InfoMin))
        self.discriminator_steps = discriminator_steps
        self.augmented_pairs = bool(augmented_pairs)
        self.augmentation, self._augmentation_spec = _device_augmentation(augmentation)
        self.discriminator_optimizer = None
        self.discriminator_lr_ratio = None
        self.cross_replica_negatives = False
        self.synchronized_batch_norm = False
        # Every metric exists from the start, so saved files have one layout; a step logs
        # those of the terms it computes.
        names = ["loss", "objective"]
        for term in terms:
            clash = set(names) & set(term.log_names(backbone.num_views))
            if clash:
                raise ValueError(f"Two objective terms log {sorted(clash)}: rename one.")
            names += term.log_names(backbone.num_views)
        self._trackers = [keras.metrics.Mean(name=n) for n in names]
        if backbone.built:
            # All variables exist before any training function is traced.
            self.build((None,) + tuple(backbone.image_shape))

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
    def metrics(self):
        return list(self._trackers)

    @property
    def discriminator_active(self):
        """Whether the adversarial terms' critics train: one has weight != 0 (lambda), or a
        `discriminator_optimizer` was compiled (the monitor of the DIM baseline)."""
        # log_names, not the critics: it is known before the terms build (no pairs, no logs).
        adversarial = [t for t in self.objectives
                       if t.adversarial and t.log_names(self.num_views)]
        return any(t.weight != 0 for t in adversarial) or bool(
            adversarial and self.discriminator_optimizer is not None)

    @property
    def encoder_variables(self):
        """Variables the encoder step trains: the backbone (its aggregator only when a term
        scores R), the non-adversarial terms' critics."""
        if any(term.scores_global for term in self.objectives):
            out = list(self.backbone.trainable_variables)
        else:
            out = list(self.backbone.encoder.trainable_variables)
        for term in self.objectives:
            out += term.encoder_variables
        return out

    @property
    def discriminator_variables(self):
        """Variables the discriminator step trains: the adversarial terms' critics."""
        return [v for term in self.objectives for v in term.discriminator_variables]

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.backbone.check_images(input_shape)
        if not self.backbone.built:
            self.backbone.build(input_shape)
        views_shape = self.backbone.encoder.compute_output_shape(input_shape)
        for term in self.objectives:
            if not term.built:
                term.build((views_shape, (views_shape[0], self.backbone.output_dim)))
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

    # -- what the update steps compute, from the terms -----------------------------------------
    def encoder_loss(self, views, training=True, gather_fn=None):
        """(loss, logs) of the encoder's update on views the encoder computed: loss = -J
        (plus the layers' added losses), logs = {"loss", "objective", each term's logs}."""
        r = self.backbone.aggregator(views, training=training)
        enc = Encodings(views, r, self.augmented_pairs, training, gather_fn)
        j, logs = 0.0, {}
        for term in self.objectives:
            if term.weight == 0:
                continue  # e.g. InfoMin at lambda = 0: the DIM baseline
            value, term_logs = term.estimate(enc)
            j = j + term.coefficient * value
            logs.update(term_logs)
        loss = -j + sum(self.losses) if self.losses else -j
        return loss, {"loss": loss, "objective": j, **logs}

    def discriminator_objective(self, views, training=True, gather_fn=None):
        """(what the adversarial terms' critics maximize, their logs) on views that carry no
        gradient to the encoder."""
        enc = Encodings(views, None, self.augmented_pairs, training, gather_fn)
        fit, logs = 0.0, {}
        for term in self.objectives:
            if term.adversarial and term.critic_layers():
                value, term_logs = term.discriminator_objective(enc)
                fit = fit + value
                logs.update(term_logs)
        return fit, logs

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

    # -- config and presets ----------------------------------------------------------------------
    def objective_config(self):
        """The task's arguments without the backbone (what a preset's task.json holds): the
        shorthand arguments, or the serialized `objectives`."""
        if self.shorthand is not None:
            infomax, infomin = self.objectives
            terms = dict(self.shorthand, infomin_critic=infomin.critic,
                         infomin_weight=infomin.weight, score_clip=infomax.score_clip)
        else:
            terms = {"objectives": [keras.saving.serialize_keras_object(t)
                                    for t in self.objectives]}
        return {**terms, "discriminator_steps": self.discriminator_steps,
                "augmented_pairs": self.augmented_pairs,
                "augmentation": self._augmentation_spec}

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                **self.objective_config()}

    @classmethod
    def from_preset(cls, preset, **overrides):
        """The pretraining task of a preset (name or folder), ready to `compile` and `fit` on
        your own unlabeled images: its backbone, its objective (`task.json`) with `overrides`
        over it, and each term's critics where the preset ships them for a term of the same
        kind and width (others, e.g. the critics of scales the preset lacks, start fresh,
        with a warning).

        ```python
        model = InfoBal.from_preset("dim_pairs_long", infomin_weight=0.03)
        model = InfoBal.from_preset("dim_pairs", local_scales=(1, 2, 4))
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
                "For another architecture, build InfoBal(backbone=InfoBalBackbone(...)) "
                "instead."
            )
        backbone = InfoBalBackbone.from_preset(folder)
        task_path = os.path.join(folder, presets.TASK_FILE)
        saved = {}
        if os.path.exists(task_path):
            with open(task_path) as f:
                saved = json.load(f)
        if "objectives" in overrides:  # the preset's shorthand gives way to the terms
            saved = {k: v for k, v in saved.items() if k not in SHORTHAND}
        elif set(overrides) & set(SHORTHAND):
            saved.pop("objectives", None)
        model = cls(backbone=backbone, **{**saved, **overrides})
        critics_path = os.path.join(folder, presets.CRITICS_FILE)
        shipped = presets.layer_names(critics_path) if os.path.exists(critics_path) else set()
        saved_terms = _saved_term_configs(saved)
        layers, fresh = [], []
        for term in model.objectives:
            same = [c for c in saved_terms
                    if c["class_name"] == type(term).__name__ and term.same_critics(c["config"])]
            for layer in term.critic_layers():
                if same and layer.name in shipped:
                    layers.append(layer)
                else:
                    fresh.append(layer.name)
        presets.load_layers(critics_path, layers) if layers else None
        if fresh:
            import warnings

            why = ("this preset ships its backbone only" if not shipped else
                   "the preset ships none of this kind, width or scale")
            warnings.warn(f"InfoBal.from_preset({preset!r}): the critics {fresh} start from a "
                          f"random initialization ({why}).", stacklevel=2)
        return model

    def save_to_preset(self, folder, **metadata):
        """Writes the backbone's preset files, `task.json` (the objective) and
        `critics.weights.h5` (every term's critics, by name), then `metadata.json`."""
        self.backbone.save_to_preset(folder)
        with open(os.path.join(folder, presets.TASK_FILE), "w") as f:
            json.dump(self.objective_config(), f, indent=2)
            f.write("\n")
        presets.save_layers(os.path.join(folder, presets.CRITICS_FILE),
                            [layer for term in self.objectives for layer in term.critic_layers()])
        presets.write_metadata(folder, **metadata)
        return folder


def _differs(value, default):
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return list(value) != list(default)
    return value is not default and value != default


def _saved_term_configs(saved):
    """A task.json's terms as [{"class_name", "config"}] (shorthand or `objectives`)."""
    if not saved:
        return []
    if "objectives" in saved:
        return [{"class_name": t["class_name"], "config": t["config"]}
                for t in saved["objectives"]]
    shorthand = {k: saved.get(k, v) for k, v in SHORTHAND.items()}
    return [{"class_name": type(t).__name__, "config": t.get_config()}
            for t in default_objectives(**shorthand)]


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


