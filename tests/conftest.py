import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_TAR = os.path.join(os.path.dirname(ROOT), "shared", "data", "cifar10-jpeg.tar.gz")

# A small configuration: the same architecture, narrow, so tests run in seconds.
TINY = dict(filters=(8, 16), conv_filters=16, fc_units=32, output_dim=8, critic_units=16,
            input_shape=(16, 16, 3))


@pytest.fixture
def tiny_config():
    return dict(TINY)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8)


def optimizers(lr=1e-3):
    import keras

    return dict(optimizer=keras.optimizers.Adam(lr),
                discriminator_optimizer=keras.optimizers.Adam(lr))
