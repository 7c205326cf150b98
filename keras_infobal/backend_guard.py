"""What must hold before keras_infobal imports Keras: a Keras that saves and reloads these
models faithfully, and, on the torch backend, Triton kept apart from TensorFlow's LLVM.

Keras before 3.15 saves an `InfoBal` that reloads into a model predicting differently (no
error, no warning; found on a fresh machine with keras 3.8, 3.10, 3.12 and 3.14 on tensorflow
2.18.1, and keras 3.8 on jax 0.4.30): `require_keras()` refuses those versions at import.

TensorFlow 2.21 loads its libraries with RTLD_GLOBAL, so the ~12,000 LLVM symbols of
`libtensorflow_framework.so.2` become visible to every library loaded after it. Triton's
`libtriton.so` (which torch loads with `torch._dynamo`, and Keras' torch backend imports at
`import keras`) then binds to TensorFlow's LLVM instead of its own and dies with SIGSEGV in
a static initializer (`llvm::DebugCounter`, gdb: `_GLOBAL__sub_I_PassBuilder.cpp`). So with
`KERAS_BACKEND=torch`, a process that imported TensorFlow first crashes as soon as Keras'
torch backend loads.

`protect_triton()` runs at `import keras_infobal`, before Keras is imported: when the
backend will be torch, TensorFlow's LLVM is already global and Triton is not loaded yet, it
loads `libtriton.so` itself with RTLD_DEEPBIND (its own LLVM first); Python's later import of
Triton reuses that handle. Where that fails, Triton is hidden from torch (`torch.compile`'s
Triton kernels are then unavailable; CPU training does not use them), with a warning.

With `KERAS_BACKEND=torch` set, `import tensorflow` itself imports Keras (TensorFlow's
`__init__` does), so it would crash before this module could run: the startup hook
`keras_infobal_startup.py`, which the install puts in site-packages as a `.pth` file, loads
Triton before TensorFlow for that case. This guard covers processes where the hook is off
(`KERAS_INFOBAL_NO_STARTUP_HOOK=1`) and TensorFlow was imported without Keras.
"""

import ctypes
import os
import sys
import warnings

from keras_infobal_startup import configured_backend, triton_library

MIN_KERAS = (3, 15, 1)
# A symbol of TensorFlow's LLVM (libtensorflow_framework.so.2) that Triton's also defines.
_LLVM_PROBE = "_ZN4llvm12DebugCounter8instanceEv"


def tensorflow_llvm_is_global():
    """Whether TensorFlow's LLVM symbols are in the process's global scope."""
    if os.name != "posix":
        return False
    try:
        return hasattr(ctypes.CDLL(None), _LLVM_PROBE)
    except OSError:
        return False


def protect_triton():
    """Loads Triton so that it binds to its own LLVM; returns True when it acted."""
    if configured_backend() != "torch" or "triton" in sys.modules:
        return False
    if not tensorflow_llvm_is_global():
        return False
    library = triton_library()
    if library is None:
        return False
    try:
        ctypes.CDLL(library, mode=os.RTLD_NOW | os.RTLD_LOCAL | getattr(os, "RTLD_DEEPBIND", 0))
    except OSError as e:
        sys.modules["triton"] = None  # torch then runs without Triton's kernels
        warnings.warn(
            f"TensorFlow was imported before Keras on the torch backend, and Triton could not "
            f"be loaded apart from TensorFlow's LLVM ({e}); Triton is disabled in this process "
            "to avoid a segfault. Import keras (or keras_infobal) before tensorflow to keep it.",
            stacklevel=3)
    return True


def _version(text):
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts + [0] * (3 - len(parts)))


def require_keras(version=None):
    """Raises an ImportError naming the needed version when Keras is older than MIN_KERAS."""
    if version is None:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as installed

        try:
            version = installed("keras")
        except PackageNotFoundError:
            raise ImportError("keras_infobal needs Keras: pip install 'keras>=3.15.1'") from None
    if _version(version) < MIN_KERAS:
        needed = ".".join(map(str, MIN_KERAS))
        raise ImportError(
            f"keras_infobal needs keras>={needed}; this environment has keras {version}, whose "
            "saved models reload with different predictions. Upgrade: "
            f"pip install 'keras>={needed},<3.16'."
        )
