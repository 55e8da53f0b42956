"""User resources and a secured Cluster end to end: the operator turns a Cluster with
`listener.authentication: scram-sha-512`, TLS and ACLs into nodes with a SASL_SSL client
listener and certificates from its own CA, and each User into a SCRAM credential, ACLs and
quotas held by the controller plus a Secret with the client settings. Real nodes (the stand-in
kubelet) and kafka-python check that the Secret works, that an ACL change takes effect and that
a deleted User loses access."""

from __future__ import annotations

import base64
import socket
import ssl
import time

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError, TopicAuthorizationFailedError

from cluster_fixtures import flag
from strata_testlib import condition, wait_for

API = "strata.dev/v1alpha1"


def obj(kind: str, name: str, spec: dict) -> dict:
    return {"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec}


def ready(kube, kind, name, ns):
    o = kube.get(kind, name, ns)
    return o if (condition(o, "Ready") or {}).get("status") == "True" else None


def exists(kube, kind, name, ns) -> bool:
    return kube.kubectl("get", kind, name, "-n", ns, check=False).ok


def secret(kube, name, ns) -> dict[str, str]:
    data = kube.get("secret", name, ns)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def client_settings(s: dict[str, str], bootstrap: list[str], cafile: str) -> dict:
    """kafka-python settings from a User's Secret (the address is the kubelet's loopback one;
    the certificate names pods, so only the chain is checked by the client here)."""
    return dict(bootstrap_servers=bootstrap, security_protocol=s["security.protocol"],
                sasl_mechanism=s["sasl.mechanism"], sasl_plain_username=s["username"],
                sasl_plain_password=s["password"], ssl_cafile=cafile, ssl_check_hostname=False,
                request_timeout_ms=10_000)


def produce(settings: dict, topic: str) -> None:
    p = KafkaProducer(acks="all", retries=0, max_block_ms=10_000, **settings)
    try:
        p.send(topic, b"x").get(timeout=15)
    finally:
        p.close(timeout=5)


def test_a_user_gets_a_working_secret_acls_that_follow_the_resource_and_loses_access_when_deleted(
        kube, ns, operator, kubelet, tmp_path):
    kube.create(obj("Cluster", "strata", {
        "nodes": 2,
        "listener": {"authentication": "scram-sha-512", "tls": True},
        "authorization": {"superUsers": ["User:admin"]},
    }), ns)
    # Certificates first: the CA Secrets and the nodes' certificate exist before the pods.
    wait_for(lambda: exists(kube, "statefulset", "strata", ns), 30, "the StatefulSet")
    assert exists(kube, "secret", "strata-cluster-ca-cert", ns)
    ca_pem = secret(kube, "strata-cluster-ca-cert", ns)["ca.crt"]
    node_tls = secret(kube, "strata-nodes-tls", ns)
    assert "PRIVATE KEY" in node_tls["tls.key"] and node_tls["tls.crt"].startswith("-----BEGIN CERTIFICATE")
    assert "ca.key" not in secret(kube, "strata-cluster-ca-cert", ns)
    np = kube.get("networkpolicy", "strata-nodes", ns)
    replication = [r for r in np["spec"]["ingress"] if r["ports"][0]["port"] == 9091]
    assert replication and replication[0]["from"][0]["podSelector"]["matchLabels"]

    assert kubelet.sync() == 2
    args, _ = kubelet.specified[0]
    assert flag(args, "--listener-security-protocol-map") == "REPLICATION:SSL,CLIENTS:SASL_SSL"
    assert flag(args, "--inter-broker-tls-ca-file") == "/etc/strata/tls/ca.crt"
    assert flag(args, "--sasl-enabled-mechanisms") == "SCRAM-SHA-512"
    assert flag(args, "--authorizer") == "acl"
    assert flag(args, "--super-users") == f"User:CN=strata-nodes.{ns}.svc;User:admin"
    assert flag(args, "--tls-cert-file") == "/etc/strata/tls/tls.crt"
    wait_for(lambda: ready(kube, "cluster", "strata", ns), 90, "the Cluster to be Ready")

    # The node serves the operator's certificate: the chain and the pod's DNS name verify.
    cafile = tmp_path / "ca.crt"
    cafile.write_text(ca_pem)
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", kubelet.kafka_ports[0]), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=f"strata-0.strata-nodes.{ns}.svc") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")

    # The replication listener takes only a client certificate the cluster CA signed.
    with socket.create_connection(("127.0.0.1", kubelet.listener_ports[0]["REPLICATION"]),
                                  timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with ctx.wrap_socket(raw, server_hostname=f"strata-nodes.{ns}.svc") as tls:
                tls.sendall(b"\0\0\0\0")
                assert tls.recv(1) == b"", "a connection without a certificate got an answer"

    # Two topics, each on both nodes; alice may write one of them.
    for t in ("orders", "audit"):
        kube.create(obj("Topic", t, {"partitions": 1, "replicationFactor": 2,
                                     "clusterRef": {"name": "strata"}}), ns)
    kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bob-password"},
                 "stringData": {"pw": "bobs-chosen-password"}}, ns)
    kube.create(obj("User", "bob", {"authentication": {"type": "scram-sha-512", "password": {
        "valueFrom": {"secretKeyRef": {"name": "bob-password", "key": "pw"}}}}}), ns)
    alice_acls = [{"resource": {"type": "topic", "name": "orders"}, "operations": ["Write", "Describe"]}]
    kube.create(obj("User", "alice", {
        "authentication": {"type": "scram-sha-512"},
        "authorization": {"type": "simple", "acls": alice_acls},
        "quotas": {"producerByteRate": 1048576},
    }), ns)
    u = wait_for(lambda: ready(kube, "user", "alice", ns), 30, "alice to be Ready")
    assert u["status"]["principal"] == "User:alice" and u["status"]["acls"] == 2
    s = secret(kube, "alice", ns)
    assert s["username"] == "alice" and len(s["password"]) == 32 and s["password"].isalnum()
    assert s["security.protocol"] == "SASL_SSL" and s["ca.crt"] == ca_pem
    assert f'password="{s["password"]}"' in s["sasl.jaas.config"]
    assert s["bootstrap.servers"] == f"strata-bootstrap.{ns}.svc:9092"
    owner = kube.get("secret", "alice", ns)["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("User", "alice")
    alice = client_settings(s, kubelet.bootstrap, str(cafile))
    wait_for(lambda: ready(kube, "topic", "orders", ns) and ready(kube, "topic", "audit", ns), 60,
             "the topics")

    produce(alice, "orders")
    # Followers replicate over mutual TLS: a follower that could not fetch would leave the ISR
    # after --replica-lag-time-max-ms (3 s here); both stay in it across writes.
    def isr():
        st = kube.get("topic", "orders", ns).get("status", {}).get("partitionStatus", [{}])
        return sorted(st[0].get("isr", []))
    time.sleep(4)
    produce(alice, "orders")
    wait_for(lambda: isr() == [0, 1] or None, 10, "both replicas of orders in sync")
    with pytest.raises(TopicAuthorizationFailedError):
        produce(alice, "audit")

    # The password the operator generated is kept across reconciles (a status poke re-runs it).
    kube.merge_patch("user", "alice", ns, {"metadata": {"labels": {"poke": "1"}}})
    wait_for(lambda: ready(kube, "user", "alice", ns), 30, "alice to stay Ready")
    assert secret(kube, "alice", ns)["password"] == s["password"]

    # A changed ACL takes effect.
    alice_acls.append({"resource": {"type": "topic", "name": "aud", "patternType": "prefix"},
                       "operations": ["Write"]})
    kube.merge_patch("user", "alice", ns, {"spec": {"authorization": {"acls": alice_acls}}})
    wait_for(lambda: (ready(kube, "user", "alice", ns) or {}).get("status", {}).get("acls") == 3,
             30, "the new ACL")

    def audit_writable():
        try:
            produce(alice, "audit")
            return True
        except TopicAuthorizationFailedError:
            return None
    wait_for(audit_writable, 30, "alice to write audit")

    # bob's password is the one from his Secret; he has no ACLs, so he may only connect.
    wait_for(lambda: ready(kube, "user", "bob", ns), 30, "bob to be Ready")
    bob = secret(kube, "bob", ns)
    assert bob["password"] == "bobs-chosen-password"
    admin = KafkaAdminClient(**client_settings(bob, kubelet.bootstrap, str(cafile)))
    try:
        assert "orders" not in admin.list_topics()  # Metadata hides what bob may not describe
    finally:
        admin.close()

    # Deleting alice removes her credential: a new connection fails to authenticate.
    kube.kubectl("delete", "user", "alice", "-n", ns, "--wait=true", "--timeout=30s")
    assert not exists(kube, "secret", "alice", ns)

    def refused():
        try:
            produce(alice, "orders")
            return None
        except KafkaError as e:
            return e
    wait_for(refused, 30, "alice to lose access")
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in kubelet.pods[0].log_text()


def test_invalid_acls_are_refused_at_admission(kube, ns):
    bad = obj("User", "carol", {"authentication": {"type": "scram-sha-512"}, "authorization": {
        "acls": [{"resource": {"type": "group", "name": "g"}, "operations": ["Write"]}]}})
    r = kube.create(bad, ns, check=False)
    assert not r.ok and "group operations are All, Read, Describe and Delete" in r.err, r.text
    bad = obj("User", "carol", {"authentication": {"type": "tls", "password": {
        "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}}}})
    r = kube.create(bad, ns, check=False)
    assert not r.ok and "password is only for scram-sha-512 authentication" in r.err, r.text
    bad = obj("Cluster", "strata", {"listener": {"authentication": "tls"}})
    r = kube.create(bad, ns, check=False)
    assert not r.ok and "tls authentication needs tls: true" in r.err, r.text
    bad = obj("Cluster", "strata", {"listener": {"authentication": "scram-sha-512"},
                                    "authorization": {"superUsers": ["admin"]}})
    r = kube.create(bad, ns, check=False)
    assert not r.ok and "superUsers[0]" in r.err, r.text


def test_a_tls_user_gets_a_client_certificate_the_nodes_accept(kube, ns, operator, kubelet, tmp_path):
    kube.create(obj("Cluster", "strata", {
        "nodes": 1,
        "listener": {"authentication": "tls", "tls": True},
        "authorization": {"superUsers": ["User:CN=admin"]},
    }), ns)
    wait_for(lambda: exists(kube, "statefulset", "strata", ns), 30, "the StatefulSet")
    assert "ca.key" not in secret(kube, "strata-clients-ca-cert", ns)
    assert kubelet.sync() == 1
    args, _ = kubelet.specified[0]
    assert flag(args, "--listener-security-protocol-map") == "REPLICATION:SSL,CLIENTS:SSL"
    assert flag(args, "--tls-client-auth") == "required"
    assert flag(args, "--tls-client-ca-file") == "/etc/strata/clients-ca/ca.crt"
    wait_for(lambda: ready(kube, "cluster", "strata", ns), 90, "the Cluster to be Ready")
    kube.create(obj("Topic", "orders", {"partitions": 1, "clusterRef": {"name": "strata"}}), ns)
    kube.create(obj("User", "carol", {
        "authentication": {"type": "tls"},
        "authorization": {"acls": [{"resource": {"type": "topic", "name": "orders"},
                                    "operations": ["Write"]}]},
    }), ns)
    u = wait_for(lambda: ready(kube, "user", "carol", ns), 30, "carol to be Ready")
    assert u["status"]["principal"] == "User:CN=carol"
    s = secret(kube, "carol", ns)
    assert s["ca.crt"] == secret(kube, "strata-cluster-ca-cert", ns)["ca.crt"]
    files = {}
    for k in ("ca.crt", "tls.crt", "tls.key"):
        files[k] = tmp_path / k
        files[k].write_text(s[k])
    wait_for(lambda: ready(kube, "topic", "orders", ns), 60, "the topic")
    settings = dict(bootstrap_servers=kubelet.bootstrap, security_protocol="SSL",
                    ssl_cafile=str(files["ca.crt"]), ssl_certfile=str(files["tls.crt"]),
                    ssl_keyfile=str(files["tls.key"]), ssl_check_hostname=False,
                    request_timeout_ms=10_000)
    produce(settings, "orders")
    # Without the certificate the handshake is refused.
    anonymous = {k: v for k, v in settings.items() if k not in ("ssl_certfile", "ssl_keyfile")}
    with pytest.raises(KafkaError):
        produce(anonymous, "orders")
