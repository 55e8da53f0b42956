"""Replication under failures (issue 6): a controller and three nodes, topic `t` with three
partitions at RF 3 and min.insync.replicas 2, and an idempotent acks=all producer writing
numbered records to every partition the whole time. After each fault, every acknowledged
record must be readable exactly once at the offset its acknowledgement named."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import kwire
from harness import wait_for, write_report
from load import Load, check_all

WARMUP = 300  # acknowledged records before the fault


def leader_of(cluster, topic, p=0, via=None):
    st = cluster.wait_partitions(topic, lambda st: st[p].leader in cluster.nodes,
                                 via or set(cluster.nodes), 30, f"a leader for {topic}/{p}")
    return st[p].leader, st[p].leader_epoch


def moved_from(old: int, epoch: int, p: int = 0):
    """cond: partition p is led by another node with a higher leader epoch."""
    return lambda st: st[p].leader not in (old, -1) and st[p].leader_epoch > epoch


def check_alone(cluster, topic, load, node, must_not_contain=()):
    """Read `node`'s own copy of every partition: kill every other node so that it is the last
    live replica (it must be in every ISR, so it has to take every partition over), then check
    it holds every acknowledged record. Catches a replica that is in the ISR without the data."""
    for i in set(cluster.nodes) - {node}:
        cluster.nodes[i].kill()
    cluster.wait_partitions(topic, lambda st: all(s.leader == node for s in st.values()), {node},
                            cluster.SESSION_TIMEOUT_MS / 1000 + 30,
                            f"node {node}, the last live replica, to lead every partition "
                            f"(to read its own log)")
    check_all(load, cluster.nodes[node].addr, must_not_contain)


def test_kill_leader(cluster, topic, tmp_path):
    """SIGKILL the leader of p0: a follower takes over, nothing acknowledged is lost, and the
    failover time (kill to the first acknowledgement of a record produced after the kill) is
    measured."""
    with Load(cluster.bootstrap(), topic, [0, 1, 2]) as load:
        load.wait_acks_after(0, WARMUP, 60, what="warm-up")
        old, epoch = leader_of(cluster, topic)
        survivors = set(cluster.nodes) - {old}
        t_kill = time.monotonic()
        cluster.nodes[old].kill()

        cluster.wait_partitions(topic, moved_from(old, epoch), survivors, 30,
                                f"a survivor of {sorted(survivors)} to lead p0 after node {old} died")
        ack = wait_for(lambda: load.first_ack_sent_after(0, t_kill), 60,
                       lambda: f"an acknowledged produce to p0 after the kill; {load.summary()}")
        failover = ack.t_ack - t_kill
        print(f"\n[cluster] failover of p0 after SIGKILL of leader {old}: {failover:.2f} s")
        write_report("failover_seconds", round(failover, 3), tmp_path / "failover.json")

        # The dead node leaves every ISR (acks=all would otherwise wait for it forever).
        cluster.wait_full_isr(topic, survivors, timeout=30)
        load.wait_acks_after(time.monotonic(), 200, 30, what="after failover")
    load.assert_clean()
    check_all(load, cluster.bootstrap(exclude={old}))
    assert failover < 60, f"failover took {failover:.1f} s"


def test_paused_leader_is_fenced(cluster, topic):
    """SIGSTOP the leader of p0 past the session timeout: leadership moves. A produce sent
    straight to the old leader (queued while it is stopped, read after SIGCONT) must not be
    acknowledged; the old leader truncates, rejoins the ISR, and its own log then holds every
    acknowledged record and not the refused one."""
    with Load(cluster.bootstrap(), topic, [0, 1, 2]) as load:
        load.wait_acks_after(0, WARMUP, 60, what="warm-up")
        old, epoch = leader_of(cluster, topic)
        survivors = set(cluster.nodes) - {old}
        t_stop = time.monotonic()
        cluster.nodes[old].pause()
        try:
            cluster.wait_partitions(topic, moved_from(old, epoch), survivors,
                                    cluster.SESSION_TIMEOUT_MS / 1000 + 30,
                                    f"leadership of p0 to move off paused node {old}")
            load.wait_acks_after(t_stop, 50, 60, p=0, what="p0 while the old leader is paused")
            probe = f"fenced-probe-{load.tag}".encode()
            pending = kwire.send_produce(cluster.nodes[old].addr, topic, 0, [probe], acks=-1,
                                         timeout_ms=5000)
        finally:
            cluster.nodes[old].resume()
        try:
            res = pending.result(timeout=30)
            outcome = f"{kwire.error_name(res.error)} {res.message or ''}".strip()
            assert res.error != 0, (f"the fenced old leader {old} acknowledged an acks=-1 produce "
                                    f"at offset {res.base_offset}")
        except kwire.KafkaWireError as e:
            outcome = f"connection failed: {e}"
        print(f"\n[cluster] produce straight to the fenced old leader {old}: {outcome}")

        cluster.wait_full_isr(topic, timeout=60)  # the old leader rejoined every ISR
        load.wait_acks_after(time.monotonic(), 200, 30, what="after the old leader rejoined")
    load.assert_clean()
    check_all(load, cluster.bootstrap(), must_not_contain=(probe,))
    check_alone(cluster, topic, load, old, must_not_contain=(probe,))


def test_restarted_node_rejoins(cluster, topic):
    """SIGTERM the leader of p0 (a clean stop), keep writing while it is down, start it again:
    it catches up and rejoins every ISR, and its own log then has every acknowledged record."""
    with Load(cluster.bootstrap(), topic, [0, 1, 2]) as load:
        load.wait_acks_after(0, WARMUP, 60, what="warm-up")
        old, epoch = leader_of(cluster, topic)
        survivors = set(cluster.nodes) - {old}
        t_stop = time.monotonic()
        rc = cluster.nodes[old].stop()
        assert rc == 0, f"node {old} exited with {rc} on SIGTERM"
        cluster.wait_full_isr(topic, survivors, timeout=30)
        assert cluster.agreed(topic, survivors)[0].leader_epoch > epoch
        # Enough written while it is down that it has something to catch up on.
        load.wait_acks_after(t_stop, 600, 60, what="while the node is down")

        t_start = time.monotonic()
        cluster.nodes[old].start()
        cluster.nodes[old].wait_listening()
        cluster.wait_full_isr(topic, timeout=60)
        print(f"\n[cluster] node {old} restarted and back in every ISR after "
              f"{time.monotonic() - t_start:.1f} s")
        load.wait_acks_after(time.monotonic(), 200, 30, what="after the node rejoined")
    load.assert_clean()
    check_all(load, cluster.bootstrap())
    check_alone(cluster, topic, load, old)


def test_cut_follower(cluster, topic, topology):
    """Cut a follower of p0 off the network: the ISRs shrink to the two others, writes go on
    (min.insync.replicas 2 still met), and after healing it rejoins with every acknowledged
    record in its own log."""
    if not topology.can_cut:
        pytest.skip(f"cannot cut a node off: {topology.reason}")
    with Load(cluster.bootstrap(), topic, [0, 1, 2]) as load:
        load.wait_acks_after(0, WARMUP, 60, what="warm-up")
        st = cluster.wait_full_isr(topic, timeout=30)
        follower = max(set(cluster.nodes) - {st[0].leader})
        others = set(cluster.nodes) - {follower}
        topology.cut(follower)
        try:
            cluster.wait_full_isr(topic, others,
                                  timeout=(cluster.LAG_MS + cluster.SESSION_TIMEOUT_MS) / 1000 + 30)
            t_shrunk = time.monotonic()
            for p in load.partitions:
                load.wait_acks_after(t_shrunk, 50, 30, p=p,
                                     what=f"p{p} with ISR {sorted(others)} (node {follower} cut off)")
        finally:
            topology.heal(follower)
        cluster.wait_full_isr(topic, timeout=60)
        load.wait_acks_after(time.monotonic(), 200, 30, what="after healing")
    load.assert_clean()
    check_all(load, cluster.bootstrap())
    check_alone(cluster, topic, load, follower)


PROBE_FROM_INSIDE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import kwire
addr, topic, value, acks = sys.argv[2], sys.argv[3], sys.argv[4].encode(), int(sys.argv[5])
try:
    r = kwire.send_produce(addr, topic, 0, [value], acks=acks, timeout_ms=5000).result(timeout=20)
    print(json.dumps({"error": r.error, "offset": r.base_offset, "message": r.message}))
except kwire.KafkaWireError as e:
    print(json.dumps({"error": None, "connection": str(e)}))
"""


def produce_inside(topology, node, topic: str, value: bytes, acks: int) -> subprocess.Popen:
    """A client in node's own namespace (on its side of a cut) producing to it directly."""
    argv = [sys.executable, "-c", PROBE_FROM_INSIDE, str(Path(__file__).resolve().parent),
            node.addr, topic, value.decode(), str(acks)]
    return subprocess.Popen(topology.wrap(node.id, argv), stdout=subprocess.PIPE, text=True)


def test_cut_leader_minority_side(cluster, topic, topology):
    """Cut the leader of p0 off the network (a split brain: it keeps running and, for a while,
    believes it leads). A client on its side of the cut sends it an acks=-1 and an acks=1
    produce: the acks=-1 one must not be acknowledged (its followers are gone). The majority
    elects a new leader and writes go on. After healing, the old leader truncates its
    diverged tail (the acks=1 record, acknowledged or not, is gone from every replica) and
    rejoins with every acknowledged record."""
    if not topology.can_cut:
        pytest.skip(f"cannot cut a node off: {topology.reason}")
    with Load(cluster.bootstrap(), topic, [0, 1, 2]) as load:
        load.wait_acks_after(0, WARMUP, 60, what="warm-up")
        old, epoch = leader_of(cluster, topic)
        majority = set(cluster.nodes) - {old}
        probe_all = f"split-acks-all-{load.tag}".encode()
        probe_one = f"split-acks-one-{load.tag}".encode()
        topology.cut(old)
        try:
            clients = [produce_inside(topology, cluster.nodes[old], topic, v, acks)
                       for v, acks in ((probe_all, -1), (probe_one, 1))]
            t_cut = time.monotonic()
            cluster.wait_partitions(topic, moved_from(old, epoch), majority,
                                    cluster.SESSION_TIMEOUT_MS / 1000 + 30,
                                    f"the majority {sorted(majority)} to elect a leader for p0")
            load.wait_acks_after(t_cut, 50, 60, p=0, what="p0 on the majority side")
            answers = []
            for cl in clients:
                out, _ = cl.communicate(timeout=40)
                answers.append(json.loads(out))
        finally:
            topology.heal(old)
        print(f"\n[cluster] produce to the cut-off leader {old} from its side: "
              f"acks=-1 -> {answers[0]}, acks=1 -> {answers[1]}")
        assert answers[0].get("error") != 0, (
            f"the cut-off old leader {old} acknowledged an acks=-1 produce with no follower "
            f"reachable: {answers[0]}")
        cluster.wait_full_isr(topic, timeout=60)
        load.wait_acks_after(time.monotonic(), 200, 30, what="after healing")
    load.assert_clean()
    check_all(load, cluster.bootstrap(), must_not_contain=(probe_all, probe_one))
    check_alone(cluster, topic, load, old, must_not_contain=(probe_all, probe_one))
