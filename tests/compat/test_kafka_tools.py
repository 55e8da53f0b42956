"""Kafka's own command-line tools from the Maven jars (the classes behind kafka-topics.sh,
kafka-configs.sh, kafka-get-offsets.sh and kafka-delete-records.sh) against the broker."""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import ck_produce
from strata_testlib import KAFKA_LIBS, wait_for

LIBS = KAFKA_LIBS


def tool(cls: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    if not LIBS.is_dir():
        pytest.fail(f"{LIBS} missing: run tests/testbed/install.sh")
    r = subprocess.run(["java", "-Xmx256m", "-cp", f"{LIBS}/*", cls, *args],
                       capture_output=True, text=True, timeout=120)
    if ok:
        assert r.returncode == 0, f"{cls} {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def topics(bs, *args, ok=True):
    return tool("org.apache.kafka.tools.TopicCommand", "--bootstrap-server", bs, *args, ok=ok)


def test_kafka_topics(broker, topic):
    bs = broker.bootstrap
    topics(bs, "--create", "--topic", topic, "--partitions", "3", "--replication-factor", "1",
           "--config", "retention.ms=3600000")
    assert topic in topics(bs, "--list").stdout.split()
    out = topics(bs, "--describe", "--topic", topic).stdout
    assert "PartitionCount: 3" in out and "retention.ms=3600000" in out, out
    topics(bs, "--alter", "--topic", topic, "--partitions", "5")
    assert "PartitionCount: 5" in topics(bs, "--describe", "--topic", topic).stdout
    # Lowering the partition count is refused.
    r = topics(bs, "--alter", "--topic", topic, "--partitions", "2", ok=False)
    assert r.returncode != 0 or "Error" in r.stdout + r.stderr
    # Creating it again is refused.
    r = topics(bs, "--create", "--topic", topic, "--partitions", "1", ok=False)
    assert "already exists" in (r.stdout + r.stderr)
    topics(bs, "--delete", "--topic", topic)
    wait_for(lambda: topic not in topics(bs, "--list").stdout.split(), 30, "topic deleted")


def test_kafka_configs(broker, topic):
    bs = broker.bootstrap
    topics(bs, "--create", "--topic", topic, "--partitions", "1", "--replication-factor", "1")
    cc = "kafka.admin.ConfigCommand"
    tool(cc, "--bootstrap-server", bs, "--entity-type", "topics", "--entity-name", topic,
         "--alter", "--add-config", "retention.ms=1000,cleanup.policy=compact")
    out = tool(cc, "--bootstrap-server", bs, "--entity-type", "topics", "--entity-name", topic, "--describe").stdout
    assert "retention.ms=1000" in out and "cleanup.policy=compact" in out, out
    tool(cc, "--bootstrap-server", bs, "--entity-type", "topics", "--entity-name", topic,
         "--alter", "--delete-config", "retention.ms")
    out = tool(cc, "--bootstrap-server", bs, "--entity-type", "topics", "--entity-name", topic, "--describe").stdout
    assert "retention.ms=1000" not in out and "cleanup.policy=compact" in out, out
    # An unknown config name is refused.
    r = tool(cc, "--bootstrap-server", bs, "--entity-type", "topics", "--entity-name", topic,
             "--alter", "--add-config", "no.such.config=1", ok=False)
    assert r.returncode != 0


def test_get_offsets_and_delete_records(broker, topic, tmp_path):
    bs = broker.bootstrap
    topics(bs, "--create", "--topic", topic, "--partitions", "1", "--replication-factor", "1")
    ck_produce(bs, topic, [{"value": b"%d" % i} for i in range(20)])
    gos = "org.apache.kafka.tools.GetOffsetShell"
    assert tool(gos, "--bootstrap-server", bs, "--topic", topic).stdout.strip() == f"{topic}:0:20"
    spec = tmp_path / "delete.json"
    spec.write_text(json.dumps({"version": 1, "partitions": [{"topic": topic, "partition": 0, "offset": 7}]}))
    out = tool("org.apache.kafka.tools.DeleteRecordsCommand", "--bootstrap-server", bs,
               "--offset-json-file", str(spec)).stdout
    assert "low_watermark: 7" in out, out
    out = tool(gos, "--bootstrap-server", bs, "--topic", topic, "--time", "-2").stdout.strip()
    assert out == f"{topic}:0:7", out
