"""ListOffsets and DeleteRecords on tiered topics, end to end: answers that lie in segments
only the bucket holds must be the ones an untiered topic gives."""

from __future__ import annotations

import time
import uuid

from conftest import (
    S3Bucket,
    consume_all,
    create_topic,
    produce,
    record,
    scrub_settled,
    watermarks,
)
from strata_testlib import wait_for

SEGMENT = 64 * 1024
LOCAL = 256 * 1024
TIERED = {
    "remote.storage.enable": "true",
    "segment.bytes": str(SEGMENT),
    "local.retention.bytes": str(LOCAL),
    "retention.bytes": "-1",
    "retention.ms": "-1",
}
UNTIERED = {"segment.bytes": str(SEGMENT), "retention.bytes": "-1", "retention.ms": "-1"}
RECORDS = 1500


def stamp(base: int, i: int) -> int:
    """Record i's timestamp: 10 ms apart, every 13th record 55 ms in the past, and record 5
    the latest of all (so MAX_TIMESTAMP's answer is in the bucket)."""
    if i == 5:
        return base + 10 * RECORDS + 1000
    return base + 10 * i - (55 if i % 13 == 12 else 0)


def produce_stamped(bootstrap: str, topics: list[str], base: int) -> dict[str, dict[int, int]]:
    """Produce RECORDS records with explicit timestamps to partition 0 of every topic;
    returns {topic: {offset: timestamp}} of what was acknowledged."""
    from confluent_kafka import Producer

    acked: dict[str, dict[int, int]] = {t: {} for t in topics}
    errors = []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[msg.topic()][msg.offset()] = msg.timestamp()[1]

    pr = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "batch.size": 16384,
        "compression.type": "none",
    })
    for i in range(RECORDS):
        k, v = record(0, i)
        for t in topics:
            while True:
                try:
                    pr.produce(t, key=k, value=v, partition=0, timestamp=stamp(base, i), on_delivery=cb)
                    break
                except BufferError:
                    pr.poll(0.1)
        pr.poll(0)
    assert pr.flush(60) == 0
    assert not errors, errors[:5]
    return acked


def offsets_for_times(bootstrap: str, topic: str, stamps: list[int]) -> list[int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"oft-{uuid.uuid4().hex[:6]}"})
    try:
        out = []
        for ts in stamps:
            [tp] = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=30)
            assert tp.error is None, tp.error
            out.append(tp.offset)
        return out
    finally:
        c.close()


def list_offset(bootstrap: str, topic: str, spec) -> tuple[int, int]:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    a = AdminClient({"bootstrap.servers": bootstrap})
    tp = TopicPartition(topic, 0)
    r = a.list_offsets({tp: spec})[tp].result(timeout=30)
    return r.offset, r.timestamp


def local_start(node, topic: str) -> int:
    bases = [int(f.stem) for f in node.partition_dir(topic, 0).glob("*.log")]
    return min(bases)


def test_offsets_by_time_reach_the_bucket(tmp_path, request, nodes, minio):
    bucket = S3Bucket(minio, f"t-{uuid.uuid4().hex[:8]}")
    node = nodes(tmp_path / "node", bucket)
    request.node._nodes = [node]
    node.start()
    create_topic(node.bootstrap, "t", 1, TIERED)
    create_topic(node.bootstrap, "u", 1, UNTIERED)
    base = int(time.time() * 1000) - 3_600_000
    acked = produce_stamped(node.bootstrap, ["t", "u"], base)
    stamps = acked["t"]
    assert len(stamps) == RECORDS and stamps == acked["u"]
    # Early segments become remote-only.
    wait_for(lambda: local_start(node, "t") > RECORDS // 2, 60,
             lambda: f"local start past {RECORDS // 2}: {local_start(node, 't')}")
    start = local_start(node, "t")
    assert watermarks(node.bootstrap, "t", 0) == (0, RECORDS)

    def expected(ts: int) -> int:
        # Kafka's answer: the first offset whose timestamp is at least ts (-1: none).
        return min((o for o, s in stamps.items() if s >= ts), default=-1)

    probes = sorted({stamps[o] for o in range(0, RECORDS, 37)}
                    | {stamps[o] + 1 for o in range(3, RECORDS, 41)}
                    | {stamps[o] - 3 for o in range(12, RECORDS, 13)}
                    | {base - 1, base + 10 * RECORDS + 2000})
    want = [expected(ts) for ts in probes]
    assert sum(1 for o in want if 0 <= o < start) > 20, "many answers lie in the bucket"
    assert offsets_for_times(node.bootstrap, "t", probes) == want
    assert offsets_for_times(node.bootstrap, "u", probes) == want

    from confluent_kafka.admin import OffsetSpec

    latest = stamp(base, 5)
    assert list_offset(node.bootstrap, "t", OffsetSpec.max_timestamp()) == (5, latest)
    assert list_offset(node.bootstrap, "u", OffsetSpec.max_timestamp()) == (5, latest)
    scrub_settled(bucket, node.topic_id("t"), 0)
    node.stop()


def test_delete_records_below_the_local_start(tmp_path, request, nodes, minio):
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    bucket = S3Bucket(minio, f"t-{uuid.uuid4().hex[:8]}")
    node = nodes(tmp_path / "node", bucket)
    request.node._nodes = [node]
    node.start()
    create_topic(node.bootstrap, "t", 1, TIERED)
    acked = produce(node.bootstrap, "t", 1, 0, RECORDS)
    wait_for(lambda: local_start(node, "t") > RECORDS // 2, 60,
             lambda: f"local start past {RECORDS // 2}: {local_start(node, 't')}")
    tid = node.topic_id("t")
    before = scrub_settled(bucket, tid, 0)
    x = before["segments"][3]["base_offset"] + 7
    assert x < local_start(node, "t")

    a = AdminClient({"bootstrap.servers": node.bootstrap})
    tp = TopicPartition("t", 0, x)
    [res] = a.delete_records([tp]).values()
    assert res.result(timeout=30).low_watermark == x
    assert watermarks(node.bootstrap, "t", 0) == (x, RECORDS)
    assert list_offset(node.bootstrap, "t", OffsetSpec.earliest())[0] == x
    m = scrub_settled(bucket, tid, 0)
    assert m["log_start_offset"] == x
    assert m["segments"][0]["base_offset"] == before["segments"][3]["base_offset"], \
        "segments wholly below the start are gone from the manifest and the bucket"
    got = consume_all(node.bootstrap, "t", 0, start=x)
    assert got == {o: r for (_, o), r in acked.items() if o >= x}
    node.stop()
