"""The README's user script runs as written."""

import os
import re

from conftest import ROOT


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
