"""benchmarks/device_check.py runs green on a CPU (so it cannot rot before a GPU runs it)."""

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import device_check  # noqa: E402


def test_pytest_s_closing_line_is_read():
    output = ("....F\nFAILED tests/test_a.py::test_b - AssertionError\n"
              "1 failed, 4 passed, 2 skipped, 3 deselected in 9.1s\n")
    counts, failed = device_check.test_counts(output)
    assert counts == {"failed": 1, "passed": 4, "skipped": 2, "deselected": 3}
    assert failed == ["tests/test_a.py::test_b"]
    assert device_check.test_counts("no summary here") == ({}, [])
    assert device_check.test_counts("1 error in 2s")[0] == {"errors": 1}


@pytest.mark.slow
def test_the_tiny_device_check_runs_every_part_green(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "device_check.py"),
                           "--tiny", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "device_check.json").read_text())
    tests = report["tests"]["tensorflow"]
    assert tests["exit_code"] == 0 and tests["passed"] >= 1 and not tests.get("failed")
    assert set(report["speed"]["images_per_second"]) == set(device_check.TINY_SPEED_CONTENDERS)
    assert set(report["resnet18"]["images_per_second"]) == {"resnet18_tf"}
    assert "ours / PyTorch reference, float16 (TF)" in report["speed"]["ratios"]
    md = (tmp_path / "device_check.md").read_text()
    assert "| tensorflow | " in md and "GPU: " in md
