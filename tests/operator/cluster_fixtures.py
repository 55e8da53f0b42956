"""Cluster-suite helpers: one `strata-operator kubernetes` reconciling Cluster resources, and a
stand-in kubelet that runs a StatefulSet's pods as local strata-node processes.

There is no kubelet or StatefulSet controller in the test bed (an API server only), so
`Kubelet` reads the StatefulSet the operator applied and starts pod `<sts>-<ordinal>` the way a
kubelet would: the container's args with `$(VAR)` expanded from its env, the env resolved
(downward-API fieldRefs, ConfigMap and Secret key references). Only what cannot work on one
machine is rewritten afterwards, and the rewritten flags are checked first: the listen and
advertised addresses (a loopback port per pod instead of the pod IP and cluster DNS), the data
and metrics locations.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

from strata_testlib import Proc, binary, free_port, wait_for

VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(s: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion: defined variables are replaced, others left as is."""
    return VAR.sub(lambda m: env.get(m.group(1), m.group(0)), s)


def flag(args: list[str], name: str) -> str:
    """The value of `name` in an args list (`--x v` or `--x=v`)."""
    for i, a in enumerate(args):
        if a == name:
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    raise KeyError(name)


def set_flag(args: list[str], name: str, value: str) -> list[str]:
    out = list(args)
    for i, a in enumerate(out):
        if a == name:
            out[i + 1] = value
            return out
        if a.startswith(name + "="):
            out[i] = f"{name}={value}"
            return out
    return out + [name, value]


class Operator:
    """One operator replica leading in namespace `ns`; nodes reach it on a loopback port."""

    def __init__(self, workdir: Path, kubeconfig: str, ns: str, identity: str = "operator-0"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.identity = identity
        args = [
            binary("strata-operator"), "kubernetes",
            "--namespace", ns,
            "--listen", f"127.0.0.1:{self.port}",
            "--identity", identity,
            "--controller-url", self.url,
            "--node-image", "registry.test/strata-node:e2e",
            "--lease-duration-ms", "6000",
            "--session-timeout-ms", "3000",
            "--heartbeat-interval-ms", "250",
            "--offsets-topic-num-partitions", "6",
            "--max-partition-moves", "4",
        ]
        self.proc = Proc(identity, args, workdir / f"{identity}.log", {"KUBECONFIG": kubeconfig})

    def start(self) -> "Operator":
        self.proc.start()
        wait_for(lambda: "controller listening on" in self.proc.log_text(), 60, "the operator to lead")
        return self


class Kubelet:
    """Runs the pods of StatefulSet `name` as strata-node processes."""

    def __init__(self, kube, ns: str, name: str, workdir: Path):
        self.kube, self.ns, self.name, self.dir = kube, ns, name, workdir
        self.pods: dict[int, Proc] = {}
        self.kafka_ports: dict[int, int] = {}
        self.listener_ports: dict[int, dict[str, int]] = {}
        # What each pod was asked to run, after expansion and before the loopback rewrite.
        self.specified: dict[int, tuple[list[str], dict[str, str]]] = {}

    def statefulset(self) -> dict:
        return self.kube.get("statefulset", self.name, self.ns)

    def _resolve(self, env_spec: list[dict], ordinal: int) -> dict[str, str]:
        pod = f"{self.name}-{ordinal}"
        labels = {"apps.kubernetes.io/pod-index": str(ordinal),
                  "statefulset.kubernetes.io/pod-name": pod}
        env: dict[str, str] = {}
        for e in env_spec:
            if "value" in e:
                env[e["name"]] = expand(e["value"], env)
                continue
            src = e["valueFrom"]
            if "fieldRef" in src:
                path = src["fieldRef"]["fieldPath"]
                m = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
                if path == "metadata.name":
                    env[e["name"]] = pod
                elif path == "metadata.namespace":
                    env[e["name"]] = self.ns
                elif m:
                    env[e["name"]] = labels[m.group(1)]
                else:
                    raise AssertionError(f"unsupported fieldRef {path}")
            elif "configMapKeyRef" in src:
                r = src["configMapKeyRef"]
                env[e["name"]] = self.kube.get("configmap", r["name"], self.ns)["data"][r["key"]]
            elif "secretKeyRef" in src:
                r = src["secretKeyRef"]
                data = self.kube.get("secret", r["name"], self.ns)["data"]
                env[e["name"]] = base64.b64decode(data[r["key"]]).decode()
            else:
                raise AssertionError(f"unsupported env source {src}")
        return env

    def start(self, ordinal: int) -> Proc:
        sts = self.statefulset()
        container = sts["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["strata-node"], container.get("command")
        env = self._resolve(container.get("env", []), ordinal)
        args = [expand(a, env) for a in container["args"]]
        self.specified[ordinal] = (args, env)
        port = self.kafka_ports.setdefault(ordinal, free_port())
        if "--listeners" in args:
            # Named listeners: the clients' one on the pod's Kafka port, the others on their own.
            ports = self.listener_ports.setdefault(ordinal, {})
            names = [e.split("://", 1)[0] for e in flag(args, "--listeners").split(",")]
            for n in names:
                ports.setdefault(n, port if n == "CLIENTS" else free_port())
            endpoints = ",".join(f"{n}://127.0.0.1:{ports[n]}" for n in names)
            local = set_flag(args, "--listeners", endpoints)
            local = set_flag(local, "--advertised-listeners", endpoints)
        else:
            local = set_flag(args, "--listen", f"127.0.0.1:{port}")
            local = set_flag(local, "--advertise", f"127.0.0.1:{port}")
        local = self._mount_secrets(container, sts, local, ordinal)
        local = set_flag(local, "--data-dir", str(self.dir / f"{self.name}-{ordinal}"))
        local = set_flag(local, "--metrics-listen", f"127.0.0.1:{free_port()}")
        local += ["--replica-lag-time-max-ms", "3000", "--group-initial-rebalance-delay-ms", "0",
                  "--offsets-topic-partitions", "6"]
        p = Proc(f"{self.name}-{ordinal}", [binary("strata-node"), *local],
                 self.dir / f"{self.name}-{ordinal}.log", env)
        self.pods[ordinal] = p.start()
        return p

    def _mount_secrets(self, container: dict, sts: dict, args: list[str], ordinal: int) -> list[str]:
        """Secret volumes: their keys written to a directory of the pod's, and args naming files
        under the mount path pointed there."""
        volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"].get("volumes", [])}
        for m in container.get("volumeMounts", []):
            secret = volumes.get(m["name"], {}).get("secret")
            if not secret:
                continue
            d = self.dir / f"{self.name}-{ordinal}-volumes" / m["name"]
            d.mkdir(parents=True, exist_ok=True)
            data = self.kube.get("secret", secret["secretName"], self.ns).get("data", {})
            for k, v in data.items():
                (d / k).write_bytes(base64.b64decode(v))
            prefix = m["mountPath"].rstrip("/") + "/"
            args = [str(d / a[len(prefix):]) if a.startswith(prefix) else a for a in args]
        return args

    def sync(self) -> int:
        """Runs pods 0..replicas-1 and stops the others, as the StatefulSet asks; returns
        the replica count."""
        want = self.statefulset()["spec"]["replicas"]
        for i in range(want):
            if i not in self.pods or not self.pods[i].running():
                self.start(i)
        for i in [i for i in self.pods if i >= want]:
            self.pods.pop(i).stop()
        return want

    @property
    def bootstrap(self) -> list[str]:
        return [f"127.0.0.1:{p}" for i, p in sorted(self.kafka_ports.items()) if i in self.pods]

    def close(self):
        for p in self.pods.values():
            p.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail(30)}" for p in self.pods.values())
