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

from keras_infobal.evaluation import linear_probe
from keras_infobal.models.infobal import InfoBal

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


class InfoBalHyperModel(kt.HyperModel):
    """Searches lambda, alpha/beta presets, the critic, the number of views, the critic units.

    The score of a trial is the linear-probe accuracy on `validation` (declared with
    direction "max" in `self.objective`: keras-tuner minimizes a bare metric name it does
    not know). Never pass the test set as `validation`.

    Args:
        train, validation: `(images, labels)` for the probe.
        epochs, batch_size: pretraining budget per trial.
        probe_layer: the feature layer scored ("conv", "fc" or "R").
        model_kwargs: fixed InfoBal arguments (e.g. small sizes for a quick search).
    """

    def __init__(self, train, validation, epochs=5, batch_size=64, probe_layer="conv",
                 learning_rate=3e-4, model_kwargs=None, **kwargs):
        super().__init__(**kwargs)
        self.train, self.validation = train, validation
        self.epochs, self.batch_size = epochs, batch_size
        self.probe_layer, self.learning_rate = probe_layer, learning_rate
        self.model_kwargs = dict(model_kwargs or {})
        self.objective = kt.Objective(OBJECTIVE, direction="max")

    def build(self, hp):
        num_views = hp.Choice("num_views", [2, 4, 8])
        split = hp.Choice("split", ["rows", "grid"])
        if split == "grid" and num_views == 2:
            split = "rows"  # a 2-view grid is the rows split
        alpha, beta = PRESETS[hp.Choice("weights_preset", sorted(PRESETS))](num_views)
        kwargs = dict(
            num_views=num_views,
            split=split,
            critic=hp.Choice("critic", ["jsd", "dv", "infonce"]),
            critic_units=hp.Choice("critic_units", [128, 256, 512]),
            infomin_weight=hp.Choice("infomin_weight", [0.0, 0.1, 0.3, 1.0]),
            view_weights=alpha.tolist(),
            correlation_weights=beta.tolist(),
        )
        kwargs.update(self.model_kwargs)
        model = InfoBal(**kwargs)
        model.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate, beta_1=0.5),
            discriminator_optimizer=keras.optimizers.Adam(self.learning_rate, beta_1=0.5),
        )
        return model

    def fit(self, hp, model, x, *args, callbacks=None, **kwargs):
        kwargs.setdefault("epochs", self.epochs)
        kwargs.setdefault("verbose", 0)
        if not hasattr(x, "element_spec"):
            kwargs.setdefault("batch_size", self.batch_size)
        model.fit(x, *args, callbacks=callbacks, **kwargs)
        acc = linear_probe(model, self.train, self.validation, layers=(self.probe_layer,))
        return {OBJECTIVE: acc[self.probe_layer]}
