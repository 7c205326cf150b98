"""One source per set of names: what is registered (estimators, splits, feature layers) is
what the tuner searches, the scripts' and CLI's choices offer, and the name checks accept."""

import ast
import importlib.util
import os
import sys

import keras
import keras_tuner as kt
import numpy as np
import pytest

from helpers import BACKBONE_KEYS, ROOT, TINY, tiny
from keras_infobal import InfoBal, cli, estimators, features
from keras_infobal.evaluation import linear_probe
from keras_infobal.layers import registry
from keras_infobal.layers import view_encoder as ve
from keras_infobal.tuning import InfoBalHyperModel

IMAGES = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)).astype("uint8")
LABELS = np.arange(8) % 2


def _mean_gap(scores, offset=None):
    """E_pos[s] - E_neg[s]: a toy estimator."""
    scores = estimators._check_scores(scores, offset)
    pos, neg = estimators._masks(scores, offset)
    return (keras.ops.sum(scores * pos) / keras.ops.sum(pos)
            - keras.ops.sum(scores * neg) / keras.ops.sum(neg))


def _diagonal_shape(h, w, c, m):
    if m != 2:
        raise ValueError("split='diagonal' makes exactly 2 views; use num_views=2.")
    return h // 2, w // 2, c


def _diagonal_cut(fmap, m, vh, vw, c):
    return keras.ops.stack([fmap[:, :vh, :vw], fmap[:, vh:, vw:]], axis=1)


@pytest.fixture
def registered():
    """A new estimator ("mean_gap") and a new split ("diagonal"), removed afterwards."""
    estimators.register_estimator("mean_gap", _mean_gap)
    ve.register_split("diagonal", _diagonal_shape, _diagonal_cut)
    yield
    del estimators.ESTIMATORS["mean_gap"]
    del ve.SPLIT_REGISTRY["diagonal"]


@pytest.fixture
def half_r():
    """A registered feature layer (probed by default), and an InfoBal subclass whose
    features() computes it."""
    features.register_feature_layer("half_R", "the first half of R",
                                     produced_by="HalfR.features", probe=True)

    class HalfR(InfoBal):
        def features(self, images, training=False):
            feats = super().features(images, training=training)
            feats["half_R"] = feats["R"][:, : self.backbone.output_dim // 2]
            return feats

    yield HalfR
    del features.LAYERS["half_R"]


def _load_script(relpath):
    spec = importlib.util.spec_from_file_location("_script_" + os.path.basename(relpath)[:-3],
                                                  os.path.join(ROOT, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tuner_space(**kwargs):
    """{name: values} of the space the tuner declares when it builds a model."""
    fixed = {k: v for k, v in TINY.items() if k in BACKBONE_KEYS}
    hypermodel = InfoBalHyperModel((IMAGES, LABELS), (IMAGES, LABELS), backbone_kwargs=fixed,
                                   **kwargs)
    hp = kt.HyperParameters()
    hypermodel.build(hp)
    return hypermodel, {h.name: list(h.values) for h in hp.space if hasattr(h, "values")}


# ------------------------------------------------------------------ estimators and splits

def test_registered_estimator_and_split_are_searched_by_the_tuner(registered):
    hypermodel, space = _tuner_space()
    assert "mean_gap" in space["critic"] and "mean_gap" in space["infomin_critic"]
    assert "diagonal" in space["split"]
    assert {"jsd", "infonce", "club"} <= set(space["infomin_critic"])
    assert {"rows", "grid"} <= set(space["split"])
    # A trial that draws them builds a model that uses them.
    hp = kt.HyperParameters()
    hp.Fixed("critic", "mean_gap")
    hp.Fixed("split", "diagonal")
    hp.Fixed("num_views", 2)
    model = hypermodel.build(hp)
    assert model.backbone.split == "diagonal"
    assert model.objectives[0].critics[0].estimator == "mean_gap"


def test_tuner_space_can_be_restricted_to_registered_names(registered):
    _, space = _tuner_space(critics=["mean_gap"], splits=["diagonal", "rows"])
    assert space["critic"] == ["mean_gap"] and space["split"] == ["diagonal", "rows"]
    with pytest.raises(ValueError, match="registered names"):
        _tuner_space(splits=["spiral"])
    with pytest.raises(ValueError, match="probe_layer"):
        _tuner_space(probe_layer="logits")


def test_unregistered_names_are_not_searched():
    _, space = _tuner_space()
    assert "mean_gap" not in space["critic"] and "diagonal" not in space["split"]


def test_pretraining_runs_take_the_registered_estimator_and_split(registered):
    from keras_infobal.pretraining import _build_task, resolve

    small = {k: v for k, v in TINY.items() if k not in ("critic_units", "image_shape")}
    run = resolve(recipe="dim", backbone={**small, "split": "diagonal"},
                  task={"critic": "mean_gap", "critic_units": 8})
    model = _build_task(run, (16, 16, 3))
    assert model.backbone.split == "diagonal" and model.objectives[0].estimator == "mean_gap"
    assert model.objectives[0].critics[0].estimator == "mean_gap"
    with pytest.raises(ValueError, match="split"):
        _build_task(resolve(recipe="dim", backbone={"split": "spiral"}), (16, 16, 3))


def test_a_registered_estimator_is_a_critic_name_with_its_layers(registered):
    """One table: a registered estimator is an InfoMax and an InfoMin name, builds an
    MICritic, a per-pair InfoMin critic and the batched PairCritics; CLUB stays an upper
    bound only."""
    from keras_infobal.layers import MICritic, PairCLUB, PairCritics

    assert "mean_gap" in registry.critic_names()
    assert registry.infomin_critic_names()[-2:] == ("club", "club_sampled")
    assert "mean_gap" in registry.infomin_critic_names()
    assert not registry.is_upper_bound("mean_gap")
    critic = registry.get_critic("Mean_Gap", units=4)
    assert type(critic) is MICritic and critic.estimator == "mean_gap"
    assert registry.get_infomin_critic("mean_gap", units=4).normalization == "layer"
    batched = registry.get_pair_critics("mean_gap", [(0, 1), (1, 2)], units=4)
    assert type(batched) is PairCritics and batched.estimator == "mean_gap"
    pooled = np.random.default_rng(0).normal(size=(4, 3, 5)).astype("float32")
    assert tuple(batched(pooled).shape) == (2,)  # applied pair by pair (estimators.per_pair)
    club = registry.get_pair_critics("club_sampled", [(0, 1)], units=4)
    assert type(club) is PairCLUB and club.sampled
    with pytest.raises(ValueError, match="Unknown InfoMin critic 'clubb'.*'club_sampled'"):
        registry.get_pair_critics("clubb", [(0, 1)])


def test_unregistered_estimators_are_not_critic_names():
    assert "mean_gap" not in registry.critic_names()
    with pytest.raises(ValueError, match="Unknown critic 'mean_gap'"):
        registry.get_critic("mean_gap")


# --------------------------------------------------------------------- the import graph
# Every import of a keras_infobal module by another, at module level or inside a function
# (a lazy import closes a cycle as surely, only later), read from the source with `ast`.

PACKAGE = "keras_infobal"
LAYERS = "keras_infobal.layers"
# Kept until models/infobal.py imports registry: critics.py lends the names that moved to the
# registry through a module __getattr__ that imports the registry. Allowed only while code
# outside the tests still imports one of them from critics; then the shim must go.


def package_modules(root, package=PACKAGE):
    """{module name: file} of every module under root/package."""
    out = {}
    for dirpath, dirnames, files in os.walk(os.path.join(root, package)):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                parts = os.path.relpath(path, root)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                out[".".join(parts)] = path
    return out


def _imported(node, module, is_package, modules):
    """The package's modules an Import or ImportFrom node imports."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the module's package, up level - 1 packages
            parts = module.split(".") if is_package else module.split(".")[:-1]
            parts = parts[:len(parts) - node.level + 1]
            base = ".".join(parts + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                 for a in node.names]
    out = set()
    for name in names:
        while name and name not in modules:  # `import a.b.c` of a module, or a name in one
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


def import_graph(modules):
    """{module: {imported module: [line, ...]}}; parent packages imported on the way are
    not edges (importing a.b.c runs a/__init__.py first, but a/__init__ imports what it
    lists, not what its submodules do)."""
    graph = {}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
        edges = {}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(node, module, path.endswith("__init__.py"), modules):
                    if target != module:
                        edges.setdefault(target, []).append(node.lineno)
        graph[module] = edges
    return graph


def find_cycle(graph, ignore=()):
    """One import cycle [a, b, ..., a], or None; `ignore`: (importer, imported) edges."""
    state = {}  # module -> "open" while on the path, "done" once all it imports is checked
    path = []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if (module, target) in ignore:
                continue
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def _cycle_message(cycle, graph):
    return " -> ".join(f"{a} (line {graph[a][b][0]})" for a, b in zip(cycle, cycle[1:])) \
        + f" -> {cycle[-1]}"


def test_the_package_has_no_import_cycle():
    graph = import_graph(package_modules(ROOT))
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + _cycle_message(cycle, graph)


def test_critic_layers_do_not_import_the_registry_or_each_other():
    graph = import_graph(package_modules(ROOT))
    layers = {f"{LAYERS}.{m}" for m in ("critics", "pair_critics", "club")}
    assert layers | {"keras_infobal.estimators"} <= set(graph[f"{LAYERS}.registry"])
    for module in layers:
        imported = set(graph[module]) & (layers | {f"{LAYERS}.registry"})
        allowed = {f"{LAYERS}.club"} if module == f"{LAYERS}.pair_critics" else set()
        assert imported <= allowed, (module, sorted(imported))


def _write_package(root, files):
    for name, text in files.items():
        path = os.path.join(root, *name.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def test_the_cycle_check_sees_module_level_function_level_and_relative_imports(tmp_path):
    """The checker itself, on small packages: a planted cycle is found however it is
    written, and an acyclic package passes."""
    base = {
        "keras_infobal/__init__.py": "from keras_infobal import a\n",
        "keras_infobal/a.py": "import keras\nfrom keras_infobal.sub import b\n",
        "keras_infobal/sub/__init__.py": "",
        "keras_infobal/sub/b.py": "import numpy as np\nfrom keras_infobal.sub.c import f\n",
        "keras_infobal/sub/c.py": "def f():\n    return 1\n",
    }
    _write_package(tmp_path, base)
    graph = import_graph(package_modules(str(tmp_path)))
    assert graph["keras_infobal.a"] == {"keras_infobal.sub.b": [2]}
    assert find_cycle(graph) is None
    closing = {  # c imports a back, written four ways
        "module level": "from keras_infobal import a\n",
        "in a function": "def f():\n    from keras_infobal import a\n    return a\n",
        "relative": "def f():\n    from .. import a\n    return a\n",
        "dotted": "def f():\n    import keras_infobal.a.missing_attribute\n",
    }
    for how, text in closing.items():
        _write_package(tmp_path, {**base, "keras_infobal/sub/c.py": text})
        graph = import_graph(package_modules(str(tmp_path)))
        cycle = find_cycle(graph)
        assert cycle == ["keras_infobal.a", "keras_infobal.sub.b", "keras_infobal.sub.c",
                         "keras_infobal.a"], how
        assert "keras_infobal.sub.c (line" in _cycle_message(cycle, graph)
        assert find_cycle(graph, ignore={("keras_infobal.sub.c", "keras_infobal.a")}) is None


# ----------------------------------------------------------------------- feature layers

def test_every_feature_layer_is_computed_by_the_model():
    """The registry and what the model and the aggregator compute agree."""
    model = tiny()
    feats = model.features(IMAGES[:2])
    assert set(feats) == set(features.names())
    views = model.backbone.encoder(IMAGES[:2])
    assert set(model.backbone.aggregator.features(views)) == set(features.produced_by("ViewAggregator"))
    assert features.probe_layers() == ("conv", "fc", "R")


def test_a_registered_feature_layer_is_extracted_and_probed(half_r):
    model = tiny(cls=half_r)
    assert set(model.extract_features(IMAGES)) == {"conv", "fc", "R", "half_R"}  # the default
    feats = model.extract_features(IMAGES, layers=("half_R", "R"))
    assert feats["half_R"].shape == (8, TINY["output_dim"] // 2)
    np.testing.assert_allclose(feats["half_R"], feats["R"][:, : TINY["output_dim"] // 2])
    acc = linear_probe(model, (IMAGES, LABELS), (IMAGES, LABELS), layers=("half_R",),
                       protocol="note", classes=2)
    assert set(acc) == {"half_R"}
    # A registered layer the model does not compute: a clear error, not a KeyError.
    with pytest.raises(ValueError, match=r"does not compute them"):
        tiny().extract_features(IMAGES, layers=("half_R",))


def test_unknown_feature_layers_are_rejected_listing_the_registered_ones(half_r):
    model = tiny()
    with pytest.raises(ValueError, match=r"Unknown feature layers \['logits'\].*half_R.*"
                                         r"register_feature_layer"):
        model.extract_features(IMAGES, layers=("conv", "logits"))

    class NeverExtracts:
        def extract_features(self, images, layers):
            raise AssertionError("linear_probe computed features before checking the layers")

    with pytest.raises(ValueError, match=r"Unknown feature layers \['logits'\].*half_R"):
        linear_probe(NeverExtracts(), (IMAGES, LABELS), (IMAGES, LABELS), layers=("logits",))
    with pytest.raises(ValueError, match="tuple of feature layer names"):
        model.extract_features(IMAGES, layers="conv")


def test_an_unregistered_feature_layer_is_rejected(half_r):
    model = tiny(cls=half_r)
    del features.LAYERS["half_R"]
    try:
        with pytest.raises(ValueError, match="Unknown feature layers"):
            model.extract_features(IMAGES, layers=("half_R",))
    finally:
        features.register_feature_layer("half_R", "the first half of R",
                                        produced_by="HalfR.features", probe=True)


def _choices(parser, command, dest):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return next(a for a in sub._actions if a.dest == dest)


def test_cli_feature_layer_choices_and_checks_follow_the_registry(half_r, capsys):
    parser = cli.build_parser()
    assert tuple(_choices(parser, "extract", "layer").choices) == features.names()
    assert "half_R" in _choices(parser, "extract", "layer").choices
    assert _choices(parser, "evaluate", "layers").default == "conv,fc,R,half_R"
    # evaluate checks --layers before anything is loaded: a registered layer passes the check
    # (the missing model is the error), an unknown one is named with the valid ones.
    assert cli.main(["evaluate", "--model", "/no/such/model.keras", "--layers", "half_R"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Unknown feature" not in err
    assert cli.main(["evaluate", "--model", "/no/such/model.keras", "--layers", "conv,x"]) == 2
    err = capsys.readouterr().err
    assert "Unknown feature layers ['x']" in err and "half_R" in err


def test_the_cli_reads_the_registry_file_without_the_package(monkeypatch):
    """The `keras-infobal` entry point loads features.py alone: the same built-in names."""
    monkeypatch.delitem(sys.modules, "keras_infobal.features")
    alone = cli._feature_registry()
    assert alone is not features
    assert alone.names() == features.NAMES and alone.probe_layers() == ("conv", "fc", "R")


def test_collect_results_labels_must_match_the_shipped_presets():
    collect = _load_script("applications/cifar10/collect_results.py")
    from keras_infobal.models import presets

    collect.check_variants(collect.VARIANTS, presets.list_presets())  # the shipped ones
    with pytest.raises(ValueError, match="give every shipped preset a row label"):
        collect.check_variants(collect.VARIANTS, presets.list_presets() + ["new_preset"])
