"""Segments above the multipart threshold (32 MiB) go up as S3 multipart uploads: run that
path against MinIO, leave no upload open, and read everything back byte for byte."""

from __future__ import annotations

import hashlib
import time
import uuid

from conftest import BUCKET, S3Bucket, create_topic, scrub
from strata_testlib import wait_for

SEGMENT = 40 << 20
VALUE = 64 << 10
TOTAL = 100 << 20
RECORDS = TOTAL // VALUE  # 1600 records, two closed 40 MiB segments and a 20 MiB active one
TOPIC_CONFIG = {
    "remote.storage.enable": "true",
    "segment.bytes": str(SEGMENT),
    "local.retention.bytes": str(1 << 20),
    "retention.bytes": "-1",
    "retention.ms": "-1",
}


def value(i: int) -> bytes:
    # 64 KiB, different for every record and not a short repeating pattern.
    seed = hashlib.sha256(f"mp-{i}".encode()).digest()
    return b"".join(hashlib.sha256(seed + j.to_bytes(4, "big")).digest() for j in range(VALUE // 32))


def test_multipart_segments_round_trip(tmp_path, request, nodes, minio):
    from confluent_kafka import Consumer, Producer, TopicPartition

    bucket = S3Bucket(minio, f"mp-{uuid.uuid4().hex[:8]}")
    # The scrub's open-upload check must see an upload under the prefix (MinIO does not
    # list them by folder), or it would pass vacuously.
    probe = bucket.prefix + "probe/open.log"
    upload = minio.s3.create_multipart_upload(Bucket=BUCKET, Key=probe)["UploadId"]
    assert bucket.pending_uploads() == 1
    minio.s3.abort_multipart_upload(Bucket=BUCKET, Key=probe, UploadId=upload)
    assert bucket.pending_uploads() == 0

    node = nodes(tmp_path / "node", bucket)
    request.node._nodes = [node]
    node.start()
    create_topic(node.bootstrap, "t", 1, TOPIC_CONFIG)
    t0 = time.time()
    pr = Producer({
        "bootstrap.servers": node.bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "batch.size": 1 << 20,
        "compression.type": "none",
    })
    digests = [hashlib.sha256(value(i)).digest() for i in range(RECORDS)]
    errors = []
    for i in range(RECORDS):
        while True:
            try:
                pr.produce("t", key=str(i).encode(), value=value(i), partition=0,
                           on_delivery=lambda err, msg: err and errors.append(err))
                break
            except BufferError:
                pr.poll(0.05)
        pr.poll(0)
    assert pr.flush(60) == 0 and not errors, errors[:3]
    produced = time.time() - t0

    tid = node.topic_id("t")
    folder = f"{tid}/0/"
    # Both closed segments in the manifest, and gone from local disk.
    wait_for(lambda: sum(1 for n in bucket.list(folder) if n.endswith(".log")) >= 2
             and node.local_log_bytes("t", 0) < SEGMENT, 60,
             lambda: f"two segments tiered: {sorted(bucket.list(folder))}, "
                     f"local {node.local_log_bytes('t', 0)} bytes")
    tiered = time.time() - t0
    m = scrub(bucket, tid, 0)  # no open multipart uploads either
    logs = [s for s in m["segments"] if s["size"] > 32 << 20]
    assert len(logs) >= 2, m["segments"]
    for s in logs:
        key = f"{bucket.prefix}{folder}{s['base_offset']:020d}-{s['leader_epoch']}.log"
        etag = minio.s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
        # A multipart object's ETag is "<md5 of the part md5s>-<parts>".
        assert etag.rsplit("-", 1)[-1] == "3", f"{key}: {etag} is not a 3-part upload"

    # Everything back from offset 0, byte-identical, the first 80 MiB from the bucket.
    t1 = time.time()
    c = Consumer({
        "bootstrap.servers": node.bootstrap,
        "group.id": f"mp-{uuid.uuid4().hex[:6]}",
        "enable.auto.commit": False,
        "fetch.max.bytes": 16 << 20,
        "max.partition.fetch.bytes": 8 << 20,
    })
    got = {}
    try:
        c.assign([TopicPartition("t", 0, 0)])
        deadline = time.time() + 60
        while len(got) < RECORDS and time.time() < deadline:
            for msg in c.consume(100, timeout=1):
                assert msg.error() is None, msg.error()
                got[msg.offset()] = hashlib.sha256(msg.value()).digest()
    finally:
        c.close()
    read = time.time() - t1
    assert len(got) == RECORDS, f"read {len(got)} of {RECORDS}"
    assert [got[o] for o in range(RECORDS)] == digests, "records differ"
    print(f"\n[multipart] produce {TOTAL >> 20} MiB {produced:.1f}s, tiered after {tiered:.1f}s, "
          f"read back {read:.1f}s")
    node.stop()
