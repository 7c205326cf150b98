import keras_tuner as kt
import numpy as np

from helpers import TINY
from keras_infobal.tuning import OBJECTIVE, InfoBalHyperModel
from test_evaluation import class_images


def test_two_trial_search_maximizes_probe_accuracy(tmp_path):
    train, val = class_images(120), class_images(60, seed=1)
    fixed = {k: v for k, v in TINY.items() if k != "critic_units"}
    hypermodel = InfoBalHyperModel(train, val, epochs=1, batch_size=20, model_kwargs=fixed)
    assert hypermodel.objective.direction == "max"
    hp = kt.HyperParameters()
    hp.Fixed("num_views", 4)  # the 8x8 map of 32px images; 16px images give a 4x4 map
    tuner = kt.RandomSearch(hypermodel, objective=hypermodel.objective, max_trials=2,
                            hyperparameters=hp, directory=str(tmp_path), project_name="t",
                            seed=3)
    tuner.search(train[0])
    trials = [t for t in tuner.oracle.trials.values() if t.status == "COMPLETED"]
    assert len(trials) == 2, [t.status for t in tuner.oracle.trials.values()]
    scores = [t.metrics.get_best_value(OBJECTIVE) for t in trials]
    assert all(0.0 <= s <= 1.0 for s in scores)
    best = tuner.oracle.get_best_trials(1)[0]
    assert best.score == max(scores)
    assert tuner.get_best_hyperparameters()[0].values == best.hyperparameters.values
