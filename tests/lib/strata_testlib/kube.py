"""Commands, kubectl and helm: a finished command as a Result; Kubectl, kubectl with one
kubeconfig (the suites subclass it with their own verbs); helm's state directories; reading a
Kubernetes object's conditions."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass

from .paths import CACHE, KUBECTL


@dataclass
class Result:
    """A finished command."""

    rc: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def text(self) -> str:
        return self.out + self.err

    def json(self):
        return json.loads(self.out)


def run(cmd: list[str], *, env: dict | None = None, check: bool = True, input: str | None = None,
        timeout: float = 60) -> Result:
    """Run a command to completion; with check, fail (AssertionError) with its output when it
    exits non-zero. A command that outlives timeout raises subprocess.TimeoutExpired."""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, input=input, timeout=timeout)
    r = Result(p.returncode, p.stdout, p.stderr)
    if check and not r.ok:
        raise AssertionError(f"{shlex.join(map(str, cmd))} exited {r.rc}:\n{r.text}")
    return r


class Kubectl:
    """kubectl (tests/testbed/kube.sh's, or $KUBECTL) against one kubeconfig."""

    def __init__(self, kubeconfig: str, *, env: dict | None = None, timeout: float = 60,
                 kubectl: str = KUBECTL):
        self.kubeconfig = str(kubeconfig)
        self.kubectl_bin = kubectl
        self.env = dict(os.environ if env is None else env, KUBECONFIG=self.kubeconfig)
        self.timeout = timeout

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float | None = None, kubeconfig: str | None = None) -> Result:
        """kubectl ARGS; `kubeconfig` acts as another user for this one call."""
        env = self.env if kubeconfig is None else dict(self.env, KUBECONFIG=kubeconfig)
        return run([self.kubectl_bin, *args], env=env, check=check, input=input,
                   timeout=self.timeout if timeout is None else timeout)


def helm_home_env() -> dict[str, str]:
    """Environment that keeps helm's own state (repositories, cache) in the test-bed cache,
    out of the user's home."""
    return {var: str(CACHE / "helm" / "home" / sub)
            for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"),
                             ("HELM_DATA_HOME", "data"))}


def condition(obj: dict | None, type_: str) -> dict | None:
    """The condition of type type_ in a Kubernetes object's status, or None."""
    for c in ((obj or {}).get("status") or {}).get("conditions", []) or []:
        if c["type"] == type_:
            return c
    return None


def controller_state(kubectl: Kubectl, ns: str, name: str = "strata-controller-state") -> dict | None:
    """The controller's metadata as the operator stored it in namespace `ns`: the snapshot
    the head Secret's manifest names, with the log entries after it replayed (the format of
    operator/src/k8s/store.rs, read independently of the Rust code). Also reads the single
    `state.json` document of earlier versions. None when nothing is stored."""
    import base64
    import gzip
    import json

    r = kubectl.kubectl("get", "secret", "-n", ns, "-l", f"strata.dev/controller-state={name}",
                        "-o", "json")
    objects = {o["metadata"]["name"]: o for o in r.json()["items"]}
    head = kubectl.kubectl("get", "secret", name, "-n", ns, "-o", "json", check=False)
    if not head.ok:
        return None
    data = head.json().get("data", {})
    if "state.json" in data:
        return json.loads(base64.b64decode(data["state.json"]))
    if "manifest.json" not in data:
        return None

    def field(obj_name: str, key: str) -> bytes:
        o = objects.get(obj_name) or kubectl.kubectl("get", "secret", obj_name, "-n", ns, "-o",
                                                     "json").json()
        return base64.b64decode(o["data"][key])

    def snapshot(ref: dict) -> dict:
        gz = b"".join(field(c["name"], "chunk.json.gz") for c in ref["chunks"])
        return json.loads(gzip.decompress(gz))

    manifest = json.loads(base64.b64decode(data["manifest.json"]))
    state = snapshot(manifest["snapshot"])
    entries = sorted(
        (e for e in (json.loads(gzip.decompress(base64.b64decode(o["data"]["entry.json.gz"])))
                     for o in objects.values()
                     if o["metadata"]["labels"].get("strata.dev/state-part") == "log")
         if e["seq"] > manifest["snapshot"]["seq"]),
        key=lambda e: e["seq"])
    for e in entries:
        if "snapshot" in e:
            state = snapshot(e["snapshot"])
            continue
        _apply(state, e["delta"])
    return state


def _apply(state: dict, delta: dict) -> None:
    """Replays one Delta (operator/controller/src/core/delta.rs) onto a state document."""
    assert state["version"] == delta["from"], (state["version"], delta["from"])
    for c in delta["changes"]:
        kind = c["kind"]
        if kind == "cluster_id":
            state["cluster_id"] = c["cluster_id"]
        elif kind == "counters":
            state["next_broker_epoch"] = c["next_broker_epoch"]
            state["producer_id_block_end"] = c["producer_id_block_end"]
        elif kind == "placement":
            state["excluded_nodes"] = c["excluded_nodes"]
            state["balanced_for"] = c["balanced_for"]
        elif kind == "node":
            nodes = state.setdefault("nodes", {})
            if c["record"] is None:
                nodes.pop(str(c["id"]), None)
            else:
                nodes[str(c["id"])] = c["record"]
        elif kind == "topic":
            topics = state.setdefault("topics", {})
            meta = c["meta"]
            if meta is None:
                topics.pop(c["name"], None)
                continue
            t = topics.get(c["name"])
            if t is None or t["topic_id"] != meta["topic_id"]:
                t = topics[c["name"]] = {"partitions": []}
            t.update(topic_id=meta["topic_id"], configs=meta["configs"], internal=meta["internal"])
            t["partitions"] = (t["partitions"] + [None] * meta["partitions"])[:meta["partitions"]]
        elif kind == "partition":
            state["topics"][c["topic"]]["partitions"][c["index"]] = c["record"]
        elif kind == "scram":
            creds = state.setdefault("scram_credentials", {})
            if c["credentials"] is None:
                creds.pop(c["user"], None)
            else:
                creds[c["user"]] = c["credentials"]
        elif kind == "acl":
            acls = [a for a in state.get("acls", []) if a != c["binding"]]
            state["acls"] = acls + [c["binding"]] if c["present"] else acls
        elif kind == "quota":
            quotas = [q for q in state.get("client_quotas", []) if q["entity"] != c["entity"]]
            if c["quotas"] is not None:
                quotas.append({"entity": c["entity"], "quotas": c["quotas"]})
            state["client_quotas"] = quotas
        else:
            raise AssertionError(f"unknown change kind {kind!r}")
    state["version"] = delta["to"]
