"""Objective terms composed in InfoBal: CMC, CPC and DIM + CMC train, save, load and continue
on every backend; the shorthand is the same model as its explicit terms; a run's
configuration composes terms; the task's structure stays small."""

import ast
import json
import os
import re

import keras
import numpy as np
import pytest

from helpers import ROOT, TINY, tiny_backbone

pytestmark = pytest.mark.backend


def _images(n=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype="uint8")


def _terms(kind):
    from keras_infobal.objectives import CMC, CPC, InfoMax

    return {"cmc": lambda: [CMC(units=16)],
            "cpc": lambda: [CPC(units=16)],
            "dim_cmc": lambda: [InfoMax("infonce", critic_units=16), CMC(units=16, weight=0.5)],
            }[kind]()


def _model(kind):
    from keras_infobal import InfoBal

    keras.utils.set_random_seed(0)
    model = InfoBal(tiny_backbone(), objectives=_terms(kind))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))  # no adversarial term: one optimizer
    return model


def _expected_objective(kind, logs):
    """J from the logged estimates, by each term's definition."""
    cmc = logs.get("cmc_V1_V2")
    if kind == "cmc":
        return cmc
    if kind == "cpc":
        return (logs["cpc_k1"] + logs["cpc_k2"]) / 2.0  # steps=2: the mean over steps
    return logs["mi_R_V1"] + logs["mi_R_V2"] + 0.5 * cmc


@pytest.mark.parametrize("kind", ["cmc", "cpc", "dim_cmc"])
def test_terms_train_save_load_and_continue(kind, tmp_path):
    x = _images()
    model = _model(kind)
    before = [np.array(v) for v in model.encoder_variables]
    history = model.fit(x, batch_size=8, epochs=2, verbose=0).history
    assert all(np.isfinite(v).all() for v in history.values()), history
    # Every encoder variable (the backbone and the term's own critics) trained.
    moved = [not np.allclose(b, np.array(v)) for b, v in zip(before, model.encoder_variables)]
    assert sum(moved) >= 0.9 * len(moved), sum(moved)
    assert model.discriminator_variables == []
    logs = model.evaluate(x, batch_size=16, verbose=0, return_dict=True)
    assert logs["objective"] == pytest.approx(_expected_objective(kind, logs), rel=1e-4,
                                              abs=1e-5)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert [type(t).__name__ for t in loaded.objectives] == [
        type(t).__name__ for t in model.objectives]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-5)
    again = loaded.evaluate(x, batch_size=16, verbose=0, return_dict=True)
    assert again["objective"] == pytest.approx(logs["objective"], rel=1e-4, abs=1e-5)
    # Continues: the loaded optimizer state trains on.
    more = loaded.fit(x, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(more["loss"][-1])
    assert loaded.optimizer.iterations.numpy() == model.optimizer.iterations.numpy() + 2


def test_the_shorthand_is_its_explicit_terms():
    """InfoBal(critic=..., infomin_weight=...) is InfoBal(objectives=[InfoMax, InfoMin]):
    the same layers, the same J on the same weights."""
    from keras_infobal import InfoBal
    from keras_infobal.objectives import InfoMax, InfoMin

    x = _images()
    keras.utils.set_random_seed(1)
    short = InfoBal(tiny_backbone(), critic="infonce", critic_units=16, infomin_weight=0.3,
                    local_scales=(1, 2))
    explicit = InfoBal(tiny_backbone(), objectives=[
        InfoMax("infonce", critic_units=16, local_scales=(1, 2)),
        InfoMin("infonce", units=16, weight=0.3)])
    explicit.set_weights(short.get_weights())
    views = short.backbone.views(x, training=False)
    a = short.encoder_loss(views, training=False)[1]
    b = explicit.encoder_loss(views, training=False)[1]
    assert sorted(a) == sorted(b)
    for key in a:
        assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-5, abs=1e-6), key
    j = float(a["mi_R_V1"]) + float(a["mi_R_V2"]) - 0.3 * float(a["mi_V1_V2"])
    assert float(a["objective"]) == pytest.approx(j, rel=1e-5, abs=1e-6)
    assert "objectives" in explicit.objective_config()
    assert short.objective_config()["local_scales"] == [1, 2]


def test_objectives_and_shorthand_together_are_refused():
    from keras_infobal import InfoBal
    from keras_infobal.objectives import CMC

    with pytest.raises(ValueError, match="either `objectives` or the shorthand.*infomin_weight"):
        InfoBal(tiny_backbone(), objectives=[CMC()], infomin_weight=0.5)
    with pytest.raises(ValueError, match="non-empty list"):
        InfoBal(tiny_backbone(), objectives=[])
    with pytest.raises(ValueError, match="must be a keras_infobal.objectives term"):
        InfoBal(tiny_backbone(), objectives=[keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="CMC scores pairs of views"):
        InfoBal(tiny_backbone(num_views=1), objectives=[CMC()])


def test_a_run_config_composes_terms_in_json():
    """`--config` / task.json: the terms as serialized layers; the recipe's shorthand gives
    way to them, its batch layout (augmented pairs) stays."""
    from keras_infobal import pretraining

    terms = [{"class_name": "InfoMax",
              "config": {"critic": "infonce", "critic_units": 16, "local_scales": [1, 2]}},
             {"class_name": "CMC", "config": {"units": 16, "weight": 0.5}}]
    run = pretraining.resolve(recipe="dim_pairs", backbone={k: v for k, v in TINY.items()
                                                             if k not in ("critic_units",
                                                                          "image_shape")},
                              task={"objectives": json.loads(json.dumps(terms))},
                              mixed_precision=False)
    assert "critic" not in run["task"] and run["task"]["augmented_pairs"] is True
    model = pretraining._build_task(run, (16, 16, 3))
    assert [type(t).__name__ for t in model.objectives] == ["InfoMax", "CMC"]
    assert model.objectives[0].local_scales == (1, 2) and model.objectives[1].weight == 0.5
    x = _images(8)
    model.compile(optimizer="adam")
    logs = model.train_on_batch(x[:4], x[4:], return_dict=True)
    assert {"mi_R_V1", "cmc_V1_V2"} <= set(logs) and np.isfinite(logs["loss"])


def test_shorthand_keys_of_the_command_line_are_the_tasks():
    from keras_infobal import pretraining
    from keras_infobal.models import infobal

    assert set(pretraining.SHORTHAND_KEYS) == set(infobal.SHORTHAND)


def _class_methods(path, name):
    tree = ast.parse(open(path).read())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    return [n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_the_task_class_stays_small():
    methods = _class_methods(os.path.join(ROOT, "keras_infobal", "models", "infobal.py"),
                             "InfoBal")
    assert len(methods) <= 20, methods


# Keras' (and tf.distribute's) private names the package relies on; models/keras_seams.py is
# the one module allowed to use them, each with its reason.
PRIVATE_KERAS = ("keras.src", "._flatten_layers", "._in_multi_worker_mode", "._value",
                 "._tracker", "_get_jax_state", "_purge_model_variables",
                 "_get_state_sharding_spec", "_maybe_symbolic_build")


def test_private_keras_names_only_in_the_seams_module():
    found = []
    for dirpath, _, files in os.walk(os.path.join(ROOT, "keras_infobal")):
        for name in files:
            path = os.path.join(dirpath, name)
            if not name.endswith(".py") or name == "keras_seams.py":
                continue
            for number, line in enumerate(open(path), 1):
                code = line.split("#", 1)[0]
                if any(re.search(re.escape(p) + r"\b", code) for p in PRIVATE_KERAS):
                    found.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    assert not found, found
