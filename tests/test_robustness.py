"""Numerical safety, bad input, safe loading, atomic saving, determinism, property tests."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import ROOT, optimizers, tiny
from keras_infobal import (
    InfoBal,
    JSDCritic,
    NonFiniteGuard,
    ViewEncoder,
    atomic_save,
    load_infobal,
)
from keras_infobal.callbacks import NonFiniteObjectiveError


def run_python(code, env=None, timeout=300):
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_same_seed_gives_identical_weights(tmp_path, backend):
    """Two processes with the same seed end with bit-identical weights and optimizer states."""
    code = """
        import sys
        sys.path.insert(0, "tests")
        import keras_infobal  # before tensorflow (docs/backends.md)
        import keras, numpy as np, tensorflow as tf
        from helpers import optimizers, tiny
        tf.config.experimental.enable_op_determinism()
        keras.utils.set_random_seed(7)
        x = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3)).astype("uint8")
        m = tiny(infomin_weight=1.0)
        m.compile(**optimizers())
        m.fit(x, batch_size=8, epochs=2, verbose=0)
        state = m.variables + m.optimizer.variables + m.discriminator_optimizer.variables
        np.savez(sys.argv[1], *[keras.ops.convert_to_numpy(v) for v in state])
        print("SAVED", int(m.optimizer.iterations))
    """
    runs = []
    for k in range(2):
        path = str(tmp_path / f"run{k}.npz")
        res = subprocess.run([sys.executable, "-c", textwrap.dedent(code), path], cwd=ROOT,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                                  "KERAS_BACKEND": backend},
                             capture_output=True, text=True, timeout=300)
        assert "SAVED 8" in res.stdout, res.stdout + res.stderr[-3000:]
        runs.append(np.load(path))
    assert len(runs[0].files) == len(runs[1].files) > 10
    for key in runs[0].files:
        np.testing.assert_array_equal(runs[0][key], runs[1][key], err_msg=key)


@pytest.mark.backend
def test_nonfinite_guard_names_terms_and_keeps_checkpoint(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 3)).astype("float32")
    model = tiny(infomin_weight=1.0)
    model.compile(**optimizers())
    backup = str(tmp_path / "backup")
    model.fit(x, batch_size=8, epochs=1, verbose=0, callbacks=[
        NonFiniteGuard(), keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False)])
    ckpt = os.path.join(backup, "latest.weights.h5")
    before = open(ckpt, "rb").read()
    bad = x.copy()
    bad[3, 2, 2, 0] = np.nan  # one bad pixel poisons every term through the batch
    with pytest.raises(NonFiniteObjectiveError) as err:
        model.fit(bad, batch_size=8, epochs=3, verbose=0, callbacks=[
            NonFiniteGuard(), keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False)])
    msg = str(err.value)
    assert "mi_R_V1" in msg and "objective" in msg and "not overwritten" in msg
    assert open(ckpt, "rb").read() == before


@pytest.mark.backend
def test_bad_dtypes_and_shapes_are_value_errors(tmp_path):
    model = tiny(infomin_weight=0.0)
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match="dtype bool"):
        model.fit(np.zeros((4, 16, 16, 3), bool), batch_size=2, verbose=0)
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        model.fit(np.zeros((4, 10), "float32"), batch_size=2, verbose=0)
    with pytest.raises(ValueError, match="too small"):
        tiny(**{"image_shape": (2, 2, 3)})


@pytest.mark.backend
def test_load_infobal_refuses_other_classes_and_unsafe_files(tmp_path):
    seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    seq_path = str(tmp_path / "seq.keras")
    seq.save(seq_path)
    with pytest.raises(ValueError, match="holds a Sequential model, not an InfoBal model"):
        load_infobal(seq_path)
    lam = keras.Sequential([keras.Input((3,)), keras.layers.Lambda(lambda t: t * 2)])
    lam_path = str(tmp_path / "lambda.keras")
    lam.save(lam_path)
    with pytest.raises(ValueError, match="safe_mode"):
        load_infobal(lam_path)
    good = tiny()
    good_path = str(tmp_path / "good.keras")
    good.save(good_path)
    assert isinstance(load_infobal(good_path), InfoBal)
    truncated = str(tmp_path / "cut.keras")
    with open(good_path, "rb") as f, open(truncated, "wb") as g:
        g.write(f.read()[:1000])
    with pytest.raises(ValueError, match="truncated"):
        load_infobal(truncated)
    with pytest.raises(ValueError, match=r"\.keras"):
        load_infobal(str(tmp_path / "weights.h5"))


@pytest.mark.backend
def test_atomic_save_keeps_the_old_file_when_saving_fails(tmp_path, monkeypatch):
    model = tiny()
    path = str(tmp_path / "m.keras")
    atomic_save(model, path)
    before = open(path, "rb").read()

    def crash(self, filepath, *a, **k):
        with open(filepath, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(InfoBal, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_save(model, path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["m.keras"]  # no temporary file left behind


# ------------------------------------------------------------------- property-based tests
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    num_views=st.integers(1, 9),
    split=st.sampled_from(["rows", "columns", "grid", "separate"]),
    size=st.integers(1, 24),
    channels=st.sampled_from([1, 3, 4]),
    rank=st.sampled_from([3, 4, 5]),
)
def test_view_encoder_property(num_views, split, size, channels, rank):
    enc = ViewEncoder(num_views=num_views, split=split, filters=(2, 4))
    shape = (2, size, size, channels)[:rank] if rank <= 4 else (2, 1, size, size, channels)
    x = np.zeros(shape, "uint8")
    side = -(-(-(-size // 2)) // 2)  # two stride-2 'same' convs
    if rank != 4 or channels != 3 or size < 4:
        with pytest.raises(ValueError) as err:
            enc(x)
        assert len(str(err.value)) > 20
        return
    if split == "grid":
        from keras_infobal.layers.view_encoder import grid_shape

        gr, gc = grid_shape(num_views)
        ok, vh, vw = side % gr == 0 and side % gc == 0, side // gr, side // gc
    elif split == "rows":
        ok, vh, vw = side % num_views == 0, side // num_views, side
    elif split == "columns":
        ok, vh, vw = side % num_views == 0, side, side // num_views
    else:
        ok, vh, vw = True, side, side
    if num_views == 1:
        ok, vh, vw = True, side, side
    if not ok:
        with pytest.raises(ValueError, match="does not divide"):
            enc(x)
        return
    assert tuple(enc(x).shape) == (2, num_views, vh, vw, 4)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 5),
    dim=st.integers(1, 6),
    local_rank=st.sampled_from([1, 2, 3, 4, 5]),
    local_dim=st.integers(1, 6),
)
def test_critic_property(batch, dim, local_rank, local_dim):
    g = np.ones((batch, dim), "float32")
    l = np.ones((batch,) + (2,) * (local_rank - 2) + (local_dim,), "float32") \
        if local_rank >= 2 else np.ones((local_dim,), "float32")
    critic = JSDCritic(units=4)
    if local_rank not in (2, 3, 4) or batch < 2:
        with pytest.raises(ValueError) as err:
            critic([g, l])
        assert len(str(err.value)) > 20
        return
    value = critic([g, l])
    assert tuple(value.shape) == () and np.isfinite(float(value))
