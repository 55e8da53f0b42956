"""Fixtures for the operator suite: one kube-apiserver (with etcd) for the session, started by
tests/testbed/kube.sh in a temporary directory, with the committed CRDs (crds/*.yaml) applied;
a fresh namespace per test. Everything goes through kubectl, as a user's edits would.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from strata_testlib import REPO, TESTBED, Kubectl, Result

KUBE_SH = TESTBED / "kube.sh"
CRDS = sorted((REPO / "crds").glob("*.yaml"))


class Kube(Kubectl):
    """kubectl against the test API server."""

    def create(self, obj: dict, ns: str, check: bool = True) -> Result:
        return self.kubectl("create", "-n", ns, "-o", "json", "-f", "-", input=json.dumps(obj),
                            check=check)

    def replace(self, obj: dict, ns: str, check: bool = True) -> Result:
        return self.kubectl("replace", "-n", ns, "-o", "json", "-f", "-", input=json.dumps(obj),
                            check=check)

    def merge_patch(self, kind: str, name: str, ns: str, patch: dict, check: bool = True,
                    subresource: str | None = None) -> Result:
        args = ["patch", kind, name, "-n", ns, "--type", "merge", "-p", json.dumps(patch), "-o", "json"]
        if subresource:
            args += ["--subresource", subresource]
        return self.kubectl(*args, check=check)

    def get(self, kind: str, name: str, ns: str) -> dict:
        return self.kubectl("get", kind, name, "-n", ns, "-o", "json").json()


@pytest.fixture(scope="session")
def kube(tmp_path_factory) -> Kube:
    """An API server with the CRDs established."""
    assert CRDS, "crds/ holds no YAML: run `cargo run -p strata-operator --bin crdgen`"
    d = tmp_path_factory.mktemp("kube")
    p = subprocess.run(["bash", str(KUBE_SH), "start", str(d)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.fail(f"kube.sh start failed:\n{p.stderr[-3000:]}", pytrace=False)
    kubeconfig = p.stdout.strip().splitlines()[-1]
    try:
        k = Kube(kubeconfig)
        k.kubectl("apply", *[a for f in CRDS for a in ("-f", str(f))])
        k.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                  *[f"crd/{f.stem}" for f in CRDS])
        yield k
    finally:
        subprocess.run(["bash", str(KUBE_SH), "stop", str(d)], capture_output=True, text=True)


_namespaces = iter(range(1, 1_000_000))


@pytest.fixture
def ns(kube: Kube) -> str:
    """A namespace of this test's own (never deleted: there is no namespace controller)."""
    name = f"t{next(_namespaces)}"
    kube.kubectl("create", "namespace", name)
    return name


@pytest.fixture
def operator(kube, ns, tmp_path):
    """One operator replica leading in the test's namespace."""
    from cluster_fixtures import Operator
    op = Operator(tmp_path, kube.env["KUBECONFIG"], ns)
    try:
        yield op.start()
    finally:
        print(f"--- {op.proc.name} ---\n{op.proc.log_tail(60)}")
        op.proc.kill()


@pytest.fixture
def kubelet(kube, ns, tmp_path):
    """The stand-in kubelet of Cluster `strata`'s StatefulSet."""
    from cluster_fixtures import Kubelet
    k = Kubelet(kube, ns, "strata", tmp_path)
    try:
        yield k
    finally:
        print(k.logs())
        k.close()
