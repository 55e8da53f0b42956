"""Processes and network for the cluster suite: a controller (`strata-operator local`) and
strata-node processes, each node in its own network namespace so that a test can cut it off.

Network (when run as root and `ip netns add` works):

  node i      namespace strata-<pid>-i, address 10.X.i.2/24 on veth sc<pid>n<i>
  host end    10.X.i.1/24 on veth sc<pid>h<i>, the node's default route; the host forwards
              between nodes (net.ipv4.ip_forward=1)
  controller  in the host namespace on 10.X.0.1 (a /32 on lo, label lo:sc<pid>), which every
              namespace reaches through its own host end, so cutting one node never cuts the
              controller off from the others
  cut node i  `ip link set sc<pid>h<i> down`: both directions; a blackhole route for 10.X.0.0/16
              keeps the host from sending the node's traffic out of its default route instead

<pid> is the pytest process, so a later run can tell stale plumbing (its pid is gone) from a
concurrent run's. X is a second octet no address or route of the host uses.

Without namespaces (not root, `ip netns` missing, or STRATA_CLUSTER_NETNS=0) everything runs on
127.0.0.1 with distinct ports and Topology.can_cut is False.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import subprocess
from pathlib import Path

import kwire
import strata_testlib
from strata_testlib import Proc, free_port, node_bin, operator_bin, pid_alive, port_open

# Connection errors count as "not yet" in every wait of this suite (nodes restart, links are
# cut); the last one is quoted on timeout.
wait_for = functools.partial(strata_testlib.wait_for, ignore=(kwire.KafkaWireError, OSError))


# ---- network ---------------------------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")
    return p


BLACKHOLE_METRIC = "4077"  # marks the suite's blackhole routes for stale cleanup


class Topology:
    """Where each node and the controller live; see the module docstring."""

    def __init__(self, n: int):
        self.n = n
        self.can_cut = False
        self.reason = ""
        self.tag = f"sc{os.getpid()}"
        self.x: int | None = None
        self._created: list[tuple[str, ...]] = []  # teardown commands, newest last
        self._host_ports: dict[int, int] = {}
        self.controller_port: int | None = None

    # -- setup and teardown

    def setup(self):
        why = self._netns_unavailable()
        if why:
            self._loopback(why)
            return self
        try:
            cleanup_stale()
            self._netns()
            self.can_cut = True
        except Exception as e:  # fall back, but say why
            self.teardown()
            self.x = None
            self._loopback(f"network namespaces failed: {e}")
        return self

    @staticmethod
    def _netns_unavailable() -> str:
        if os.environ.get("STRATA_CLUSTER_NETNS", "1") == "0":
            return "STRATA_CLUSTER_NETNS=0"
        if os.geteuid() != 0:
            return "not root"
        if subprocess.run(["sh", "-c", "command -v ip"], capture_output=True).returncode != 0:
            return "no `ip` command"
        return ""

    def _loopback(self, why: str):
        self.can_cut = False
        self.reason = f"network namespaces unavailable ({why}); all processes on 127.0.0.1"
        self._host_ports = {i: free_port() for i in range(1, self.n + 1)}
        self.controller_port = free_port()

    @staticmethod
    def _pick_x() -> int:
        used = _ip("-4", "-o", "addr").stdout + _ip("-4", "route", "show", "table", "all").stdout
        taken = {int(m) for m in re.findall(r"\b10\.(\d+)\.", used)}
        free = [x for x in range(100, 250) if x not in taken]
        if not free:
            raise RuntimeError("no free 10.X.0.0/16 range")
        return random.choice(free)

    def _netns(self):
        self.x = x = self._pick_x()
        subprocess.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], check=True,
                       capture_output=True)
        _ip("route", "add", "blackhole", f"10.{x}.0.0/16", "metric", BLACKHOLE_METRIC)
        self._created.append(("route", "del", "blackhole", f"10.{x}.0.0/16", "metric",
                              BLACKHOLE_METRIC))
        _ip("addr", "add", f"10.{x}.0.1/32", "dev", "lo", "label", f"lo:{self.tag}")
        self._created.append(("addr", "del", f"10.{x}.0.1/32", "dev", "lo"))
        for i in range(1, self.n + 1):
            ns, host_if, node_if = self.netns(i), self.host_if(i), f"{self.tag}n{i}"
            _ip("netns", "add", ns)
            self._created.append(("netns", "del", ns))
            _ip("link", "add", host_if, "type", "veth", "peer", "name", node_if)
            self._created.append(("link", "del", host_if))
            _ip("link", "set", node_if, "netns", ns)
            _ip("addr", "add", f"10.{x}.{i}.1/24", "dev", host_if)
            _ip("link", "set", host_if, "up")
            _ip("-n", ns, "addr", "add", f"10.{x}.{i}.2/24", "dev", node_if)
            _ip("-n", ns, "link", "set", node_if, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "route", "add", "default", "via", f"10.{x}.{i}.1")
        self.controller_port = free_port(f"10.{x}.0.1")

    def teardown(self):
        while self._created:
            _ip(*self._created.pop(), check=False)

    # -- addresses

    def netns(self, i: int) -> str:
        return f"strata-{os.getpid()}-{i}"

    def host_if(self, i: int) -> str:
        return f"{self.tag}h{i}"

    def node_addr(self, i: int) -> str:
        """HOST:PORT node i listens on, advertises, and clients use."""
        if self.x is None:
            return f"127.0.0.1:{self._host_ports[i]}"
        return f"10.{self.x}.{i}.2:9092"

    def controller_host(self) -> str:
        return "127.0.0.1" if self.x is None else f"10.{self.x}.0.1"

    def controller_listen(self) -> str:
        return f"{self.controller_host()}:{self.controller_port}"

    def wrap(self, i: int, argv: list[str]) -> list[str]:
        """argv run inside node i's namespace (`ip netns exec` execs: the pid is the node's)."""
        if self.x is None:
            return argv
        return ["ip", "netns", "exec", self.netns(i), *argv]

    # -- faults

    def cut(self, i: int):
        assert self.can_cut, self.reason
        _ip("link", "set", self.host_if(i), "down")

    def heal(self, i: int):
        if self.can_cut:
            _ip("link", "set", self.host_if(i), "up")

    def heal_all(self):
        for i in range(1, self.n + 1):
            self.heal(i)

    def describe(self) -> str:
        if not self.can_cut:
            return self.reason
        return (f"node i in netns strata-{os.getpid()}-i at 10.{self.x}.i.2:9092, "
                f"controller on {self.controller_listen()}")


def cleanup_stale():
    """Remove namespaces, links, lo addresses and blackhole routes left by a run whose pytest
    process is gone (killed before its teardown ran). A live run's plumbing is left alone."""
    for name in _ip("netns", "list", check=False).stdout.split():
        m = re.fullmatch(r"strata-(\d+)-\d+", name)
        if m and not pid_alive(int(m.group(1))):
            _ip("netns", "del", name, check=False)
    for m in re.finditer(r"^\d+: (sc(\d+)h\d+)@", _ip("-o", "link", check=False).stdout, re.M):
        if not pid_alive(int(m.group(2))):
            _ip("link", "del", m.group(1), check=False)
    for line in _ip("-4", "-o", "addr", "show", "dev", "lo", check=False).stdout.splitlines():
        m = re.search(r"inet (10\.\d+\.0\.1/32) .*lo:sc(\d+)", line)
        if m and not pid_alive(int(m.group(2))):
            _ip("addr", "del", m.group(1), "dev", "lo", check=False)
    addrs = _ip("-4", "-o", "addr", check=False).stdout
    for m in re.finditer(rf"blackhole (10\.(\d+)\.0\.0/16) metric {BLACKHOLE_METRIC}",
                         _ip("-4", "route", check=False).stdout):
        if f"inet 10.{m.group(2)}." not in addrs:
            _ip("route", "del", "blackhole", m.group(1), "metric", BLACKHOLE_METRIC, check=False)


# ---- processes -------------------------------------------------------------------------------


def _cluster_env() -> dict:
    return {"RUST_LOG": os.environ.get("RUST_LOG", os.environ.get("STRATA_CLUSTER_RUST_LOG", "info")),
            "NO_COLOR": os.environ.get("NO_COLOR", "1")}


class Controller(Proc):
    def __init__(self, topo: Topology, workdir: Path, args: dict):
        self.listen = topo.controller_listen()
        self.state_dir = workdir / "controller-state"
        argv = [str(operator_bin()), "local", "--state-dir", str(self.state_dir),
                "--listen", self.listen]
        for k, v in args.items():
            argv += [k, str(v)]
        super().__init__("controller", argv, workdir / "controller.log", _cluster_env())

    def wait_ready(self, timeout: float = 30):
        def ready():
            if not self.running():
                raise AssertionError(self.exited_message())
            return "controller listening on" in self.log_since_start()

        wait_for(ready, timeout, "the controller's 'controller listening on' log line")


class Node(Proc):
    def __init__(self, topo: Topology, i: int, workdir: Path, controller: Controller, args: dict):
        self.id = i
        self.addr = topo.node_addr(i)
        self.data_dir = workdir / f"node{i}"
        host, port = kwire.split_addr(self.addr)
        # /metrics and /ready: beside the Kafka port (in a namespace every port is free).
        self.metrics_addr = f"{host}:{port + 1000 if topo.x is not None else free_port()}"
        argv = [str(node_bin()), "--node-id", str(i),
                "--controller", f"http://{controller.listen}",
                "--listen", self.addr, "--advertise", self.addr, "--data-dir", str(self.data_dir),
                "--metrics-listen", self.metrics_addr]
        for k, v in args.items():
            # A callable value is per node: v(node id, its address).
            argv += [k, str(v(i, self.addr) if callable(v) else v)]
        super().__init__(f"node{i}", topo.wrap(i, argv), workdir / f"node{i}.log", _cluster_env())

    def wait_listening(self, timeout: float = 60):
        host, port = kwire.split_addr(self.addr)

        def up():
            if not self.running():
                raise AssertionError(self.exited_message())
            return port_open(port, host)

        wait_for(up, timeout, f"{self.name} to listen on {self.addr}")

    def ready(self) -> tuple[int, str]:
        """(HTTP status, body) of GET /ready, the pod readiness the operator configures."""
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://{self.metrics_addr}/ready", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except (urllib.error.URLError, OSError) as e:  # not listening yet, or gone
            return 0, str(e)

    def metric(self, name: str) -> float:
        """The sum of every sample of metric `name` on GET /metrics (0 when absent)."""
        import urllib.request
        with urllib.request.urlopen(f"http://{self.metrics_addr}/metrics", timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total


# ---- the cluster -----------------------------------------------------------------------------


def _key(parts: dict[int, kwire.Partition]) -> dict:
    return {p: (s.leader, s.leader_epoch, sorted(s.isr), sorted(s.replicas))
            for p, s in parts.items()}


class Cluster:
    """A controller and n nodes. Timing defaults are short so that failures show fast."""

    SESSION_TIMEOUT_MS = 3000
    HEARTBEAT_MS = 250
    LAG_MS = 3000

    def __init__(self, topo: Topology, workdir: Path, n: int = 3,
                 offsets_rf: int = 3, offsets_partitions: int = 5, node_args: dict | None = None,
                 controller_args: dict | None = None):
        self.topo = topo
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        cargs = {
            "--session-timeout-ms": self.SESSION_TIMEOUT_MS,
            "--heartbeat-interval-ms": self.HEARTBEAT_MS,
            "--default-replication-factor": 3,
            "--offsets-topic-replication-factor": offsets_rf,
            "--offsets-topic-num-partitions": offsets_partitions,
        }
        # None drops a flag (the controller's own default applies).
        cargs.update(controller_args or {})
        self.controller = Controller(topo, workdir, {k: v for k, v in cargs.items() if v is not None})
        args = {"--replica-lag-time-max-ms": self.LAG_MS, "--group-initial-rebalance-delay-ms": 0}
        args.update(node_args or {})
        self.nodes = {i: Node(topo, i, workdir, self.controller, args) for i in range(1, n + 1)}

    @property
    def procs(self) -> list[Proc]:
        return [self.controller, *self.nodes.values()]

    def bootstrap(self, exclude=()) -> str:
        return ",".join(n.addr for i, n in self.nodes.items() if i not in exclude)

    def start(self, timeout: float = 60):
        self.controller.start()
        self.controller.wait_ready()
        for n in self.nodes.values():
            n.start()
        for n in self.nodes.values():
            n.wait_listening(timeout)
        self.wait_brokers(set(self.nodes), timeout)
        return self

    def wait_brokers(self, ids: set[int], timeout: float = 60, via=None):
        """Until every node in `via` (default: ids) lists exactly `ids` as brokers."""
        via = ids if via is None else via
        wait_for(lambda: all(set(self.metadata(v, []).brokers) == ids for v in via),
                 timeout, lambda: f"nodes {sorted(via)} to list brokers {sorted(ids)}; "
                                  f"they list {self._brokers_seen(via)}")

    def _brokers_seen(self, via) -> dict:
        out = {}
        for v in via:
            try:
                out[v] = sorted(self.metadata(v, [], timeout=2).brokers)
            except kwire.KafkaWireError as e:
                out[v] = str(e)
        return out

    def stop(self):
        """Teardown: every process dies (stopped ones too), every cut link comes back."""
        for p in self.procs:
            p.kill()
        self.topo.heal_all()

    # -- views of the metadata

    def metadata(self, i: int, topics=None, timeout: float = 3.0) -> kwire.Metadata:
        return kwire.metadata(self.nodes[i].addr, topics, timeout=timeout)

    def agreed(self, topic: str, via) -> dict[int, kwire.Partition] | None:
        """{partition: state} if every node in via reports the same leader, leader epoch,
        ISR and replicas for every partition of the topic, else None."""
        views = []
        for v in via:
            t = self.metadata(v, [topic]).topics.get(topic)
            if t is None or t.error != 0 or not t.partitions:
                return None
            views.append(t.partitions)
        return views[0] if all(_key(v) == _key(views[0]) for v in views) else None

    def describe(self, topic: str, via=None) -> str:
        """Every node's view of the topic, for failure messages."""
        lines = []
        for v in sorted(via or self.nodes):
            try:
                t = self.metadata(v, [topic], timeout=2).topics.get(topic)
                if t is None or t.error:
                    lines.append(f"node {v}: {t and kwire.error_name(t.error)}")
                    continue
                parts = ", ".join(f"p{p} leader {s.leader} epoch {s.leader_epoch} "
                                  f"isr {sorted(s.isr)}" for p, s in sorted(t.partitions.items()))
                lines.append(f"node {v}: {parts}")
            except kwire.KafkaWireError as e:
                lines.append(f"node {v}: {e}")
        return "; ".join(lines)

    def wait_partitions(self, topic: str, cond, via, timeout: float, what: str):
        """Until the nodes in via agree on the topic and cond({p: state}) holds; returns it."""
        def check():
            st = self.agreed(topic, via)
            return st if st is not None and cond(st) else None

        return wait_for(check, timeout, lambda: f"{what}; views: {self.describe(topic, via)}")

    def wait_full_isr(self, topic: str, members=None, timeout: float = 60, via=None):
        """Until every partition is led by one of `members` with exactly `members` in sync."""
        members = set(self.nodes) if members is None else set(members)
        via = members if via is None else via
        return self.wait_partitions(
            topic, lambda st: all(set(s.isr) == members and s.leader in members
                                  for s in st.values()),
            via, timeout, f"{topic}: every partition led with ISR {sorted(members)}")

    # -- reports

    def log_tails(self, n: int = 60) -> list[tuple[str, str]]:
        return [(f"{p.name} log ({p.log_path})", p.log_tail(n)) for p in self.procs]

    def stacks(self) -> list[tuple[str, str]]:
        """The stacks of every running node (gdb), for a failure report: a node that stops
        answering shows what it waits on."""
        out = []
        for n in self.nodes.values():
            text = n.stacks()
            if text:
                out.append((f"{n.name} stacks ({n.log_path.with_suffix('.stacks')})", text))
        return out


def create_topic(bootstrap: str, name: str, partitions: int, rf: int, config: dict | None = None,
                 timeout: float = 30):
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": bootstrap})
    a.create_topics([NewTopic(name, partitions, rf, config=config or {})])[name].result(timeout)


def write_report(key: str, value, local: Path | None = None):
    """Merge {key: value} into the JSON file $STRATA_CLUSTER_REPORT and into `local`."""
    for path in filter(None, [os.environ.get("STRATA_CLUSTER_REPORT"), local]):
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            data = {}
        data[key] = value
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
