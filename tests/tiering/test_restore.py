"""Whole-cluster restore (`--restore-from`): a node with an empty disk recreates the topics,
configs and tiered data of a lost cluster from its bucket prefix. Real strata-node
processes, a real S3 server (MinIO), real Kafka clients."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from conftest import (
    S3Bucket,
    consume_all,
    create_topic,
    produce,
    scrub,
    scrub_settled,
    watermarks,
)
from strata_testlib import wait_for
from test_tiering import PARTITIONS, RECORDS, TOPIC_CONFIG, expected, wait_local_bound

PLAIN_CONFIG = {"retention.ms": "3600000", "cleanup.policy": "delete"}


def topic_configs(bootstrap: str, topic: str) -> dict:
    from confluent_kafka.admin import AdminClient, ConfigResource

    a = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = a.describe_configs([res])[res].result(timeout=30)
    return {k: e.value for k, e in entries.items()}


def topic_names(bootstrap: str) -> set:
    from confluent_kafka.admin import AdminClient

    return set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics)


def log_field(line: str, name: str) -> int:
    plain = re.sub(r"\x1b\[[0-9;]*m", "", line)  # the node's log may carry colours
    return int(re.search(rf"\b{name}=(\d+)", plain).group(1))


@pytest.mark.parametrize("mode", ["copy", "in_place"])
def test_whole_cluster_restore(mode, tmp_path, request, nodes, minio):
    old = S3Bucket(minio, f"old-{uuid.uuid4().hex[:8]}")
    a = nodes(tmp_path / "a", old)
    request.node._nodes = [a]
    a.start()
    create_topic(a.bootstrap, "orders", PARTITIONS, TOPIC_CONFIG)
    create_topic(a.bootstrap, "audit", 1, PLAIN_CONFIG)
    acked = produce(a.bootstrap, "orders", PARTITIONS, 0, RECORDS)
    produce(a.bootstrap, "audit", 1, 0, 10)
    wait_local_bound(a, "orders")
    tid = a.topic_id("orders")
    wait_for(lambda: "topic.json" in old.list(f"{tid}/"), 30, "orders in the bucket's catalog")
    a.kill()  # the cluster is lost, with its disks
    manifests = {p: scrub(old, tid, p, killed=True) for p in range(PARTITIONS)}
    ends = {p: m["end_offset"] for p, m in manifests.items()}
    assert all(e > 0 for e in ends.values())

    target = old if mode == "in_place" else S3Bucket(minio, f"new-{uuid.uuid4().hex[:8]}")
    b = nodes(tmp_path / "b", target, extra_args=["--restore-from", old.url])
    request.node._nodes = [a, b]
    t0 = time.monotonic()
    b.start()
    wait_for(
        lambda: {"orders", "audit"} <= topic_names(b.bootstrap)
        and all(watermarks(b.bootstrap, "orders", p) == (0, ends[p]) for p in range(PARTITIONS)),
        120,
        "the restored topics readable from offset 0 to the bucket's end",
    )
    restored_in = time.monotonic() - t0
    # Configs come back; the untiered topic comes back empty (its data was on the lost disks).
    got = topic_configs(b.bootstrap, "orders")
    for k, v in TOPIC_CONFIG.items():
        assert got[k] == v, (k, got[k])
    assert topic_configs(b.bootstrap, "audit")["retention.ms"] == PLAIN_CONFIG["retention.ms"]
    assert watermarks(b.bootstrap, "audit", 0) == (0, 0)
    assert b.topic_id("orders") == tid
    t1 = time.monotonic()
    for p in range(PARTITIONS):
        assert consume_all(b.bootstrap, "orders", p) == expected(acked, p, below=ends[p])
    read_in = time.monotonic() - t1
    # Producers continue after the last uploaded offset, and the new data tiers on.
    more = produce(b.bootstrap, "orders", PARTITIONS, RECORDS, 300)
    for p in range(PARTITIONS):
        assert min(o for (pp, o) in more if pp == p) == ends[p]
    wait_for(
        lambda: all(
            json.loads(target.get(f"{tid}/{p}/manifest.json"))["end_offset"] > ends[p]
            for p in range(PARTITIONS)
        ),
        60,
        "the restored partitions upload again",
    )
    for p in range(PARTITIONS):
        scrub_settled(target, tid, p)
    if mode == "copy":
        for p in range(PARTITIONS):
            assert scrub(old, tid, p, killed=True) == manifests[p], "the old prefix is left as it was"
    marker = json.loads(target.get("restore.json"))
    assert marker["from"] == old.url and set(marker["topics"]) == {"orders", "audit"}
    done = [ln for ln in b.log_path.read_text().splitlines() if "restore finished" in ln]
    assert len(done) == 1, done
    # A restart does not restore again.
    b.stop()
    b.start()
    wait_for(lambda: "already done" in b.log_path.read_text(), 30, "the restore is not redone")
    assert watermarks(b.bootstrap, "orders", 0)[1] == ends[0] + 300
    b.stop()
    tiered = sum(m["segments"][-1]["next_offset"] for m in manifests.values())
    print(
        f"\n[restore {mode}] {tiered} records in the bucket: topics readable "
        f"{restored_in:.1f}s after start, every record read back in {read_in:.1f}s; "
        f"objects copied {log_field(done[0], 'objects_copied')}, "
        f"bytes copied {log_field(done[0], 'bytes_copied')}, "
        f"bytes read by the node {log_field(done[0], 'bytes_read')}, "
        f"restore {log_field(done[0], 'elapsed_ms')} ms"
    )
