"""Kafka's own kafka-consumer-groups tool (ConsumerGroupCommand from the Maven jars) against the
broker: list, describe with lag, reset offsets, delete."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from helpers import ck_produce, create_topic
from strata_testlib import KAFKA_LIBS, wait_for

LIBS = KAFKA_LIBS
TOOL = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


def cgc(bootstrap: str, *args: str) -> str:
    if not LIBS.is_dir():
        pytest.fail(f"{LIBS} missing: run tests/testbed/install.sh")
    cmd = ["java", "-Xmx256m", "-cp", f"{LIBS}/*", TOOL, "--bootstrap-server", bootstrap, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout


def consume_and_commit(bootstrap, topic, group, n):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    got = 0
    deadline = time.monotonic() + 60
    while got < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got += 1
            c.commit(message=m, asynchronous=False)
    c.close()
    assert got == n


def test_list_describe_reset_delete(broker, topic):
    create_topic(broker.bootstrap, topic, 1)
    ck_produce(broker.bootstrap, topic, [{"value": b"%d" % i} for i in range(50)])
    group = f"tool-{uuid.uuid4().hex[:8]}"
    consume_and_commit(broker.bootstrap, topic, group, 30)

    assert group in cgc(broker.bootstrap, "--list").split()

    # Describe shows current offset 30, log end 50 and lag 20 for the (now empty) group.
    out = cgc(broker.bootstrap, "--describe", "--group", group)
    row = next(line.split() for line in out.splitlines() if topic in line.split())
    header = next(line.split() for line in out.splitlines() if "CURRENT-OFFSET" in line)
    fields = dict(zip(header, row))
    assert (fields["CURRENT-OFFSET"], fields["LOG-END-OFFSET"], fields["LAG"]) == ("30", "50", "20"), out

    out = cgc(broker.bootstrap, "--describe", "--group", group, "--state")
    assert "Empty" in out

    # Reset to earliest: the committed offset becomes 0.
    cgc(broker.bootstrap, "--reset-offsets", "--group", group, "--topic", topic, "--to-earliest", "--execute")
    probe = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group})
    committed = probe.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
    probe.close()
    assert committed == 0

    # Reset to an explicit offset.
    cgc(broker.bootstrap, "--reset-offsets", "--group", group, "--topic", topic, "--to-offset", "42", "--execute")
    out = cgc(broker.bootstrap, "--describe", "--group", group)
    row = next(line.split() for line in out.splitlines() if topic in line.split())
    assert dict(zip(header, row))["LAG"] == "8", out

    # Delete the group: it is gone from the list.
    out = cgc(broker.bootstrap, "--delete", "--group", group)
    assert "successful" in out.lower(), out
    wait_for(lambda: group not in cgc(broker.bootstrap, "--list").split(), 30, "group deleted")
