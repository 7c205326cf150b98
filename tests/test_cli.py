import json
import os

import numpy as np
import pytest

from keras_infobal import cli
from test_datasets import make_folder

CLASSES = tuple(f"c{i}" for i in range(10))


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    make_folder(str(root), n_per_class=4, classes=CLASSES)
    return str(root)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_INFOBAL_CACHE", str(tmp_path / "cache"))


def test_pretrain_evaluate_extract_plot(tiny_cifar, tmp_path, capsys):
    out = str(tmp_path / "run")
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"recipe": "infobal", "epochs": 1, "batch_size": 8,
                                  "task": {"critic_units": 8}, "probe_every": 1,
                                  "probe_train": 30, "probe_layers": ["conv"],
                                  "final_probe_layers": ["conv"]}))
    assert cli.main(["pretrain", "--config", str(config), "--out", out, "--set",
                     "task.infomin_weight=0.5", "--data", tiny_cifar]) == 0
    for name in ("log.csv", "model.keras", "results.json", "figure.png", "config.json",
                 "preset/config.json", "preset/task.json", "preset/metadata.json"):
        assert os.path.exists(os.path.join(out, name)), name
    results = json.load(open(os.path.join(out, "results.json")))
    assert set(results["probe"]) == {"note", "converged"}
    # --set reached the task, over the config file's section.
    assert results["task"]["infomin_weight"] == 0.5 and results["task"]["critic_units"] == 8
    from keras_infobal import InfoBal

    continued = InfoBal.from_preset(os.path.join(out, "preset"))
    assert continued.infomin_weight == 0.5 and continued.objectives[0].critic_units == 8
    assert cli.main(["evaluate", "--model", os.path.join(out, "preset"), "--data",
                     tiny_cifar, "--layers", "fc", "--knn", "0"]) == 0

    table = str(tmp_path / "table.json")
    assert cli.main(["evaluate", "--model", os.path.join(out, "model.keras"), "--data",
                     tiny_cifar, "--layers", "conv,R", "--out", table]) == 0
    printed = capsys.readouterr().out
    assert "| protocol | conv | R |" in printed
    assert set(json.load(open(table))["converged"]) == {"conv", "R"}
    assert set(json.load(open(table))["knn (k=200)"]) == {"conv", "R"}
    assert "| knn (k=200) |" in printed

    npy = str(tmp_path / "x.npy")
    np.save(npy, np.zeros((3, 32, 32, 3), np.uint8))
    feats = str(tmp_path / "f.npy")
    assert cli.main(["extract", "--model", os.path.join(out, "model.keras"), "--images", npy,
                     "--layer", "fc", "--out", feats]) == 0
    assert np.load(feats).shape == (3, 1024)
    assert cli.main(["extract", "--model", os.path.join(out, "model.keras"), "--images",
                     os.path.join(tiny_cifar, "test"), "--layer", "R", "--out", feats]) == 0
    assert np.load(feats).shape == (40, 64)

    png = str(tmp_path / "fig.png")
    assert cli.main(["plot", os.path.join(out, "log.csv"), "--names", "infobal",
                     "--out", png]) == 0
    assert open(png, "rb").read(4) == b"\x89PNG"


@pytest.mark.bf16
def test_pretrain_with_the_augmented_pairs_recipe(tiny_cifar, tmp_path):
    import keras

    out = str(tmp_path / "pairs")
    config = tmp_path / "pairs.json"
    config.write_text(json.dumps({
        "recipe": "dim_pairs", "task": {"critic_units": 8}, "mixed_precision": True,
        "epochs": 1, "batch_size": 8, "probe_every": 1, "probe_train": 30,
        "probe_layers": ["conv"], "final_probe_layers": ["conv"]}))
    assert cli.main(["pretrain", "--config", str(config), "--out", out,
                     "--data", tiny_cifar]) == 0
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    saved = json.load(open(os.path.join(out, "config.json")))
    assert saved["augmentation"] == {"color_jitter": 0.5, "grayscale": 0.2}
    assert saved["task"]["augmented_pairs"] and saved["task"]["score_clip"] == 20.0
    model = keras.models.load_model(os.path.join(out, "model.keras"))
    assert model.augmented_pairs and [t.score_clip for t in model.objectives] == [20.0, 20.0]
    assert model.backbone.encoder.compute_dtype == "float32"  # saved as a float32 model
    # The probe accuracy is a fraction of the 40 test images (0 <= alone could never fail).
    accuracy = json.load(open(os.path.join(out, "results.json")))["probe"]["note"]["conv"]
    assert 0.0 <= accuracy <= 1.0
    assert accuracy * 40 == pytest.approx(round(accuracy * 40), abs=1e-4)


def test_pretrain_augments_on_the_device_under_mixed_float16(tiny_cifar, tmp_path):
    import keras

    from keras_infobal import datasets

    out = str(tmp_path / "device")
    config = tmp_path / "device.json"
    config.write_text(json.dumps({
        "recipe": "dim_pairs", "task": {"critic_units": 8}, "mixed_precision": "mixed_float16",
        "device_augmentation": True, "epochs": 1, "batch_size": 8, "probe_every": 1,
        "probe_train": 30, "probe_layers": ["conv"], "final_probe_layers": ["conv"]}))
    seen = []
    make_dataset = datasets.make_dataset

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return make_dataset(*args, **kwargs)

    compiled = []
    from keras_infobal import InfoBal

    original_fit = InfoBal.fit

    def fit_spy(self, *args, **kwargs):
        compiled.append((type(self.optimizer).__name__, self.dtype_policy.name))
        return original_fit(self, *args, **kwargs)

    import unittest.mock as mock

    with mock.patch.object(datasets, "make_dataset", spy), \
            mock.patch.object(InfoBal, "fit", fit_spy):
        assert cli.main(["pretrain", "--config", str(config), "--out", out,
                         "--data", tiny_cifar]) == 0
    # The training batches are plain (no tf.data augmentation, no pairs) ...
    assert seen and not seen[0].get("augment_images") and not seen[0].get("pairs")
    # ... and the model draws the recipe's augmentation, seeded by the run.
    model = keras.models.load_model(os.path.join(out, "model.keras"))
    assert model.augmentation is not None and model.augmented_pairs
    assert model.objective_config()["augmentation"] == {"color_jitter": 0.5, "grayscale": 0.2,
                                                         "seed": 0}
    assert compiled == [("LossScaleOptimizer", "mixed_float16")]
    assert keras.mixed_precision.global_policy().name == "float32"  # restored


@pytest.mark.parametrize("key, value, message", [
    ("mixed_precision", "float16", "mixed_float16"),
    ("device_augmentation", "yes", "device_augmentation"),
])
def test_bad_precision_and_device_options_are_refused(key, value, message):
    from keras_infobal.pretraining import resolve

    with pytest.raises(ValueError, match=message):
        resolve(**{key: value})


@pytest.mark.parametrize("argv,message", [
    (["train"], "invalid choice"),
    (["evaluate"], "required: --model"),
    (["extract", "--model", "m.keras", "--images", "x.npy", "--out", "f.npy",
      "--layer", "logits"], "invalid choice"),
    (["pretrain", "--epochs", "two"], "invalid int value"),
])
def test_bad_arguments_give_usage_not_traceback(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and message in err and "Traceback" not in err


def test_bad_inputs_give_usage_not_traceback(tmp_path, capsys):
    assert cli.main(["extract", "--model", str(tmp_path / "none.keras"), "--images",
                     str(tmp_path), "--out", "f.npy"]) == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "No .jpg/.png images" in err
    assert cli.main(["plot", str(tmp_path / "missing.csv"), "--out", "x.png"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["pretrain"]) == 2
    assert "needs --out" in capsys.readouterr().err
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"epochz": 3, "out": str(tmp_path / "r")}))
    assert cli.main(["pretrain", "--config", str(bad)]) == 2
    assert "Unknown pretraining options ['epochz']" in capsys.readouterr().err
    assert cli.main(["pretrain", "--out", str(tmp_path / "r"), "--set", "num_views=4"]) == 2
    assert "Unknown pretraining options ['num_views']" in capsys.readouterr().err
    assert cli.main(["pretrain", "--out", str(tmp_path / "r"), "--set", "model.x=4"]) == 2
    assert "sections are backbone, task and augmentation" in capsys.readouterr().err
    assert cli.main(["pretrain", "--out", str(tmp_path / "r"), "--set", "epochs"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def _run_cli(*argv):
    import subprocess
    import sys

    code = ("import sys, keras_infobal_cli\n"
            "try:\n    rc = keras_infobal_cli.main(sys.argv[1:])\n"
            "except SystemExit as e:\n    rc = e.code\n"
            "print('IMPORTED', 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
            "sys.exit(rc)\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          env=env, timeout=300)


def test_help_lists_every_preset_and_recipe_without_importing_tensorflow():
    from keras_infobal.models import presets
    from keras_infobal.pretraining import RECIPES

    proc = _run_cli("evaluate", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "IMPORTED False False" in proc.stdout
    help_text = " ".join(proc.stdout.split())
    for name in presets.list_presets():
        assert name in help_text
    proc = _run_cli("pretrain", "--help")
    for name in RECIPES:
        assert name in proc.stdout
    bad = _run_cli("evaluate")  # a usage error: still no TensorFlow
    assert bad.returncode == 2 and "IMPORTED False False" in bad.stdout


def test_commands_are_quiet_unless_verbose(tmp_path):
    """No TensorFlow C++ log lines on stderr; --verbose shows them again."""
    npy = str(tmp_path / "x.npy")
    np.save(npy, np.zeros((2, 32, 32, 3), np.uint8))
    argv = ("extract", "--model", "cifar10:no-such-preset", "--images", npy, "--out",
            str(tmp_path / "f.npy"))
    proc = _run_cli(*argv)
    assert proc.returncode == 2
    assert "No preset 'no-such-preset'" in proc.stderr and "dim_pairs" in proc.stderr
    assert "IMPORTED True True" in proc.stdout
    noisy = ("cuda", "I0000", "oneDNN", "absl::InitializeLog")
    assert not any(word in proc.stderr for word in noisy), proc.stderr
    loud = _run_cli("--verbose", *argv)
    assert loud.returncode == 2
    assert any(word in loud.stderr for word in noisy), loud.stderr
