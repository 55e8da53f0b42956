"""Produce and consume with kafka-python and confluent-kafka: codecs, keys, headers, acks."""

import time

import pytest
from confluent_kafka import TopicPartition

from helpers import ck_consumer, ck_produce, ck_read, create_topic, kp_producer, kp_read

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
N = 200


def _records(n=N):
    return [
        (b"key-%d" % i, b"value-%d-" % i + b"x" * (i % 50), [("h1", b"v%d" % i), ("empty", b"")])
        for i in range(n)
    ]


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_codec(broker, topic, codec):
    recs = _records()
    p = kp_producer(broker.bootstrap, compression_type=None if codec == "none" else codec, acks="all")
    futures = [p.send(topic, key=k, value=v, headers=h) for k, v, h in recs]
    p.flush(timeout=60)
    metas = [f.get(timeout=30) for f in futures]
    p.close(timeout=10)
    assert [m.offset for m in metas] == list(range(N))

    got = kp_read(broker.bootstrap, topic, partitions=[0], count=N)
    assert [(r.key, r.value, list(r.headers)) for r in got] == recs
    assert [r.offset for r in got] == list(range(N))


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_codec(broker, topic, codec):
    recs = _records()
    reports = ck_produce(
        broker.bootstrap, topic,
        [dict(key=k, value=v, headers=h, partition=0) for k, v, h in recs],
        **{"compression.type": codec, "acks": "all"},
    )
    assert [r[0] for r in reports] == [None] * N
    assert [r[2] for r in reports] == list(range(N))

    got = ck_read(broker.bootstrap, topic, partitions=[0], count=N)
    assert [(m.key(), m.value(), m.headers()) for m in got] == recs
    assert [m.offset() for m in got] == list(range(N))


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_cross_client(broker, topic, codec):
    """What one client writes, the other reads (the broker must not depend on who wrote)."""
    recs = _records(50)
    p = kp_producer(broker.bootstrap, compression_type=codec)
    for k, v, h in recs:
        p.send(topic, key=k, value=v, headers=h)
    p.flush(timeout=60)
    p.close(timeout=10)
    got = ck_read(broker.bootstrap, topic, partitions=[0], count=50)
    assert [(m.key(), m.value(), m.headers()) for m in got] == recs

    reports = ck_produce(broker.bootstrap, topic,
                         [dict(key=k, value=v, headers=h, partition=0) for k, v, h in recs],
                         **{"compression.type": codec})
    assert [r[2] for r in reports] == list(range(50, 100))
    got = kp_read(broker.bootstrap, topic, partitions=[0], count=100)
    assert [(r.key, r.value, list(r.headers)) for r in got[50:]] == recs


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_kafka_python_acks(broker, topic, acks):
    p = kp_producer(broker.bootstrap, acks=acks)
    futures = [p.send(topic, value=b"a%d" % i) for i in range(100)]
    p.flush(timeout=60)
    metas = [f.get(timeout=30) for f in futures]
    p.close(timeout=10)
    if acks != 0:
        assert [m.offset for m in metas] == list(range(100))
    got = kp_read(broker.bootstrap, topic, partitions=[0], count=100)
    assert [r.value for r in got] == [b"a%d" % i for i in range(100)]


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_confluent_acks(broker, topic, acks):
    reports = ck_produce(broker.bootstrap, topic,
                         [dict(value=b"a%d" % i, partition=0) for i in range(100)], acks=acks)
    assert all(r[0] is None for r in reports), reports
    if acks != "0":
        assert [r[2] for r in reports] == list(range(100))
    got = ck_read(broker.bootstrap, topic, partitions=[0], count=100)
    assert [m.value() for m in got] == [b"a%d" % i for i in range(100)]


def test_null_key_and_value(broker, topic):
    """A null key and a null value (tombstone) are kept as null, not as empty bytes."""
    p = kp_producer(broker.bootstrap)
    p.send(topic, key=None, value=b"v")
    p.send(topic, key=b"k", value=None)
    p.send(topic, key=b"", value=b"")
    p.flush(timeout=30)
    p.close(timeout=10)
    got = kp_read(broker.bootstrap, topic, partitions=[0], count=3)
    assert [(r.key, r.value) for r in got] == [(None, b"v"), (b"k", None), (b"", b"")]
    got = ck_read(broker.bootstrap, topic, partitions=[0], count=3)
    assert [(m.key(), m.value()) for m in got] == [(None, b"v"), (b"k", None), (b"", b"")]


def test_timestamps_preserved(broker, topic):
    base = 1_600_000_000_000
    p = kp_producer(broker.bootstrap)
    for i in range(5):
        p.send(topic, value=b"t%d" % i, timestamp_ms=base + i * 1000)
    p.flush(timeout=30)
    p.close(timeout=10)
    got = kp_read(broker.bootstrap, topic, partitions=[0], count=5)
    assert [r.timestamp for r in got] == [base + i * 1000 for i in range(5)]
    assert all(r.timestamp_type == 0 for r in got)  # CreateTime


def test_keyed_records_on_three_partitions(broker, topic):
    """The default partitioner sends one key to one partition; per-key order is kept."""
    create_topic(broker.bootstrap, topic, partitions=3)
    keys = [b"k%d" % (i % 7) for i in range(300)]
    reports = ck_produce(broker.bootstrap, topic,
                         [dict(key=k, value=b"%s:%d" % (k, i)) for i, k in enumerate(keys)])
    assert all(r[0] is None for r in reports)
    assert len({r[1] for r in reports}) > 1, "all keys hashed to one partition?"

    got = ck_read(broker.bootstrap, topic, partitions=[0, 1, 2], count=300)
    assert len(got) == 300
    by_key = {}
    part_of = {}
    for m in got:
        by_key.setdefault(m.key(), []).append(int(m.value().split(b":")[1]))
        assert part_of.setdefault(m.key(), m.partition()) == m.partition()
    for k, seqs in by_key.items():
        assert seqs == sorted(seqs), f"order broken for key {k}"
    # Each partition's offsets are dense from 0.
    for part in range(3):
        offs = [m.offset() for m in got if m.partition() == part]
        assert offs == list(range(len(offs)))


def test_consume_from_middle_offset(broker, topic):
    p = kp_producer(broker.bootstrap)
    for i in range(20):
        p.send(topic, value=b"m%d" % i)
    p.flush(timeout=30)
    p.close(timeout=10)
    c = ck_consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 13)])
        msgs = []
        deadline = time.monotonic() + 30
        while len(msgs) < 7 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                msgs.append(m)
    finally:
        c.close()
    assert [(m.offset(), m.value()) for m in msgs] == [(i, b"m%d" % i) for i in range(13, 20)]
