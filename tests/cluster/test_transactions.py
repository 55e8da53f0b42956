"""Transactions survive the loss of their coordinator and of a partition leader: a
transactional producer commits and aborts transactions across three partitions (RF 3)
while the node coordinating its transactional id is SIGKILLed, and later the leader of a
partition. A read_committed consumer then sees every committed transaction whole, never
half of one, and none of the aborted ones."""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

import kwire
from harness import create_topic, wait_for

PARTITIONS = 3


def txn_producer(bootstrap: str, txn_id: str) -> Producer:
    p = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "transaction.timeout.ms": 30000,
        "request.timeout.ms": 5000,
        "socket.timeout.ms": 10000,
        "socket.connection.setup.timeout.ms": 5000,
        "reconnect.backoff.max.ms": 1000,
        "message.timeout.ms": 30000,
        "linger.ms": 5,
    })
    p.init_transactions(60)
    return p


def txn_coordinator(cluster, txn_id: str, via) -> int:
    def ask():
        ids = set()
        for v in via:
            try:
                r = kwire.find_coordinator(cluster.nodes[v].addr, txn_id, key_type=1)
            except OSError:
                return None
            if r.error:
                return None
            ids.add(r.node_id)
        return ids.pop() if len(ids) == 1 and next(iter(ids)) in via else None

    return wait_for(ask, 60, f"nodes {sorted(via)} to agree on the coordinator of {txn_id}")


class Workload:
    """Transactions n = 0, 1, ...: one record "n|p" per partition; every fifth is aborted
    after its records were sent. Commits and aborts that returned are recorded."""

    def __init__(self, cluster, topic: str, txn_id: str):
        self.cluster, self.topic, self.txn_id = cluster, topic, txn_id
        self.committed: set[int] = set()
        self.aborted: set[int] = set()
        self.attempted = 0
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        p = txn_producer(self.cluster.bootstrap(), self.txn_id)
        n = 0
        while not self.stop.is_set():
            abort = n % 5 == 4
            try:
                p.begin_transaction()
                for part in range(PARTITIONS):
                    p.produce(self.topic, value=f"{n}|{part}".encode(), partition=part)
                self.attempted = n + 1
                if abort:
                    p.flush(30)
                    p.abort_transaction(60)
                    self.aborted.add(n)
                else:
                    p.commit_transaction(60)
                    self.committed.add(n)
            except KafkaException as e:
                err = e.args[0]
                self.errors.append(f"{n}: {err}")
                if err.txn_requires_abort():
                    try:
                        p.abort_transaction(60)
                        self.aborted.add(n)
                    except KafkaException as e2:
                        self.errors.append(f"{n} abort: {e2}")
                        p = txn_producer(self.cluster.bootstrap(), self.txn_id)
                elif err.fatal():
                    p = txn_producer(self.cluster.bootstrap(), self.txn_id)
                # retriable (e.g. a commit that timed out): the outcome is unknown; carry on
                # with a fresh producer, which fences and resolves the old transaction.
                else:
                    p = txn_producer(self.cluster.bootstrap(), self.txn_id)
            n += 1
        p.flush(30)


def read_committed(cluster, topic: str) -> dict[int, list[int]]:
    c = Consumer({
        "bootstrap.servers": cluster.bootstrap(),
        "group.id": f"check-{random.randrange(1 << 30):x}",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    })
    seen: dict[int, list[int]] = {}
    try:
        ends = {}
        for part in range(PARTITIONS):
            _, hi = c.get_watermark_offsets(TopicPartition(topic, part), timeout=10)
            ends[part] = hi
        c.assign([TopicPartition(topic, part, 0) for part in range(PARTITIONS)])
        done: set[int] = set()
        deadline = time.monotonic() + 60
        while len(done) < PARTITIONS:
            assert time.monotonic() < deadline, f"read_committed stalled: {done} of {ends}"
            for m in c.consume(500, timeout=1):
                if m.error():
                    continue
                n, part = map(int, m.value().decode().split("|"))
                assert part == m.partition(), m.value()
                seen.setdefault(n, []).append(part)
            for part in range(PARTITIONS):
                pos = c.position([TopicPartition(topic, part)])[0].offset
                if pos >= ends[part] - 1 and part not in done:
                    # The last offset may be a marker, which a consumer never returns.
                    done.add(part)
        # Drain what is left.
        for m in c.consume(500, timeout=2):
            if not m.error():
                n, part = map(int, m.value().decode().split("|"))
                seen.setdefault(n, []).append(part)
    finally:
        c.close()
    return seen


def test_transactions_survive_coordinator_and_leader_loss(cluster):
    topic = "txn"
    create_topic(cluster.bootstrap(), topic, PARTITIONS, 3, {"min.insync.replicas": "2"})
    cluster.wait_full_isr(topic, timeout=60)
    txn_id = f"tx-{random.randrange(1 << 30):x}"
    w = Workload(cluster, topic, txn_id)
    w.thread.start()
    wait_for(lambda: len(w.committed) >= 10 or None, 60, "ten committed transactions")

    nodes = set(cluster.nodes)
    coord = txn_coordinator(cluster, txn_id, nodes)
    cluster.nodes[coord].kill()
    before = len(w.committed)
    new = txn_coordinator(cluster, txn_id, nodes - {coord})
    print(f"\n[cluster] transaction coordinator moved from node {coord} to node {new}")
    wait_for(lambda: len(w.committed) >= before + 10 or None, 90,
             "ten more commits after the coordinator was killed")
    cluster.nodes[coord].start()
    cluster.wait_full_isr(topic, timeout=90)

    # Now the leader of partition 0.
    leader = cluster.agreed(topic, nodes)[0].leader
    cluster.nodes[leader].kill()
    before = len(w.committed)
    wait_for(lambda: len(w.committed) >= before + 10 or None, 90,
             "ten more commits after a partition leader was killed")
    w.stop.set()
    w.thread.join(120)
    assert not w.thread.is_alive(), "the producer did not stop"
    cluster.nodes[leader].start()
    cluster.wait_full_isr(topic, timeout=90)

    seen = read_committed(cluster, topic)
    half = {n: parts for n, parts in seen.items() if sorted(parts) != list(range(PARTITIONS))}
    assert not half, f"transactions seen in part or twice by read_committed: {half}"
    lost = w.committed - set(seen)
    assert not lost, f"committed transactions missing: {sorted(lost)[:20]}"
    visible_aborts = w.aborted & set(seen)
    assert not visible_aborts, f"aborted transactions visible: {sorted(visible_aborts)[:20]}"
    print(f"[cluster] {len(w.committed)} committed and {len(w.aborted)} aborted transactions "
          f"checked; client errors: {len(w.errors)} {w.errors[:5]}")


# ---- transaction version 2 across nodes ----------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
JAVA_CLI = REPO / "tests" / "java" / "target" / "strata-compat.jar"
# kafka-clients 4.1, which speaks transaction version 2 (KIP-890) when the cluster finalizes it.
CLIENT_4 = REPO / "tests" / "java-streams" / "target" / "libs"


def java4(cluster, cmd: str, *args) -> list[dict]:
    if not JAVA_CLI.is_file() or not list(CLIENT_4.glob("kafka-clients-4.*.jar")):
        pytest.fail("Java CLI or kafka-clients 4 missing: run tests/testbed/install.sh",
                    pytrace=False)
    r = subprocess.run(["java", "-cp", f"{JAVA_CLI}:{CLIENT_4}/*", "io.strata.compat.Cli", cmd,
                        "--bootstrap", cluster.bootstrap(), *map(str, args)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"{cmd}: {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]


def test_transaction_version_2_with_the_coordinator_on_another_node(cluster):
    """A Java 4 producer on transaction version 2 adds partitions by producing to them and
    the group's offsets by committing them: the partition leader and the group coordinator
    forward those adds (AddPartitionsToTxn v5) to the transaction coordinator on another
    node. Every end bumps the producer epoch there, and the markers carry it."""
    nodes = set(cluster.nodes)
    src, dst = "tv2-in", "tv2-out"
    for t in (src, dst):
        create_topic(cluster.bootstrap(), t, PARTITIONS, 3, {"min.insync.replicas": "2"})
        cluster.wait_full_isr(t, timeout=60)
    in_leader = cluster.agreed(src, nodes)[0].leader
    out_leader = cluster.agreed(dst, nodes)[0].leader
    # A transactional id coordinated away from partition 0 of both topics, and a group
    # coordinated away from the transaction coordinator.
    for i in range(1000):
        tid = f"tv2-{i}"
        coord = txn_coordinator(cluster, tid, nodes)
        if coord not in (in_leader, out_leader):
            break
    for i in range(1000):
        group = f"tv2-group-{i}"
        if kwire.find_coordinator(cluster.nodes[coord].addr, group).node_id != coord:
            break
    print(f"\n[cluster] txn coordinator {coord}; {src}-0 led by {in_leader}, {dst}-0 by "
          f"{out_leader}")

    out = java4(cluster, "txn-produce", "--topic", src, "--transactional-id", tid,
                "--plan", "commit:10,abort:10,commit:10")
    assert [o.get("offsets") for o in out[:-1]] == \
        [list(range(10)), list(range(11, 21)), list(range(22, 32))]
    for _ in range(3):
        java4(cluster, "txn-copy", "--input", src, "--output", dst, "--group", group,
              "--transactional-id", tid, "--count", 5)
    java4(cluster, "txn-copy", "--input", src, "--output", dst, "--group", group,
          "--transactional-id", tid, "--count", 5, "--action", "abort")

    c = Consumer({"bootstrap.servers": cluster.bootstrap(), "group.id": group,
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    try:
        (committed,) = c.committed([TopicPartition(src, 0)], timeout=30)
        # Three commits of five records (0-4, 5-9, 22-26: 11-20 were aborted), then an
        # abort of the next five.
        assert committed.offset == 27
    finally:
        c.close()
    c = Consumer({"bootstrap.servers": cluster.bootstrap(), "group.id": f"check-{tid}",
                  "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition(dst, 0, 0)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 15 and time.monotonic() < deadline:
            got += [m.value() for m in c.consume(100, timeout=1) if not m.error()]
        assert got == [b"copy-value-%d" % i for i in list(range(10)) + list(range(20, 25))]
    finally:
        c.close()
