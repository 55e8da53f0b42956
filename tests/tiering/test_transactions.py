"""Transactions on a tiered topic: the aborted transactions of segments only the bucket
holds travel with them, so a read_committed consumer reading from the bucket drops the
aborted records exactly as it does from the local log."""

from __future__ import annotations

import uuid

from conftest import S3Bucket, create_topic, scrub_settled
from strata_testlib import wait_for

SEGMENT = 16 * 1024
TIERED = {
    "remote.storage.enable": "true",
    "segment.bytes": str(SEGMENT),
    "local.retention.bytes": str(4 * SEGMENT),
    "retention.bytes": "-1",
    "retention.ms": "-1",
}
TXNS = 60
PER_TXN = 10
VALUE = b"x" * 200


def local_start(node, topic: str) -> int:
    return min(int(f.stem) for f in node.partition_dir(topic, 0).glob("*.log"))


def read(bootstrap: str, topic: str, isolation: str, expect: int) -> list[bytes]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex}",
                  "isolation.level": isolation, "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got: list[bytes] = []
    try:
        def more():
            for m in c.consume(500, timeout=0.5):
                if m.error() is None:
                    got.append(m.key())
            return len(got) >= expect or None

        wait_for(more, 60, lambda: f"{isolation}: {len(got)} of {expect} records")
        got.extend(m.key() for m in c.consume(500, timeout=1) if m.error() is None)
    finally:
        c.close()
    return got


def test_read_committed_from_the_bucket_drops_aborted_records(tmp_path, request, nodes, minio):
    from confluent_kafka import Producer

    bucket = S3Bucket(minio, f"t-{uuid.uuid4().hex[:8]}")
    node = nodes(tmp_path / "node", bucket)
    request.node._nodes = [node]
    node.start()
    create_topic(node.bootstrap, "t", 1, TIERED)
    p = Producer({"bootstrap.servers": node.bootstrap, "transactional.id": "tiered",
                  "linger.ms": 5})
    p.init_transactions(30)
    committed = []
    for n in range(TXNS):
        p.begin_transaction()
        keys = [f"{n}-{i}".encode() for i in range(PER_TXN)]
        for k in keys:
            p.produce("t", key=k, value=VALUE, partition=0)
        if n % 3 == 2:
            assert p.flush(30) == 0
            p.abort_transaction(30)
        else:
            p.commit_transaction(30)
            committed.extend(keys)
    # The early segments, with their markers, become the bucket's only.
    half = TXNS * (PER_TXN + 1) // 4
    wait_for(lambda: local_start(node, "t") > half or None, 60,
             lambda: f"local start past {half}: {local_start(node, 't')}")
    got = read(node.bootstrap, "t", "read_committed", len(committed))
    assert got == committed, (len(got), len(committed))
    everything = read(node.bootstrap, "t", "read_uncommitted", TXNS * PER_TXN)
    assert len(everything) == TXNS * PER_TXN
    scrub_settled(bucket, node.topic_id("t"), 0)
    node.stop()
