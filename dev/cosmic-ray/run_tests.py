"""Client of forkserver.py: runs pytest with these arguments there; exits with its status."""

import os
import socket
import sys

sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(os.environ.get("FORKSERVER_SOCKET", "forkserver.sock"))
sock.sendall("\0".join(sys.argv[1:]).encode())
sock.shutdown(socket.SHUT_WR)
sys.exit(int(sock.recv(16).decode() or 1))
