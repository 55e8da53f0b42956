"""Restarts on the same data dir and port: clean (SIGTERM) and crash (SIGKILL)."""

import random
import threading
import time
from collections import Counter

import pytest
from confluent_kafka import TopicPartition as CkTP
from confluent_kafka.admin import ConfigResource, ResourceType

from helpers import (
    ck_admin,
    ck_consumer,
    ck_producer,
    ck_produce,
    ck_read,
    create_topic,
    wait_topic,
)

pytestmark = pytest.mark.slow

N = 1000


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_restart_loses_nothing(broker, topic, kill):
    create_topic(broker.bootstrap, topic, 3, config={"retention.ms": "123456789"})
    reports = ck_produce(
        broker.bootstrap, topic,
        [dict(key=b"k%d" % i, value=b"v%04d" % i, partition=i % 3) for i in range(N)],
        acks="all",
    )
    assert all(r[0] is None for r in reports)
    auto = f"{topic}-auto"  # an auto-created topic must survive too
    assert ck_produce(broker.bootstrap, auto, [dict(value=b"auto")]) == [(None, 0, 0)]

    broker.restart(kill=kill)

    wait_topic(broker.bootstrap, topic, 3, timeout=60)
    got = ck_read(broker.bootstrap, topic, partitions=[0, 1, 2], timeout=60)
    assert len(got) == N
    for part in range(3):
        msgs = [m for m in got if m.partition() == part]
        assert [m.value() for m in msgs] == [b"v%04d" % i for i in range(part, N, 3)]
        assert [m.key() for m in msgs] == [b"k%d" % i for i in range(part, N, 3)]
        assert [m.offset() for m in msgs] == list(range(len(msgs)))
    assert [m.value() for m in ck_read(broker.bootstrap, auto, partitions=[0])] == [b"auto"]

    # The topic's config survived, and appends continue after the old end.
    admin = ck_admin(broker.bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic)
    cfg = admin.describe_configs([res], request_timeout=30)[res].result(timeout=60)
    assert cfg["retention.ms"].value == "123456789"
    end0 = len([m for m in got if m.partition() == 0])
    assert ck_produce(broker.bootstrap, topic, [dict(value=b"after", partition=0)]) == \
        [(None, 0, end0)]
    c = ck_consumer(broker.bootstrap)
    try:
        assert c.get_watermark_offsets(CkTP(topic, 0), timeout=10, cached=False) == (0, end0 + 1)
    finally:
        c.close()


def test_restart_twice_in_a_row(broker, topic):
    """Stop/start cycles with nothing written in between change nothing."""
    assert ck_produce(broker.bootstrap, topic, [dict(value=b"x%d" % i) for i in range(10)])
    broker.restart()
    broker.restart(kill=True)
    got = ck_read(broker.bootstrap, topic, partitions=[0], timeout=60)
    assert [m.value() for m in got] == [b"x%d" % i for i in range(10)]


class ProducerRun:
    """One idempotent producer thread writing '<id>-<seq>' to partition seq % 3."""

    def __init__(self, bootstrap, topic, ident, stop):
        self.ident = ident
        self.topic = topic
        self.stop = stop
        self.acked = {}  # value -> (partition, offset)
        self.errors = []  # (value, error) from delivery reports
        self.fatal = []  # error_cb reports
        self.sent = 0
        self.left = None
        self.bootstrap = bootstrap
        self.thread = threading.Thread(target=self.run, name=f"producer-{ident}", daemon=True)

    def value(self, seq):
        return b"%s-%07d" % (self.ident.encode(), seq)

    def on_delivery(self, err, msg):
        if err is None:
            self.acked[msg.value()] = (msg.partition(), msg.offset())
        else:
            self.errors.append((msg.value(), err))

    def on_error(self, err):
        if err.fatal():
            self.fatal.append(err)

    def run(self):
        p = ck_producer(self.bootstrap, **{
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 120000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
            "error_cb": self.on_error,
        })
        seq = 0
        while not self.stop.is_set():
            try:
                p.produce(self.topic, value=self.value(seq), partition=seq % 3,
                          on_delivery=self.on_delivery)
            except BufferError:
                p.poll(0.05)
                continue
            seq += 1
            if seq % 20 == 0:  # ~2000 records/s per producer
                p.poll(0)
                time.sleep(0.01)
        self.sent = seq
        self.left = p.flush(150)


@pytest.mark.timeout(300)
def test_acked_writes_survive_sigkill(broker, topic):
    create_topic(broker.bootstrap, topic, 3)
    stop = threading.Event()
    runs = [ProducerRun(broker.bootstrap, topic, f"p{i}", stop) for i in range(3)]
    for r in runs:
        r.thread.start()
    try:
        time.sleep(random.uniform(1, 3))
        acked_at_kill = [len(r.acked) for r in runs]
        broker.kill()
        broker.start()
        # Keep producing until every producer has had acks after the restart (or give up).
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not all(
                len(r.acked) > k + 500 for r, k in zip(runs, acked_at_kill)):
            time.sleep(0.2)
    finally:
        stop.set()
        for r in runs:
            r.thread.join(timeout=180)
    assert not any(r.thread.is_alive() for r in runs), "a producer thread hung in flush"

    got = ck_read(broker.bootstrap, topic, partitions=[0, 1, 2], timeout=120)
    counts = Counter(m.value() for m in got)
    where = {m.value(): (m.partition(), m.offset()) for m in got}

    total_acked = sum(len(r.acked) for r in runs)
    print(f"acked at kill: {acked_at_kill}; acked in all: {[len(r.acked) for r in runs]}; "
          f"sent: {[r.sent for r in runs]}; read back: {len(got)}")
    assert total_acked > 0
    for r in runs:
        # Every acknowledged record is there exactly once, where the broker said it put it.
        missing = [v for v in r.acked if counts[v] == 0]
        assert not missing, f"{r.ident}: {len(missing)} acked records lost, first {missing[:5]}"
        dup = [v for v in r.acked if counts[v] > 1]
        assert not dup, f"{r.ident}: acked records duplicated: {dup[:5]}"
        moved = [(v, r.acked[v], where[v]) for v in r.acked if where[v] != r.acked[v]]
        assert not moved, f"{r.ident}: acked offset differs from where the record is: {moved[:5]}"
        # Per producer and partition, records appear in the order they were sent.
        for part in range(3):
            seqs = [int(m.value().split(b"-")[1]) for m in got
                    if m.partition() == part and m.value().startswith(r.ident.encode() + b"-")]
            assert seqs == sorted(seqs), f"{r.ident} partition {part}: order broken"
    # Nothing at all is duplicated, acked or not.
    dups = [v for v, c in counts.items() if c > 1]
    assert not dups, f"duplicated records: {dups[:5]}"

    # The producers must have come through the crash without errors (checked last so that a
    # durability failure above is reported first).
    for r in runs:
        assert r.left == 0, f"{r.ident}: {r.left} records never delivered"
        assert not r.fatal, f"{r.ident}: fatal producer errors {r.fatal[:3]}"
        assert not r.errors, f"{r.ident}: {len(r.errors)} delivery errors, first {r.errors[:3]}"
        assert len(r.acked) == r.sent
        # With no errors and idempotence, each partition holds a gap-free prefix of what was sent.
        for part in range(3):
            seqs = sorted(int(v.split(b"-")[1]) for v in r.acked if r.acked[v][0] == part)
            assert seqs == list(range(part, r.sent, 3))
    assert all(len(r.acked) > k for r, k in zip(runs, acked_at_kill)), \
        "some producer never got an ack after the restart"
