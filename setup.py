"""The build: setup.cfg has the metadata; this adds `keras_infobal_startup.pth` to the wheel
and to editable installs.

A `.pth` file at the root of site-packages runs at interpreter start; this one installs the
import hook of `keras_infobal_startup.py` (why: that module's docstring)."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "keras_infobal_startup.pth"
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), PTH)) as f:
    PTH_TEXT = f.read()


class BuildPy(build_py):
    """Regular wheels: the .pth joins the modules at the wheel's root."""

    def run(self):
        super().run()
        with open(os.path.join(self.build_lib, PTH), "w") as f:
            f.write(PTH_TEXT)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


cmdclass = {"build_py": BuildPy}

try:
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # setuptools < 64 has no PEP 660 editable wheels
    editable_wheel = None

# `_select_strategy` is setuptools' own (64 to 84.2.1, the version tested): where it is
# missing, editable installs go without the hook rather than failing.
if editable_wheel is not None and hasattr(editable_wheel, "_select_strategy"):

    class _WithStartupHook:
        """Wraps setuptools' editable strategy: its files, then the .pth."""

        def __init__(self, strategy):
            self.strategy = strategy

        def __call__(self, wheel, files, mapping):
            self.strategy(wheel, files, mapping)
            wheel.writestr(PTH, PTH_TEXT)

        def __enter__(self):
            self.strategy.__enter__()
            return self

        def __exit__(self, *exc):
            return self.strategy.__exit__(*exc)

    class EditableWheel(editable_wheel):
        """Editable installs (`pip install -e .`) build no regular wheel: the .pth is added
        to the editable one."""

        def _select_strategy(self, *args, **kwargs):
            return _WithStartupHook(super()._select_strategy(*args, **kwargs))

    cmdclass["editable_wheel"] = EditableWheel

setup(cmdclass=cmdclass)
