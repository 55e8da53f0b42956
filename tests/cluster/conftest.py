"""Fixtures for the replication/failover suite: a controller (`strata-operator local`) and three
strata-node processes, each node in its own network namespace (see harness.py).

  STRATA_NODE_BIN / STRATA_OPERATOR_BIN   binaries (default $CARGO_TARGET_DIR/debug/..., else
                                          <repo>/target/debug/...)
  STRATA_CLUSTER_NETNS=0                  everything on 127.0.0.1 (the network-cut test skips)
  STRATA_CLUSTER_REPORT=FILE              measurements (failover time) merged into this JSON file
  STRATA_CLUSTER_RUST_LOG                 RUST_LOG of the processes (default info)

A fresh cluster per test: each test kills, stops or cuts off processes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import Cluster, Topology, create_topic  # noqa: E402

TOPIC_CONFIG = {"min.insync.replicas": "2"}


def _missing_cluster_flags() -> str:
    """Why the binaries cannot run a cluster yet ('' if they can)."""
    problems = []
    node, op = harness.node_bin(), harness.operator_bin()
    if not node.is_file():
        problems.append(f"no strata-node at {node}")
    else:
        out = subprocess.run([str(node), "--help"], capture_output=True, text=True).stdout
        for flag in ("--controller", "--replica-lag-time-max-ms"):
            if flag not in out:
                problems.append(f"{node} --help has no {flag}")
    if not op.is_file():
        problems.append(f"no strata-operator at {op}")
    else:
        p = subprocess.run([str(op), "local", "--help"], capture_output=True, text=True)
        if p.returncode != 0:
            problems.append(f"`{op} local --help` failed: {(p.stderr or p.stdout).strip()[:200]}")
    return "; ".join(problems)


def pytest_report_header(config):
    return [f"strata-node: {harness.node_bin()}", f"strata-operator: {harness.operator_bin()}"]


@pytest.fixture(scope="session")
def binaries():
    why = _missing_cluster_flags()
    if why:
        pytest.fail(f"binaries without the cluster CLI: {why}", pytrace=False)


@pytest.fixture(scope="session")
def topology():
    topo = Topology(3).setup()
    print(f"\n[cluster] {topo.describe()}")
    yield topo
    topo.teardown()


def running(request, c: Cluster):
    """Start `c` for the test, attach its log tails to a failure report, kill it afterwards.
    Fixtures of clusters with other settings `yield from` this."""
    request.node._cluster = c
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def cluster(request, binaries, topology, tmp_path):
    """A started controller and three nodes that all list each other as brokers."""
    yield from running(request, Cluster(topology, tmp_path / "cluster"))


@pytest.fixture
def topic(cluster):
    """Topic `t`: 3 partitions, RF 3, min.insync.replicas 2, every replica in sync."""
    create_topic(cluster.bootstrap(), "t", 3, 3, TOPIC_CONFIG)
    cluster.wait_full_isr("t", timeout=60)
    return "t"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    c = getattr(item, "_cluster", None)
    if rep.failed and c is not None:
        for title, text in c.log_tails(60):
            rep.sections.append((title, text))
        for title, text in c.stacks():
            rep.sections.append((title, text))
