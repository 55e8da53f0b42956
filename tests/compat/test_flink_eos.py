"""Apache Flink's exactly-once Kafka sink against the broker.

A Flink 2.0 job (tests/java-flink, flink-connector-kafka 4.0 on kafka-clients 3.9) runs on
a local mini-cluster: it reads a topic read_committed, prefixes each value and writes it to
another topic through KafkaSink with DeliveryGuarantee.EXACTLY_ONCE (a transaction per
checkpoint, committed when the checkpoint completes; Flink resumes and commits them with
its own producer id and epoch after a restart). Halfway the job fails once: Flink restarts
it from the last checkpoint, aborts what the failed attempt left open and replays from the
checkpoint's offsets. A read_committed consumer of the output must then see every input
value exactly once, in order.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from helpers import ck_produce, create_topic, read_values
from strata_testlib import REPO

FLINK = REPO / "tests/java-flink/target"


def test_flink_exactly_once_sink_through_a_failure(broker, topic):
    jar = FLINK / "strata-flink.jar"
    if not jar.is_file():
        pytest.fail(f"{jar} missing: run tests/testbed/install.sh")
    bs = broker.bootstrap
    src, dst = topic, f"{topic}-out"
    create_topic(bs, src, 1)
    create_topic(bs, dst, 1)
    values = [f"v-{i:05d}".encode() for i in range(20000)]
    ck_produce(bs, src, [{"value": v, "partition": 0} for v in values])

    r = subprocess.run(
        ["java", "-Xmx768m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
         "-cp", f"{jar}:{FLINK}/libs/*", "io.strata.flink.ExactlyOnceCopy",
         bs, src, dst, f"flink-{uuid.uuid4().hex[:8]}", "8000"],
        capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{r.stdout[-2000:]}\n{r.stderr[-6000:]}"
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary == {"finished": True, "failed_once": True}, r.stdout

    got = read_values(bs, dst, "read_committed")
    expected = [b"copy-" + v for v in values]
    assert got == expected, (len(got), len(expected), [
        (i, a, b) for i, (a, b) in enumerate(zip(got, expected)) if a != b][:3])
    # What the failed attempt wrote after its last checkpoint is in the log, aborted.
    assert len(read_values(bs, dst, "read_uncommitted")) >= len(expected)
