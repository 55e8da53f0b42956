"""Fixtures for the tiering suite: a MinIO server (tests/testbed/minio.sh), strata-node
processes with --object-store, Kafka clients (confluent-kafka), and a bucket scrub that
every test runs at its end.

  STRATA_NODE_BIN   strata-node binary (default <repo>/target/debug/strata-node)
  STRATA_CACHE      test-bed cache (default ~/.cache/strata-testbed)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest
from strata_testlib import TESTBED, Proc, free_port, node_bin, port_open

MINIO_SH = TESTBED / "minio.sh"
ACCESS_KEY = "strata"
SECRET_KEY = "strata-secret"
BUCKET = "strata-tiering"


# ---- MinIO ---------------------------------------------------------------------------------


class Minio:
    def __init__(self, workdir: Path):
        self.dir = workdir
        self.port = free_port()
        subprocess.run(["bash", str(MINIO_SH), "start", str(workdir), str(self.port)], check=True)
        import boto3
        from botocore.config import Config

        self.s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.port}",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )
        self.s3.create_bucket(Bucket=BUCKET)

    def env(self, port: int | None = None) -> dict:
        return {
            "AWS_ENDPOINT": f"http://127.0.0.1:{port or self.port}",
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def stop(self):
        subprocess.run(["bash", str(MINIO_SH), "stop", str(self.dir)], check=False)


@pytest.fixture(scope="session")
def minio(tmp_path_factory):
    m = Minio(tmp_path_factory.mktemp("minio"))
    yield m
    m.stop()


# ---- Buckets: listing, reading, scrubbing -----------------------------------------------------


class FileBucket:
    kind = "file"

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.url = f"file://{root}"
        self.env = {}

    def list(self, prefix: str) -> dict[str, int]:
        d = self.root / prefix
        if not d.is_dir():
            return {}
        return {p.name: p.stat().st_size for p in d.iterdir() if p.is_file()}

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def pending_uploads(self) -> int:
        return 0


class S3Bucket:
    kind = "minio"

    def __init__(self, minio: Minio, prefix: str, endpoint_port: int | None = None):
        self.minio = minio
        self.prefix = prefix.strip("/") + "/"
        self.url = f"s3://{BUCKET}/{prefix.strip('/')}"
        self.env = minio.env(endpoint_port)

    def list(self, prefix: str) -> dict[str, int]:
        out = {}
        full = self.prefix + prefix
        for page in self.minio.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=full):
            for o in page.get("Contents", []):
                out[o["Key"][len(full):]] = o["Size"]
        return out

    def get(self, key: str) -> bytes:
        return self.minio.s3.get_object(Bucket=BUCKET, Key=self.prefix + key)["Body"].read()

    def pending_uploads(self) -> int:
        # MinIO lists open multipart uploads for one exact key or for the whole bucket, never
        # for a folder prefix (that answers an empty list): list the bucket and filter.
        n = 0
        for page in self.minio.s3.get_paginator("list_multipart_uploads").paginate(Bucket=BUCKET):
            n += sum(1 for u in page.get("Uploads", []) if u["Key"].startswith(self.prefix))
        return n


SEGMENT_EXTS = ("log", "index", "timeindex", "snapshot")


def scrub(bucket, topic_id: str, partition: int, killed: bool = False) -> dict:
    """Check one partition folder; returns the manifest. Fails the test on any problem.
    `killed`: the node was SIGKILLed, so an upload it had in flight may have left the objects
    of the next segment (at or past the manifest's end) without the manifest naming them; the
    next leader deletes those as orphans."""
    folder = f"{topic_id}/{partition}/"
    objects = bucket.list(folder)
    assert "manifest.json" in objects, f"no manifest in {folder}: {sorted(objects)}"
    m = json.loads(bucket.get(folder + "manifest.json"))
    problems = []
    if m.get("version") != 1:
        problems.append(f"manifest version {m.get('version')}")
    segs = m["segments"]
    referenced = set()
    prev = None
    for s in segs:
        if s["next_offset"] <= s["base_offset"]:
            problems.append(f"empty segment {s}")
        if prev is not None:
            if s["base_offset"] != prev["next_offset"]:
                problems.append(f"gap or overlap: {prev['base_offset']}..{prev['next_offset']} then {s['base_offset']}")
            if s["leader_epoch"] < prev["leader_epoch"]:
                problems.append(f"epoch goes back at {s['base_offset']}")
        epochs = [e for e, _ in s["epochs"]]
        if epochs != sorted(epochs):
            problems.append(f"epoch history not monotonic in {s['base_offset']}")
        if s["leader_epoch"] > m["leader_epoch"]:
            problems.append(f"segment epoch above manifest epoch at {s['base_offset']}")
        name = f"{s['base_offset']:020d}-{s['leader_epoch']}"
        if s.get("compacted"):  # rewritten by compaction
            name += f"-c{s['compacted']['count']}e{s['compacted']['by_epoch']}"
        for ext in SEGMENT_EXTS:
            referenced.add(f"{name}.{ext}")
            if f"{name}.{ext}" not in objects:
                problems.append(f"missing {name}.{ext}")
        if objects.get(f"{name}.log") not in (None, s["size"]):
            problems.append(f"{name}.log has {objects[f'{name}.log']} bytes, manifest says {s['size']}")
        prev = s
    if segs:
        if not segs[0]["base_offset"] <= m["log_start_offset"] < segs[-1]["next_offset"]:
            problems.append("log start outside the segments")
        if m["end_offset"] != segs[-1]["next_offset"]:
            problems.append("end offset differs from the last segment's end")
    orphans = sorted(set(objects) - referenced - {"manifest.json"})
    if killed:
        orphans = [o for o in orphans if not _in_flight(o, m["end_offset"])]
    if orphans:
        problems.append(f"unreferenced objects: {orphans}")
    if bucket.pending_uploads():
        problems.append(f"{bucket.pending_uploads()} multipart uploads left open")
    assert not problems, f"scrub of {folder}: {problems}"
    return m


def _in_flight(name: str, end_offset: int) -> bool:
    """Whether `name` is an object of a segment starting at or past `end_offset`."""
    base = name.split("-", 1)[0]
    return base.isdigit() and int(base) >= end_offset


def scrub_settled(bucket, topic_id: str, partition: int, timeout: float = 30) -> dict:
    """scrub() of a partition whose node is still running: an upload in flight shows as
    objects the manifest does not name yet, so retry until the uploader is between uploads."""
    deadline = time.time() + timeout
    while True:
        try:
            return scrub(bucket, topic_id, partition)
        except AssertionError:
            if time.time() >= deadline:
                raise
            time.sleep(0.5)


# ---- strata-node processes -------------------------------------------------------------------


class Node(Proc):
    """strata-node with --object-store on a free loopback port, restartable on the same data."""

    def __init__(self, workdir: Path, bucket, extra_args=(), env=None):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.data = workdir / "data"
        self.port = free_port()
        self.bucket = bucket
        self.extra_args = list(extra_args)
        self.bootstrap = f"127.0.0.1:{self.port}"
        defaults = {
            "--tiering-interval-ms": "200",
            "--retention-check-interval-ms": "300",
            "--group-initial-rebalance-delay-ms": "0",
        }
        args = [
            str(node_bin()),
            "--listen", self.bootstrap,
            "--data-dir", str(self.data),
            "--object-store", self.bucket.url,
        ]
        for flag, value in defaults.items():
            if flag not in self.extra_args:  # a test's own value wins
                args += [flag, value]
        args += self.extra_args
        node_env = {"RUST_LOG": os.environ.get("RUST_LOG", "info"), **bucket.env, **(env or {})}
        super().__init__("strata-node", args, workdir / "node.log", node_env)

    def start(self, timeout=60):
        super().start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(self.exited_message())
            if port_open(self.port):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"strata-node did not listen in {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 60) -> int:
        return super().stop(timeout)

    def partition_dir(self, topic: str, p: int) -> Path:
        return self.data / f"{topic}-{p}"

    def topic_id(self, topic: str) -> str:
        return json.loads((self.partition_dir(topic, 0) / "partition.json").read_text())["topic_id"]

    def local_log_bytes(self, topic: str, p: int) -> int:
        d = self.partition_dir(topic, p)
        total = 0
        for f in d.glob("*.log"):
            # Retention may delete a segment between the listing and the stat.
            try:
                total += f.stat().st_size
            except FileNotFoundError:
                pass
        return total


@pytest.fixture
def nodes():
    started = []

    def make(*args, **kwargs):
        n = Node(*args, **kwargs)
        started.append(n)
        return n

    yield make
    for n in started:
        n.kill()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when == "call":
        for n in getattr(item, "_nodes", []):
            rep.sections.append((f"node log ({n.log_path})", n.log_tail(40)))


# ---- Kafka clients ---------------------------------------------------------------------------


def record(p: int, i: int) -> tuple[bytes, bytes]:
    key = f"{p}-{i}".encode()
    value = hashlib.sha256(key).digest() * 32  # 1 KiB, different for every record
    return key, value


def create_topic(bootstrap: str, name: str, partitions: int, config: dict):
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": bootstrap})
    fut = a.create_topics([NewTopic(name, partitions, 1, config=config)])[name]
    fut.result(timeout=30)


def produce(bootstrap: str, topic: str, partitions: int, start: int, count: int) -> dict:
    """Produce `count` records per partition (idempotent, acks=all); returns
    {(partition, offset): (key, value, timestamp)} of every acknowledged record."""
    from confluent_kafka import Producer

    acked = {}
    errors = []

    def cb(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[(msg.partition(), msg.offset())] = (msg.key(), msg.value(), msg.timestamp()[1])

    pr = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        # Small batches, so that 64 KiB segments hold many of them (a segment is never
        # smaller than one batch).
        "batch.size": 16384,
        "compression.type": "none",
        "message.timeout.ms": 120000,
    })
    for i in range(start, start + count):
        for p in range(partitions):
            k, v = record(p, i)
            while True:
                try:
                    pr.produce(topic, key=k, value=v, partition=p, on_delivery=cb)
                    break
                except BufferError:
                    pr.poll(0.1)
        pr.poll(0)
    left = pr.flush(120)
    assert left == 0, f"{left} records not acknowledged"
    assert not errors, errors[:5]
    return acked


def consume_all(bootstrap: str, topic: str, p: int, start: int = 0, timeout: float = 120) -> dict:
    """Every record of partition p from `start` to the high watermark: {offset: (k, v, ts)}."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"scan-{random.random()}",
        "enable.auto.commit": False,
        "auto.offset.reset": "error",
        "fetch.max.bytes": 8 << 20,
        "max.partition.fetch.bytes": 1 << 20,
    })
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        c.assign([TopicPartition(topic, p, start)])
        out = {}
        deadline = time.time() + timeout
        while len(out) < high - start and time.time() < deadline:
            for m in c.consume(1000, timeout=1):
                assert m.error() is None, m.error()
                out[m.offset()] = (m.key(), m.value(), m.timestamp()[1])
        return out
    finally:
        c.close()


def watermarks(bootstrap: str, topic: str, p: int) -> tuple[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
    finally:
        c.close()
