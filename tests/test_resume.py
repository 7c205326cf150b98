"""A training process killed mid-epoch (SIGKILL) resumes and ends where an uninterrupted one
does, on TensorFlow, JAX and PyTorch (each worker its own process)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ROOT, tiny

BACKENDS = ["tensorflow", "jax", "torch"]

WORKER = os.path.join(ROOT, "tests", "resume_worker.py")


def load(path):
    model = tiny(infomin_weight=1.0)
    import keras

    model.compile(optimizer=keras.optimizers.Adam(), discriminator_optimizer=keras.optimizers.Adam())
    model.load_weights(path)
    return model


def run(args, backend="tensorflow", **kw):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": backend}
    return subprocess.Popen([sys.executable, WORKER, *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, backend):
    epochs = "4"
    ref = tmp_path / "ref"
    ref.mkdir()
    p = run([str(ref / "backup"), str(ref / "w.weights.h5"), str(ref), epochs], backend)
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-3000:]

    crash = tmp_path / "crash"
    crash.mkdir()
    args = [str(crash / "backup"), str(crash / "w.weights.h5"), str(crash), epochs]
    p = run(args + ["slow"], backend)
    deadline = time.time() + 300
    while not (crash / "epoch2").exists():
        assert p.poll() is None and time.time() < deadline, "worker died before epoch 2"
        time.sleep(0.2)
    time.sleep(0.6)  # a few batches into epoch 3
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (crash / "epoch4").exists() and not (crash / "w.weights.h5").exists()
    for marker in crash.glob("epoch*"):
        marker.unlink()

    p = run(args, backend)  # restart: BackupAndRestore resumes after epoch 2
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-3000:]
    # It resumed: only epochs 3 and 4 ran after the restart.
    assert sorted(m.name for m in crash.glob("epoch*")) == ["epoch3", "epoch4"]
    a, b = load(str(ref / "w.weights.h5")), load(str(crash / "w.weights.h5"))
    for va, vb in zip(a.variables, b.variables):
        np.testing.assert_array_equal(np.array(va), np.array(vb), err_msg=va.path)
    for opt in ("optimizer", "discriminator_optimizer"):
        assert int(getattr(a, opt).iterations) == int(getattr(b, opt).iterations) == 4 * 8


def test_a_half_written_backup_falls_back_to_the_previous_good_one(tmp_path):
    """A crash while BackupAndRestore writes its file must not lose the run: with
    double_checkpoint=True (as keras_infobal.pretraining uses) the previous epoch's copy is
    restored, and training resumes from it."""
    import keras

    from helpers import optimizers

    x = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3)).astype("uint8")
    backup = str(tmp_path / "backup")

    def fit(epochs):
        model = tiny(infomin_weight=1.0)
        model.compile(**optimizers())
        seen = []
        model.fit(x, batch_size=8, epochs=epochs, verbose=0, shuffle=False, callbacks=[
            keras.callbacks.BackupAndRestore(backup, double_checkpoint=True,
                                             delete_checkpoint=False),
            keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: seen.append(e))])
        return model, seen

    fit(2)
    latest = os.path.join(backup, "latest.weights.h5")
    assert os.path.exists(latest + ".bkp")  # the epoch-1 copy
    with open(latest, "r+b") as f:  # simulate a crash mid-write of the epoch-2 file
        f.truncate(1000)
    model, seen = fit(3)
    assert seen == [1, 2]  # resumed after epoch 1 from the good copy, not from scratch
    assert int(model.optimizer.iterations) == 3 * 4
