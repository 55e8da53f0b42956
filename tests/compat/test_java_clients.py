"""The Java clients (kafka-clients 3.9) through tests/java's CLI (built by install.sh)."""

import json
import shutil
import subprocess
import time

import pytest

from strata_testlib import REPO

JAVA_DIR = REPO / "tests" / "java" / "target"
JAR = JAVA_DIR / "strata-compat.jar"


@pytest.fixture(scope="module")
def cli(broker):
    if shutil.which("java") is None or not JAR.is_file():
        pytest.fail(f"Java CLI not built ({JAR}): run tests/testbed/install.sh")

    def run(cmd, *args, expect_rc=0, timeout=120):
        argv = ["java", "-cp", f"{JAR}:{JAVA_DIR / 'libs'}/*", "io.strata.compat.Cli", cmd,
                "--bootstrap", broker.bootstrap, *map(str, args)]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        if expect_rc is not None:
            assert r.returncode == expect_rc, (
                f"{cmd} exited {r.returncode}, wanted {expect_rc}\nstdout:\n{r.stdout[-3000:]}"
                f"\nstderr:\n{r.stderr[-3000:]}")
        return lines
    return run


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_java_produce_consume(cli, topic, codec):
    out = cli("produce", "--topic", topic, "--count", 500, "--compression", codec,
              "--key-prefix", "k", "--value-prefix", "v", "--header", "h=x")
    assert out[-1] == {"summary": True, "acked": 500, "failed": 0}
    assert [r["offset"] for r in out[:-1]] == list(range(500))

    out = cli("consume", "--topic", topic, "--partition", 0, "--count", 500)
    recs = out[:-1]
    assert [(r["offset"], r["key"], r["value"]) for r in recs] == \
        [(i, f"k{i}", f"v{i}") for i in range(500)]
    assert all(r["headers"] == {"h": "x", "seq": str(r["offset"])} for r in recs)


@pytest.mark.parametrize("acks,idempotence", [("0", "false"), ("1", "false"), ("all", "true")])
def test_java_acks(cli, topic, acks, idempotence):
    out = cli("produce", "--topic", topic, "--count", 200, "--acks", acks,
              "--idempotence", idempotence)
    assert out[-1]["acked"] == 200
    out = cli("consume", "--topic", topic, "--count", 200)
    assert [r["value"] for r in out[:-1]] == [f"value-{i}" for i in range(200)]


def test_java_consume_from_offset(cli, topic):
    cli("produce", "--topic", topic, "--count", 50)
    out = cli("consume", "--topic", topic, "--partition", 0, "--offset", 45, "--count", 5)
    assert [r["offset"] for r in out[:-1]] == [45, 46, 47, 48, 49]


def test_java_admin(cli, topic):
    assert cli("create-topic", "--topic", topic, "--partitions", 3, "--replication-factor", 1,
               "--config", "retention.ms=123456", "--config", "cleanup.policy=compact") \
        == [{"ok": True}]
    d = cli("describe-topic", "--topic", topic)[0]
    assert d["partition_count"] == 3
    assert all(p["leader"] == 1 and p["replicas"] == [1] and p["isr"] == [1]
               for p in d["partitions"])

    c = cli("describe-configs", "--topic", topic)[0]
    assert c["configs"]["retention.ms"] == "123456"
    assert c["sources"]["retention.ms"] == "DYNAMIC_TOPIC_CONFIG"
    assert c["configs"]["cleanup.policy"] == "compact"
    assert c["sources"]["segment.bytes"] == "DEFAULT_CONFIG"

    assert cli("alter-configs", "--topic", topic, "--set", "segment.ms=999999",
               "--delete", "retention.ms") == [{"ok": True}]
    c = cli("describe-configs", "--topic", topic)[0]
    assert c["configs"]["segment.ms"] == "999999"
    assert c["configs"]["retention.ms"] == "604800000"
    assert c["sources"]["retention.ms"] == "DEFAULT_CONFIG"
    assert c["configs"]["cleanup.policy"] == "compact"

    assert cli("create-partitions", "--topic", topic, "--count", 5) == [{"ok": True}]
    deadline = time.monotonic() + 30
    while cli("describe-topic", "--topic", topic)[0]["partition_count"] != 5:
        assert time.monotonic() < deadline, "describe-topic never showed 5 partitions"
        time.sleep(0.5)
    err = cli("create-partitions", "--topic", topic, "--count", 2, expect_rc=3)[0]
    assert err["error"] == "InvalidPartitionsException"

    err = cli("create-topic", "--topic", topic, "--partitions", 1, expect_rc=3)[0]
    assert err["error"] == "TopicExistsException"

    assert cli("delete-topic", "--topic", topic) == [{"ok": True}]
    deadline = time.monotonic() + 30
    while topic in cli("list-topics")[0]["topics"]:
        assert time.monotonic() < deadline, "topic still listed after delete"
        time.sleep(0.5)
    err = cli("describe-topic", "--topic", topic, expect_rc=3)[0]
    assert err["error"] == "UnknownTopicOrPartitionException"


def test_java_admin_errors(cli, topic):
    err = cli("create-topic", "--topic", topic, "--partitions", 1, "--replication-factor", 3,
              expect_rc=3)[0]
    assert err["error"] == "InvalidReplicationFactorException"
    assert cli("create-topic", "--topic", topic, "--partitions", 2, "--validate-only") \
        == [{"ok": True}]
    assert topic not in cli("list-topics")[0]["topics"]
    err = cli("create-topic", "--topic", topic, "--config", "cleanup.policy=bogus",
              expect_rc=3)[0]
    assert err["error"] == "InvalidConfigurationException"


def test_java_offsets_by_time(cli, topic):
    base = 1_700_000_000_000
    out = cli("produce", "--topic", topic, "--count", 10, "--timestamp-start", base,
              "--timestamp-step", 1000)
    assert out[-1]["acked"] == 10
    assert cli("list-offsets", "--topic", topic, "--partition", 0, "--spec", "earliest")[0]["offset"] == 0
    assert cli("list-offsets", "--topic", topic, "--partition", 0, "--spec", "latest")[0]["offset"] == 10
    r = cli("list-offsets", "--topic", topic, "--partition", 0, "--spec", base + 3500)[0]
    assert r == {"offset": 4, "timestamp": base + 4000}
    r = cli("list-offsets", "--topic", topic, "--partition", 0, "--spec", "max-timestamp")[0]
    assert r == {"offset": 9, "timestamp": base + 9000}
    r = cli("offsets-for-times", "--topic", topic, "--partition", 0, "--timestamp", base)[0]
    assert r == {"offset": 0, "timestamp": base}
    r = cli("offsets-for-times", "--topic", topic, "--partition", 0, "--timestamp", base + 9001)[0]
    assert r == {"offset": None, "timestamp": None}
