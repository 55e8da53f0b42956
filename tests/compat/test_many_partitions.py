"""One broker hosting many more partitions than it may open files (issue 18, per node).

A Strata node runs under a file limit it cannot raise (soft = hard = STRATA_MANY_FILE_LIMIT,
1024 by default, as a tight container gives); it must still create, write, restart (clean and
after SIGKILL) and read back every one of STRATA_MANY_PARTITIONS partitions (3,000 in the
suite; 20,000 by hand with a release build). Against Kafka the limit is not applied (Kafka
keeps every segment open and fails under it), so the test proves the same data path there.

Prints one `MANY:` line per phase with its seconds and the broker's RSS, for
docs/benchmarks.md.
"""

from __future__ import annotations

import os
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaException
from confluent_kafka import TopicPartition as CkTP
from confluent_kafka.admin import NewTopic

from conftest import TARGET, Broker
from helpers import ck_admin, ck_consumer, ck_producer, wait_topic
from strata_testlib import free_port

PARTITIONS = int(os.environ.get("STRATA_MANY_PARTITIONS", "3000"))
FILE_LIMIT = int(os.environ.get("STRATA_MANY_FILE_LIMIT", "1024"))
PER_TOPIC = 1000

pytestmark = pytest.mark.slow


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def layout(prefix: str) -> list[tuple[str, int]]:
    """(topic, partitions) covering PARTITIONS, at most PER_TOPIC each."""
    out, left, i = [], PARTITIONS, 0
    while left > 0:
        n = min(PER_TOPIC, left)
        out.append((f"{prefix}-{i}", n))
        left -= n
        i += 1
    return out


def produce_round(bootstrap: str, topics, round_: int) -> None:
    """One record to every partition, acks=all; every delivery must succeed."""
    p = ck_producer(bootstrap, acks="all", **{"linger.ms": 20, "batch.num.messages": 10000,
                                               "queue.buffering.max.messages": 1000000,
                                               "message.timeout.ms": 300000})
    failed = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append((msg.topic(), msg.partition(), err))

    for name, n in topics:
        for part in range(n):
            p.produce(name, value=b"%s/%d/%d" % (name.encode(), part, round_), partition=part,
                      on_delivery=on_delivery)
        p.poll(0)
    left = p.flush(300)
    del p  # no client left reconnecting while the broker restarts
    assert left == 0, f"{left} records undelivered"
    assert not failed, f"{len(failed)} deliveries failed, first: {failed[:3]}"


def read_all(bootstrap: str, topics, rounds: int) -> None:
    """Every partition holds exactly `rounds` records, round 0 first."""
    want = sum(n for _, n in topics) * rounds
    c = ck_consumer(bootstrap, **{"fetch.wait.max.ms": 100, "queued.max.messages.kbytes": 65536})
    got: dict[tuple[str, int], list[bytes]] = {}
    try:
        c.assign([CkTP(name, part, OFFSET_BEGINNING) for name, n in topics for part in range(n)])
        deadline = time.monotonic() + 600
        count = 0
        while count < want and time.monotonic() < deadline:
            for m in c.consume(10000, 1.0):
                if m.error():
                    raise KafkaException(m.error())
                got.setdefault((m.topic(), m.partition()), []).append(m.value())
                count += 1
    finally:
        c.close()
    for name, n in topics:
        for part in range(n):
            expect = [b"%s/%d/%d" % (name.encode(), part, r) for r in range(rounds)]
            assert got.get((name, part)) == expect, f"{name}-{part}: {got.get((name, part))}"
    assert count == want


@pytest.mark.timeout(3600)
def test_many_partitions_under_a_small_file_limit(tmp_path):
    limit = FILE_LIMIT if TARGET == "strata" else None
    b = Broker(TARGET, tmp_path, free_port(), file_limit=limit)
    b.start()

    cpu = {"pid": None, "at": 0.0}

    def phase(name, started):
        took = time.monotonic() - started
        rss = rss_mb(b.pid)
        # Broker CPU spent in the phase (since the last restart for a restart phase).
        now_cpu = cpu_seconds(b.pid)
        spent = now_cpu - cpu["at"] if cpu["pid"] == b.pid else now_cpu
        cpu.update(pid=b.pid, at=now_cpu)
        print(f"MANY: target={TARGET} partitions={PARTITIONS} file_limit={limit} "
              f"phase={name} seconds={took:.2f} broker_cpu_s={spent:.2f} rss_mb={rss:.0f} "
              f"open_fds={open_files(b.pid)}", flush=True)

    try:
        topics = layout("many")
        admin = ck_admin(b.bootstrap)
        t = time.monotonic()
        for name, n in topics:
            fs = admin.create_topics([NewTopic(name, n, 1)], operation_timeout=120,
                                     request_timeout=180)
            fs[name].result(timeout=240)
        for name, n in topics:
            wait_topic(b.bootstrap, name, n, timeout=600)
        phase("create", t)

        t = time.monotonic()
        produce_round(b.bootstrap, topics, 0)
        phase("write", t)

        t = time.monotonic()
        b.restart()
        phase("restart-clean", t)
        t = time.monotonic()
        read_all(b.bootstrap, topics, 1)
        phase("read-first", t)

        t = time.monotonic()
        b.restart(kill=True)
        phase("restart-sigkill", t)
        t = time.monotonic()
        produce_round(b.bootstrap, topics, 1)
        phase("write-again", t)
        t = time.monotonic()
        read_all(b.bootstrap, topics, 2)
        phase("read-all", t)
        time.sleep(1)
        phase("idle", time.monotonic())
    finally:
        if b.running:
            b.stop()
    if TARGET == "strata":
        log = b.log_path.read_text(errors="replace")
        assert "Too many open files" not in log
