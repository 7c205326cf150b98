"""Runs at interpreter start (`keras_infobal_startup.pth`): keeps PyTorch's Triton apart from
TensorFlow's LLVM on the torch backend, whatever the script imports first.

TensorFlow 2.21 loads its libraries with RTLD_GLOBAL, so the LLVM symbols of
`libtensorflow_framework.so.2` are visible to every library loaded after it. Triton's
`libtriton.so` has its own LLVM; loaded after TensorFlow, it binds to TensorFlow's and dies
with SIGSEGV in a static initializer. Keras' torch backend loads Triton (through
`torch._dynamo`) at `import keras`, and TensorFlow's own `__init__` imports Keras, so with
`KERAS_BACKEND=torch` a bare `import tensorflow` crashes before any package code could run.

`install()` adds a one-shot import hook for `tensorflow`: when the Keras backend is torch and
Triton is installed but not loaded, it loads `libtriton.so` (about 30 ms) before TensorFlow's
libraries, so Triton binds to its own LLVM; Python's later import of Triton reuses that
handle. Nothing else happens at start: the hook only reads the backend when `tensorflow` is
imported. `KERAS_INFOBAL_NO_STARTUP_HOOK=1` turns it off. This module imports no package:
it runs in every process of the environment, so at start it imports nothing beyond `os`
and `sys`.
"""

import os
import sys

OPT_OUT = "KERAS_INFOBAL_NO_STARTUP_HOOK"


def configured_backend():
    """The Keras backend this process will use, read without importing Keras."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        return keras.backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    import json

    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def triton_library():
    """The path of Triton's native library when Triton is installed, else None (no import)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    library = os.path.join(os.path.dirname(spec.origin), "_C", "libtriton.so")
    return library if os.path.exists(library) else None


def preload_triton(any_backend=False):
    """Loads libtriton.so now when the backend is torch (or, with `any_backend`, whatever
    it is: a process that uses TensorFlow and PyTorch side by side, as
    `benchmarks/profile_step.py` does) and Triton is not loaded yet; returns True when it
    did. Call it before TensorFlow is imported."""
    if os.name != "posix" or "triton" in sys.modules:
        return False
    if not any_backend and configured_backend() != "torch":
        return False
    library = triton_library()
    if library is None:
        return False
    import ctypes

    try:
        ctypes.CDLL(library, mode=os.RTLD_NOW | os.RTLD_LOCAL)
    except OSError:
        return False  # then Triton loads as it would have without this hook
    return True


class _BeforeTensorFlow:
    """A `sys.meta_path` finder (importlib.abc.MetaPathFinder's protocol, without importing
    importlib.abc at start) that acts once, on the first import of `tensorflow`, then leaves
    the import to Python."""

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow":
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            if "tensorflow" not in sys.modules:
                preload_triton()
        return None


def install():
    """Adds the hook unless turned off, TensorFlow is already imported or it is there."""
    if os.environ.get(OPT_OUT) or "tensorflow" in sys.modules:
        return False
    if any(isinstance(f, _BeforeTensorFlow) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _BeforeTensorFlow())
    return True
