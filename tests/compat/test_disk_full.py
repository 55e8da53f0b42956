"""A full disk fails produces with KAFKA_STORAGE_ERROR, loses nothing acknowledged, keeps the log
readable, and accepts writes again once space is freed (strata only: Apache Kafka takes the log
directory offline instead)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import TARGET
from strata_testlib import free_port, node_bin, port_open

pytestmark = pytest.mark.skipif(TARGET != "strata", reason="strata-specific: Kafka stops the log dir on a full disk")


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def read_all(bs, topic, timeout=30):
    """Every record of partition 0, read up to its high watermark. (Stopping at the first empty
    poll instead read nothing when the consumer's first fetch took over a second on a busy
    machine.)"""
    c = Consumer({"bootstrap.servers": bs, "group.id": f"r-{uuid.uuid4()}", "enable.auto.commit": False})
    _, end = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout)
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (not out or out[-1][0] < end - 1):
        m = c.poll(1)
        if m is not None and not m.error():
            out.append((m.offset(), m.value()))
    c.close()
    return out


def test_full_disk_refuses_then_recovers(small_disk):
    port = free_port()
    bs = f"127.0.0.1:{port}"
    data = small_disk / "data"
    log = open(small_disk.parent / "node.log", "wb")
    proc = subprocess.Popen(
        [str(node_bin()), "--listen", bs, "--data-dir", str(data), "--topic-default", "segment.bytes=1048576"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            assert proc.poll() is None and time.monotonic() < deadline, "node did not start"
            time.sleep(0.05)
        acked, errors = [], []
        p = Producer({"bootstrap.servers": bs, "acks": "all", "message.timeout.ms": 5000, "retries": 0})
        for i in range(10000):
            p.produce("full", value=b"%08d" % i + b"x" * 992,
                      on_delivery=lambda e, m: errors.append(e) if e else acked.append((m.offset(), m.value())))
            p.poll(0)
        assert p.flush(30) == 0
        assert acked, "some writes fit"
        assert errors, "the 6 MiB disk must fill up"
        assert {e.code() for e in errors} == {errors[0].code()} and errors[0].name() == "KAFKA_STORAGE_ERROR"
        assert proc.poll() is None, "node survived the full disk"
        # Everything acknowledged is readable, in order, and nothing else is there.
        assert read_all(bs, "full") == sorted(acked)
        # Free space (delete the first segments), then writes succeed again.
        from confluent_kafka.admin import AdminClient
        from confluent_kafka import TopicPartition as TP
        admin = AdminClient({"bootstrap.servers": bs})
        res = admin.delete_records([TP("full", 0, acked[len(acked) // 2][0])])
        for f in res.values():
            f.result(timeout=10)
        ok = []
        p2 = Producer({"bootstrap.servers": bs, "acks": "all"})
        p2.produce("full", value=b"after", on_delivery=lambda e, m: ok.append(e))
        assert p2.flush(10) == 0 and ok == [None]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
