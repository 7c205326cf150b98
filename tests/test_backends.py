"""TensorFlow, JAX and PyTorch: the same step, files that move between them, JAX data parallel.

The cross-backend cases run tests/backend_worker.py once per backend, each in its own process
(KERAS_BACKEND is fixed when Keras is imported); they need jax and torch installed
(`pip install -e ".[jax,torch]"`). The tests marked `backend` run in-process under whatever
backend this pytest runs with (CI: `KERAS_BACKEND=jax python -m pytest -m backend`).
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers import ROOT, infomin_critics, optimizers, tiny

WORKER = os.path.join(ROOT, "tests", "backend_worker.py")
BACKENDS = ("tensorflow", "jax", "torch")
missing = [m for m in ("jax", "torch") if importlib.util.find_spec(m) is None]
needs_all_backends = pytest.mark.skipif(
    bool(missing), reason=f"{missing} not installed: pip install -e '.[jax,torch]'")

# One SGD step (lr 0.1, largest weight change ~0.2) from the same weights on the same batch.
# The backends' convolutions and reductions round differently in float32: measured, the
# weights after the step differ by at most ~2.5e-7 (DIM and InfoBal, JAX and PyTorch vs
# TensorFlow); the tolerance leaves 40x room for other CPUs' kernels.
STEP_ATOL = 1e-5


def worker(backend, *args, extra_env=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": backend,
           **(extra_env or {})}
    res = subprocess.run([sys.executable, WORKER, *map(str, args)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{backend}: {res.stderr[-4000:]}"
    return res


@needs_all_backends
@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_one_sgd_step_is_the_same_on_every_backend(tmp_path, lam):
    # lam=0: DIM (encoder step only); lam=1: InfoBal, one discriminator step then the
    # encoder step against the updated discriminator.
    worker("tensorflow", "init", tmp_path, lam)
    results = {}
    for backend in BACKENDS:
        out = tmp_path / f"{backend}.npz"
        worker(backend, "step", tmp_path, lam, out)
        results[backend] = np.load(out, allow_pickle=True)
    ref = results["tensorflow"]
    update = max(np.abs(a - b).max() for a, b in zip(ref["end"], ref["start"]))
    assert update > 1e-3  # the step moved the weights
    ref_logs = json.loads(str(ref["logs"]))
    assert ("mi_V1_V2" in ref_logs) == (lam > 0)
    for backend in ("jax", "torch"):
        res = results[backend]
        assert list(res["paths"]) == list(ref["paths"])
        for a, b in zip(res["start"], ref["start"]):
            np.testing.assert_array_equal(a, b)
        diff = max(np.abs(a - b).max() for a, b in zip(res["end"], ref["end"]))
        assert diff < STEP_ATOL, (
            f"{backend} vs tensorflow: max |dw| = {diff:.2e} (update {update:.2e})")
        print(f"lambda={lam} {backend} vs tensorflow: max weight difference {diff:.2e}, "
              f"largest update {update:.2e}")
        logs = json.loads(str(res["logs"]))
        assert logs.keys() == ref_logs.keys()
        for k in logs:
            assert logs[k] == pytest.approx(ref_logs[k], abs=1e-4), k


@needs_all_backends
def test_keras_file_moves_jax_to_tensorflow_to_torch_and_training_continues(tmp_path):
    chain = [("jax", "-"), ("tensorflow", tmp_path / "jax.keras"),
             ("torch", tmp_path / "tensorflow.keras"), ("jax", tmp_path / "torch.keras")]
    prev = None
    for backend, src in chain:
        out = tmp_path / f"{backend}.npz"
        worker(backend, "chain", src, tmp_path / f"{backend}.keras", out)
        res = np.load(out, allow_pickle=True)
        assert str(res["backend"]) == backend
        assert np.isfinite(float(res["loss"]))
        if prev is not None:
            # Loaded on another backend: the same function, both optimizers' state...
            np.testing.assert_allclose(res["loaded_pred"], prev["pred"], atol=1e-4)
            assert list(res["iterations"]) == list(prev["after"])
        # ...and training continues from it (2 steps of each optimizer per fit).
        assert list(res["after"]) == [int(i) + 2 for i in res["iterations"]]
        prev = res


@needs_all_backends
def test_jax_data_parallel_on_two_devices_matches_one_device(tmp_path):
    out = tmp_path / "dp.npz"
    worker("jax", "dataparallel", out,
           extra_env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    d = np.load(out, allow_pickle=True)
    assert int(d["n_devices"]) == 2
    update = max(np.abs(a - b).max() for a, b in zip(d["one"], d["start"]))
    diff = max(np.abs(a - b).max() for a, b in zip(d["one"], d["two"]))
    assert update > 1e-3
    assert diff < 1e-4 * max(1.0, update), (diff, update)


@pytest.mark.backend
def test_tensorflow_only_options_name_the_backend_and_the_alternative():
    backend = keras.backend.backend()
    model = tiny()
    if backend == "tensorflow":
        model.compile(**optimizers(), cross_replica_negatives=True,
                      synchronized_batch_norm=True)
        # Every BatchNormalization of the model (backbone and InfoMax critics) syncs.
        norms = [layer for layer in model._flatten_layers()
                 if isinstance(layer, keras.layers.BatchNormalization)]
        assert len(norms) >= 6 and all(layer.synchronized for layer in norms)
        assert model.get_compile_config()["synchronized_batch_norm"] is True
        model.compile(**optimizers())
        assert not any(layer.synchronized for layer in norms)
        return
    with pytest.raises(ValueError, match=rf"cross_replica_negatives=True needs the TensorFlow "
                                         rf"backend.*{backend} backend.*DataParallel"):
        model.compile(**optimizers(), cross_replica_negatives=True)
    with pytest.raises(ValueError, match=rf"synchronized_batch_norm=True.*{backend} backend"):
        model.compile(**optimizers(), synchronized_batch_norm=True)


@pytest.mark.backend
def test_club_sampled_trains_and_its_seed_state_advances(images):
    # The sampled CLUB's partner permutation comes from a SeedGenerator: a non-trainable
    # variable that the (JAX: stateless) steps must carry from one batch to the next.
    model = tiny(infomin_weight=1.0, infomin_critic="club_sampled",
                    discriminator_steps=2)
    model.compile(**optimizers())
    seed = infomin_critics(model).seed_generator.state
    before = np.array(seed)
    disc_before = [np.array(v) for v in model.discriminator_variables]
    hist = model.fit(images, batch_size=4, epochs=1, verbose=0)
    assert all(np.isfinite(v[-1]) for v in hist.history.values())
    assert not np.array_equal(before, np.array(seed))
    assert int(model.discriminator_optimizer.iterations) == 4  # k=2 per batch, 2 batches
    assert int(model.optimizer.iterations) == 2
    assert any(not np.array_equal(b, np.array(v))
               for b, v in zip(disc_before, model.discriminator_variables))


@pytest.mark.backend
def test_features_from_arrays_and_tf_data_and_a_probe_on_this_backend(images):
    # extract_features runs through predict (a feature-dict predict_step): arrays and tf.data
    # give the same features, and the probe trains on them. (The converged-protocol probe
    # test stays TensorFlow-only: hundreds of tiny eager steps take minutes on PyTorch.)
    import tensorflow as tf

    from keras_infobal.evaluation import linear_probe

    model = tiny(infomin_weight=0.0)
    from_arrays = model.extract_features(images, layers=("conv", "R"), batch_size=4)
    ds = tf.data.Dataset.from_tensor_slices((images, np.zeros(len(images)))).batch(3)
    from_ds = model.extract_features(ds, layers=("conv", "R"))
    for k in ("conv", "R"):
        np.testing.assert_allclose(from_ds[k], from_arrays[k], atol=1e-5)
    np.testing.assert_allclose(from_arrays["R"], model.predict(images, verbose=0), atol=1e-5)
    y = np.arange(len(images)) % 2
    acc = linear_probe(model, (images, y), (images, y), layers=("R",), protocol="note",
                       classes=2)
    assert set(acc) == {"R"} and 0.0 <= acc["R"] <= 1.0
