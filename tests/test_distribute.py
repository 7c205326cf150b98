"""tf.distribute: MirroredStrategy on 2 logical CPUs, MultiWorkerMirroredStrategy on 2 processes.

Each case runs tests/distributed_worker.py in a fresh process (logical devices and TF_CONFIG
must be set before TensorFlow starts).
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT

WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def mirrored(tmp_path, cross, critic):
    out = str(tmp_path / f"m{cross}{critic}.npz")
    res = subprocess.run([sys.executable, WORKER, "mirrored", out, str(int(cross)), critic],
                         env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    d = np.load(out, allow_pickle=True)
    assert int(d["replicas"]) == 2
    diff = max(np.abs(a - b).max() for a, b in zip(d["one"], d["two"]))
    update = max(np.abs(a - b).max() for a, b in zip(d["one"], d["start"]))
    return diff, update


@pytest.mark.parametrize("critic", ["jsd", "infonce"])
def test_two_replicas_match_one_device_with_cross_replica_negatives(tmp_path, critic):
    # One SGD step, global batch 16 on 2 replicas vs batch 16 on one device: the gradient
    # scale (losses divided by num_replicas_in_sync, Keras sums gradients), the gathered
    # negatives and the synchronized BatchNorm statistics make them agree.
    diff, update = mirrored(tmp_path, True, critic)
    assert update > 0.1
    assert diff < 1e-4 * max(1.0, update), (diff, update)


def test_documented_differences_without_gathering_and_for_dv(tmp_path):
    # Per-replica negatives and BatchNorm statistics (the defaults) change the step: each
    # replica sees 7 negatives per anchor instead of 15 and normalizes over 8 images.
    diff, update = mirrored(tmp_path, False, "jsd")
    assert diff > 1e-2 * update, (diff, update)
    # DV's log-mean-exp over negatives is taken per replica even with gathered negatives:
    # the mean of two logs is not the log of the mean, so DV (and NWJ) steps differ.
    diff, update = mirrored(tmp_path, True, "dv")
    assert diff > 1e-2 * update, (diff, update)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multi_worker_mirrored_strategy_on_two_local_workers(tmp_path):
    ports = [str(free_port()), str(free_port())]
    outs = [str(tmp_path / f"w{i}.npz") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, WORKER, "multiworker", outs[i], str(i), *ports],
                              env=ENV, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        for p in procs:
            assert p.wait(timeout=600) == 0, p.stderr.read()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    a, b = (np.load(o, allow_pickle=True) for o in outs)
    assert int(a["replicas"]) == int(b["replicas"]) == 2
    assert np.isfinite(float(a["loss"]))
    for wa, wb in zip(a["weights"], b["weights"]):
        np.testing.assert_array_equal(wa, wb)  # both workers hold the same model
