"""Consumer groups: membership and rebalances across clients, failover of a killed member,
committed offsets across a node SIGKILL, and Kafka error codes for bad group requests.

Runs against both targets (STRATA_TEST_TARGET=kafka proves the expectations)."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer

from helpers import ck_produce, create_topic
from strata_testlib import wait_for

SESSION_MS = 6000


def keyed_records(n: int, keys: int = 40):
    return [{"key": b"k%03d" % (i % keys), "value": b"%06d" % i} for i in range(n)]


class Member(threading.Thread):
    """One group member in a thread: consumes until told to stop, recording what it saw."""

    def __init__(self, kind: str, bootstrap: str, topic: str, group: str, strategy: str = "range"):
        super().__init__(daemon=True)
        self.kind, self.bootstrap, self.topic, self.group, self.strategy = kind, bootstrap, topic, group, strategy
        self.records: list[tuple[int, int, bytes, bytes]] = []
        self.assignment: set[int] = set()
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None

    def run(self):
        try:
            if self.kind == "kafka-python":
                self._run_kp()
            elif self.kind == "java":
                self._run_java()
            else:
                self._run_ck()
        except BaseException as e:  # surfaced by the test
            self.error = e

    def _run_kp(self):
        strategy = {
            "range": "kafka.coordinator.assignors.range.RangePartitionAssignor",
            "roundrobin": "kafka.coordinator.assignors.roundrobin.RoundRobinPartitionAssignor",
        }[self.strategy]
        import importlib
        mod, cls = strategy.rsplit(".", 1)
        assignor = getattr(importlib.import_module(mod), cls)
        c = KafkaConsumer(
            self.topic, bootstrap_servers=self.bootstrap, group_id=self.group,
            auto_offset_reset="earliest", enable_auto_commit=True, auto_commit_interval_ms=200,
            session_timeout_ms=SESSION_MS, heartbeat_interval_ms=500,
            partition_assignment_strategy=[assignor], request_timeout_ms=15000,
        )
        while not self.stop_flag.is_set():
            for tp, msgs in c.poll(timeout_ms=200).items():
                for m in msgs:
                    self.records.append((m.partition, m.offset, m.key, m.value))
            self.assignment = {tp.partition for tp in c.assignment()}
        c.close()

    def _run_java(self):
        import json
        from pathlib import Path
        java_dir = Path(__file__).resolve().parents[1] / "java" / "target"
        proc = subprocess.Popen(
            ["java", "-cp", f"{java_dir / 'strata-compat.jar'}:{java_dir / 'libs'}/*", "io.strata.compat.Cli",
             "group-consume", "--bootstrap", self.bootstrap, "--topic", self.topic, "--group", self.group,
             "--duration-ms", "170000", "--strategy", self.strategy],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        stopper = threading.Thread(target=lambda: (self.stop_flag.wait(), proc.terminate()), daemon=True)
        stopper.start()
        for line in proc.stdout:
            ev = json.loads(line)
            if "assignment" in ev:
                self.assignment = set(ev["assignment"])
            elif "offset" in ev:
                self.records.append((ev["partition"], ev["offset"], ev["key"].encode(), ev["value"].encode()))
        proc.wait(timeout=30)

    def _run_ck(self):
        c = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": self.group,
            "auto.offset.reset": "earliest", "enable.auto.commit": True, "auto.commit.interval.ms": 200,
            "session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 500,
            "partition.assignment.strategy": "cooperative-sticky" if self.strategy == "cooperative-sticky" else self.strategy,
        })
        c.subscribe([self.topic])
        while not self.stop_flag.is_set():
            m = c.poll(0.2)
            if m is not None and not m.error():
                self.records.append((m.partition(), m.offset(), m.key(), m.value()))
            self.assignment = {tp.partition for tp in c.assignment()}
        c.close()


def run_group(bootstrap, topic, members_spec, n_records, partitions):
    group = f"g-{uuid.uuid4().hex[:8]}"
    members = [Member(kind, bootstrap, topic, group, strat) for kind, strat in members_spec]
    for m in members:
        m.start()
        time.sleep(0.5)
    ck_produce(bootstrap, topic, keyed_records(n_records))

    def settled():
        for m in members:
            if m.error:
                raise m.error
        got = {(p, o) for m in members for (p, o, _, _) in m.records}
        owned = [m.assignment for m in members]
        disjoint = sum(len(a) for a in owned) == len(set().union(*owned)) == partitions
        return len(got) >= n_records and disjoint

    wait_for(settled, 90, "group to consume everything with a stable assignment")
    owners = [m.assignment for m in members]
    for m in members:
        m.stop_flag.set()
    for m in members:
        m.join(timeout=30)
    return members, owners


def check_consumption(members, owners, n_records, partitions):
    # Every partition owned by exactly one member.
    assert sorted(p for a in owners for p in a) == list(range(partitions)), owners
    # All records consumed.
    values = {v for m in members for (_, _, _, v) in m.records}
    assert values == {b"%06d" % i for i in range(n_records)}
    # Per-key order kept within each member's view.
    for m in members:
        last = {}
        for (_, _, k, v) in m.records:
            assert last.get(k, b"") < v or last.get(k) == v, f"out of order for key {k}"
            last[k] = v


@pytest.mark.parametrize("spec", [
    [("kafka-python", "range")],
    [("kafka-python", "range"), ("confluent", "range")],
    [("kafka-python", "roundrobin"), ("confluent", "roundrobin"), ("kafka-python", "roundrobin")],
    [("confluent", "cooperative-sticky")] * 4,
    [("java", "range"), ("kafka-python", "range"), ("confluent", "range"), ("java", "range")],
    [("java", "cooperative-sticky"), ("confluent", "cooperative-sticky")],
], ids=["1-kp", "2-kp-ck-range", "3-mixed-roundrobin", "4-ck-cooperative", "4-java-kp-ck-range",
        "2-java-ck-cooperative"])
def test_group_shares_partitions(broker, topic, spec):
    partitions = 8
    create_topic(broker.bootstrap, topic, partitions)
    members, owners = run_group(broker.bootstrap, topic, spec, 2000, partitions)
    check_consumption(members, owners, 2000, partitions)


KILLABLE = textwrap.dedent("""
    import sys
    from confluent_kafka import Consumer, TopicPartition
    bs, topic, group, out = sys.argv[1:5]
    c = Consumer({"bootstrap.servers": bs, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "session.timeout.ms": %d, "heartbeat.interval.ms": 500})
    c.subscribe([topic])
    with open(out, "a") as f:
        while True:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            c.commit(message=m, asynchronous=False)
            f.write("%%d %%d\\n" %% (m.partition(), m.offset()))
            f.flush()
""" % SESSION_MS)


def test_killed_member_partitions_move_from_last_commit(broker, topic, tmp_path):
    partitions = 4
    create_topic(broker.bootstrap, topic, partitions)
    group = f"kill-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "member.py"
    script.write_text(KILLABLE)
    out = tmp_path / "victim.txt"
    victim = subprocess.Popen([sys.executable, str(script), broker.bootstrap, topic, group, str(out)])
    try:
        ck_produce(broker.bootstrap, topic, keyed_records(400))
        wait_for(lambda: out.exists() and len(out.read_text().splitlines()) >= 50, 60,
                 "victim to consume and commit")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        committed = {}
        res = admin.list_consumer_group_offsets([__import__("confluent_kafka").ConsumerGroupTopicPartitions(group)])
        for f in res.values():
            for tp in f.result(timeout=15).topic_partitions:
                committed[tp.partition] = tp.offset
        # The survivor joins after the kill; it must start exactly at the committed offsets.
        survivor = Member("confluent", broker.bootstrap, topic, group)
        t0 = time.monotonic()
        survivor.start()
        wait_for(lambda: len({(p, o) for (p, o, _, _) in survivor.records}) >= 400 - sum(max(o, 0) for o in committed.values()),
                 60, "survivor to take over")
        took_over = time.monotonic() - t0
        survivor.stop_flag.set()
        survivor.join(timeout=30)
        first = {}
        for (p, o, _, _) in survivor.records:
            first.setdefault(p, o)
        ends = {}
        probe = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"probe-{uuid.uuid4().hex[:6]}"})
        for p in range(partitions):
            ends[p] = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        probe.close()
        for p in range(partitions):
            start = committed.get(p, -1)
            start = start if start >= 0 else 0
            if start < ends[p]:
                # Re-delivery starts exactly at the last committed offset: nothing before it.
                assert first.get(p) == start, (p, first, committed)
            else:
                assert p not in first, (p, first, committed)
        print(f"survivor took over in {took_over:.1f}s")
    finally:
        if victim.poll() is None:
            victim.kill()


def test_offsets_and_group_survive_node_sigkill(broker, topic):
    create_topic(broker.bootstrap, topic, 2)
    ck_produce(broker.bootstrap, topic, keyed_records(100))
    group = f"durable-{uuid.uuid4().hex[:8]}"
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 60
    while seen < 60 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            seen += 1
            c.commit(message=m, asynchronous=False)
    committed = {tp.partition: tp.offset for tp in c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)}
    c.close()
    assert sum(committed.values()) == 60
    broker.restart(kill=True)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    def offsets_back():
        from confluent_kafka import ConsumerGroupTopicPartitions
        try:
            res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
            tps = list(res.values())[0].result(timeout=10).topic_partitions
        except Exception:
            return False
        return {tp.partition: tp.offset for tp in tps} == committed

    wait_for(offsets_back, 60, "committed offsets after restart")
    groups = admin.list_consumer_groups().result(timeout=10)
    assert group in {g.group_id for g in groups.valid}
    # A consumer of the same group resumes exactly after the committed offsets.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    rest = []
    deadline = time.monotonic() + 60
    while len(rest) < 40 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            rest.append((m.partition(), m.offset()))
    c.close()
    assert len(rest) == 40
    for p, o in rest:
        assert o >= committed[p]


# ---- raw protocol: bad group requests get Kafka's error codes, never a dropped node --------


def _str(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _request(bootstrap: str, api_key: int, version: int, body: bytes) -> bytes:
    host, port = bootstrap.rsplit(":", 1)
    header = struct.pack(">hhi", api_key, version, 7) + _str("raw-test")
    frame = header + body
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", _recv(s, 4))[0]
        resp = _recv(s, size)
    assert struct.unpack(">i", resp[:4])[0] == 7
    return resp[4:]


def _recv(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "connection closed"
        buf += chunk
    return buf


def _find_coordinator(bootstrap, group):
    body = _request(bootstrap, 10, 0, _str(group))
    return struct.unpack(">h", body[:2])[0]


def _join_v0(bootstrap, group, member, protocols):
    body = _str(group) + struct.pack(">i", 10000) + _str(member) + _str("consumer")
    body += struct.pack(">i", len(protocols))
    for name in protocols:
        body += _str(name) + struct.pack(">i", 0)
    resp = _request(bootstrap, 11, 0, body)
    code, generation = struct.unpack(">hi", resp[:6])
    return code, generation


def _commit_v2(bootstrap, group, generation, member, topic, partition, offset, metadata):
    body = _str(group) + struct.pack(">i", generation) + _str(member) + struct.pack(">q", -1)
    body += struct.pack(">i", 1) + _str(topic) + struct.pack(">i", 1)
    body += struct.pack(">iq", partition, offset) + _str(metadata)
    resp = _request(bootstrap, 8, 2, body)
    # topics[1]: name, partitions[1]: partition, error
    (n_topics,) = struct.unpack(">i", resp[:4])
    pos = 4
    (nlen,) = struct.unpack(">h", resp[pos:pos + 2])
    pos += 2 + nlen
    (n_parts,) = struct.unpack(">i", resp[pos:pos + 4])
    pos += 4
    _, code = struct.unpack(">ih", resp[pos:pos + 6])
    return code


def _sync_v0(bootstrap, group, generation, member):
    body = _str(group) + struct.pack(">i", generation) + _str(member)
    body += struct.pack(">i", 1) + _str(member) + struct.pack(">i", 0)
    resp = _request(bootstrap, 14, 0, body)
    return struct.unpack(">h", resp[:2])[0]


def _heartbeat_v0(bootstrap, group, generation, member):
    resp = _request(bootstrap, 12, 0, _str(group) + struct.pack(">i", generation) + _str(member))
    return struct.unpack(">h", resp[:2])[0]


def test_bad_group_requests_get_kafka_errors(broker, topic):
    create_topic(broker.bootstrap, topic, 1)
    group = f"bad-{uuid.uuid4().hex[:8]}"
    wait_for(lambda: _find_coordinator(broker.bootstrap, group) == 0, 30, "coordinator")
    # Empty protocol list: INCONSISTENT_GROUP_PROTOCOL (23).
    assert _join_v0(broker.bootstrap, group, "", [])[0] == 23
    # Commit for an unknown topic from outside any group: UNKNOWN_TOPIC_OR_PARTITION (3).
    assert _commit_v2(broker.bootstrap, group, -1, "", f"no-such-{uuid.uuid4().hex[:6]}", 0, 5, "") == 3
    # Oversized metadata: OFFSET_METADATA_TOO_LARGE (12).
    assert _commit_v2(broker.bootstrap, group, -1, "", topic, 0, 5, "m" * 5000) == 12
    # A normal simple commit works.
    assert _commit_v2(broker.bootstrap, group, -1, "", topic, 0, 5, "meta") == 0
    # A real member, then a stale generation: ILLEGAL_GENERATION (22).
    g2 = f"gen-{uuid.uuid4().hex[:8]}"
    wait_for(lambda: _find_coordinator(broker.bootstrap, g2) == 0, 30, "coordinator")
    code, generation = _join_v0(broker.bootstrap, g2, "", ["range"])
    assert code == 0 and generation >= 1
    # v0 JoinGroup has no member-id round trip; find our member id by describing the group.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    desc = admin.describe_consumer_groups([g2])[g2].result(timeout=10)
    member = desc.members[0].member_id
    # Before the leader's SyncGroup the group is rebalancing: REBALANCE_IN_PROGRESS (27).
    assert _commit_v2(broker.bootstrap, g2, generation, member, topic, 0, 1, "") == 27
    assert _sync_v0(broker.bootstrap, g2, generation, member) == 0
    assert _heartbeat_v0(broker.bootstrap, g2, generation, member) == 0
    assert _heartbeat_v0(broker.bootstrap, g2, generation + 5, member) == 22
    assert _commit_v2(broker.bootstrap, g2, generation + 5, member, topic, 0, 1, "") == 22
    # Unknown member: UNKNOWN_MEMBER_ID (25).
    assert _heartbeat_v0(broker.bootstrap, g2, generation, "nobody") == 25
    # The node is still serving.
    assert _find_coordinator(broker.bootstrap, group) == 0
