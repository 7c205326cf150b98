"""A fork server that runs pytest for cosmic-ray without paying TensorFlow's import per mutant.

The server imports TensorFlow, Keras and pytest once (never keras_infobal), then forks a
child per request; the child imports keras_infobal afresh from disk, so it sees the module
cosmic-ray has just mutated, runs pytest and exits with pytest's status. `run_tests.py` is
the client that cosmic-ray's test-command calls.

Usage: python dev/cosmic-ray/forkserver.py SOCKET  (from the tree under test)
"""

import os
import signal
import socket
import sys

sys.dont_write_bytecode = True  # never cache a mutant's bytecode
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402,F401
import numpy  # noqa: E402,F401
import pytest  # noqa: E402
import tensorflow  # noqa: E402,F401

assert not any(m.startswith("keras_infobal") for m in sys.modules)

TIMEOUT_S = int(os.environ.get("FORKSERVER_TIMEOUT_S", "600"))


def serve(path):
    if os.path.exists(path):
        os.remove(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    while True:
        conn, _ = server.accept()
        with conn:
            argv = conn.recv(65536).decode().split("\0")
            pid = os.fork()
            if pid == 0:
                server.close()
                signal.alarm(TIMEOUT_S)  # a mutant that hangs must not hold the server
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                code = pytest.main(argv)
                os._exit(int(code))
            _, status = os.waitpid(pid, 0)
            code = os.waitstatus_to_exitcode(status)
            conn.sendall(str(code if code >= 0 else 128 - code).encode())


if __name__ == "__main__":
    serve(sys.argv[1])
