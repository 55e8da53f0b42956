"""Fixtures of the Kubernetes suite: the real one-node cluster of tests/testbed/k8s.sh (pods
run, Services resolve), the images of tests/testbed/images.sh, the chart from charts/strata.

run.sh starts the cluster, builds and loads the images and runs pytest under CLIENT_EXEC, so
this process (and every Kafka client it makes) resolves *.svc.cluster.local and reaches pod
and Service IPs. The images come in as NODE_IMAGE / OPERATOR_IMAGE."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import pytest
import strata_testlib
import yaml
from strata_testlib import HELM, REPO, Kubectl, Result, condition, helm_home_env, run

ROOT = REPO
HERE = ROOT / "tests" / "k8s"
CHART = ROOT / "charts" / "strata"
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


# kubectl against a real cluster: poll every half second, not the library's 0.2 s.
wait_for = functools.partial(strata_testlib.wait_for, every=0.5)


class Kube(Kubectl):
    def __init__(self, kubeconfig: str):
        super().__init__(kubeconfig, timeout=120)
        self.env.update(helm_home_env())

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
