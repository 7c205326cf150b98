"""The `keras-infobal` command's entry point.

It runs `keras_infobal/cli.py` without importing the `keras_infobal` package first: the
package imports Keras and TensorFlow (seconds, and C++ log lines), which `--help` and argument
errors do not need. Commands import them when they run.
"""

import importlib.util
import os
import sys


def _cli_module():
    spec = importlib.util.find_spec("keras_infobal")  # locates the package, does not run it
    path = os.path.join(spec.submodule_search_locations[0], "cli.py")
    module_spec = importlib.util.spec_from_file_location("_keras_infobal_cli", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def main(argv=None):
    return _cli_module().main(argv)


if __name__ == "__main__":
    sys.exit(main())
