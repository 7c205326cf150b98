import keras_tuner as kt
import numpy as np
import pytest

from helpers import BACKBONE_KEYS, TINY, infomax_critics
from keras_infobal.objectives.infomin import check_correlation_weights
from keras_infobal.tuning import OBJECTIVE, InfoBalHyperModel
from test_evaluation import class_images

FIXED = {k: v for k, v in TINY.items() if k in BACKBONE_KEYS}


def test_two_trial_search_maximizes_probe_accuracy(tmp_path):
    train, val = class_images(120), class_images(60, seed=1)
    hypermodel = InfoBalHyperModel(train, val, epochs=1, batch_size=20, backbone_kwargs=FIXED)
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


def test_the_chosen_hyperparameters_and_presets_reach_the_model():
    # The presets written out by hand for 4 views (not read from tuning.PRESETS).
    by_hand = {
        "uniform": ([1, 1, 1, 1], np.ones((4, 4))),
        "neighbours": ([1, 1, 1, 1], [[1, 2, 1, 1], [2, 1, 2, 1], [1, 2, 1, 2], [1, 1, 2, 1]]),
        "edges": ([1.5, 1, 1, 1.5], np.ones((4, 4))),
    }
    x = class_images(8)[0]
    for preset, critic, units, lam in (("neighbours", "dv", 128, 0.3),
                                       ("edges", "infonce", 256, 0.0),
                                       ("uniform", "jsd", 512, 1.0)):
        hp = kt.HyperParameters()
        for name, value in (("num_views", 4), ("split", "grid"), ("weights_preset", preset),
                            ("critic", critic), ("critic_units", units),
                            ("infomin_weight", lam)):
            hp.Fixed(name, value)
        model = InfoBalHyperModel(None, None, backbone_kwargs=FIXED).build(hp)
        alpha, beta = by_hand[preset]
        infomax, infomin = model.objectives
        assert (model.num_views, model.backbone.split, infomax.estimator) == (4, "grid", critic)
        assert model.infomin_weight == lam and infomax.critic_units == units
        np.testing.assert_array_equal(infomax.alpha, alpha)
        np.testing.assert_array_equal(
            check_correlation_weights(infomin.correlation_weights, 4), beta)
        assert len(infomax_critics(model)) == 4
        assert all(c.units == units for c in infomax_critics(model))
        assert model.optimizer is not None
        assert (model.discriminator_optimizer is not None) == (lam > 0)
        if preset == "uniform":
            continue
        # ... and they weigh the terms of the objective: alpha and beta by hand.
        logs = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)
        j = sum(a * logs[f"mi_R_V{i + 1}"] for i, a in enumerate(alpha))
        if lam:
            j -= lam * sum(beta[i][k] * logs[f"mi_V{i + 1}_V{k + 1}"]
                           for i in range(4) for k in range(i + 1, 4))
        assert logs["objective"] == pytest.approx(j, abs=1e-4)
