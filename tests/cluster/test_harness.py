"""The suite's own plumbing, checked without Strata: a network cut must cut exactly one node off
(from clients, peers and the controller) and healing must bring it back. If this fails, the
failover tests' verdicts mean nothing."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from harness import wait_for
from strata_testlib import free_port, port_open

SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"hi"); c.close()
"""

CLIENT = r"""
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5) as s:
        ok = s.recv(2) == b"hi"
except OSError:
    ok = False
print("ok" if ok else "no")
"""


def reach_from(topo, i: int | None, host: str, port: int) -> bool:
    """Whether a client in node i's namespace (None: the host) gets the server's greeting."""
    argv = [sys.executable, "-c", CLIENT, host, str(port)]
    if i is not None:
        argv = topo.wrap(i, argv)
    return subprocess.run(argv, capture_output=True, text=True, timeout=15).stdout.strip() == "ok"


def test_network_cut_isolates_one_node(topology):
    topo = topology
    if not topo.can_cut:
        pytest.skip(topo.reason)
    # Ports of their own, so that no TIME_WAIT is left on the ones the cluster will bind.
    node1_host, node1_port = topo.node_addr(1).rsplit(":", 1)[0], "9999"
    server = subprocess.Popen(topo.wrap(1, [sys.executable, "-c", SERVER, node1_host, node1_port]),
                              stdout=subprocess.PIPE, text=True)
    ctl_host = topo.controller_host()
    ctl_port = free_port(ctl_host)
    ctl = socket.socket()
    ctl.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ctl.bind((ctl_host, ctl_port))
    ctl.listen(16)
    stop = threading.Event()

    def serve():
        ctl.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = ctl.accept()
            except OSError:
                continue
            c.sendall(b"hi")
            c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        assert server.stdout.readline().strip() == "ready"
        node1 = (node1_host, int(node1_port))

        def matrix():
            return {
                "host->node1": reach_from(topo, None, *node1),
                "node2->node1": reach_from(topo, 2, *node1),
                "node1->controller": reach_from(topo, 1, ctl_host, ctl_port),
                "node2->controller": reach_from(topo, 2, ctl_host, ctl_port),
                "node3->controller": reach_from(topo, 3, ctl_host, ctl_port),
            }

        assert all(matrix().values()), matrix()
        topo.cut(1)
        try:
            assert not port_open(node1[1], node1[0])
            assert matrix() == {"host->node1": False, "node2->node1": False,
                                "node1->controller": False, "node2->controller": True,
                                "node3->controller": True}
        finally:
            topo.heal(1)
        wait_for(lambda: all(matrix().values()), 20, lambda: f"healed reachability: {matrix()}")
    finally:
        stop.set()
        t.join()
        ctl.close()
        server.kill()
        server.wait()
