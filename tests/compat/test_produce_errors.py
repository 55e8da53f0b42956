"""min.insync.replicas above the replication factor: Kafka caps the effective minimum at the
replication factor, so on one broker acks=all still succeeds. Strata must behave the same."""

from __future__ import annotations

from confluent_kafka import Producer

from helpers import create_topic


def test_min_insync_replicas_is_capped_at_replication_factor(broker, topic):
    create_topic(broker.bootstrap, topic, 1, {"min.insync.replicas": "2"})
    results = {}
    for acks in ("all", "1"):
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": acks, "message.timeout.ms": 5000,
                      "enable.idempotence": False, "retries": 0})
        p.produce(topic, value=b"v", on_delivery=lambda e, m, a=acks: results.__setitem__(a, e))
        assert p.flush(30) == 0
    assert results == {"all": None, "1": None}, results
