#!/usr/bin/env python3
"""Drives the store server the way osbuild's StoreClient (on jsoncomm) does.

Usage: server_compat.py SOCKET STORE

The client auto-binds before connecting, sends json.dumps() output and
receives by peeking with a growing buffer until MSG_TRUNC is clear. Every
reply must be exactly the bytes the reference server sends for its value,
i.e. json.dumps(json.loads(reply)). The store must hold committed objects
"committed" and "\u00e9t\u00e9-\U0001f600" and nothing called "missing".
Exits 0 when every check passes.
"""

import json
import os
import socket
import sys

from seqpacket_io import recv_packet


class Client:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.bind("")  # auto-bind, as jsoncomm does
        self.sock.connect(path)
        self.sock.settimeout(30)

    def send(self, payload):
        self.sock.sendmsg([json.dumps(payload).encode()])

    def recv(self):
        data = recv_packet(self.sock)
        reply = json.loads(data)
        expected = json.dumps(reply).encode()
        if data != expected:
            raise AssertionError(f"reply bytes {data!r}, the reference sends {expected!r}")
        return reply

    def call(self, payload):
        self.send(payload)
        return self.recv()

    # The StoreClient methods.
    def read_tree(self, object_id):
        return self.call({"method": "read-tree", "object-id": object_id})["path"]

    def read_tree_at(self, object_id, target, path="/"):
        msg = self.call({"method": "read-tree-at", "object-id": object_id,
                         "target": os.fspath(target), "subtree": os.fspath(path)})
        if msg.get("error"):
            raise RuntimeError(msg["error"])
        return msg["path"]

    def mkdtemp(self, suffix=None, prefix=None):
        return self.call({"method": "mkdtemp", "suffix": suffix, "prefix": prefix})["path"]

    def source(self, name):
        return self.call({"method": "source", "name": name})["path"]


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def main():
    sock_path, store = sys.argv[1], sys.argv[2]
    client = Client(sock_path)
    refs = os.path.join(store, "refs")

    def names_object(path, object_id):
        # The object itself, objects/<name>, that refs/<id> resolves to.
        return (os.path.dirname(path) == os.path.join(store, "objects")
                and os.path.realpath(path) == os.path.realpath(os.path.join(refs, object_id)))

    check(names_object(client.read_tree("committed"), "committed"), "read-tree committed")
    emoji = "\u00e9t\u00e9-\U0001f600"
    check(names_object(client.read_tree(emoji), emoji), "read-tree non-ASCII")
    check(client.read_tree("missing") is None, "read-tree missing")
    check(client.read_tree_at("missing", "/nonexistent") is None, "read-tree-at missing")

    tmp = client.mkdtemp()
    check(os.path.isdir(tmp) and os.path.basename(tmp).startswith("tmp"), f"mkdtemp {tmp}")
    tmp2 = client.mkdtemp(suffix=".d", prefix="p-\u00e9")
    name = os.path.basename(tmp2)
    check(os.path.isdir(tmp2) and name.startswith("p-\u00e9") and name.endswith(".d"), f"mkdtemp {tmp2}")
    check(os.path.dirname(tmp) == os.path.dirname(tmp2), "one temp root")

    check(client.source("org.osbuild.files") == os.path.join(store, "sources", "org.osbuild.files"),
          "source")

    # Where the reference hangs, this server answers with an error.
    reply = client.call({"method": "no-such-method"})
    check(list(reply) == ["error"] and isinstance(reply["error"], str), f"unknown method: {reply}")
    reply = client.call({"method": "read-tree", "object-id": "../../etc"})
    check(list(reply) == ["error"], f"escaping id: {reply}")
    # And goes on serving.
    check(names_object(client.read_tree("committed"), "committed"), "still serving")

    # A second client that does not auto-bind.
    plain = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    plain.connect(sock_path)
    plain.sendmsg([json.dumps({"method": "read-tree", "object-id": "missing"}).encode()])
    check(plain.recv(4096) == b'{"path": null}', "unbound client")
    print("OK")


if __name__ == "__main__":
    main()
