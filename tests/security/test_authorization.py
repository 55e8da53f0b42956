"""Kafka ACLs with the real tools and clients: a principal without ACLs gets Kafka's
authorization errors, then works once kafka-acls grants it; prefixed ACLs; deny beats
allow; super users; Metadata shows only what a principal may describe; a principal from a
client certificate; ACLs and credentials survive a restart."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka.admin import AdminClient
from strata_testlib import wait_for

from conftest import SecureNode, ck_conf, java_props, tool
from helpers import add_scram_user, ck_consume, ck_produce

ACLS = "kafka.admin.AclCommand"


@pytest.fixture(scope="module")
def node(tmp_path_factory, pki, issuer):
    n = SecureNode(tmp_path_factory.mktemp("acl"), pki, issuer,
                   ["--authorizer", "acl", "--super-users", "User:admin"])
    n.admin = ck_conf(n, "SSL", cert=pki.admin)
    n.admin_props = java_props(tmp_path_factory.mktemp("props") / "admin.properties", n, "SSL",
                               cert=pki.admin)
    add_scram_user(n.admin, "bob", "bob-pw")
    yield n
    n.stop()


def bob(node, listener="SASL_SSL"):
    return ck_conf(node, listener, user="bob", password="bob-pw", mechanism="SCRAM-SHA-512")


def acl(node, *args):
    return tool(ACLS, "--bootstrap-server", node.bootstrap("SSL"), "--command-config",
                node.admin_props, *args)


def name(prefix="t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_principal_without_acls_is_refused_then_granted(node):
    t = name()
    delivered, _ = ck_produce(node.admin, t, 1)  # the super user creates the topic
    assert delivered == 1
    delivered, errors = ck_produce(bob(node), t, 3, timeout=8)
    assert delivered == 0
    assert any("TOPIC_AUTHORIZATION_FAILED" in e for e in errors), errors
    acl(node, "--add", "--allow-principal", "User:bob", "--operation", "Write", "--topic", t)
    delivered, errors = ck_produce(bob(node), t, 3)
    assert delivered == 3, errors
    # Reading needs Read on the topic and on the group.
    g = name("g")
    got, errors = ck_consume(bob(node), t, 4, group=g, timeout=10)
    assert not got and any("AUTHORIZATION_FAILED" in e for e in errors), errors
    acl(node, "--add", "--allow-principal", "User:bob", "--operation", "Read", "--topic", t,
        "--group", g)
    got, errors = ck_consume(bob(node), t, 4, group=g)
    assert len(got) == 4, errors
    out = acl(node, "--list", "--topic", t).stdout
    assert "User:bob" in out and "WRITE" in out and "READ" in out, out
    acl(node, "--remove", "--force", "--allow-principal", "User:bob", "--operation", "Write",
        "--topic", t)
    delivered, errors = ck_produce(bob(node), t, 1, timeout=8)
    assert delivered == 0, errors


def test_prefixed_acls_and_deny_beats_allow(node):
    p = name("pre")
    acl(node, "--add", "--allow-principal", "User:bob", "--operation", "All",
        "--resource-pattern-type", "prefixed", "--topic", p)
    acl(node, "--add", "--deny-principal", "User:bob", "--operation", "Write",
        "--topic", f"{p}-secret")
    # Topics under the prefix: bob may create (All covers Create) and write them.
    delivered, errors = ck_produce(bob(node), f"{p}-a", 2)
    assert delivered == 2, errors
    delivered, errors = ck_produce(bob(node), f"{p}-secret", 1, timeout=8)
    assert delivered == 0 and any("TOPIC_AUTHORIZATION_FAILED" in e for e in errors), errors
    # Outside the prefix: refused.
    delivered, errors = ck_produce(bob(node), name("other"), 1, timeout=8)
    assert delivered == 0


def test_metadata_lists_only_what_the_principal_may_describe(node):
    visible, hidden = name("vis"), name("hid")
    for t in (visible, hidden):
        assert ck_produce(node.admin, t, 1)[0] == 1
    acl(node, "--add", "--allow-principal", "User:bob", "--operation", "Describe", "--topic", visible)
    topics = AdminClient(bob(node)).list_topics(timeout=15).topics
    assert visible in topics and hidden not in topics
    assert hidden in AdminClient(node.admin).list_topics(timeout=15).topics


def test_a_principal_from_a_client_certificate(node, pki):
    t = name()
    alice = ck_conf(node, "SSL", cert=pki.alice)
    delivered, errors = ck_produce(alice, t, 1, timeout=8)
    assert delivered == 0, errors
    acl(node, "--add", "--allow-principal", "User:alice", "--operation", "Write",
        "--operation", "Create", "--topic", t)
    delivered, errors = ck_produce(alice, t, 2)
    assert delivered == 2, errors


def test_acl_admin_needs_cluster_alter(node, tmp_path):
    props = java_props(tmp_path / "bob.properties", node, "SASL_SSL", user="bob",
                       password="bob-pw", mechanism="SCRAM-SHA-512")
    r = tool(ACLS, "--bootstrap-server", node.bootstrap("SASL_SSL"), "--command-config", props,
             "--add", "--allow-principal", "User:bob", "--operation", "All", "--topic", "*",
             ok=False)
    assert "ClusterAuthorizationException" in r.stdout + r.stderr or r.returncode != 0, r.stdout


def test_acls_and_credentials_survive_a_restart(node):
    t = name()
    acl(node, "--add", "--allow-principal", "User:bob", "--operation", "Write",
        "--operation", "Create", "--topic", t)
    assert ck_produce(bob(node), t, 1)[0] == 1
    node.proc.stop()
    node.start()
    wait_for(lambda: ck_produce(bob(node), t, 1, timeout=5)[0] == 1, 60,
             "bob writes after the restart")
