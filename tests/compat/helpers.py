"""Client helpers shared by the compat tests.

Consumers made by these helpers read by assign() and never join a group (group behaviour has its
own tests in test_groups*.py): kafka-python
uses group_id=None + assign(), confluent-kafka needs a group.id to construct a Consumer but is
used with assign(), explicit start offsets and no commits.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as CkTopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition

# Client-side timeouts: a hung broker must fail a test, never hang it.
KP_COMMON = dict(request_timeout_ms=15000)


# ---- kafka-python ------------------------------------------------------------------------


def kp_producer(bootstrap: str, **kw) -> KafkaProducer:
    conf = dict(KP_COMMON, max_block_ms=30000, linger_ms=5)
    conf.update(kw)
    return KafkaProducer(bootstrap_servers=bootstrap, **conf)


def kp_consumer(bootstrap: str, **kw) -> KafkaConsumer:
    conf = dict(
        KP_COMMON,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    conf.update(kw)
    return KafkaConsumer(bootstrap_servers=bootstrap, **conf)


def kp_partitions(consumer: KafkaConsumer, topic: str, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no metadata for topic {topic}")
        time.sleep(0.2)


def kp_read(bootstrap: str, topic: str, partitions=None, count: int | None = None,
            timeout: float = 30, **kw):
    """Read from the beginning of the given partitions (all if None) with assign().

    Stops after `count` records, or (count None) at the end offsets seen at the start.
    Returns the ConsumerRecords in the order received (per partition: offset order).
    """
    c = kp_consumer(bootstrap, **kw)
    try:
        parts = partitions if partitions is not None else kp_partitions(c, topic)
        tps = [KpTopicPartition(topic, p) for p in parts]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = None
        if count is None:
            end = c.end_offsets(tps)
            if all(end[tp] == 0 for tp in tps):
                return []
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                out.extend(recs)
            if count is not None and len(out) >= count:
                break
            if end is not None and all(c.position(tp) >= end[tp] for tp in tps):
                break
        else:
            raise TimeoutError(f"read {len(out)} records from {topic}, wanted {count or end}")
        return out
    finally:
        c.close()


# ---- confluent-kafka ---------------------------------------------------------------------


def ck_producer(bootstrap: str, **conf) -> Producer:
    base = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "message.timeout.ms": 30000,
        "socket.timeout.ms": 10000,
    }
    base.update(conf)
    return Producer(base)


def ck_produce(bootstrap: str, topic: str, records, flush_timeout: float = 60, **conf):
    """Produce records (dicts of Producer.produce kwargs besides topic); return delivery reports
    as a list of (err, partition, offset) in record order."""
    p = ck_producer(bootstrap, **conf)
    reports: list = [None] * len(records)

    def cb(i):
        def on_delivery(err, msg):
            reports[i] = (err, msg.partition(), msg.offset())
        return on_delivery

    for i, r in enumerate(records):
        while True:
            try:
                p.produce(topic, on_delivery=cb(i), **r)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(flush_timeout)
    assert left == 0, f"{left} messages still in the producer queue after {flush_timeout}s"
    return reports


def ck_consumer(bootstrap: str, **conf) -> Consumer:
    base = {
        "bootstrap.servers": bootstrap,
        # Required by the client to construct a Consumer; never used to join a group here.
        "group.id": f"compat-assign-only-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "socket.timeout.ms": 10000,
    }
    base.update(conf)
    return Consumer(base)


def ck_read(bootstrap: str, topic: str, partitions=None, count: int | None = None,
            timeout: float = 30, **conf):
    """Like kp_read, with confluent-kafka.  Returns Message objects."""
    c = ck_consumer(bootstrap, **conf)
    try:
        if partitions is None:
            md = c.list_topics(topic, timeout=10)
            t = md.topics.get(topic)
            if t is None or t.error is not None or not t.partitions:
                raise RuntimeError(f"no metadata for {topic}: {t and t.error}")
            partitions = sorted(t.partitions)
        end = {}
        if count is None:
            for p in partitions:
                end[p] = c.get_watermark_offsets(CkTopicPartition(topic, p), timeout=10)[1]
            if all(v == 0 for v in end.values()):
                return []
        c.assign([CkTopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out = []
        seen_end = {p: -1 for p in partitions}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None:
                if m.error():
                    raise KafkaException(m.error())
                out.append(m)
                seen_end[m.partition()] = m.offset() + 1
            if count is not None and len(out) >= count:
                break
            if count is None and all(seen_end[p] >= end[p] for p in partitions):
                break
        else:
            raise TimeoutError(f"read {len(out)} records from {topic}, wanted {count or end}")
        return out
    finally:
        c.close()


def ck_admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def create_topic(bootstrap: str, topic: str, partitions: int = 1, config: dict | None = None):
    """Create a topic with confluent's AdminClient and wait until all partitions have leaders."""
    admin = ck_admin(bootstrap)
    fs = admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})],
                             operation_timeout=30, request_timeout=30)
    fs[topic].result(timeout=60)
    wait_topic(bootstrap, topic, partitions)


def wait_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 30):
    """Wait until metadata shows the topic with `partitions` partitions, each with a leader."""
    admin = ck_admin(bootstrap)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions \
                and all(p.leader >= 0 for p in t.partitions.values()):
            return
        last = t and (t.error, {k: v.leader for k, v in t.partitions.items()})
        time.sleep(0.2)
    raise TimeoutError(f"topic {topic} not ready with {partitions} partitions: {last}")


def topic_names(bootstrap: str) -> set[str]:
    """All topic names from a Metadata request for all topics (which never auto-creates)."""
    return set(ck_admin(bootstrap).list_topics(timeout=10).topics)


# ---- brokers with settings of their own ----------------------------------------------------


@contextlib.contextmanager
def broker_settings(kafka_props: str, strata_args: str):
    """Brokers started inside start with these settings too: `kafka_props` lines for the
    reference broker (KAFKA_EXTRA_PROPS, read by tests/testbed/kafka.sh), `strata_args` flags
    for strata-node (STRATA_NODE_ARGS). A module wraps conftest's `broker` fixture in it."""
    saved = {k: os.environ.get(k) for k in ("KAFKA_EXTRA_PROPS", "STRATA_NODE_ARGS")}
    for key, value, sep in (("KAFKA_EXTRA_PROPS", kafka_props, "\n"),
                            ("STRATA_NODE_ARGS", strata_args, " ")):
        os.environ[key] = f"{saved[key]}{sep}{value}" if saved[key] else value
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def read_values(bootstrap: str, topic: str, isolation: str, partition: int = 0,
                timeout: float = 60) -> list[bytes]:
    """Every value of one partition from its start to its end as the consumer sees it (the
    high watermark, or the last stable offset for read_committed)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"compat-read-{uuid.uuid4()}",
                  "enable.auto.commit": False, "isolation.level": isolation,
                  "enable.partition.eof": True, "fetch.wait.max.ms": 50,
                  "socket.timeout.ms": 10000})
    try:
        c.assign([CkTopicPartition(topic, partition, 0)])
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out
                raise KafkaException(m.error())
            out.append(m.value())
        raise TimeoutError(f"no end of {topic}[{partition}] after {len(out)} records")
    finally:
        c.close()
