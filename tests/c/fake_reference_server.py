#!/usr/bin/env python3
"""A stand-in for osbuild's reference StoreServer, for client_compat_test.sh.

It listens on an AF_UNIX SOCK_SEQPACKET socket and answers the four store
methods the way the reference server does: replies serialised with Python's
default json.dumps(), {"path": null} for an unknown object, {"error": ...}
when read-tree-at cannot "mount".  Mounting itself is only simulated: the
target and the source inside the object's tree must exist, and the target is
returned.  Committed objects are directories STORE/refs/ID, as in the
reference store.

Every request packet is logged, byte for byte, to the --log file as one JSON
line: {"peer": <hex of the client's address>, "data": <hex of the packet>}.

Object ids starting with "test:" are hooks beyond the reference behaviour,
to exercise the client's transport handling:
  test:fds       normal reply carrying 3 descriptors (SCM_RIGHTS)
  test:many-fds  normal reply carrying 20 descriptors
  test:garbage   a reply with trailing garbage after the JSON object
  test:close     close the connection without replying
  test:empty     a zero-byte packet
  test:big       a reply whose path is 150000 bytes long
"""

import argparse
import array
import json
import os
import socket
import sys
import tempfile

# The shared packet receiver lives one directory up, in tests/.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from seqpacket_io import recv_packet  # noqa: E402


def send_json(conn, payload, fds=()):
    data = json.dumps(payload).encode()
    ancdata = []
    if fds:
        ancdata = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
    conn.sendmsg([data], ancdata)


class FakeStoreServer:
    def __init__(self, store):
        self.store = store
        self.tmproot = tempfile.mkdtemp(prefix="store-server-",
                                        dir=os.path.join(store, "tmp"))

    def tree(self, object_id):
        """The reference path of a committed object, or None."""
        path = os.path.join(self.store, "refs", object_id)
        return path if object_id and os.path.isdir(path) else None

    def read_tree(self, msg):
        return {"path": self.tree(msg["object-id"])}

    def read_tree_at(self, msg):
        tree = self.tree(msg["object-id"])
        target = msg["target"]
        if tree is None:
            return {"path": None}
        source = os.path.join(tree, msg["subtree"].lstrip("/"))
        for path in (source, target):
            if not os.path.exists(path):
                return {"error": f"{target} mount failed: mount: {path}: "
                                 "special device or mount point does not exist."}
        return {"path": target}

    def mkdtemp(self, msg):
        path = tempfile.mkdtemp(suffix=msg.get("suffix"), prefix=msg.get("prefix"),
                                dir=self.tmproot)
        return {"path": path}

    def source(self, msg):
        return {"path": os.path.join(self.store, "sources", msg["name"])}

    def answer(self, conn, msg):
        """Replies to one request; returns False to drop the connection."""
        hook = msg.get("object-id", "")
        handlers = {
            "read-tree": self.read_tree,
            "read-tree-at": self.read_tree_at,
            "mkdtemp": self.mkdtemp,
            "source": self.source,
        }
        if msg.get("method") not in handlers:
            return False  # the reference raises and never replies
        if hook == "test:close":
            return False
        if hook == "test:empty":
            conn.send(b"")
        elif hook == "test:garbage":
            conn.send(b'{"path": "/x"} trailing')
        elif hook == "test:big":
            send_json(conn, {"path": "/" + "b" * 149999})
        elif hook in ("test:fds", "test:many-fds"):
            count = 3 if hook == "test:fds" else 20
            fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(count)]
            send_json(conn, {"path": "/with-fds"}, fds)
            for fd in fds:
                os.close(fd)
        else:
            send_json(conn, handlers[msg["method"]](msg))
        return True

    def serve(self, conn, log):
        peer = conn.getpeername()
        peer = peer if isinstance(peer, bytes) else peer.encode()
        while True:
            data = recv_packet(conn)
            if not data:
                return
            log.write(json.dumps({"peer": peer.hex(), "data": data.hex()}) + "\n")
            log.flush()
            if not self.answer(conn, json.loads(data)):
                return


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--ready", required=True, help="file created once listening")
    args = parser.parse_args()

    os.makedirs(os.path.join(args.store, "tmp"), exist_ok=True)
    server = FakeStoreServer(args.store)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.bind(args.socket)
    sock.listen(64)
    with open(args.ready, "w", encoding="utf-8"):
        pass
    with open(args.log, "a", encoding="utf-8") as log:
        while True:
            conn, _ = sock.accept()
            with conn:
                server.serve(conn, log)


if __name__ == "__main__":
    main()
