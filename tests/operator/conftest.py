"""Fixtures for the operator suite: one kube-apiserver (with etcd) for the session, started by
tests/testbed/kube.sh in a temporary directory, with the committed CRDs (crds/*.yaml) applied;
a fresh namespace per test. Everything goes through kubectl, as a user's edits would.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KUBE_SH = REPO / "tests" / "testbed" / "kube.sh"
CRDS = sorted((REPO / "crds").glob("*.yaml"))


@dataclass
class Result:
    """A finished kubectl command."""

    rc: int
    out: str
    err: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def json(self):
        return json.loads(self.out)


class Kube:
    """kubectl against the test API server."""

    def __init__(self, kubectl: str, kubeconfig: str):
        self.kubectl = kubectl
        self.env = dict(os.environ, KUBECONFIG=kubeconfig)

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> Result:
        p = subprocess.run(
            [self.kubectl, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        r = Result(p.returncode, p.stdout, p.stderr)
        if check and not r.ok:
            raise AssertionError(f"kubectl {shlex.join(args)} failed ({r.rc}): {r.err.strip()}")
        return r

    def create(self, obj: dict, ns: str, check: bool = True) -> Result:
        return self.run("create", "-n", ns, "-o", "json", "-f", "-", stdin=json.dumps(obj), check=check)

    def replace(self, obj: dict, ns: str, check: bool = True) -> Result:
        return self.run("replace", "-n", ns, "-o", "json", "-f", "-", stdin=json.dumps(obj), check=check)

    def merge_patch(self, kind: str, name: str, ns: str, patch: dict, check: bool = True,
                    subresource: str | None = None) -> Result:
        args = ["patch", kind, name, "-n", ns, "--type", "merge", "-p", json.dumps(patch), "-o", "json"]
        if subresource:
            args += ["--subresource", subresource]
        return self.run(*args, check=check)

    def get(self, kind: str, name: str, ns: str) -> dict:
        return self.run("get", kind, name, "-n", ns, "-o", "json").json()


def _kubectl_path() -> str:
    env = subprocess.run(["bash", str(KUBE_SH), "env"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"KUBECTL=(\S+)", env)
    assert m, f"kube.sh env printed no KUBECTL: {env!r}"
    return m.group(1)


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
        k = Kube(_kubectl_path(), kubeconfig)
        k.run("apply", *[a for f in CRDS for a in ("-f", str(f))])
        k.run("wait", "--for=condition=Established", "--timeout=60s",
              *[f"crd/{f.stem}" for f in CRDS])
        yield k
    finally:
        subprocess.run(["bash", str(KUBE_SH), "stop", str(d)], capture_output=True, text=True)


_namespaces = iter(range(1, 1_000_000))


@pytest.fixture
def ns(kube: Kube) -> str:
    """A namespace of this test's own (never deleted: there is no namespace controller)."""
    name = f"t{next(_namespaces)}"
    kube.run("create", "namespace", name)
    return name
