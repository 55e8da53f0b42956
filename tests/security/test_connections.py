"""Connection floods and slow clients: one address cannot take every connection
(max.connections.per.ip), a connection that never sends a request or never finishes its
TLS handshake or SASL authentication is dropped after the setup timeout, and an idle one after
connections.max.idle.ms. Measured on main before these limits: 19,500 idle connections from
one address locked every producer out."""

from __future__ import annotations

import socket
import ssl
import struct
import time
import uuid

import pytest

from conftest import SecureNode, ck_conf
from helpers import ck_produce

FLOOD = 300
PER_IP = 100


@pytest.fixture(scope="module")
def node(tmp_path_factory, pki, issuer):
    n = SecureNode(tmp_path_factory.mktemp("conn"), pki, issuer, [
        "--max-connections-per-ip", str(PER_IP),
        "--max-connections", "400",
        "--connection-setup-timeout-ms", "4000",
        "--connections-max-idle-ms", "3000",
    ])
    yield n
    n.stop()


def closed_within(s: socket.socket, seconds: float) -> bool:
    s.settimeout(seconds)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


def closed_now(s: socket.socket) -> bool:
    try:
        return s.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def api_versions() -> bytes:
    head = struct.pack(">hhih", 18, 0, 1, 1) + b"t"
    return struct.pack(">i", len(head)) + head


def test_one_address_cannot_lock_others_out(node):
    flood = []
    try:
        for _ in range(FLOOD):
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", node.ports["PLAINTEXT"]))
            flood.append(s)
        # PER_IP of them stay open (until the setup timeout); the rest are closed at once.
        deadline = time.time() + 2.5
        while True:
            closed = sum(1 for s in flood if closed_now(s))
            if closed >= FLOOD - PER_IP or time.time() > deadline:
                break
            time.sleep(0.1)
        assert closed == FLOOD - PER_IP, closed
        # Meanwhile a producer from another address is served.
        delivered, errors = ck_produce(ck_conf(node, "PLAINTEXT"), f"t-{uuid.uuid4().hex[:6]}",
                                       100, timeout=20)
        assert delivered == 100, errors
    finally:
        for s in flood:
            s.close()


def test_a_silent_connection_is_dropped_after_the_setup_timeout(node):
    s = socket.create_connection(("127.0.0.1", node.ports["PLAINTEXT"]))
    t0 = time.time()
    assert closed_within(s, 10)
    took = time.time() - t0
    assert 3.0 < took < 8, took
    s.close()


def test_an_unfinished_tls_handshake_is_dropped(node):
    s = socket.create_connection(("127.0.0.1", node.ports["SSL"]))
    s.sendall(b"\x16\x03\x01\x00")  # the start of a ClientHello, never finished
    assert closed_within(s, 10)
    s.close()


def test_an_unauthenticated_sasl_connection_is_dropped(node):
    s = socket.create_connection(("127.0.0.1", node.ports["SASL_PLAINTEXT"]))
    s.sendall(api_versions())  # allowed before authentication, but it never authenticates
    s.settimeout(5)
    size = struct.unpack(">i", s.recv(4))[0]
    while size > 0:
        size -= len(s.recv(size))
    assert closed_within(s, 10)
    s.close()


def test_an_idle_connection_is_closed(node):
    s = socket.create_connection(("127.0.0.1", node.ports["PLAINTEXT"]))
    s.sendall(api_versions())
    s.settimeout(5)
    size = struct.unpack(">i", s.recv(4))[0]
    while size > 0:
        size -= len(s.recv(size))
    t0 = time.time()
    assert closed_within(s, 15)
    assert time.time() - t0 > 2.0
    s.close()


def test_tls_connections_count_against_the_address_too(node):
    ctx = ssl.create_default_context(cafile=str(node.pki.ca_file))
    held = []
    try:
        for _ in range(PER_IP):
            s = socket.socket()
            s.bind(("127.0.0.3", 0))
            s.connect(("127.0.0.1", node.ports["SSL"]))
            held.append(s)
        extra = socket.socket()
        extra.bind(("127.0.0.3", 0))
        extra.connect(("127.0.0.1", node.ports["SSL"]))
        with pytest.raises((ssl.SSLError, OSError)):
            ctx.wrap_socket(extra, server_hostname="localhost").do_handshake()
    finally:
        for s in held:
            s.close()
