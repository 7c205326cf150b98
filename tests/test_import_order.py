"""Training on the PyTorch backend whatever was imported first (keras_infobal/backend_guard.py).

Each case runs in its own process: the crash this guards against is a SIGSEGV."""

import json
import os
import subprocess
import sys
import textwrap

from helpers import ROOT

TRAIN = """
    import numpy as np
    import keras
    import keras_infobal as kib
    assert keras.backend.backend() == "torch"
    x = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3)).astype("uint8")
    backbone = kib.InfoBalBackbone(filters=(4, 8), conv_filters=8, fc_units=8, output_dim=4)
    model = kib.InfoBal(backbone, critic_units=8)
    model.compile(optimizer="adam", discriminator_optimizer="adam")
    data = tf.data.Dataset.from_tensor_slices(x).batch(4)
    history = model.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    print("TRAINED")
"""


def _run(first, **env):
    """Runs `first` (what the script imports first), then TRAIN, in a fresh process."""
    code = textwrap.dedent(first) + textwrap.dedent(TRAIN)
    full = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "torch", **env}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=600)


def test_tensorflow_imported_and_used_first_then_training_on_torch():
    # TF_USE_LEGACY_KERAS=1 keeps TensorFlow's own import from importing Keras (with
    # KERAS_BACKEND=torch that import crashes inside TensorFlow, before any package runs).
    code = """
        import tensorflow as tf
        print(float(tf.reduce_sum(tf.ones((2, 2)))))
        from keras_infobal import backend_guard
        assert backend_guard.tensorflow_llvm_is_global()  # the hazard is there
    """
    proc = _run(code, TF_USE_LEGACY_KERAS="1")
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert "TRAINED" in proc.stdout


def test_keras_infobal_imported_before_tensorflow_on_torch():
    code = """
        import keras_infobal
        import tensorflow as tf
    """
    proc = _run(code)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert "TRAINED" in proc.stdout


def test_the_guard_reads_the_backend_without_importing_keras(tmp_path, monkeypatch):
    from keras_infobal import backend_guard

    code = """
        import json, sys
        sys.path.insert(0, "keras_infobal")
        import backend_guard  # the module alone: the package would import Keras
        print(json.dumps([backend_guard.configured_backend(), "keras" in sys.modules]))
    """
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    for extra, expected in (({"KERAS_BACKEND": "torch"}, "torch"),
                            ({"KERAS_HOME": str(tmp_path)}, "jax"),
                            ({"KERAS_HOME": str(tmp_path / "none")}, "tensorflow")):
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                              env={**env, **extra}, capture_output=True, text=True,
                              timeout=120)
        assert json.loads(proc.stdout.splitlines()[-1]) == [expected, False], proc.stderr
    # On this process's backend (not torch), or with Keras already imported, it does nothing.
    if backend_guard.configured_backend() != "torch":
        assert backend_guard.protect_triton() is False


def test_an_older_keras_is_refused_with_the_version_to_install():
    import pytest

    from keras_infobal import backend_guard

    backend_guard.require_keras("3.15.1")
    backend_guard.require_keras("3.15.2rc1")
    for old in ("3.14.0", "3.8.0", "2.15.0"):
        with pytest.raises(ImportError, match=rf"needs keras>=3\.15\.1; this environment has "
                                              rf"keras {old}.*pip install 'keras>=3\.15\.1,<3\.16'"):
            backend_guard.require_keras(old)
