"""Tiered storage end to end: real strata-node processes, a real S3 server (MinIO) and a
file:// bucket, real Kafka clients. Every test scrubs the bucket at its end."""

from __future__ import annotations

import json
import shutil
import time
import uuid

import pytest

from conftest import (
    FileBucket,
    S3Bucket,
    consume_all,
    create_topic,
    produce,
    scrub,
    scrub_settled,
    watermarks,
)
from strata_testlib import wait_for
from faultproxy import FaultProxy

SEGMENT = 64 * 1024
LOCAL = 256 * 1024
PARTITIONS = 2
# Ten times the local retention per partition (records are a little over 1 KiB).
RECORDS = 10 * LOCAL // 1024
TOPIC_CONFIG = {
    "remote.storage.enable": "true",
    "segment.bytes": str(SEGMENT),
    "local.retention.bytes": str(LOCAL),
    "retention.bytes": "-1",
    "retention.ms": "-1",
}
LOCAL_BOUND = LOCAL + SEGMENT  # local retention plus one segment


def make_bucket(kind, tmp_path, request):
    if kind == "file":
        return FileBucket(tmp_path / "bucket")
    return S3Bucket(request.getfixturevalue("minio"), f"t-{uuid.uuid4().hex[:8]}")


def expected(acked: dict, p: int, below: int | None = None) -> dict:
    return {o: r for (pp, o), r in acked.items() if pp == p and (below is None or o < below)}


def check_all(node, topic, acked, partitions=PARTITIONS):
    for p in range(partitions):
        got = consume_all(node.bootstrap, topic, p)
        want = expected(acked, p)
        assert len(got) == len(want), f"partition {p}: read {len(got)} of {len(want)}"
        assert got == want, f"partition {p}: records differ"


def wait_local_bound(node, topic, timeout=120):
    wait_for(
        lambda: all(node.local_log_bytes(topic, p) <= LOCAL_BOUND for p in range(PARTITIONS)),
        timeout,
        lambda: f"local logs within {LOCAL_BOUND} bytes: "
        + str([node.local_log_bytes(topic, p) for p in range(PARTITIONS)]),
    )


@pytest.mark.parametrize("kind", ["file", "minio"])
def test_tier_read_back_and_sigkill(kind, tmp_path, request, nodes):
    bucket = make_bucket(kind, tmp_path, request)
    node = nodes(tmp_path / "node", bucket)
    request.node._nodes = [node]
    node.start()
    create_topic(node.bootstrap, "t", PARTITIONS, TOPIC_CONFIG)
    t0 = time.time()
    acked = produce(node.bootstrap, "t", PARTITIONS, 0, RECORDS)
    produced = time.time() - t0
    wait_local_bound(node, "t")
    tiered = time.time() - t0
    tid = node.topic_id("t")
    for p in range(PARTITIONS):
        m = scrub_settled(bucket, tid, p)
        assert m["log_start_offset"] == 0
        assert m["end_offset"] >= RECORDS - LOCAL_BOUND // 1024
        assert watermarks(node.bootstrap, "t", p) == (0, RECORDS), "earliest is the bucket's"
    t1 = time.time()
    check_all(node, "t", acked)
    read = time.time() - t1
    print(f"\n[{kind}] produce {produced:.1f}s, tiered after {tiered:.1f}s, "
          f"read back {PARTITIONS * RECORDS} records from offset 0 in {read:.1f}s")

    # SIGKILL and restart: everything still reads back, from a cold cache.
    node.kill()
    node.start()
    check_all(node, "t", acked)
    more = produce(node.bootstrap, "t", PARTITIONS, RECORDS, 50)
    for p in range(PARTITIONS):
        assert min(o for (pp, o) in more if pp == p) == RECORDS, "offsets continue"
    acked.update(more)
    wait_local_bound(node, "t")
    check_all(node, "t", acked)
    for p in range(PARTITIONS):
        scrub_settled(bucket, tid, p)
    node.stop()


def test_restore_after_local_dir_is_lost(tmp_path, request, nodes):
    bucket = make_bucket("minio", tmp_path, request)
    node = nodes(tmp_path / "node", bucket)
    request.node._nodes = [node]
    node.start()
    create_topic(node.bootstrap, "t", PARTITIONS, TOPIC_CONFIG)
    acked = produce(node.bootstrap, "t", PARTITIONS, 0, RECORDS)
    wait_local_bound(node, "t")
    tid = node.topic_id("t")
    node.stop()
    m = scrub(bucket, tid, 0)
    end = m["end_offset"]
    assert end > 0
    shutil.rmtree(node.partition_dir("t", 0))  # a replaced disk
    node.start()
    assert watermarks(node.bootstrap, "t", 0) == (0, end)
    got = consume_all(node.bootstrap, "t", 0)
    assert got == expected(acked, 0, below=end), "every tiered record is back"
    # Producers continue right after the restored data; the other partition is untouched.
    more = produce(node.bootstrap, "t", 1, RECORDS, 20)
    assert min(o for (_, o) in more) == end
    assert consume_all(node.bootstrap, "t", 1) == expected(acked, 1)
    node.stop()
    for p in range(PARTITIONS):
        scrub(bucket, tid, p)


def test_clean_stop_during_uploads_leaves_no_orphans(tmp_path, request, nodes):
    """SIGTERM while the uploader is catching up: the segment in hand is finished (objects
    and manifest) and no new one is started, so the bucket holds exactly what the manifest
    names; nothing acknowledged is lost across the restart."""
    bucket = make_bucket("minio", tmp_path, request)
    # A slow first pass: the uploader starts only after everything below is produced.
    node = nodes(tmp_path / "node", bucket, extra_args=["--tiering-interval-ms", "3000"])
    request.node._nodes = [node]
    node.start()
    create_topic(node.bootstrap, "t", PARTITIONS, TOPIC_CONFIG)
    acked = produce(node.bootstrap, "t", PARTITIONS, 0, RECORDS)
    tid = node.topic_id("t")
    # Stop as soon as the first objects appear: uploads are in flight.
    wait_for(lambda: any(k.endswith(".log") for k in bucket.list(f"{tid}/")), 60, "first upload")
    node.stop()
    for p in range(PARTITIONS):
        scrub(bucket, tid, p)
    assert "shutdown deadline passed" not in node.log_path.read_text(errors="replace")
    node.start()
    check_all(node, "t", acked)
    node.stop()
    for p in range(PARTITIONS):
        scrub(bucket, tid, p)


def test_bucket_outage_loses_nothing(tmp_path, request, nodes, minio):
    proxy = FaultProxy(minio.port)
    try:
        bucket = S3Bucket(minio, f"t-{uuid.uuid4().hex[:8]}", endpoint_port=proxy.port)
        node = nodes(tmp_path / "node", bucket)
        request.node._nodes = [node]
        node.start()
        create_topic(node.bootstrap, "t", PARTITIONS, TOPIC_CONFIG)
        acked = produce(node.bootstrap, "t", PARTITIONS, 0, RECORDS // 2)
        wait_local_bound(node, "t")
        next_i = RECORDS // 2
        for mode in ("error503", "refuse", "blackhole"):
            proxy.set_mode(mode)
            n = RECORDS // 4
            acked.update(produce(node.bootstrap, "t", PARTITIONS, next_i, n))
            next_i += n
            # Local fetches go on while the bucket is down.
            tail = consume_all(node.bootstrap, "t", 0, start=next_i - 10)
            assert len(tail) == 10
            time.sleep(1)
        grown = [node.local_log_bytes("t", p) for p in range(PARTITIONS)]
        assert max(grown) > LOCAL_BOUND, f"uploads were blocked, local disk grows: {grown}"
        assert proxy.faulted > 0
        # A restart while the bucket is unreachable: the node starts; the earliest offset
        # (ListOffsets -2) is a retriable storage error until it has read the manifest,
        # never the local start passed off as the log's.
        proxy.set_mode("refuse")
        node.stop()
        node.start()
        assert earliest_error(node.bootstrap, "t", 0) == "KAFKA_STORAGE_ERROR"
        proxy.set_mode("pass")
        wait_for(lambda: earliest_error(node.bootstrap, "t", 0) == 0, 60,
                 "ListOffsets -2 to answer 0 once the bucket is back")
        wait_local_bound(node, "t", timeout=150)
        check_all(node, "t", acked)
        log = node.log_path.read_text(errors="replace")
        assert "tiering failed; will retry" in log
        node.stop()
        tid = node.topic_id("t")
        for p in range(PARTITIONS):
            scrub(bucket, tid, p)
    finally:
        proxy.close()


def earliest_error(bootstrap: str, topic: str, p: int):
    """ListOffsets -2 (earliest) by the admin client: the offset, or the error's name."""
    from confluent_kafka import KafkaException, TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    tp = TopicPartition(topic, p)
    a = AdminClient({"bootstrap.servers": bootstrap})
    try:
        return a.list_offsets({tp: OffsetSpec.earliest()})[tp].result(timeout=30).offset
    except KafkaException as e:
        return e.args[0].name()


def segment_files(node, topic: str, p: int) -> list[tuple[int, int]]:
    """(base offset, bytes) of every local segment of the partition, oldest first."""
    out = []
    for f in node.partition_dir(topic, p).glob("*.log"):
        try:
            out.append((int(f.stem), f.stat().st_size))
        except (ValueError, OSError):  # a segment deleted while listed
            continue
    return sorted(out)


def not_in(segments: list[tuple[int, int]], remote_end: int) -> int:
    """Bytes of the segments the bucket does not hold whole: the upload backlog (the active
    segment included)."""
    backlog = 0
    for i, (_, size) in enumerate(segments):
        nxt = segments[i + 1][0] if i + 1 < len(segments) else None
        if nxt is None or nxt > remote_end:
            backlog += size
    return backlog


def test_local_copy_is_trimmed_right_after_upload(tmp_path, request, nodes):
    """With the retention check at its default (every 5 minutes), the local copy stays
    within local retention + one segment + the segments not yet uploaded, while producing
    and after: the uploader deletes what it has just put in the manifest."""
    import threading

    bucket = make_bucket("minio", tmp_path, request)
    node = nodes(tmp_path / "node", bucket, extra_args=[
        "--retention-check-interval-ms", "300000", "--tiering-interval-ms", "1000"])
    request.node._nodes = [node]
    node.start()
    create_topic(node.bootstrap, "t", PARTITIONS, TOPIC_CONFIG)
    tid = node.topic_id("t")
    lag = 3.0  # seconds the uploader may take to see, upload and trim a closed segment
    ends: list[tuple[float, dict]] = []  # (time, {partition: manifest end})
    worst = {p: 0 for p in range(PARTITIONS)}
    violations = []

    def remote_ends() -> dict:
        out = {}
        for p in range(PARTITIONS):
            try:
                out[p] = json.loads(bucket.get(f"{tid}/{p}/manifest.json"))["end_offset"]
            except Exception:  # not written yet
                out[p] = 0
        return out

    def sample():
        now = time.time()
        ends.append((now, remote_ends()))
        old = [e for t, e in ends if t <= now - lag]
        end_then = old[-1] if old else {p: 0 for p in range(PARTITIONS)}
        for p in range(PARTITIONS):
            segs = segment_files(node, "t", p)
            local = sum(s for _, s in segs)
            worst[p] = max(worst[p], local)
            bound = LOCAL_BOUND + not_in(segs, end_then[p])
            if local > bound:
                violations.append((round(now, 1), p, local, bound))

    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            sample()
            time.sleep(0.2)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    try:
        # Paced over ~10 s, several times the lag, so that the check while producing bites.
        acked = {}
        chunk = RECORDS // 10
        for i in range(10):
            acked.update(produce(node.bootstrap, "t", PARTITIONS, i * chunk, chunk))
            time.sleep(1)
        # After: everything closed gets uploaded and trimmed within seconds, not minutes.
        wait_for(lambda: all(segment_files(node, "t", p) and
                             sum(s for _, s in segment_files(node, "t", p)) <= LOCAL_BOUND
                             for p in range(PARTITIONS)), 30,
                 lambda: "local logs within local retention + one segment: "
                 + str([sum(s for _, s in segment_files(node, "t", p)) for p in range(PARTITIONS)]))
    finally:
        stop.set()
        th.join()
    assert not violations, f"(time, partition, local bytes, bound): {violations[:10]}"
    print(f"\n[tiering] produced {RECORDS} x 1 KiB per partition; largest local copy while "
          f"producing: {worst} bytes (local retention {LOCAL}, segment {SEGMENT}); "
          f"{len(ends)} samples")
    assert "retention deleted segments" in node.log_path.read_text(errors="replace")
    check_all(node, "t", acked)
    for p in range(PARTITIONS):
        scrub_settled(bucket, tid, p)
    node.stop()
