"""Client quotas with Kafka's tools and clients: kafka-configs sets and shows a producer
byte rate for a client id; a producer using that id is held to the rate (measured) and gets
throttle times in its responses; another client id is not slowed."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Producer

from conftest import SecureNode, ck_conf, tool

RATE = 200_000  # bytes per second
CC = "kafka.admin.ConfigCommand"


@pytest.fixture(scope="module")
def node(tmp_path_factory, pki, issuer):
    n = SecureNode(tmp_path_factory.mktemp("quota"), pki, issuer, [])
    yield n
    n.stop()


def produce_for(conf: dict, topic: str, seconds: float, settle: float = 0.0):
    """Produce 10 KiB records as fast as the broker lets us for `seconds`; returns (bytes/s
    delivered after the first `settle` seconds, throttle times reported in ms)."""
    delivered = [0]
    throttles: list[int] = []
    p = Producer({**conf, "linger.ms": 5, "batch.size": 65536, "queue.buffering.max.kbytes": 1024,
                  "throttle_cb": lambda ev: throttles.append(ev.throttle_time * 1000)})
    payload = b"q" * 10240

    def done(err, _m):
        if err is None:
            delivered[0] += len(payload)

    t0 = time.monotonic()
    mark = None
    while time.monotonic() - t0 < seconds:
        if mark is None and time.monotonic() - t0 >= settle:
            mark = (time.monotonic(), delivered[0])
        try:
            p.produce(topic, payload, on_delivery=done)
        except BufferError:
            p.poll(0.05)
        p.poll(0)
    rate = (delivered[0] - mark[1]) / (time.monotonic() - mark[0])
    p.flush(60)
    return rate, throttles


def test_a_producer_is_held_to_its_byte_rate(node):
    bs = node.bootstrap("PLAINTEXT")
    tool(CC, "--bootstrap-server", bs, "--alter", "--entity-type", "clients", "--entity-name",
         "slow-app", "--add-config", f"producer_byte_rate={RATE}")
    out = tool(CC, "--bootstrap-server", bs, "--describe", "--entity-type", "clients",
               "--entity-name", "slow-app").stdout
    assert f"producer_byte_rate={RATE}" in out.replace(".0", ""), out
    topic = f"q-{uuid.uuid4().hex[:6]}"
    conf = ck_conf(node, "PLAINTEXT")
    # Kafka averages the rate over 11 one-second windows, so the first seconds take a burst;
    # the rate held afterwards is the quota.
    slow, throttles = produce_for({**conf, "client.id": "slow-app"}, topic, 20, settle=8)
    fast, _ = produce_for({**conf, "client.id": "other-app"}, topic, 3)
    print(f"\nquota {RATE} B/s: slow-app {slow:,.0f} B/s, other-app {fast:,.0f} B/s, "
          f"{len(throttles)} throttled responses, max {max(throttles, default=0):.0f} ms")
    assert RATE * 0.5 < slow < RATE * 1.3, slow
    assert throttles and max(throttles) > 0
    assert fast > slow * 3, (fast, slow)
    # /metrics counts the throttled responses and their throttle time.
    m = node.metrics()
    assert m['strata_quota_throttles_total{quota="producer_byte_rate"}'] > 0
    assert m['strata_quota_throttle_seconds_total{quota="producer_byte_rate"}'] > 0
    assert m['strata_quota_throttles_total{quota="consumer_byte_rate"}'] == 0
    # Authentications and the certificate's expiry are there too.
    assert m['strata_tls_certificate_expiry_timestamp_seconds'] > time.time()
    assert 'strata_authentications_total{result="ok"}' in m
    # The users entity type describes too (it asks for quotas and SCRAM credentials).
    tool(CC, "--bootstrap-server", bs, "--describe", "--entity-type", "users")
    tool(CC, "--bootstrap-server", bs, "--alter", "--entity-type", "clients", "--entity-name",
         "slow-app", "--delete-config", "producer_byte_rate")
    out = tool(CC, "--bootstrap-server", bs, "--describe", "--entity-type", "clients",
               "--entity-name", "slow-app").stdout
    assert "producer_byte_rate" not in out, out
