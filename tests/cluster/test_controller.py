"""Restarting the controller (`strata-operator local`, state in its --state-dir) must not
disturb the data path: nodes keep serving while it is down, and when it is back the metadata
is the same (topics, topic ids, cluster id) and no leadership moved."""

from __future__ import annotations

import time

import kwire
from harness import create_topic, wait_for
from load import Load, check_all


def views(cluster, via) -> dict:
    """What each node in via reports: cluster id, brokers, and per topic its id and per
    partition (leader, leader epoch, ISR, replicas)."""
    out = {}
    for v in via:
        md = cluster.metadata(v)
        out[v] = {
            "cluster_id": md.cluster_id,
            "brokers": sorted(md.brokers),
            "topics": {name: (t.topic_id, t.internal,
                              {p: (s.leader, s.leader_epoch, sorted(s.isr), sorted(s.replicas))
                               for p, s in sorted(t.partitions.items())})
                       for name, t in sorted(md.topics.items())},
        }
    return out


def snapshot(cluster, via) -> dict | None:
    """The nodes' common view, or None while they disagree."""
    vs = list(views(cluster, via).values())
    return vs[0] if all(v == vs[0] for v in vs) else None


def test_controller_restart(cluster, topic):
    nodes = set(cluster.nodes)
    with Load(cluster.bootstrap(), topic, [0, 1, 2]) as load:
        load.wait_acks_after(0, 300, 60, what="warm-up")
        before = wait_for(lambda: snapshot(cluster, nodes), 30,
                          lambda: f"the nodes to agree on the metadata; {cluster.describe(topic)}")
        assert topic in before["topics"], before

        t_down = time.monotonic()
        rc = cluster.controller.stop()
        assert rc == 0, f"the controller exited with {rc} on SIGTERM"
        # The data path does not need the controller.
        load.wait_acks_after(t_down, 300, 30, what="while the controller is down")
        for v, view in views(cluster, nodes).items():
            assert view == before, (f"node {v}'s metadata changed while the controller was "
                                    f"down:\nbefore {before}\nnow    {view}")

        cluster.controller.start()
        cluster.controller.wait_ready()
        t_up = time.monotonic()
        # Long enough for every node's session to have expired had the restarted controller
        # forgotten them: the metadata must hold still the whole time.
        hold = 2 * cluster.SESSION_TIMEOUT_MS / 1000 + 2
        while time.monotonic() - t_up < hold:
            for v, view in views(cluster, nodes).items():
                assert view == before, (
                    f"node {v}'s metadata changed {time.monotonic() - t_up:.1f} s after the "
                    f"controller restarted:\nbefore {before}\nnow    {view}")
            time.sleep(0.3)
        load.wait_acks_after(t_up, 300, 30, what="after the controller restarted")

        # The restarted controller still does its job.
        create_topic(cluster.bootstrap(), "after-restart", 2, 3, {"min.insync.replicas": "2"})
        cluster.wait_full_isr("after-restart", timeout=30)
        md = cluster.metadata(1, [topic, "after-restart"])
        assert md.topics[topic].topic_id == before["topics"][topic][0]
        assert md.topics["after-restart"].topic_id not in (
            t[0] for t in before["topics"].values()), "a new topic reused an old topic id"
    load.assert_clean()
    check_all(load, cluster.bootstrap())
    assert kwire.metadata(cluster.nodes[1].addr).cluster_id == before["cluster_id"]
