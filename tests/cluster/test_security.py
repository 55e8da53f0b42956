"""Security metadata in a cluster: SCRAM credentials and ACLs made through one node reach
every node (they are kept by the controller), survive a controller restart and reach a node
that starts with an empty data directory; each node advertises the addresses of the listener
a client came in on."""

from __future__ import annotations

import shutil

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType, ScramCredentialInfo,
                                   ScramMechanism, UserScramCredentialUpsertion)

from conftest import running
from harness import Cluster, create_topic, wait_for
from strata_testlib import free_port

SASL_PORTS: dict[int, int] = {}


def sasl_addr(i: int, addr: str) -> str:
    host, port = addr.rsplit(":", 1)
    # In a namespace every port is free; on the host loopback pick one per node.
    p = SASL_PORTS.setdefault(i, int(port) + 1 if not host.startswith("127.") else free_port())
    return f"{host}:{p}"


def listeners(i: int, addr: str) -> str:
    return f"PLAINTEXT://{addr},SASL_PLAINTEXT://{sasl_addr(i, addr)}"


@pytest.fixture
def secure_cluster(request, binaries, topology, tmp_path):
    SASL_PORTS.clear()
    c = Cluster(topology, tmp_path / "cluster", node_args={
        "--listeners": listeners,
        "--advertised-listeners": listeners,
        "--inter-broker-listener-name": "PLAINTEXT",
        "--sasl-enabled-mechanisms": "SCRAM-SHA-512",
        "--authorizer": "acl",
        # The PLAINTEXT listener is the cluster's private one (replication, admin).
        "--super-users": "User:ANONYMOUS",
    })
    yield from running(request, c)


def sasl(c: Cluster, i: int) -> dict:
    return {"bootstrap.servers": sasl_addr(i, c.nodes[i].addr),
            "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "bob", "sasl.password": "bob-pw"}


def writes(conf: dict, topic: str, timeout: float = 10) -> tuple[bool, list[str]]:
    errors: list[str] = []
    ok = [False]
    p = Producer({**conf, "message.timeout.ms": int(timeout * 1000),
                  "error_cb": lambda e: errors.append(f"{e.name()}: {e.str()}")})
    p.produce(topic, b"x", on_delivery=lambda e, _m: ok.__setitem__(0, e is None)
              or (e and errors.append(e.name())))
    p.flush(timeout + 5)
    return ok[0], errors


def test_credentials_and_acls_reach_every_node_and_survive_restarts(secure_cluster):
    c = secure_cluster
    admin = AdminClient({"bootstrap.servers": c.nodes[1].addr})
    for f in admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
            "bob", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"bob-pw")]).values():
        f.result(30)
    create_topic(c.bootstrap(), "secured", 3, 3, {})
    c.wait_full_isr("secured", timeout=60)
    # Authenticated but not authorized yet, on every node.
    ok, errors = writes(sasl(c, 2), "secured", timeout=6)
    assert not ok and any("AUTHORIZATION" in e for e in errors), errors
    for f in admin.create_acls([AclBinding(ResourceType.TOPIC, "secured", ResourcePatternType.LITERAL,
                                           "User:bob", "*", AclOperation.WRITE,
                                           AclPermissionType.ALLOW)]).values():
        f.result(30)
    for i in (1, 2, 3):
        md = AdminClient(sasl(c, i)).list_topics(timeout=20)
        # Metadata gives the SASL listener's addresses.
        assert {f"{b.host}:{b.port}" for b in md.brokers.values()} == \
            {sasl_addr(j, c.nodes[j].addr) for j in (1, 2, 3)}
        ok, errors = writes(sasl(c, i), "secured")
        assert ok, (i, errors)
    # The controller restarts: nodes keep (and get back) the same metadata.
    c.controller.stop()
    c.controller.start()
    c.controller.wait_ready()
    wait_for(lambda: writes(sasl(c, 2), "secured", timeout=5)[0], 60, "bob writes via node 2")
    # Node 3 starts over with nothing on disk: it learns credentials and ACLs from the
    # controller.
    n3 = c.nodes[3]
    n3.stop()
    shutil.rmtree(n3.data_dir)
    n3.start()
    n3.wait_listening()
    wait_for(lambda: AdminClient(sasl(c, 3)).list_topics(timeout=5).topics.get("secured")
             is not None, 60, "bob authenticates on the rebuilt node 3")
    ok, errors = writes({**sasl(c, 3), "bootstrap.servers": sasl_addr(3, n3.addr)}, "secured")
    assert ok, errors
