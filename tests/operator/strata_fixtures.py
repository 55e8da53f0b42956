"""Strata processes for the operator suite: `strata-operator kubernetes` replicas against the
test API server, and strata-node processes started the way the kubelet would start them
(there is no kubelet here), pointed at every operator replica."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/strata-testbed/cargo-target"))


def binary(name: str) -> str:
    env = {"strata-node": "STRATA_NODE_BIN", "strata-operator": "STRATA_OPERATOR_BIN"}[name]
    path = os.environ.get(env) or str(TARGET / "debug" / name)
    assert Path(path).exists(), f"{path} missing: build with `cargo build -p {name}` or set {env}"
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout: float, what: str, every: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Proc:
    def __init__(self, name: str, args: list[str], log: Path, env: dict | None = None):
        self.name, self.args, self.log = name, args, log
        self.env = dict(os.environ, **(env or {}))
        self.p: subprocess.Popen | None = None

    def start(self):
        # Where this run's output begins (the log is appended to across restarts).
        self.offset = self.log.stat().st_size if self.log.exists() else 0
        f = open(self.log, "ab")
        self.p = subprocess.Popen(self.args, stdout=f, stderr=subprocess.STDOUT, env=self.env,
                                  start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def signal(self, sig, wait: float | None = 30):
        if self.alive():
            self.p.send_signal(sig)
            if wait is not None:
                try:
                    self.p.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    self.p.kill()
                    self.p.wait()

    def stop(self):
        self.signal(signal.SIGTERM)

    def kill(self):
        self.signal(signal.SIGKILL)

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def this_run(self) -> str:
        """Output of the current run only."""
        with open(self.log, "rb") as f:
            f.seek(getattr(self, "offset", 0))
            return f.read().decode(errors="replace")

    def tail(self, n=30) -> str:
        return "\n".join(self.text().splitlines()[-n:])


class StrataOnKube:
    """Two operator replicas (Lease election) and three nodes in namespace `ns`."""

    LEASE_MS = 6000

    def __init__(self, workdir: Path, kubeconfig: str, ns: str, nodes: int = 3,
                 object_store: str | None = None):
        self.dir = workdir
        self.object_store = object_store
        self.ns = ns
        self.kubeconfig = kubeconfig
        self.ctl_ports = [free_port(), free_port()]
        self.kafka_ports = [free_port() for _ in range(nodes)]
        self.operators = [self._operator(i) for i in range(2)]
        self.nodes = [self._node(i + 1) for i in range(nodes)]

    @property
    def bootstrap(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.kafka_ports]

    def _operator(self, i: int) -> Proc:
        args = [
            binary("strata-operator"), "kubernetes",
            "--namespace", self.ns,
            "--listen", f"127.0.0.1:{self.ctl_ports[i]}",
            "--identity", f"operator-{i}",
            "--lease-duration-ms", str(self.LEASE_MS),
            "--session-timeout-ms", "3000",
            "--heartbeat-interval-ms", "250",
            "--default-replication-factor", "3",
            "--offsets-topic-num-partitions", "6",
        ]
        return Proc(f"operator-{i}", args, self.dir / f"operator-{i}.log", {"KUBECONFIG": self.kubeconfig})

    def _node(self, i: int) -> Proc:
        urls = ",".join(f"http://127.0.0.1:{p}" for p in self.ctl_ports)
        args = [
            binary("strata-node"),
            "--node-id", str(i),
            "--controller", urls,
            "--listen", f"127.0.0.1:{self.kafka_ports[i - 1]}",
            "--data-dir", str(self.dir / f"node-{i}"),
            "--replica-lag-time-max-ms", "3000",
            "--group-initial-rebalance-delay-ms", "0",
            "--offsets-topic-partitions", "6",
        ]
        if self.object_store:
            args += ["--object-store", self.object_store, "--tiering-interval-ms", "200"]
        return Proc(f"node-{i}", args, self.dir / f"node-{i}.log")

    def leader(self) -> Proc | None:
        for o in self.operators:
            if o.alive() and "controller listening on" in o.this_run():
                return o
        return None

    def start(self):
        self.operators[0].start()
        wait_for(lambda: "controller listening on" in self.operators[0].text(), 60, "the first operator to lead")
        self.operators[1].start()
        for n in self.nodes:
            n.start()
        wait_for(lambda: all("registered with the controller" in n.text() for n in self.nodes), 60,
                 "every node to register")
        return self

    def close(self):
        for p in self.nodes + self.operators:
            p.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in self.operators + self.nodes)
