"""Fixtures of the Kubernetes suite: the real one-node cluster of tests/testbed/k8s.sh (pods
run, Services resolve), the images of tests/testbed/images.sh, the chart from charts/strata.

run.sh starts the cluster, builds and loads the images and runs pytest under CLIENT_EXEC, so
this process (and every Kafka client it makes) resolves *.svc.cluster.local and reaches pod
and Service IPs. The images come in as NODE_IMAGE / OPERATOR_IMAGE."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "k8s"
CHART = ROOT / "charts" / "strata"
CACHE = Path(os.environ.get("STRATA_CACHE", Path.home() / ".cache" / "strata-testbed"))
HELM = os.environ.get("HELM", str(CACHE / "helm" / "bin" / "helm"))
KUBECTL = os.environ.get("KUBECTL", str(CACHE / "kube" / "bin" / "kubectl"))
NAMESPACE = os.environ.get("K8S_NAMESPACE", "strata-k8s")
RELEASE = "strata"
# tests/cluster/load.py: the idempotent acks=all producer that records every ack.
sys.path.insert(0, str(ROOT / "tests" / "cluster"))

TIMINGS: list[tuple[str, float]] = []


def timing(what: str, seconds: float) -> None:
    """A measured time, printed in the summary at the end and written to $K8S_TIMINGS."""
    TIMINGS.append((what, seconds))
    out = os.environ.get("K8S_TIMINGS")
    if out:
        with open(out, "a") as f:
            f.write(f"{what}\t{seconds:.1f}\n")


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.write_sep("-", "timings")
        for what, s in TIMINGS:
            terminalreporter.write_line(f"{s:8.1f} s  {what}")


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run(cmd: list[str], *, env: dict | None = None, check: bool = True, input: str | None = None,
        timeout: float = 120) -> Result:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, input=input, timeout=timeout)
    r = Result(p.returncode, p.stdout, p.stderr)
    if check and r.rc != 0:
        pytest.fail(f"{' '.join(cmd)} exited {r.rc}:\n{r.text}")
    return r


def wait_for(what: str, predicate, timeout: float = 60, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class Kube:
    def __init__(self, kubeconfig: str):
        self.kubeconfig = kubeconfig
        self.env = dict(os.environ, KUBECONFIG=kubeconfig)
        for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"),
                         ("HELM_DATA_HOME", "data")):
            self.env[var] = str(CACHE / "helm" / "home" / sub)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 120) -> Result:
        return run([KUBECTL, *args], env=self.env, check=check, input=input, timeout=timeout)

    def k(self, *args: str, **kw) -> Result:
        """kubectl in the test namespace."""
        return self.kubectl("-n", NAMESPACE, *args, **kw)

    def get(self, *args: str) -> dict | None:
        r = self.k("get", *args, "-o", "json", check=False)
        if r.rc != 0:
            if "NotFound" in r.err:
                return None
            pytest.fail(f"kubectl get {' '.join(args)}: {r.text}")
        return json.loads(r.out)

    def apply(self, obj: dict | str, check: bool = True) -> Result:
        text = obj if isinstance(obj, str) else yaml.safe_dump(obj)
        return self.k("apply", "-f", "-", input=text, check=check)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> Result:
        return run([HELM, *args], env=self.env, check=check, timeout=timeout)

    def pods(self, selector: str) -> list[dict]:
        return (self.get("pods", "-l", selector) or {}).get("items", [])


def condition(obj: dict | None, type_: str) -> dict | None:
    for c in ((obj or {}).get("status") or {}).get("conditions", []) or []:
        if c["type"] == type_:
            return c
    return None


def pod_ready(p: dict) -> bool:
    return (p.get("status", {}).get("phase") == "Running"
            and (condition(p, "Ready") or {}).get("status") == "True"
            and p["metadata"].get("deletionTimestamp") is None)


@pytest.fixture(scope="session")
def kube() -> Kube:
    kc = os.environ.get("KUBECONFIG")
    if not kc or not Path(kc).is_file():
        pytest.fail("KUBECONFIG is not set: run tests/k8s/run.sh (it starts tests/testbed/k8s.sh)")
    k = Kube(kc)
    k.kubectl("get", "namespace", NAMESPACE, check=False).rc == 0 or k.kubectl(
        "create", "namespace", NAMESPACE)
    return k


@pytest.fixture(scope="session")
def images() -> dict:
    node, op = os.environ.get("NODE_IMAGE"), os.environ.get("OPERATOR_IMAGE")
    if not node or not op:
        pytest.fail("NODE_IMAGE / OPERATOR_IMAGE not set: run tests/k8s/run.sh (images.sh)")
    return {"node": node, "operator": op}


def split_ref(ref: str) -> tuple[str, str]:
    repo, _, tag = ref.rpartition(":")
    return repo, tag
