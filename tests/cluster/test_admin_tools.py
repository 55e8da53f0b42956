"""Zero-downtime operations with Apache Kafka's own admin tools (Kafka 3.9 jars from Maven
Central, installed by tests/testbed/install.sh into $STRATA_CACHE/kafka-libs):

  kafka-reassign-partitions.sh  org.apache.kafka.tools.reassign.ReassignPartitionsCommand
  kafka-leader-election.sh      org.apache.kafka.tools.LeaderElectionCommand
  kafka-log-dirs.sh             org.apache.kafka.tools.LogDirsCommand

against a controller and three nodes: a reassignment under a producer (--execute, --verify
until done, every acknowledged record intact), --list and --cancel of a move that cannot
finish, a preferred election after a failover, and the log directories of every node."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import running
from harness import Cluster, create_topic, wait_for
from load import Load, check_all

LIBS = Path(os.environ.get("STRATA_KAFKA_LIBS")
            or Path(os.environ.get("STRATA_CACHE", Path.home() / ".cache/strata-testbed"))
            / "kafka-libs")
REASSIGN = "org.apache.kafka.tools.reassign.ReassignPartitionsCommand"
ELECT = "org.apache.kafka.tools.LeaderElectionCommand"
LOG_DIRS = "org.apache.kafka.tools.LogDirsCommand"


@pytest.fixture(scope="module")
def kafka_tools():
    if not (LIBS / "kafka-tools-3.9.2.jar").is_file() and not list(LIBS.glob("kafka-tools-*.jar")):
        pytest.fail(f"no Kafka tools jars in {LIBS}: run tests/testbed/install.sh", pytrace=False)
    return LIBS


def tool(main: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs one of Kafka's command-line tools; its output is kept for assertion messages."""
    argv = ["java", "-Xmx256m", "-Dlog4j.configuration=file:/dev/null", "-cp", f"{LIBS}/*",
            main, *args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    p.described = (f"$ {' '.join(argv[5:])}\nexit {p.returncode}\n--- stdout\n{p.stdout}"
                   f"--- stderr\n{p.stderr[-3000:]}")
    return p


def write_plan(path: Path, moves: dict[tuple[str, int], list[int]]) -> str:
    path.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": t, "partition": p, "replicas": r, "log_dirs": ["any"] * len(r)}
        for (t, p), r in sorted(moves.items())]}))
    return str(path)


def replicas_now(cluster, topic: str, via=None) -> dict[int, tuple[int, list[int], list[int]]]:
    md = cluster.metadata(via or min(cluster.nodes), [topic])
    return {p: (s.leader, list(s.replicas), sorted(s.isr))
            for p, s in md.topics[topic].partitions.items()}


def test_reassign_under_load_execute_then_verify(cluster, kafka_tools, tmp_path):
    """Move one replica of each partition of a RF 2 topic onto the node that lacks it while a
    producer writes: --execute, --verify until Kafka's tool reports completion; the new
    replicas lead and hold every acknowledged record."""
    topic = "moving"
    boot = cluster.bootstrap()
    create_topic(boot, topic, 2, 2, {"min.insync.replicas": "2"})
    st = cluster.wait_partitions(topic, lambda st: all(len(s.isr) == 2 for s in st.values()),
                                 set(cluster.nodes), 60, "both partitions with 2 in sync")
    # --generate is computed by the tool from Metadata and DescribeCluster.
    topics_json = tmp_path / "topics.json"
    topics_json.write_text(json.dumps({"version": 1, "topics": [{"topic": topic}]}))
    g = tool(REASSIGN, "--bootstrap-server", boot, "--topics-to-move-json-file",
             str(topics_json), "--broker-list", "1,2,3", "--generate")
    assert g.returncode == 0, g.described
    assert "Proposed partition reassignment configuration" in g.stdout, g.described
    proposed = json.loads(g.stdout.strip().splitlines()[-1])
    assert sorted(q["partition"] for q in proposed["partitions"]) == [0, 1], g.described
    # Each partition's first replica is replaced by the node it is not on, which leads.
    targets = {}
    for p, s in st.items():
        (newcomer,) = set(cluster.nodes) - set(s.replicas)
        targets[p] = [newcomer, s.replicas[1]]
    plan = write_plan(tmp_path / "plan.json", {(topic, p): r for p, r in targets.items()})
    with Load(boot, topic, [0, 1]) as load:
        load.wait_acks_after(0, 300, 60, what="warm-up")
        t0 = time.monotonic()
        p = tool(REASSIGN, "--bootstrap-server", boot, "--reassignment-json-file", plan,
                 "--execute")
        assert p.returncode == 0, p.described
        assert "Successfully started partition reassignments" in p.stdout, p.described

        def verified():
            v = tool(REASSIGN, "--bootstrap-server", boot, "--reassignment-json-file", plan,
                     "--verify")
            assert v.returncode == 0, v.described
            done = all(f"Reassignment of partition {topic}-{i} is completed" in v.stdout
                       for i in (0, 1))
            return v if done else None

        v = wait_for(verified, 90, "kafka-reassign-partitions --verify to report both moves "
                                   "completed", every=1)
        # --verify cleared the (never set) replication throttles without complaint.
        assert "Clearing broker-level throttles" in v.stdout, v.described
        done = cluster.wait_partitions(
            topic, lambda st: all(st[p].replicas == r and sorted(st[p].isr) == sorted(r)
                                  for p, r in targets.items()),
            set(cluster.nodes), 30, f"every node to show the new replicas {targets}, in sync")
        assert all(done[p].leader == r[0] for p, r in targets.items()), done
        load.wait_acks_after(time.monotonic(), 300, 60, what="after the moves")
        listed = tool(REASSIGN, "--bootstrap-server", boot, "--list")
        assert listed.returncode == 0, listed.described
        assert "No partition reassignments found" in listed.stdout, listed.described
    load.assert_clean()
    check_all(load, boot)
    # The replaced replicas' copies are gone from their nodes.
    for p, s in st.items():
        gone = cluster.nodes[s.replicas[0]].data_dir / f"{topic}-{p}"
        wait_for(lambda: not gone.exists(), 30, f"{gone} to be removed")
    print(f"moves completed {time.monotonic() - t0:.1f} s after --execute")


class SlowSessionCluster(Cluster):
    """Nodes stay alive to the controller for 30 s without heartbeats, so that a node can be
    stopped (SIGSTOP) and still be a valid reassignment target."""

    SESSION_TIMEOUT_MS = 30000


@pytest.fixture
def slow_cluster(request, binaries, topology, tmp_path):
    yield from running(request, SlowSessionCluster(topology, tmp_path / "cluster"))


def test_reassign_list_verify_and_cancel_in_flight(slow_cluster, kafka_tools, tmp_path):
    """A move onto a stopped node cannot complete: --list shows it with Kafka's adding and
    removing replicas, --verify says it is in progress, --cancel puts the original replicas
    back, and the producer never notices."""
    cluster = slow_cluster
    topic = "cancelled"
    create_topic(cluster.bootstrap(), topic, 1, 2, {"min.insync.replicas": "2"})
    st = cluster.wait_partitions(topic, lambda st: len(st[0].isr) == 2, set(cluster.nodes), 60,
                                 "2 replicas in sync")
    a, b = st[0].replicas
    (c,) = set(cluster.nodes) - {a, b}
    before = replicas_now(cluster, topic, via=a)
    boot = cluster.bootstrap(exclude={c})
    plan = write_plan(tmp_path / "plan.json", {(topic, 0): [c, b]})
    with Load(boot, topic, [0]) as load:
        load.wait_acks_after(0, 200, 60, what="warm-up")
        cluster.nodes[c].pause()
        try:
            p = tool(REASSIGN, "--bootstrap-server", boot, "--reassignment-json-file", plan,
                     "--execute")
            assert p.returncode == 0, p.described
            assert replicas_now(cluster, topic, via=a)[0][1] == [c, b, a]

            listed = tool(REASSIGN, "--bootstrap-server", boot, "--list")
            assert listed.returncode == 0, listed.described
            assert (f"{topic}-0: replicas: {c},{b},{a}. adding: {c}. removing: {a}."
                    in listed.stdout), listed.described
            v = tool(REASSIGN, "--bootstrap-server", boot, "--reassignment-json-file", plan,
                     "--verify")
            assert v.returncode == 0, v.described
            assert f"Reassignment of partition {topic}-0 is still in progress." in v.stdout, \
                v.described
            # A second --execute while one is in flight is refused by the tool itself, from
            # what ListPartitionReassignments says.
            again = tool(REASSIGN, "--bootstrap-server", boot, "--reassignment-json-file", plan,
                         "--execute")
            assert again.returncode != 0, again.described
            assert "existing partition assignment" in again.stdout, again.described

            # --preserve-throttles: clearing throttles (a no-op here) asks every broker,
            # and the stopped one would time the tool out, as on Kafka.
            cancel = tool(REASSIGN, "--bootstrap-server", boot, "--reassignment-json-file",
                          plan, "--cancel", "--preserve-throttles")
            assert cancel.returncode == 0, cancel.described
            assert f"Successfully cancelled partition reassignment for: {topic}-0" \
                in cancel.stdout, cancel.described
            after = replicas_now(cluster, topic, via=a)
            assert after[0][1] == [a, b] and after[0][2] == sorted([a, b]), after
            assert after[0][0] == before[0][0], "the leader stayed"
            listed = tool(REASSIGN, "--bootstrap-server", boot, "--list")
            assert "No partition reassignments found" in listed.stdout, listed.described
            t = time.monotonic()
            load.wait_acks_after(t, 200, 60, what="after the cancel")
        finally:
            cluster.nodes[c].resume()
    load.assert_clean()
    check_all(load, boot)


def test_preferred_election_brings_leadership_back(cluster, topic, kafka_tools, tmp_path):
    """SIGKILL the preferred leader of a partition, restart it and let it catch up: it is in
    sync but leads nothing. kafka-leader-election --election-type PREFERRED gives it its
    leadership back; UNCLEAN on a led partition is a no-op; bad partitions are refused."""
    boot = cluster.bootstrap()
    st = cluster.wait_full_isr(topic)
    p = 0
    preferred = st[p].replicas[0]
    assert st[p].leader == preferred, st
    with Load(boot, topic, [0, 1, 2]) as load:
        load.wait_acks_after(0, 300, 60, what="warm-up")
        cluster.nodes[preferred].kill()
        cluster.wait_partitions(topic, lambda st: st[p].leader not in (preferred, -1),
                                set(cluster.nodes) - {preferred}, 30,
                                f"leadership of {topic}-{p} to leave node {preferred}")
        cluster.nodes[preferred].start()
        moved = cluster.wait_full_isr(topic, timeout=90)
        assert moved[p].leader != preferred, moved
        epoch = moved[p].leader_epoch

        e = tool(ELECT, "--bootstrap-server", boot, "--election-type", "PREFERRED",
                 "--all-topic-partitions")
        assert e.returncode == 0, e.described
        assert "Successfully completed leader election (PREFERRED) for partitions" in e.stdout \
            and f"{topic}-{p}" in e.stdout, e.described
        back = cluster.wait_partitions(
            topic, lambda st: all(s.leader == s.replicas[0] for s in st.values()),
            set(cluster.nodes), 30, "every partition led by its preferred replica")
        assert back[p].leader_epoch == epoch + 1, (moved, back)

        again = tool(ELECT, "--bootstrap-server", boot, "--election-type", "PREFERRED",
                     "--topic", topic, "--partition", str(p))
        assert again.returncode == 0, again.described
        assert f"Valid replica already elected for partitions {topic}-{p}" in again.stdout, \
            again.described

        plan = tmp_path / "elect.json"
        plan.write_text(json.dumps({"partitions": [{"topic": topic, "partition": 1}]}))
        unclean = tool(ELECT, "--bootstrap-server", boot, "--election-type", "UNCLEAN",
                       "--path-to-json-file", str(plan))
        assert unclean.returncode == 0, unclean.described
        assert f"Valid replica already elected for partitions {topic}-1" in unclean.stdout, \
            unclean.described

        bad = tool(ELECT, "--bootstrap-server", boot, "--election-type", "PREFERRED",
                   "--topic", topic, "--partition", "7")
        assert bad.returncode != 0, bad.described
        assert "UnknownTopicOrPartition" in bad.stdout + bad.stderr, bad.described
        load.wait_acks_after(time.monotonic(), 300, 60, what="after the election")
    load.assert_clean()
    check_all(load, boot)


def test_log_dirs_lists_every_partition_with_sizes(cluster, topic, kafka_tools):
    """kafka-log-dirs --describe: each node reports its data directory with every partition
    it holds, sizes of the records written, no lag once in sync, no future logs."""
    boot = cluster.bootstrap()
    with Load(boot, topic, [0, 1, 2]) as load:
        load.wait_acks_after(0, 300, 60, what="writes")
    load.assert_clean()
    cluster.wait_full_isr(topic)

    def described():
        p = tool(LOG_DIRS, "--bootstrap-server", boot, "--describe")
        assert p.returncode == 0, p.described
        line = next((ln for ln in p.stdout.splitlines() if ln.startswith("{")), None)
        assert line, p.described
        return json.loads(line)

    def settled():
        out = described()
        brokers = {b["broker"]: b for b in out["brokers"]}
        if set(brokers) != set(cluster.nodes):
            return None
        for b in brokers.values():
            parts = {q["partition"]: q for d in b["logDirs"] for q in d["partitions"]}
            if any(parts.get(f"{topic}-{i}", {}).get("offsetLag", 1) != 0 for i in range(3)):
                return None
        return out

    out = wait_for(settled, 60, "every node to report the topic's partitions with no lag",
                   every=1)
    for b in out["brokers"]:
        node = cluster.nodes[b["broker"]]
        assert len(b["logDirs"]) == 1, b
        d = b["logDirs"][0]
        assert d["error"] is None, d
        assert Path(d["logDir"]) == node.data_dir.resolve(), (d["logDir"], node.data_dir)
        parts = {q["partition"]: q for q in d["partitions"]}
        for i in range(3):
            q = parts[f"{topic}-{i}"]
            assert q["size"] > 0 and q["offsetLag"] == 0 and q["isFuture"] is False, q
    sizes = {b["broker"]: {q["partition"]: q["size"] for q in b["logDirs"][0]["partitions"]
                           if q["partition"].startswith(f"{topic}-")}
             for b in out["brokers"]}
    # Every replica holds the same records: the same bytes.
    assert len({json.dumps(s, sort_keys=True) for s in sizes.values()}) == 1, sizes

    # Only one topic's partitions with --topic-list, and only the named broker with
    # --broker-list.
    p = tool(LOG_DIRS, "--bootstrap-server", boot, "--describe", "--topic-list", topic,
             "--broker-list", "2")
    assert p.returncode == 0, p.described
    only = json.loads(next(ln for ln in p.stdout.splitlines() if ln.startswith("{")))
    assert [b["broker"] for b in only["brokers"]] == [2], only
    assert sorted(q["partition"] for q in only["brokers"][0]["logDirs"][0]["partitions"]) == \
        [f"{topic}-{i}" for i in range(3)], only


TOPICS = "org.apache.kafka.tools.TopicCommand"


def test_create_with_a_replica_assignment(cluster, kafka_tools):
    """kafka-topics --create --replica-assignment: each partition on exactly the nodes named,
    in that order, led by the first (Kafka's preferred replica); an assignment naming a node
    that is not in the cluster, or mixed with --partitions, is refused with Kafka's errors."""
    boot = cluster.bootstrap()
    p = tool(TOPICS, "--bootstrap-server", boot, "--create", "--topic", "placed",
             "--replica-assignment", "2:3,3:1,1:2,2:1")
    assert p.returncode == 0, p.described
    want = {0: [2, 3], 1: [3, 1], 2: [1, 2], 3: [2, 1]}

    def placed():
        state = replicas_now(cluster, "placed")
        if {i: r for i, (_, r, _) in state.items()} != want:
            return None
        if any(isr != sorted(r) for _, r, isr in state.values()):
            return None
        return state

    state = wait_for(placed, 30, "the assigned replicas, all in sync", every=0.5)
    for i, (leader, replicas, isr) in state.items():
        assert leader == replicas[0], (i, leader, replicas)
    d = tool(TOPICS, "--bootstrap-server", boot, "--describe", "--topic", "placed")
    assert d.returncode == 0, d.described
    assert "ReplicationFactor: 2" in d.stdout, d.described

    bad = tool(TOPICS, "--bootstrap-server", boot, "--create", "--topic", "nowhere",
               "--replica-assignment", "1:9")
    # INVALID_REPLICA_ASSIGNMENT, with the controller's reason.
    assert bad.returncode != 0 and "invalid replica assignment" in bad.stdout, bad.described
    assert "node 9, which is not registered" in bad.stdout, bad.described
    assert "nowhere" not in cluster.metadata(min(cluster.nodes)).topics
