import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers import TINY, bf16_matmul_unavailable, fp16_conv_unavailable  # noqa: E402


@pytest.fixture
def tiny_config():
    return dict(TINY)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8)


def pytest_runtest_setup(item):
    if item.get_closest_marker("bf16"):
        reason = bf16_matmul_unavailable()
        if reason:
            pytest.skip(reason)
    if item.get_closest_marker("fp16"):
        reason = fp16_conv_unavailable()
        if reason:
            pytest.skip(reason)
