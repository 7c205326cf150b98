"""Training on the PyTorch backend whatever was imported first (keras_infobal_startup.py,
keras_infobal/backend_guard.py).

Each case runs in its own process: the crash this guards against is a SIGSEGV. The startup
hook is a `.pth` file the install puts in site-packages, so these tests need the package
installed (`pip install -e .`), as CI does."""

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


def test_a_bare_import_tensorflow_first_then_training_on_torch():
    # TensorFlow's __init__ imports Keras, whose torch backend loads Triton after
    # TensorFlow's LLVM: without the startup hook this process dies inside `import tensorflow`.
    code = """
        import tensorflow as tf
        print(float(tf.reduce_sum(tf.ones((2, 2)))))
        import sys
        assert "triton" in sys.modules  # TensorFlow's import did load Keras' torch backend
    """
    proc = _run(code)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert "TRAINED" in proc.stdout


def test_the_startup_hook_is_installed_and_acts_once_on_tensorflow(tmp_path):
    code = """
        import json, sys
        import keras_infobal_startup as hook
        hooks = [f for f in sys.meta_path if isinstance(f, hook._BeforeTensorFlow)]
        state = {"installed_at_start": len(hooks), "again": hook.install()}
        import numpy  # other imports leave it in place
        state["after_numpy"] = sum(isinstance(f, hook._BeforeTensorFlow) for f in sys.meta_path)
        import tensorflow
        state["after_tf"] = sum(isinstance(f, hook._BeforeTensorFlow) for f in sys.meta_path)
        state["triton_loaded"] = "triton" in sys.modules
        print(json.dumps(state))
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_HOME": str(tmp_path)}
    for backend, triton in (("torch", True), ("tensorflow", False)):
        env["KERAS_BACKEND"] = backend
        proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, (backend, proc.stderr[-3000:])
        state = json.loads(proc.stdout.splitlines()[-1])
        assert state == {"installed_at_start": 1, "again": False, "after_numpy": 1,
                         "after_tf": 0, "triton_loaded": triton}, (backend, state)
    # Turned off: not installed at start, and install() refuses.
    env["KERAS_INFOBAL_NO_STARTUP_HOOK"] = "1"
    probe = ("import sys, keras_infobal_startup as h; print(sum(isinstance(f, "
             "h._BeforeTensorFlow) for f in sys.meta_path), h.install())")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["0", "False"], proc.stderr


def test_the_startup_hook_loads_triton_only_on_the_torch_backend(monkeypatch):
    import keras_infobal_startup as hook

    loaded = []
    monkeypatch.setattr("ctypes.CDLL", lambda path, mode=0: loaded.append(path))
    monkeypatch.delitem(sys.modules, "triton", raising=False)
    monkeypatch.setattr(hook, "triton_library", lambda: "/lib/libtriton.so")
    for backend, acts in (("jax", False), ("tensorflow", False), ("torch", True)):
        monkeypatch.setattr(hook, "configured_backend", lambda b=backend: b)
        assert hook.preload_triton() is acts
    assert loaded == ["/lib/libtriton.so"]
    monkeypatch.setattr(hook, "triton_library", lambda: None)  # Triton not installed
    assert hook.preload_triton() is False
    monkeypatch.setitem(sys.modules, "triton", object())  # already loaded: too late to help
    monkeypatch.setattr(hook, "triton_library", lambda: "/lib/libtriton.so")
    assert hook.preload_triton() is False
    assert loaded == ["/lib/libtriton.so"]
    monkeypatch.delitem(sys.modules, "triton")
    monkeypatch.setattr(hook, "configured_backend", lambda: "tensorflow")
    assert hook.preload_triton(any_backend=True) is True  # TF and PyTorch in one process
    assert loaded == ["/lib/libtriton.so"] * 2


def test_tensorflow_imported_and_used_first_then_training_on_torch_without_the_hook():
    # TF_USE_LEGACY_KERAS=1 keeps TensorFlow's own import from importing Keras; with the
    # startup hook off, `import keras_infobal` is what keeps Triton apart (backend_guard).
    code = """
        import tensorflow as tf
        print(float(tf.reduce_sum(tf.ones((2, 2)))))
        from keras_infobal import backend_guard
        assert backend_guard.tensorflow_llvm_is_global()  # the hazard is there
    """
    proc = _run(code, TF_USE_LEGACY_KERAS="1", KERAS_INFOBAL_NO_STARTUP_HOOK="1")
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


def test_the_wheel_carries_the_startup_hook_at_its_root(tmp_path):
    import zipfile

    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", ROOT, "-w", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("keras_infobal-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert {"keras_infobal_startup.pth", "keras_infobal_startup.py"} <= set(z.namelist())
        line = z.read("keras_infobal_startup.pth").decode().strip()
    # site.py runs a .pth line only when it starts with "import"; one line, no newline inside.
    assert line == "import keras_infobal_startup; keras_infobal_startup.install()"
