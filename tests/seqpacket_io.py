"""Receiving one SOCK_SEQPACKET packet the way osbuild's jsoncomm does,
shared by the Python test helpers (tests/server_compat.py and
tests/c/fake_reference_server.py)."""

import array
import os
import socket

MAX_FDS = 253


def recv_packet(sock):
    """One whole packet: its size is found by peeking with a growing buffer
    until MSG_TRUNC is clear; descriptors passed with it are closed."""
    size = 4096
    while True:
        _, _, flags, _ = sock.recvmsg(size, 0, socket.MSG_PEEK)
        if not flags & socket.MSG_TRUNC:
            break
        size *= 2
    data, ancdata, _, _ = sock.recvmsg(size, socket.CMSG_SPACE(MAX_FDS * 4))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
            for fd in fds:
                os.close(fd)
    return data
