"""Authentication on each listener kind with real clients: TLS (server-only and mutual),
SASL PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER over TLS and plaintext; the clear
errors of a wrong password, an expired token and an untrusted certificate; re-authentication
(KIP-368); SCRAM credentials through kafka-configs; certificate rotation without a pause."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.net.sasl.oauth import AbstractTokenProvider
from strata_testlib import wait_for

from conftest import SecureNode, ck_conf, java_props, tool
from helpers import add_scram_user, ck_consume, ck_produce

PASSWORD = "s3cret-pa55"


@pytest.fixture(scope="module")
def node(tmp_path_factory, pki, issuer):
    n = SecureNode(tmp_path_factory.mktemp("auth"), pki, issuer,
                   ["--connections-max-reauth-ms", "3000"])
    add_scram_user(ck_conf(n, "PLAINTEXT"), "carol", PASSWORD)
    yield n
    n.stop()


def topic() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def roundtrip(conf: dict, n: int = 10):
    t = topic()
    delivered, errors = ck_produce(conf, t, n)
    assert delivered == n, errors
    got, errors = ck_consume(conf, t, n)
    assert len(got) == n, errors


def test_tls_server_only(node):
    roundtrip(ck_conf(node, "SSL"))


def test_tls_with_a_client_certificate(node, pki):
    roundtrip(ck_conf(node, "SSL", cert=pki.alice))


def test_tls_refuses_a_certificate_from_another_ca(node, pki):
    """A presented certificate is verified even where client certificates are optional
    (librdkafka does not send one whose issuer the server does not list, so Python's ssl
    presents it)."""
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    ctx.load_cert_chain(str(pki.mallory[0]), str(pki.mallory[1]))
    with socket.create_connection(("127.0.0.1", node.ports["SSL"]), timeout=5) as s:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                # TLS 1.3 reports the server's refusal of the client certificate on read.
                t.sendall(b"\0\0\0\0")
                if t.recv(1) == b"":
                    raise ssl.SSLError("closed")
    assert "TLS handshake failed" in node.log()


def test_tls_is_tls_1_2_or_later(node):
    ctx = ssl.create_default_context(cafile=str(node.pki.ca_file))
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    with socket.create_connection(("127.0.0.1", node.ports["SSL"]), timeout=5) as s:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(s, server_hostname="localhost")


@pytest.mark.parametrize("listener", ["SASL_SSL", "SASL_PLAINTEXT"])
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_sasl_password_mechanisms(node, listener, mechanism):
    roundtrip(ck_conf(node, listener, user="carol", password=PASSWORD, mechanism=mechanism))


def test_sasl_with_kafka_python(node):
    t = topic()
    common = dict(bootstrap_servers=node.bootstrap("SASL_SSL"), security_protocol="SASL_SSL",
                  ssl_cafile=str(node.pki.ca_file), sasl_mechanism="SCRAM-SHA-256",
                  sasl_plain_username="carol", sasl_plain_password=PASSWORD)
    p = KafkaProducer(**common)
    for i in range(10):
        p.send(t, b"message%d" % i)
    p.flush()
    p.close()
    c = KafkaConsumer(t, group_id="kp-group", auto_offset_reset="earliest",
                      consumer_timeout_ms=15000, **common)
    got = [m.value for m in c]
    c.close()
    assert got == [b"message%d" % i for i in range(10)]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_a_wrong_password_is_a_clear_authentication_error(node, mechanism):
    delivered, errors = ck_produce(
        ck_conf(node, "SASL_SSL", user="carol", password="wrong", mechanism=mechanism),
        topic(), 1, timeout=6)
    assert delivered == 0
    assert any("AUTHENTICATION" in e and "Authentication failed" in e for e in errors), errors
    assert "wrong" not in node.log() and PASSWORD not in node.log()


def test_an_unknown_user_gets_the_same_error(node):
    delivered, errors = ck_produce(
        ck_conf(node, "SASL_SSL", user="nobody", password="x", mechanism="SCRAM-SHA-512"),
        topic(), 1, timeout=6)
    assert delivered == 0
    assert any("Authentication failed during authentication due to invalid credentials" in e
               for e in errors), errors


def oauth_cb(issuer, sub="dave", lifetime=300):
    def cb(_config):
        token, _exp = issuer.token(sub, lifetime)
        # Tell librdkafka a future expiry whatever the token says, so that the broker is
        # what judges it (librdkafka refuses to send a token it knows to be expired).
        return token, time.time() + 300
    return cb


def test_oauthbearer(node, issuer):
    for listener in ("SASL_SSL", "SASL_PLAINTEXT"):
        roundtrip(ck_conf(node, listener, mechanism="OAUTHBEARER", oauth_cb=oauth_cb(issuer)))


def test_oauthbearer_with_kafka_python(node, issuer):
    class Provider(AbstractTokenProvider):
        def token(self):
            return issuer.token("erin")[0]

    t = topic()
    p = KafkaProducer(bootstrap_servers=node.bootstrap("SASL_SSL"), security_protocol="SASL_SSL",
                      ssl_cafile=str(node.pki.ca_file), sasl_mechanism="OAUTHBEARER",
                      sasl_oauth_token_provider=Provider())
    p.send(t, b"x").get(30)
    p.close()
    assert "principal=User:erin" in node.log()


def test_an_expired_token_is_refused(node, issuer):
    delivered, errors = ck_produce(
        ck_conf(node, "SASL_SSL", mechanism="OAUTHBEARER", oauth_cb=oauth_cb(issuer, lifetime=-120)),
        topic(), 1, timeout=6)
    assert delivered == 0
    assert any("AUTHENTICATION" in e for e in errors), errors


def test_a_token_of_another_issuer_is_refused(node):
    from pki import TokenIssuer
    other = TokenIssuer(kid="k1")
    delivered, errors = ck_produce(
        ck_conf(node, "SASL_SSL", mechanism="OAUTHBEARER", oauth_cb=oauth_cb(other)),
        topic(), 1, timeout=6)
    assert delivered == 0
    assert any("AUTHENTICATION" in e for e in errors), errors


def frame(api_key: int, version: int, cid: int, body: bytes, client_id: bytes = b"t") -> bytes:
    head = struct.pack(">hhih", api_key, version, cid, len(client_id)) + client_id
    return struct.pack(">i", len(head) + len(body)) + head + body


def test_a_request_before_authentication_closes_the_connection(node):
    with socket.create_connection(("127.0.0.1", node.ports["SASL_PLAINTEXT"]), timeout=5) as s:
        # Metadata v1 for all topics (null array).
        s.sendall(frame(3, 1, 7, struct.pack(">i", -1)))
        assert s.recv(4096) == b""


def test_sessions_reauthenticate_kip_368(node):
    """With connections.max.reauth.ms=3000, a producer writing for 10 s re-authenticates on
    its connections and never fails."""
    conf = ck_conf(node, "SASL_SSL", user="carol", password=PASSWORD, mechanism="SCRAM-SHA-512")
    before = node.log().count("principal=User:carol")
    t = topic()
    sent = 0
    end = time.time() + 10
    while time.time() < end:
        delivered, errors = ck_produce(conf, t, 5)
        assert delivered == 5 and not errors, errors
        sent += 5
    # One producer per batch above would authenticate anew each time; a long-lived one shows
    # re-authentication on the same connection.
    from confluent_kafka import Producer
    errors = []
    p = Producer({**conf, "error_cb": lambda e: errors.append(e.str())})
    for _ in range(20):
        p.produce(t, b"x")
        p.flush(10)
        time.sleep(0.5)
    assert not errors, errors
    assert node.log().count("principal=User:carol") > before + 2


def scram_of(node, user) -> dict:
    """{mechanism name: iterations} of `user`, through DescribeUserScramCredentials."""
    from confluent_kafka.admin import AdminClient
    admin = AdminClient(ck_conf(node, "PLAINTEXT"))
    try:
        desc = admin.describe_user_scram_credentials([user])[user].result(30)
    except Exception as e:  # RESOURCE_NOT_FOUND when the user has none
        if "RESOURCE_NOT_FOUND" in str(e) or "does not exist" in str(e):
            return {}
        raise
    return {i.mechanism.name.replace("_", "-"): i.iterations
            for i in desc.scram_credential_infos}


def test_scram_credentials_with_kafka_configs(node, tmp_path):
    bs = node.bootstrap("PLAINTEXT")
    cc = "kafka.admin.ConfigCommand"
    tool(cc, "--bootstrap-server", bs, "--alter", "--entity-type", "users", "--entity-name", "frank",
         "--add-config", "SCRAM-SHA-256=[iterations=8192,password=frank-pw],SCRAM-SHA-512=[password=frank-pw]")
    assert scram_of(node, "frank") == {"SCRAM-SHA-256": 8192, "SCRAM-SHA-512": 4096}
    # The Java client authenticates with it.
    props = java_props(tmp_path / "frank.properties", node, "SASL_SSL", user="frank",
                       password="frank-pw", mechanism="SCRAM-SHA-256")
    tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server",
         node.bootstrap("SASL_SSL"), "--command-config", props, "--list")
    tool(cc, "--bootstrap-server", bs, "--alter", "--entity-type", "users", "--entity-name", "frank",
         "--delete-config", "SCRAM-SHA-256")
    assert scram_of(node, "frank") == {"SCRAM-SHA-512": 4096}
    r = tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server",
             node.bootstrap("SASL_SSL"), "--command-config", props, "--list", ok=False)
    assert r.returncode != 0 and "Authentication failed" in r.stdout + r.stderr
    # Salted and hashed only: the password is nowhere in the node's files.
    data = b"".join(p.read_bytes() for p in (node.proc.log_path.parent / "data").rglob("*")
                    if p.is_file())
    assert b"frank-pw" not in data


def peer_cn(port: int, ca) -> str:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            subject = dict(x[0] for x in t.getpeercert()["subject"])
            return subject["commonName"]


def test_certificate_rotation_without_dropping_produce(node, pki):
    conf = ck_conf(node, "SSL")
    t = topic()
    stop = threading.Event()
    result = {"delivered": 0, "errors": []}

    def produce():
        from confluent_kafka import Producer
        p = Producer({**conf, "linger.ms": 1,
                      "error_cb": lambda e: result["errors"].append(e.str())})
        while not stop.is_set():
            p.produce(t, b"r", on_delivery=lambda err, _m: result.__setitem__(
                "delivered", result["delivered"] + (err is None)) if err is None
                else result["errors"].append(err.str()))
            p.poll(0.01)
        p.flush(20)

    th = threading.Thread(target=produce)
    th.start()
    try:
        time.sleep(1)
        assert peer_cn(node.ports["SSL"], pki.ca_file) == "localhost"
        pki.rotate_server("localhost-rotated")
        wait_for(lambda: peer_cn(node.ports["SSL"], pki.ca_file) == "localhost-rotated", 20,
                 "new connections get the rotated certificate")
        time.sleep(1)
    finally:
        stop.set()
        th.join(30)
    assert result["delivered"] > 100 and not result["errors"], result
    assert "TLS certificate reloaded" in node.log()
