"""On a synthetic problem, training moves the MI estimates the right way."""

import keras
import numpy as np

from helpers import optimizers, tiny


def synthetic_images(n, seed=0):
    """16x16 images whose top and bottom halves share a colour (shared information) and each
    carry an independent stripe pattern of their own."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, size=(8, 3))
    shared = palette[rng.integers(0, 8, n)]  # (n, 3)
    x = np.zeros((n, 16, 16, 3), dtype="float32")
    x += shared[:, None, None, :] * 0.5
    for half in (slice(0, 8), slice(8, 16)):
        freq = rng.integers(1, 5, n)
        cols = np.arange(16)[None, :]
        stripes = (np.sin(cols * freq[:, None] * np.pi / 8) > 0).astype("float32") * 127
        x[:, half, :, :] += stripes[:, None, :, None]
    x += rng.normal(0, 8, x.shape)
    return np.clip(x, 0, 255).astype("uint8")


def train(lam, x, epochs):
    keras.utils.set_random_seed(0)
    # Both compile a discriminator optimizer: at lambda = 0 it trains the monitor.
    model = tiny(infomin_weight=lam)
    model.compile(**optimizers(2e-3))
    hist = model.fit(x, batch_size=32, epochs=epochs, verbose=0, shuffle=True)
    return model, hist.history


def test_infomax_rises_and_infomin_lowers_view_mi():
    x = synthetic_images(640)  # 20 steps an epoch
    _, dim = train(0.0, x, epochs=15)  # 300 steps
    _, bal = train(1.0, x, epochs=15)
    for hist in (dim, bal):
        for key in ("mi_R_V1", "mi_R_V2"):
            assert np.mean(hist[key][-3:]) > np.mean(hist[key][:1]) + 0.1, (key, hist[key])
    # The discriminator is trained in both runs (a monitor at lambda = 0); only InfoBal's
    # encoder pushes against it, so its view-view estimate ends lower.
    dim_vv, bal_vv = np.mean(dim["mi_V1_V2"][-3:]), np.mean(bal["mi_V1_V2"][-3:])
    assert bal_vv < dim_vv - 0.05, (bal_vv, dim_vv)
