"""keras-tuner search over InfoBal's knobs, scored by linear-probe accuracy (maximized).

```python
import keras_tuner as kt
from keras_infobal.tuning import InfoBalHyperModel
hypermodel = InfoBalHyperModel(train=(x_tr, y_tr), validation=(x_val, y_val), epochs=5)
tuner = kt.RandomSearch(hypermodel, objective=hypermodel.objective, max_trials=20,
                        directory="tuning", project_name="infobal")
tuner.search(x_unlabeled)
best = tuner.get_best_hyperparameters()[0]
```
"""

import keras
import keras_tuner as kt
import numpy as np

from keras_infobal import features as feature_registry
from keras_infobal.evaluation import linear_probe
from keras_infobal.layers.registry import critic_names, infomin_critic_names
from keras_infobal.layers.view_encoder import SPLIT_REGISTRY
from keras_infobal.models import InfoBal, InfoBalBackbone

OBJECTIVE = "val_probe_accuracy"

PRESETS = {
    # name -> (alpha for M views, beta for M views)
    "uniform": lambda m: (np.ones(m), np.ones((m, m))),
    # Neighbouring views (adjacent stripes) share the most: penalize those pairs more.
    "neighbours": lambda m: (np.ones(m), 1.0 + np.eye(m, k=1) + np.eye(m, k=-1)),
    # Outer views weigh more in InfoMax (the centre is covered twice by neighbours).
    "edges": lambda m: (np.where((np.arange(m) == 0) | (np.arange(m) == m - 1), 1.5, 1.0),
                        np.ones((m, m))),
}


def _names(argument, names, registered):
    """`names` (default: every `registered` one) as a list, after checking each is registered."""
    registered = list(registered)
    if names is None:
        return registered
    names = list(names)
    unknown = [n for n in names if n not in registered]
    if not names or unknown:
        raise ValueError(
            f"`{argument}` must list registered names, from {registered}; got {names}."
        )
    return names


def _choice(hp, name, values, preferred):
    """hp.Choice over `values`, defaulting to InfoBal's default `preferred` when searched."""
    return hp.Choice(name, values, default=preferred if preferred in values else values[0])


class InfoBalHyperModel(kt.HyperModel):
    """Searches lambda, alpha/beta presets, the critic and InfoMin critic, the split, the
    number of views, the critic units.

    The critics and splits searched are, by default, every registered one (the estimators of
    `critics.critic_names()` and `critics.infomin_critic_names()`, the splits of
    `view_encoder.SPLIT_REGISTRY`), read when the tuner first builds a model, so one added
    with `estimators.register_estimator` or `view_encoder.register_split` is searched too; pass
    `critics`, `infomin_critics` or `splits` to search fewer. A split that cannot cut the
    local map into `num_views` views fails its trial with the split's error.

    The score of a trial is the linear-probe accuracy on `validation` (declared with
    direction "max" in `self.objective`: keras-tuner minimizes a bare metric name it does
    not know). Never pass the test set as `validation`.

    Args:
        train, validation: `(images, labels)` for the probe.
        epochs, batch_size: pretraining budget per trial.
        probe_layer: the feature layer scored (one of `keras_infobal.features.names()`).
        backbone_kwargs: fixed InfoBalBackbone arguments (e.g. small sizes for a quick
            search); `model_kwargs`: fixed InfoBal (objective) arguments.
        critics, infomin_critics, splits: the names searched (default: every registered one).
    """

    def __init__(self, train, validation, epochs=5, batch_size=64, probe_layer="conv",
                 learning_rate=3e-4, backbone_kwargs=None, model_kwargs=None, critics=None,
                 infomin_critics=None, splits=None, **kwargs):
        super().__init__(**kwargs)
        feature_registry.check_layers((probe_layer,), "probe_layer")
        self.train, self.validation = train, validation
        self.epochs, self.batch_size = epochs, batch_size
        self.probe_layer, self.learning_rate = probe_layer, learning_rate
        self.backbone_kwargs = dict(backbone_kwargs or {})
        self.model_kwargs = dict(model_kwargs or {})
        self.critics, self.infomin_critics, self.splits = critics, infomin_critics, splits
        self.search_space()  # checks the names given
        self.objective = kt.Objective(OBJECTIVE, direction="max")

    def search_space(self):
        """The registry-derived choices, read from the registries now:
        {"critic": [...], "infomin_critic": [...], "split": [...]}."""
        return {
            "critic": _names("critics", self.critics, critic_names()),
            "infomin_critic": _names("infomin_critics", self.infomin_critics,
                                     infomin_critic_names()),
            "split": _names("splits", self.splits, SPLIT_REGISTRY),
        }

    def build(self, hp):
        space = self.search_space()
        num_views = hp.Choice("num_views", [2, 4, 8])
        split = _choice(hp, "split", space["split"], "rows")
        if split == "grid" and num_views == 2:
            split = "rows"  # a 2-view grid is the rows split
        alpha, beta = PRESETS[hp.Choice("weights_preset", sorted(PRESETS))](num_views)
        backbone = dict(num_views=num_views, split=split)
        backbone.update(self.backbone_kwargs)
        kwargs = dict(
            critic=_choice(hp, "critic", space["critic"], "jsd"),
            infomin_critic=_choice(hp, "infomin_critic", space["infomin_critic"], "jsd"),
            critic_units=hp.Choice("critic_units", [128, 256, 512]),
            infomin_weight=hp.Choice("infomin_weight", [0.0, 0.1, 0.3, 1.0]),
            view_weights=alpha.tolist(),
            correlation_weights=beta.tolist(),
        )
        kwargs.update(self.model_kwargs)
        model = InfoBal(InfoBalBackbone(**backbone), **kwargs)
        adam = lambda: keras.optimizers.Adam(self.learning_rate, beta_1=0.5)  # noqa: E731
        # At lambda = 0 a discriminator optimizer would only train the monitor.
        model.compile(optimizer=adam(),
                      discriminator_optimizer=adam() if model.infomin_weight != 0 else None)
        return model

    def fit(self, hp, model, x, *args, callbacks=None, **kwargs):
        kwargs.setdefault("epochs", self.epochs)
        kwargs.setdefault("verbose", 0)
        if not hasattr(x, "element_spec"):
            kwargs.setdefault("batch_size", self.batch_size)
        model.fit(x, *args, callbacks=callbacks, **kwargs)
        acc = linear_probe(model, self.train, self.validation, layers=(self.probe_layer,))
        return {OBJECTIVE: acc[self.probe_layer]}
