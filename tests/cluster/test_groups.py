"""Committed offsets survive the loss of the group coordinator: __consumer_offsets is
replicated (RF 3), so when the coordinator node is SIGKILLed another node takes the group
over and a new consumer in the group resumes exactly at the committed offsets."""

from __future__ import annotations

import random
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

import kwire
from harness import create_topic, wait_for
from load import producer_config

PARTITIONS = 3
PER_PARTITION = 50


def consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "socket.connection.setup.timeout.ms": 5000,
        "reconnect.backoff.max.ms": 1000,
    })


def committed(c: Consumer, topic: str, timeout: float, what: str) -> dict[int, int]:
    """The group's committed offsets, asking again while the coordinator is unavailable or
    loading; an answer without errors is final."""
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    last = None

    def ask():
        nonlocal last
        try:
            got = c.committed(tps, timeout=5)
        except KafkaException as e:
            last = e
            return None
        errs = [tp.error for tp in got if tp.error is not None]
        if errs:
            last = errs
            return None
        return {tp.partition: tp.offset for tp in got}

    return wait_for(ask, timeout, lambda: f"{what} (last answer: {last})", every=0.5)


def coordinator(cluster, group: str, via) -> int:
    """The coordinator all nodes in via name for the group (once they agree)."""
    def ask():
        ids = set()
        for v in via:
            r = kwire.find_coordinator(cluster.nodes[v].addr, group)
            if r.error:
                return None
            ids.add(r.node_id)
        return ids.pop() if len(ids) == 1 and next(iter(ids)) in via else None

    return wait_for(ask, 30, f"nodes {sorted(via)} to agree on a live coordinator for {group}")


def test_committed_offsets_survive_coordinator_loss(cluster):
    topic = "g"
    create_topic(cluster.bootstrap(), topic, PARTITIONS, 3, {"min.insync.replicas": "2"})
    cluster.wait_full_isr(topic, timeout=60)
    pr = Producer(producer_config(cluster.bootstrap()))
    for n in range(PER_PARTITION):
        for p in range(PARTITIONS):
            pr.produce(topic, value=f"{p}|{n}".encode(), partition=p)
    assert pr.flush(60) == 0

    group = f"grp-{random.randrange(1 << 30):x}"
    want = {p: 11 + 7 * p for p in range(PARTITIONS)}

    # A member of the group consumes a little and commits chosen offsets.
    c1 = consumer(cluster.bootstrap(), group)
    c1.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 60
    while seen < 10:
        assert time.monotonic() < deadline, "the first consumer got no records in 60 s"
        for m in c1.consume(100, timeout=1):
            assert m.error() is None, m.error()
            seen += 1
    c1.commit(offsets=[TopicPartition(topic, p, o) for p, o in want.items()], asynchronous=False)
    c1.close()

    probe = consumer(cluster.bootstrap(), group)
    try:
        got = committed(probe, topic, 30, "the committed offsets before the failover")
    finally:
        probe.close()
    assert got == want, f"committed {want}, the coordinator answers {got}"

    nodes = set(cluster.nodes)
    old = coordinator(cluster, group, nodes)
    survivors = nodes - {old}
    cluster.nodes[old].kill()
    new = coordinator(cluster, group, survivors)
    print(f"\n[cluster] group coordinator moved from node {old} to node {new}")

    # A new member of the same group resumes exactly where the commits say.
    c2 = consumer(cluster.bootstrap(exclude={old}), group)
    try:
        got = committed(c2, topic, 60, f"the committed offsets from the new coordinator {new}")
        assert got == want, f"committed {want} before the failover, {got} after"
        c2.subscribe([topic])
        first: dict[int, int] = {}
        deadline = time.monotonic() + 60
        while len(first) < PARTITIONS:
            assert time.monotonic() < deadline, f"resumed only partitions {sorted(first)} in 60 s"
            for m in c2.consume(100, timeout=1):
                assert m.error() is None, m.error()
                first.setdefault(m.partition(), m.offset())
                # one producer, fresh topic: record n of partition p sits at offset n
                assert m.value() == f"{m.partition()}|{m.offset()}".encode(), (m.offset(), m.value())
        assert first == want, f"committed {want}, the new consumer started at {first}"
    finally:
        c2.close()
