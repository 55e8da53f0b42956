"""Tiered storage on a cluster: replication factor 3 over a file:// bucket all nodes share.
Every replica, leader or follower, keeps only local retention plus what is not yet in the
bucket, while producing and after; every acknowledged record reads back, from offset 0 (the
head from the bucket), after a SIGKILL of each node in turn."""

from __future__ import annotations

import json
import threading
import time

import pytest

from conftest import running
from harness import Cluster, create_topic, wait_for
from load import Load, read_partition
from test_admin_tools import REASSIGN, kafka_tools, replicas_now, tool, write_plan  # noqa: F401

SEGMENT = 64 * 1024
LOCAL = 256 * 1024
PARTITIONS = 2
RECORD = 1024
# Ten times the local retention per partition.
RECORDS = 10 * LOCAL // RECORD
TOPIC_CONFIG = {
    "remote.storage.enable": "true",
    "segment.bytes": str(SEGMENT),
    "local.retention.bytes": str(LOCAL),
    "retention.bytes": "-1",
    "retention.ms": "-1",
    "min.insync.replicas": "2",
}
# A follower rolls its segments where its fetches end, not where the leader rolled: one
# segment may hold both offsets the bucket has and offsets it has not yet.
BOUND = LOCAL + 2 * SEGMENT
# Seconds a closed segment may take to be uploaded and seen in the manifest by every replica
# (the uploader runs every second, a follower reads the manifest at most once a second while
# it moves).
LAG = 4.0


class BigLoad(Load):
    """Load with 1 KiB records (its value, padded)."""

    def value(self, p: int, n: int) -> bytes:
        v = super().value(p, n)
        return v + b"#" * (RECORD - len(v))

    def n_of(self, value: bytes) -> int | None:
        return super().n_of(value.rstrip(b"#"))


@pytest.fixture
def tiered(request, binaries, topology, tmp_path):
    bucket = tmp_path / "bucket"
    c = Cluster(topology, tmp_path / "cluster", node_args={"--object-store": f"file://{bucket}"})
    c.bucket = bucket
    yield from running(request, c)


def segments(node, p: int) -> list[tuple[int, int]]:
    """(base offset, bytes) of the node's local segments of t-p, oldest first."""
    out = []
    for f in (node.data_dir / f"t-{p}").glob("*.log"):
        try:
            out.append((int(f.stem), f.stat().st_size))
        except (ValueError, OSError):  # deleted while listed
            continue
    return sorted(out)


def backlog(segs: list[tuple[int, int]], remote_end: int) -> int:
    """Bytes of the segments the bucket does not hold whole (the active one included)."""
    out = 0
    for i, (_, size) in enumerate(segs):
        if i + 1 == len(segs) or segs[i + 1][0] > remote_end:
            out += size
    return out


def manifest(c, tid: str, p: int) -> dict | None:
    try:
        return json.loads((c.bucket / tid / str(p) / "manifest.json").read_text())
    except (OSError, ValueError):  # not written yet, or being replaced
        return None


def check_manifest(c, tid: str, p: int) -> dict:
    """Contiguous segments, each with its objects: nothing skipped or uploaded twice."""
    m = manifest(c, tid, p)
    assert m is not None, f"no manifest for partition {p}"
    segs = m["segments"]
    for a, b in zip(segs, segs[1:]):
        assert b["base_offset"] == a["next_offset"], f"p{p}: gap or overlap at {a} / {b}"
    for s in segs:
        obj = c.bucket / tid / str(p) / f"{s['base_offset']:020d}-{s['leader_epoch']}.log"
        assert obj.is_file() and obj.stat().st_size == s["size"], f"p{p}: {obj}"
    assert segs and m["end_offset"] == segs[-1]["next_offset"]
    return m


def within_bound(c, tid: str, end_of=None) -> list[tuple]:
    """(node, partition, local bytes, bound) of every replica over its bound; a replica's
    backlog is measured against `end_of(p)` (default: the manifest now)."""
    over = []
    for p in range(PARTITIONS):
        m = manifest(c, tid, p)
        end = end_of(p) if end_of else (m["end_offset"] if m else 0)
        for i, n in c.nodes.items():
            if not n.running():
                continue
            segs = segments(n, p)
            local = sum(s for _, s in segs)
            bound = BOUND + backlog(segs, end)
            if local > bound:
                over.append((i, p, local, bound))
    return over


def check_acked(c, acked: dict, bootstrap: str):
    """Every acknowledged record at its offset, the partition readable from 0 without gaps."""
    for p in range(PARTITIONS):
        records, low, high = read_partition(bootstrap, "t", p, timeout=120)
        assert low == 0, f"p{p}: log start {low}"
        assert len(records) == high, f"p{p}: {len(records)} records below the high watermark {high}"
        wrong = [(o, v[:30]) for v, o in acked[p].items() if records.get(o) != v]
        assert not wrong, f"p{p}: {len(wrong)} acknowledged records missing or moved: {wrong[:5]}"


def run_load(c, tag_acked: dict, pace: float, until) -> None:
    with BigLoad(c.bootstrap(), "t", list(range(PARTITIONS)), pace=pace,
                 producer_extra={"batch.size": 16384}) as load:
        until(load)
    load.assert_clean()
    for p in range(PARTITIONS):
        tag_acked[p].update(load.acked[p])


def test_every_replica_keeps_only_the_hot_tail(tiered):
    c = tiered
    create_topic(c.bootstrap(), "t", PARTITIONS, 3, TOPIC_CONFIG)
    c.wait_full_isr("t", timeout=60)
    tid = json.loads((c.nodes[1].data_dir / "t-0" / "partition.json").read_text())["topic_id"]
    acked = {p: {} for p in range(PARTITIONS)}

    # While producing: sample every replica against the manifest as it was LAG seconds ago.
    ends: list[tuple[float, dict]] = []
    over: list[tuple] = []
    worst: dict[tuple[int, int], int] = {}
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            now = time.monotonic()
            ends.append((now, {p: (manifest(c, tid, p) or {}).get("end_offset", 0)
                               for p in range(PARTITIONS)}))
            old = [e for t, e in ends if t <= now - LAG]
            then = old[-1] if old else {p: 0 for p in range(PARTITIONS)}
            over.extend((round(now, 1), *o) for o in within_bound(c, tid, lambda p: then[p]))
            for i, n in c.nodes.items():
                for p in range(PARTITIONS):
                    worst[(i, p)] = max(worst.get((i, p), 0), sum(s for _, s in segments(n, p)))
            time.sleep(0.25)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    t0 = time.monotonic()
    try:
        # Paced over ~15 s, several times LAG, so that the check while producing bites.
        run_load(c, acked, 0.003, lambda load: wait_for(
            lambda: all(load.n_acked(p) >= RECORDS for p in range(PARTITIONS)), 300,
            lambda: f"{RECORDS} records per partition; {load.summary()}", every=0.5))
    finally:
        stop.set()
        th.join()
    produced = time.monotonic() - t0
    assert not over, f"(time, node, partition, local bytes, bound) over: {over[:10]}"
    # After: every replica trims to the bound within seconds (no retention check runs: its
    # interval is the default 5 minutes).
    wait_for(lambda: not within_bound(c, tid) and all(
        sum(s for _, s in segments(n, p)) <= BOUND + SEGMENT
        for n in c.nodes.values() for p in range(PARTITIONS)), 60,
        lambda: f"every replica within its bound: {within_bound(c, tid)}; local "
                f"{[(i, p, sum(s for _, s in segments(n, p))) for i, n in c.nodes.items() for p in range(PARTITIONS)]}")
    print(f"\n[tiering] {sum(len(a) for a in acked.values())} records in {produced:.1f}s; largest "
          f"local copy per (node, partition) while producing: {worst}; after: "
          f"{ {(i, p): sum(s for _, s in segments(n, p)) for i, n in c.nodes.items() for p in range(PARTITIONS)} }")
    check_acked(c, acked, c.bootstrap())

    # SIGKILL each node in turn: a survivor takes over, production goes on, every record
    # reads back (the head from the bucket); the manifest continues without gaps.
    for i in sorted(c.nodes):
        c.nodes[i].kill()
        others = set(c.nodes) - {i}
        c.wait_partitions("t", lambda st: all(s.leader in others for s in st.values()), others,
                          c.SESSION_TIMEOUT_MS / 1000 + 30, f"survivors lead after node {i} died")
        before = {p: len(acked[p]) for p in range(PARTITIONS)}
        run_load(c, acked, 0.002, lambda load: wait_for(
            lambda: all(load.n_acked(p) >= 200 for p in range(PARTITIONS)), 60,
            lambda: f"200 records per partition with node {i} down; {load.summary()}"))
        assert all(len(acked[p]) > before[p] for p in range(PARTITIONS))
        check_acked(c, acked, c.bootstrap(exclude={i}))
        c.nodes[i].start()
        c.nodes[i].wait_listening()
        c.wait_full_isr("t", timeout=90)
    for p in range(PARTITIONS):
        wait_for(lambda: check_manifest(c, tid, p), 30, f"p{p}'s manifest")
    wait_for(lambda: not within_bound(c, tid), 60,
             lambda: f"every replica within its bound after the restarts: {within_bound(c, tid)}")
    check_acked(c, acked, c.bootstrap())


def local_bytes(node, topic: str, p: int) -> int:
    return sum(s for _, s in segments_of(node, topic, p))


def segments_of(node, topic: str, p: int) -> list[tuple[int, int]]:
    out = []
    for f in (node.data_dir / f"{topic}-{p}").glob("*.log"):
        try:
            out.append((int(f.stem), f.stat().st_size))
        except (ValueError, OSError):
            continue
    return sorted(out)


def bucket_bytes(c, tid: str, p: int) -> int:
    return sum(s["size"] for s in (manifest(c, tid, p) or {"segments": []})["segments"])


def test_a_follower_far_behind_copies_only_the_hot_tail(tiered):
    """A follower down while ten times the local retention was produced comes back with its
    log below the leaders' local start. The leader answers OFFSET_MOVED_TO_TIERED_STORAGE
    instead of serving the bucket's data; the follower starts again at the end of the
    bucket's copy (with the epochs and producer state there) and copies only the hot tail.
    It is then a full replica: led by it alone, every acknowledged record reads back from
    offset 0 (the head from the bucket)."""
    c = tiered
    create_topic(c.bootstrap(), "t", PARTITIONS, 3, TOPIC_CONFIG)
    c.wait_full_isr("t", timeout=60)
    tid = json.loads((c.nodes[1].data_dir / "t-0" / "partition.json").read_text())["topic_id"]
    acked = {p: {} for p in range(PARTITIONS)}
    c.nodes[3].kill()
    up = {1, 2}
    c.wait_partitions("t", lambda st: all(s.leader in up for s in st.values()), up,
                      c.SESSION_TIMEOUT_MS / 1000 + 30, "nodes 1 and 2 lead")
    run_load(c, acked, 0.0005, lambda load: wait_for(
        lambda: all(load.n_acked(p) >= RECORDS for p in range(PARTITIONS)), 300,
        lambda: f"{RECORDS} records per partition; {load.summary()}", every=0.5))
    # The leaders' local copies are trimmed to the hot tail.
    wait_for(lambda: all(local_bytes(c.nodes[i], "t", p) <= BOUND + SEGMENT
                         for i in up for p in range(PARTITIONS)), 60,
             lambda: f"nodes 1 and 2 trimmed: {[(i, p, local_bytes(c.nodes[i], 't', p)) for i in up for p in range(PARTITIONS)]}")
    total = sum(bucket_bytes(c, tid, p) for p in range(PARTITIONS))

    served = {i: c.nodes[i].metric("strata_tiering_remote_read_bytes_total") for i in up}
    t0 = time.monotonic()
    c.nodes[3].start()
    c.nodes[3].wait_listening()
    c.wait_full_isr("t", timeout=90)
    caught_up = time.monotonic() - t0
    # The leaders served nothing from the bucket meanwhile.
    assert {i: c.nodes[i].metric("strata_tiering_remote_read_bytes_total") for i in up} == served
    fetched = c.nodes[3].metric("strata_replica_fetched_bytes_total")
    rebuilds = c.nodes[3].metric("strata_replica_rebuilds_from_bucket_total")
    mine = {p: local_bytes(c.nodes[3], "t", p) for p in range(PARTITIONS)}
    print(f"\n[tiering] follower back after {total} bucket bytes were written: copied "
          f"{int(fetched)} bytes ({fetched / total:.1%}), rebuilt {int(rebuilds)} logs from the "
          f"bucket, full ISR in {caught_up:.1f}s; local now {mine}")
    assert rebuilds >= PARTITIONS, "every partition rebuilt from the bucket"
    assert fetched <= PARTITIONS * (BOUND + 2 * SEGMENT), \
        f"copied {fetched} bytes, more than the hot tail (total {total})"
    assert all(v <= BOUND + SEGMENT for v in mine.values()), mine

    # Node 3 alone leads: the head from the bucket, the tail from its own log.
    for i in up:
        c.nodes[i].kill()
    c.wait_partitions("t", lambda st: all(s.leader == 3 for s in st.values()), {3},
                      c.SESSION_TIMEOUT_MS / 1000 + 30, "node 3 leads every partition")
    check_acked(c, acked, c.nodes[3].addr)


def test_a_new_replica_copies_only_the_hot_tail(tiered, kafka_tools, tmp_path):
    """A reassignment adds a replica to a tiered partition that holds ten times its local
    retention: the new replica starts from the bucket's manifest (epochs and producer state
    at its end) and copies only the leader's hot tail. Figures: bytes copied against the
    partition's size, and the time to a full ISR."""
    c = tiered
    create_topic(c.bootstrap(), "n", 1, 2, TOPIC_CONFIG)
    c.wait_partitions("n", lambda st: len(st[0].isr) == 2, set(c.nodes), 60, "n: ISR of 2")
    leader, replicas, _ = replicas_now(c, "n")[0]
    new = next(i for i in sorted(c.nodes) if i not in replicas)
    with BigLoad(c.bootstrap(), "n", [0], pace=0.0005, producer_extra={"batch.size": 16384}) as load:
        wait_for(lambda: load.n_acked(0) >= RECORDS, 300,
                 lambda: f"{RECORDS} records; {load.summary()}", every=0.5)
    load.assert_clean()
    tid = json.loads((c.nodes[leader].data_dir / "n-0" / "partition.json").read_text())["topic_id"]
    wait_for(lambda: all(local_bytes(c.nodes[i], "n", 0) <= BOUND + SEGMENT for i in replicas), 60,
             lambda: f"the replicas trimmed: {[(i, local_bytes(c.nodes[i], 'n', 0)) for i in replicas]}")
    size = bucket_bytes(c, tid, 0) + local_bytes(c.nodes[leader], "n", 0)
    before = c.nodes[new].metric("strata_replica_fetched_bytes_total")
    served = c.nodes[leader].metric("strata_tiering_remote_read_bytes_total")

    t0 = time.monotonic()
    plan = write_plan(tmp_path / "plan.json", {("n", 0): [*replicas, new]})
    p = tool(REASSIGN, "--bootstrap-server", c.bootstrap(), "--reassignment-json-file", plan,
             "--execute")
    assert p.returncode == 0 and "Successfully started partition reassignment" in p.stdout, \
        p.described
    c.wait_partitions("n", lambda st: sorted(st[0].isr) == sorted([*replicas, new]),
                      set(c.nodes), 90, f"n-0: node {new} in the ISR")
    took = time.monotonic() - t0
    copied = c.nodes[new].metric("strata_replica_fetched_bytes_total") - before
    print(f"\n[tiering] new replica of a partition of {size} bytes ({bucket_bytes(c, tid, 0)} in "
          f"the bucket): copied {int(copied)} bytes ({copied / size:.1%}), full ISR {took:.1f}s "
          f"after --execute; local now {local_bytes(c.nodes[new], 'n', 0)}")
    assert copied <= BOUND + 2 * SEGMENT, f"copied {copied} of {size} bytes"
    assert c.nodes[leader].metric("strata_tiering_remote_read_bytes_total") == served
    assert local_bytes(c.nodes[new], "n", 0) <= BOUND + SEGMENT


def test_a_lost_cluster_restores_into_an_empty_one(tiered, topology, tmp_path, request):
    """Every node and disk of a cluster is lost; a new cluster (new controller, new nodes,
    empty disks, its own bucket prefix) started with --restore-from recreates the topic with
    its id, configs and replication factor, and every record the bucket held reads back from
    offset 0. Figures: time to a full ISR and bytes copied."""
    c = tiered
    create_topic(c.bootstrap(), "r", PARTITIONS, 3, TOPIC_CONFIG)
    c.wait_full_isr("r")
    with BigLoad(c.bootstrap(), "r", list(range(PARTITIONS)), pace=0.0005,
                 producer_extra={"batch.size": 16384}) as load:
        wait_for(lambda: all(load.n_acked(p) >= RECORDS // 2 for p in range(PARTITIONS)), 300,
                 lambda: f"{RECORDS // 2} records a partition; {load.summary()}", every=0.5)
    load.assert_clean()
    tid = json.loads((c.nodes[1].data_dir / "r-0" / "partition.json").read_text())["topic_id"]
    before = {p: read_partition(c.bootstrap(), "r", p)[0] for p in range(PARTITIONS)}
    wait_for(lambda: (c.bucket / tid / "topic.json").exists(), 30, "r in the bucket's catalog")
    c.stop()  # every process of the old cluster killed; its disks are not used again
    ends = {p: json.loads((c.bucket / tid / str(p) / "manifest.json").read_text())["end_offset"]
            for p in range(PARTITIONS)}
    assert all(e > 0 for e in ends.values()), ends

    bucket2 = tmp_path / "bucket2"
    new = Cluster(topology, tmp_path / "restored", node_args={
        "--object-store": f"file://{bucket2}", "--restore-from": f"file://{c.bucket}"})
    request.node._cluster = new
    t0 = time.monotonic()
    try:
        new.start()
        new.wait_full_isr("r", timeout=120)
        took = time.monotonic() - t0
        for p in range(PARTITIONS):
            got, low, high = read_partition(new.bootstrap(), "r", p)
            assert (low, high) == (0, ends[p])
            assert got == {o: v for o, v in before[p].items() if o < ends[p]}, f"r-{p} differs"
        assert json.loads((new.nodes[1].data_dir / "r-0" / "partition.json").read_text())[
            "topic_id"] == tid
        copied = sum(f.stat().st_size for f in bucket2.rglob("*") if f.is_file())
        print(f"\n[tiering] restored a lost 3-node cluster: topic r ({sum(ends.values())} records "
              f"in the bucket) with a full ISR {took:.1f}s after the new cluster started; "
              f"{copied} bytes copied into the new prefix")
    finally:
        new.stop()


def test_a_follower_past_an_emptied_bucket_keeps_the_producer_state(tiered):
    """Total retention empties the bucket's copy while a follower is down; back, it is below
    the leader's log start (OFFSET_OUT_OF_RANGE) and starts again at the manifest's end with
    the epochs and idempotent producer state the manifest kept for it, not empty."""
    c = tiered
    create_topic(c.bootstrap(), "e", 1, 2, {**TOPIC_CONFIG, "retention.ms": "4000",
                                            "local.retention.bytes": "-2",
                                            "min.insync.replicas": "1"})
    c.wait_partitions("e", lambda st: len(st[0].isr) == 2, set(c.nodes), 60, "e: ISR of 2")
    leader, replicas, _ = replicas_now(c, "e")[0]
    follower = next(i for i in replicas if i != leader)
    c.nodes[follower].kill()
    c.wait_partitions("e", lambda st: follower not in st[0].isr, set(c.nodes) - {follower}, 60,
                      f"e: node {follower} out of the ISR")
    with BigLoad(c.bootstrap(exclude=(follower,)), "e", [0], pace=0.0005,
                 producer_extra={"batch.size": 16384}) as load:
        wait_for(lambda: load.n_acked(0) >= 400, 120, lambda: load.summary(), every=0.5)
    load.assert_clean()
    tid = json.loads((c.nodes[leader].data_dir / "e-0" / "partition.json").read_text())["topic_id"]

    def emptied():
        m = manifest(c, tid, 0)
        return m if m and not m["segments"] and m["end_offset"] > 0 and m.get("retired") else None
    m = wait_for(emptied, 60, "total retention emptied the bucket's copy", every=0.5)
    assert m["retired"].get("producers"), m["retired"]
    c.nodes[follower].start()
    c.wait_partitions("e", lambda st: follower in st[0].isr, set(c.nodes), 60,
                      f"e: node {follower} back in the ISR")
    snap = c.nodes[follower].data_dir / "e-0" / f"{m['end_offset']:020d}.snapshot"
    wait_for(snap.exists, 10, f"the follower's producer snapshot at {m['end_offset']}")
    table = json.loads(snap.read_text())["table"]["producers"]
    assert table, "the follower kept the idempotent producer's state"


@pytest.fixture
def compacting(request, binaries, topology, tmp_path):
    bucket = tmp_path / "bucket"
    c = Cluster(topology, tmp_path / "cluster", node_args={
        "--object-store": f"file://{bucket}", "--compaction-interval-ms": 500})
    c.bucket = bucket
    yield from running(request, c)


def test_a_compacted_tiered_topic_through_a_leader_failover(compacting):
    """A compacted topic with tiering, replication factor 3: the leader is SIGKILLed halfway
    through the writes and a new leader carries on, compacting the bucket's copy in its own
    epoch. From offset 0 a consumer reads the latest acknowledged value of every key."""
    from confluent_kafka import Producer

    c = compacting
    create_topic(c.bootstrap(), "k", 1, 3, {
        "cleanup.policy": "compact", "remote.storage.enable": "true",
        "segment.bytes": str(SEGMENT), "local.retention.bytes": str(2 * SEGMENT),
        "min.compaction.lag.ms": "0", "delete.retention.ms": "1000", "min.insync.replicas": "2"})
    c.wait_full_isr("k")
    first_leader = replicas_now(c, "k")[0][0]
    acked: dict[int, tuple[bytes, bytes]] = {}
    errors = []

    def cb(err, msg):
        if err is None:
            acked[msg.offset()] = (msg.key(), msg.value())
        else:
            errors.append(err)

    pr = Producer({"bootstrap.servers": c.bootstrap(), "acks": "all", "enable.idempotence": True,
                   "linger.ms": 5, "batch.size": 16384, "message.timeout.ms": 120000})

    def write(rounds):
        for r in rounds:
            for k in range(50):
                while True:
                    try:
                        pr.produce("k", key=b"k%03d" % k, value=(b"%03d:" % r) + b"v" * 1000,
                                   partition=0, on_delivery=cb)
                        break
                    except BufferError:
                        pr.poll(0.1)
            pr.poll(0)
        assert pr.flush(120) == 0 and not errors, errors[:3]

    write(range(15))
    wait_for(lambda: "compacted the bucket's copy" in c.nodes[first_leader].log_text(), 60,
             "the first leader compacted the bucket's copy")
    c.nodes[first_leader].kill()
    write(range(15, 30))
    second = replicas_now(c, "k", via=next(i for i in c.nodes if i != first_leader))[0][0]
    assert second != first_leader
    wait_for(lambda: "compacted the bucket's copy" in c.nodes[second].log_text(), 60,
             "the new leader compacted the bucket's copy")
    c.nodes[first_leader].start()
    c.wait_full_isr("k", timeout=120)
    want: dict[bytes, bytes] = {}
    for o in sorted(acked):
        k, v = acked[o]
        want[k] = v
    records, low, high = read_partition(c.bootstrap(), "k", 0, timeout=120)
    tid = json.loads((c.nodes[second].data_dir / "k-0" / "partition.json").read_text())["topic_id"]
    m = manifest(c, tid, 0)
    assert m and any(s.get("compacted") for s in m["segments"]), m
    by_epoch = {s["compacted"]["by_epoch"] for s in m["segments"] if s.get("compacted")}
    assert low == 0 and high == max(acked) + 1
    # Compaction is eventual (the dirty ratio gates each pass): fewer, not a fixed share.
    assert len(records) < len(acked), f"read {len(records)} of {len(acked)}"
    # read_partition gives {offset: value}: the key is the value's position among acked.
    got: dict[bytes, bytes] = {}
    for o in sorted(records):
        got[acked[o][0]] = records[o]
    assert got == want, "the latest value of every key, across both tiers"
    print(f"\n[tiering] compacted topic through a failover: {len(acked)} records acknowledged, "
          f"{len(records)} read from offset 0; bucket segments compacted by epochs {sorted(by_epoch)}")
