"""Kafka Connect with exactly-once source support (KIP-618) against the broker.

A distributed Connect worker (Apache Kafka 3.9's own, from the reference jars) runs with
`exactly.once.source.support=enabled` and a FileStreamSource connector that requires
exactly-once: every poll's records and the task's source offsets are written in one
transaction, the worker fences zombie tasks through the admin client, and the leader writes
the config topic in transactions. The worker is SIGKILLed while it copies and restarted; the
topic must then hold every line of the file exactly once, in order, for read_committed
consumers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest

from helpers import create_topic, read_values
from strata_testlib import KAFKA_LIBS, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    """One Connect worker process in distributed mode."""

    def __init__(self, workdir: Path, bootstrap: str, group: str):
        self.port = free_port()
        self.workdir = workdir
        self.props = workdir / "worker.properties"
        self.props.write_text("\n".join([
            f"bootstrap.servers={bootstrap}",
            f"group.id={group}",
            f"config.storage.topic={group}-configs",
            f"offset.storage.topic={group}-offsets",
            f"status.storage.topic={group}-status",
            "config.storage.replication.factor=1",
            "offset.storage.replication.factor=1",
            "status.storage.replication.factor=1",
            "key.converter=org.apache.kafka.connect.storage.StringConverter",
            "value.converter=org.apache.kafka.connect.storage.StringConverter",
            "exactly.once.source.support=enabled",
            f"listeners=http://127.0.0.1:{self.port}",
            "rest.advertised.host.name=127.0.0.1",
            f"rest.advertised.port={self.port}",
            "offset.flush.interval.ms=500",
            # A restarted worker gets its tasks back at once, not after the default 5 minutes
            # kept for a departed member to return.
            "scheduled.rebalance.max.delay.ms=0",
            "session.timeout.ms=6000",
            "heartbeat.interval.ms=1000",
        ]) + "\n")
        (workdir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, file\n"
            "log4j.appender.file=org.apache.log4j.FileAppender\n"
            f"log4j.appender.file.File={workdir}/connect.log\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n")
        self.proc: subprocess.Popen | None = None

    def start(self):
        self.proc = subprocess.Popen(
            ["java", "-Xmx512m", f"-Dlog4j.configuration=file:{self.workdir}/log4j.properties",
             "-cp", f"{KAFKA_LIBS}/*", "org.apache.kafka.connect.cli.ConnectDistributed",
             str(self.props)],
            stdout=subprocess.DEVNULL, stderr=open(self.workdir / "stderr.log", "ab"),
            start_new_session=True)
        wait_for(lambda: self.get("/connectors") is not None, 90, "Connect REST up",
                 every=0.5)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def get(self, path: str):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return json.loads(r.read() or b"null")
        except OSError:
            return None

    def put_connector(self, name: str, config: dict):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/connectors/{name}/config",
            data=json.dumps(config).encode(), method="PUT",
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join((self.workdir / "connect.log").read_text().splitlines()[-n:])
        except OSError:
            return ""


@pytest.fixture
def worker(broker, tmp_path):
    if not KAFKA_LIBS.is_dir():
        pytest.fail(f"{KAFKA_LIBS} missing: run tests/testbed/install.sh")
    w = Worker(tmp_path, broker.bootstrap, f"connect-{uuid.uuid4().hex[:8]}")
    yield w
    w.stop()


def test_exactly_once_source_survives_a_sigkill(broker, topic, worker, tmp_path):
    bs = broker.bootstrap
    create_topic(bs, topic, 1)
    source = tmp_path / "input.txt"
    first = [f"line-{i:06d}" for i in range(2000)]
    source.write_text("".join(f"{ln}\n" for ln in first))
    worker.start()
    worker.put_connector("file-source", {
        "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
        "tasks.max": "1", "file": str(source), "topic": topic, "batch.size": "50",
        # Refuse to run unless the worker can give this connector exactly-once delivery.
        "exactly.once.support": "required", "transaction.boundary": "poll",
    })

    def count(iso):
        return len(read_values(bs, topic, iso))

    wait_for(lambda: count("read_committed") >= len(first), 90,
             lambda: f"first lines copied (worker log:\n{worker.log_tail()})", every=1)

    # More lines, and a SIGKILL while they are being copied: whatever was written in the
    # open transaction is aborted, the task's offsets roll back with it, and the restarted
    # task resumes from the last committed transaction.
    more = [f"line-{i:06d}" for i in range(len(first), len(first) + 20000)]
    with source.open("a") as f:
        f.writelines(f"{ln}\n" for ln in more)
    wait_for(lambda: count("read_uncommitted") > len(first) + 1000, 60, "copying resumed",
             every=0.2)
    worker.kill()
    worker.start()
    expected = [ln.encode() for ln in first + more]
    wait_for(lambda: count("read_committed") >= len(expected), 120,
             lambda: f"every line copied (worker log:\n{worker.log_tail()})", every=1)
    got = read_values(bs, topic, "read_committed")
    assert got == expected, (len(got), len(expected), [
        (i, a, b) for i, (a, b) in enumerate(zip(got, expected)) if a != b][:3])
    # The transactions are real: the records of the killed worker's open transaction, if it
    # had sent any, are in the log but hidden from read_committed.
    assert len(read_values(bs, topic, "read_uncommitted")) >= len(expected)
