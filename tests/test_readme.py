"""The README's user script runs as written."""

import os
import re
import subprocess

import numpy as np
import pytest

from helpers import ROOT


def readme_example():
    text = open(os.path.join(ROOT, "README.md")).read()
    marker = text.index("<!-- readme-example")
    return re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)


def test_readme_user_script_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    assert namespace["r"].shape == (8, 64)
    assert namespace["feats"]["conv"].shape == (8, 4096)
    assert "mi_V1_V2" in namespace["history"].history
    assert os.path.exists(tmp_path / "infobal.keras")
    # the reloaded model continued: its optimizers counted the steps before and after saving
    assert int(namespace["model"].optimizer.iterations) == 3 * 4
    assert int(namespace["model"].discriminator_optimizer.iterations) == 3 * 4


def test_readme_recipe_runs(tmp_path, monkeypatch):
    import keras

    monkeypatch.chdir(tmp_path)
    text = open(os.path.join(ROOT, "README.md")).read()
    marker = text.index("<!-- readme-recipe")
    code = re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)
    namespace = {}
    try:
        exec(compile(code, "README.md", "exec"), namespace)
        model = namespace["model"]
        assert model.augmented_pairs and model.encoder.compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    history = namespace["history"].history
    assert {"mi_R_V1", "mi_R_V2"} <= set(history) and "mi_V1_V2" not in history
    assert np.isfinite(history["loss"][-1])
    assert namespace["feats"]["fc"].shape == (8, 1024)


def readme_cli():
    text = open(os.path.join(ROOT, "README.md")).read()
    marker = text.index("<!-- readme-cli")
    block = re.search(r"```bash\n(.*?)```", text[marker:], re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


@pytest.mark.slow
@pytest.mark.data
def test_readme_cli_commands_run_as_written(tmp_path):
    from helpers import CIFAR_TAR

    if not os.path.exists(CIFAR_TAR):
        pytest.skip(f"{CIFAR_TAR} is absent")
    # The commands use ../shared/data relative to the project root: run them from a copy of
    # that layout so nothing is written into the checkout.
    work = tmp_path / "project"
    work.mkdir()
    os.symlink(os.path.dirname(os.path.dirname(CIFAR_TAR)), tmp_path / "shared")
    for line in readme_cli():
        res = subprocess.run(line, shell=True, cwd=work, capture_output=True, text=True,
                             timeout=1800)
        assert res.returncode == 0, (line, res.stderr[-3000:])
    assert (work / "feats.npy").exists() and (work / "mi_vs_acc.png").exists()


def test_readme_test_commands_are_what_ci_runs():
    # The README's quick-start block lists exactly the test commands of .ci/run, in order,
    # the slow tests included.
    text = open(os.path.join(ROOT, "README.md")).read()
    block = re.search(r"## Quick start\s*```bash\n(.*?)```", text, re.S).group(1)
    ci = open(os.path.join(ROOT, ".ci", "run")).read()

    def commands(lines):
        return [line.strip() for line in lines.splitlines() if "pytest" in line]

    assert commands(block) == commands(ci)
    assert "python -m pytest -q -m slow" in commands(ci)


@pytest.mark.parametrize("stem", ["speed", "views_speed", "xla_conv", "profile_step",
                                  "conv_layout"])
def test_readme_speed_tables_are_the_committed_results(stem):
    """Every table row of a committed benchmark result appears verbatim in the README, so
    the README's speed numbers are the ones its command wrote (regenerate both together)."""
    text = open(os.path.join(ROOT, "README.md")).read()
    path = os.path.join(ROOT, "benchmarks", "results", stem + ".md")
    rows = [line for line in open(path).read().splitlines() if line.startswith("| ")]
    assert rows
    missing = [row for row in rows if row not in text]
    assert not missing, f"README lacks these rows of {path}: {missing[:3]}"
