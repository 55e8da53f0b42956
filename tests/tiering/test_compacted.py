"""A compacted topic with tiered storage (`cleanup.policy=compact`,
`remote.storage.enable=true`; Apache Kafka refuses the pair): the local disk keeps its local
retention, the bucket's copy is compacted, and a consumer reading from offset 0 gets the
latest value of every key across both tiers, tombstones honoured, also after SIGKILL. Real
strata-node, MinIO and a real Kafka client."""

from __future__ import annotations

import re
import time
import uuid

from conftest import S3Bucket, scrub_settled
from strata_testlib import wait_for

SEGMENT = 64 * 1024
LOCAL = 256 * 1024
KEYS = 100
ROUNDS = 25  # 2,500 records of 1 KiB: ten times the local retention
CONFIG = {
    "cleanup.policy": "compact",
    "remote.storage.enable": "true",
    "segment.bytes": str(SEGMENT),
    "local.retention.bytes": str(LOCAL),
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "1000",
}


def produce(bootstrap: str, items: list[tuple[bytes, bytes | None]]):
    from confluent_kafka import Producer

    errors = []
    pr = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                   "linger.ms": 5, "batch.size": 16384, "compression.type": "none"})
    for k, v in items:
        while True:
            try:
                pr.produce("c", key=k, value=v, partition=0,
                           on_delivery=lambda e, m: e and errors.append(e))
                break
            except BufferError:
                pr.poll(0.1)
        pr.poll(0)
    assert pr.flush(120) == 0 and not errors, errors[:3]


def read_from_zero(bootstrap: str) -> list[tuple[int, bytes, bytes | None]]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"scan-{uuid.uuid4()}",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "auto.offset.reset": "error"})
    try:
        low, high = c.get_watermark_offsets(TopicPartition("c", 0), timeout=30)
        assert low == 0
        c.assign([TopicPartition("c", 0, 0)])
        out = []
        deadline = time.time() + 120
        while time.time() < deadline:
            for m in c.consume(500, timeout=1):
                if m.error():
                    if m.error().code() == -191:  # end of the partition
                        return out
                    raise AssertionError(m.error())
                out.append((m.offset(), m.key(), m.value()))
        raise AssertionError(f"read {len(out)} records up to {high} in 120 s")
    finally:
        c.close()


def live(records) -> dict:
    m = {}
    for _, k, v in records:
        m[k] = v
    return {k: v for k, v in m.items() if v is not None}


def test_compacted_topic_tiers_and_compacts_in_the_bucket(tmp_path, request, nodes, minio):
    bucket = S3Bucket(minio, f"c-{uuid.uuid4().hex[:8]}")
    node = nodes(tmp_path / "node", bucket, extra_args=["--compaction-interval-ms", "500"])
    request.node._nodes = [node]
    node.start()
    from conftest import create_topic

    create_topic(node.bootstrap, "c", 1, CONFIG)
    items = []
    for r in range(ROUNDS):
        for k in range(KEYS):
            items.append((b"k%03d" % k, (b"%04d:" % r) + b"v" * 1000))
    # Tombstones for the first ten keys, then a new value for key 5 after its tombstone.
    items += [(b"k%03d" % k, None) for k in range(10)]
    items.append((b"k005", b"back"))
    produce(node.bootstrap, items)
    want = live((i, k, v) for i, (k, v) in enumerate(items))
    assert len(want) == KEYS - 9
    # More rounds of a few keys, so segments keep rolling and the tombstones age.
    time.sleep(1.2)
    extra = [(b"k%03d" % k, b"late" + b"x" * 1000) for _ in range(3) for k in range(50, 100)]
    produce(node.bootstrap, extra)
    want.update(live((i, k, v) for i, (k, v) in enumerate(extra)))

    def compacted() -> bool:
        return "compacted the bucket's copy" in node.log_path.read_text()

    wait_for(compacted, 60, "the bucket's copy compacted")
    tid = node.topic_id("c")
    wait_for(lambda: node.local_log_bytes("c", 0) <= LOCAL + 2 * SEGMENT, 60,
             lambda: f"local log within local retention: {node.local_log_bytes('c', 0)}")
    m = scrub_settled(bucket, tid, 0)
    rewritten = [s for s in m["segments"] if s.get("compacted")]
    assert rewritten, "segments rewritten in the bucket"
    got = read_from_zero(node.bootstrap)
    assert live(got) == want, "the latest value of every key, across both tiers"
    total = len(items) + len(extra)
    assert len(got) < total / 2, f"read {len(got)} of {total} records"
    # What the bucket serves (below the local start) holds each key once at most.
    text = re.sub(r"\x1b\[[0-9;]*m", "", node.log_path.read_text())
    removed = sum(int(x) for x in re.findall(r"compacted the bucket's copy.*?records_removed=(\d+)", text))
    print(f"\n[compacted tiered] {total} records produced, {len(got)} read back from offset 0; "
          f"{len(rewritten)} of {len(m['segments'])} bucket segments rewritten, "
          f"{removed} records removed from the bucket; local log {node.local_log_bytes('c', 0)} bytes")

    # SIGKILL and restart: the same from offset 0, and compaction goes on.
    node.kill()
    node.start()
    again = read_from_zero(node.bootstrap)
    assert live(again) == want
    scrub_settled(bucket, tid, 0)
    node.stop()
