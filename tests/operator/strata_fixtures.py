"""Strata processes for the operator suite: `strata-operator kubernetes` replicas against the
test API server, and strata-node processes started the way the kubelet would start them
(there is no kubelet here), pointed at every operator replica."""

from __future__ import annotations

from pathlib import Path

from strata_testlib import Proc, binary, free_port, wait_for


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
            if o.running() and "controller listening on" in o.log_since_start():
                return o
        return None

    def start(self):
        self.operators[0].start()
        wait_for(lambda: "controller listening on" in self.operators[0].log_text(), 60, "the first operator to lead")
        self.operators[1].start()
        for n in self.nodes:
            n.start()
        wait_for(lambda: all("registered with the controller" in n.log_text() for n in self.nodes), 60,
                 "every node to register")
        return self

    def close(self):
        for p in self.nodes + self.operators:
            p.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail(30)}" for p in self.operators + self.nodes)
