"""The package uses public Keras APIs only, outside the one documented seam
(`keras_infobal/models/keras_seams.py`); these tests fail loudly when a Keras release changes
what that seam relies on, and keep the layering (models never import applications)."""

import ast
import inspect
import os
import subprocess
import sys

import keras
import pytest

from helpers import ROOT

PACKAGE = os.path.join(ROOT, "keras_infobal")
SEAM = os.path.join(PACKAGE, "models", "keras_seams.py")


def _sources():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                yield path, ast.parse(open(path).read(), path)


def test_no_module_imports_keras_internals():
    offenders = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            offenders += [f"{os.path.relpath(path, ROOT)}: {n}" for n in names
                          if n == "keras.src" or n.startswith("keras.src.")]
    assert not offenders, offenders


def _keras_private_names():
    """Private attribute names of Keras' model, layer and trainer classes (this backend's,
    and JAX's, whose trainer the seam overrides; Keras' PyTorch backend is not imported
    beside TensorFlow here)."""
    import keras.src.backend.jax.trainer as jax_trainer
    import keras.src.backend.tensorflow.trainer as tf_trainer

    names = set()
    for cls in (keras.Model, keras.layers.Layer, jax_trainer.JAXTrainer,
                tf_trainer.TensorFlowTrainer):
        for klass in cls.__mro__:
            if klass.__module__.startswith("keras"):
                names |= {n for n in vars(klass) if n.startswith("_") and not n.startswith("__")}
    return names


def test_private_keras_methods_are_overridden_only_in_the_seam():
    private = _keras_private_names()
    overrides = {}
    for path, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                            item.name in private):
                        overrides.setdefault(os.path.relpath(path, ROOT), []).append(
                            f"{node.name}.{item.name}")
    seam = os.path.relpath(SEAM, ROOT)
    assert set(overrides) <= {seam}, {k: v for k, v in overrides.items() if k != seam}
    # The seam holds exactly the overrides its docstring explains.
    assert sorted(overrides[seam]) == sorted([
        "KerasSeams._maybe_symbolic_build",
        "JAXOptimizerStateSeam._get_jax_state",
        "JAXOptimizerStateSeam._purge_model_variables",
        "JAXOptimizerStateSeam._get_state_sharding_spec",
    ])


def test_the_keras_methods_the_seam_overrides_still_exist_with_these_signatures():
    import keras.src.backend.jax.trainer as jax_trainer
    import keras.src.backend.tensorflow.trainer as tf_trainer

    def params(fn):
        return list(inspect.signature(fn).parameters)

    assert params(tf_trainer.TensorFlowTrainer._maybe_symbolic_build) == [
        "self", "iterator", "data_batch"]
    jax = jax_trainer.JAXTrainer
    assert params(jax._get_jax_state) == [
        "self", "trainable_variables", "non_trainable_variables", "optimizer_variables",
        "metrics_variables", "purge_model_variables"]
    assert params(jax._purge_model_variables) == [
        "self", "trainable_variables", "non_trainable_variables", "optimizer_variables",
        "metrics_variables"]
    assert params(jax.jax_state_sync) == ["self"]
    assert params(jax._get_state_sharding_spec) == ["self"]
    # The seam reads the optimizer slot of the state Keras threads through its jitted step.
    source = inspect.getsource(jax.fit)
    assert "_get_jax_state" in source and "optimizer_variables=True" in source
    assert "jax_state_sync" in inspect.getsource(jax)


def test_models_never_import_applications():
    for path, tree in _sources():
        if os.sep + "models" + os.sep not in path:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("keras_infobal.applications"), path
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("keras_infobal.applications")
                               for a in node.names), path
    code = ("import sys; import keras_infobal.models; "
            "print(sorted(m for m in sys.modules if m.startswith('keras_infobal.appl')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
                         timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr[-2000:]


@pytest.mark.parametrize("cls_name", ["InfoBal", "InfoBalBackbone"])
def test_public_constructors_take_at_most_12_arguments(cls_name):
    # InfoBal takes 15: `backbone`, `objectives` (the terms), the ten shorthand arguments of
    # its default terms (InfoMax + InfoMin: critic, infomin_critic, critic_units,
    # infomin_units, infomin_weight, view_weights, correlation_weights, local_scales,
    # view_pooling, score_clip; `local_scales` moved here from the backbone, where it was
    # not architecture), `discriminator_steps`, `augmented_pairs` and `augmentation`. The
    # shorthand stays for the default objective; other objectives are set on their terms.
    import keras_infobal as kib
    from keras_infobal import layers

    classes = [getattr(kib, cls_name)] + [getattr(layers, n) for n in (
        "ViewEncoder", "ViewAggregator", "MICritic", "JSDCritic", "DVCritic", "InfoNCECritic",
        "NWJCritic", "CLUB", "PairCritics", "PairCLUB")]
    for cls in classes:
        args = [p for p in inspect.signature(cls.__init__).parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        cap = 15 if cls.__name__ == "InfoBal" else 12
        assert len(args) <= cap, (cls.__name__, [p.name for p in args])


def _class_body_methods(path, class_name):
    tree = ast.parse(open(path).read(), path)
    cls = next(node for node in tree.body
               if isinstance(node, ast.ClassDef) and node.name == class_name)
    return [item.name for item in cls.body
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_infobal_itself_defines_at_most_20_methods():
    """The task composes its terms, trainers and mixins; its own class body stays small (the
    objective lives in keras_infobal/objectives, each backend's steps in models/trainers).
    Properties count: each is a FunctionDef in the class body."""
    methods = _class_body_methods(os.path.join(PACKAGE, "models", "infobal.py"), "InfoBal")
    assert "encoder_loss" in methods and "discriminator_objective" in methods  # found it
    assert len(methods) <= 20, (len(methods), methods)


TRAINERS = os.path.join(PACKAGE, "models", "trainers")
# Private attributes of Keras' own trainer classes that InfoBal's trainer modules may use.
# None today: they override Keras' public train_step / test_step / predict_step, and what
# Keras' JAX trainer threads through its jitted step is read in the seam
# (JAXOptimizerStateSeam), not in the trainers.
KERAS_TRAINER_PRIVATES = set()


def _self_privates(tree):
    """({`_x` referenced as self._x or getattr(self, "_x")}, {`_x` defined here: functions,
    methods, properties, and self._x assignments})."""
    used, defined = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defined.add(node.name)
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "self" and node.attr.startswith("_")
                and not node.attr.startswith("__")):
            used.add(node.attr)
            if isinstance(node.ctx, ast.Store):
                defined.add(node.attr)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) >= 2
                and isinstance(node.args[0], ast.Name) and node.args[0].id == "self"
                and isinstance(node.args[1], ast.Constant)
                and str(node.args[1].value).startswith("_")):
            used.add(node.args[1].value)
    return used, defined


def _trainer_private_references(trainers=TRAINERS, seam=SEAM):
    """{module: sorted `_` attributes of the task it references that are neither the trainer
    modules' own, the seam's, nor listed in KERAS_TRAINER_PRIVATES}."""
    trees = {name: ast.parse(open(os.path.join(trainers, name)).read(), name)
             for name in sorted(os.listdir(trainers)) if name.endswith(".py")}
    allowed = set(KERAS_TRAINER_PRIVATES)
    for tree in trees.values():
        allowed |= _self_privates(tree)[1]
    allowed |= _self_privates(ast.parse(open(seam).read(), seam))[1]
    offenders = {}
    for name, tree in trees.items():
        bad = sorted(_self_privates(tree)[0] - allowed)
        if bad:
            offenders[name] = bad
    return offenders


def test_trainers_use_only_the_tasks_public_interface(tmp_path):
    """Each backend's trainer calls `InfoBal`'s public methods (encoder_loss,
    discriminator_objective, batch_images, ...), never the task's private helpers: a new
    objective term or backend then needs no change on the other side."""
    assert _trainer_private_references() == {}
    # The check sees a planted violation: a trainer reaching into the task's privates.
    import shutil

    planted = tmp_path / "trainers"
    shutil.copytree(TRAINERS, planted)
    source = (planted / "torch.py").read_text()
    hook = "        loss, logs = self.encoder_loss(views)\n"
    assert source.count(hook) == 1
    (planted / "torch.py").write_text(source.replace(
        hook, hook + "        j, terms = self._objective(views, True)\n"
                     "        width = getattr(self, '_beta_pairs', None)\n"))
    assert _trainer_private_references(str(planted)) == {
        "torch.py": ["_beta_pairs", "_objective"]}
