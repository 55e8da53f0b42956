"""Fixtures of the chart suite: helm and kubectl from the test-bed cache, a real kube-apiserver
with etcd (tests/testbed/kube.sh), and the operator and node binaries (run.sh builds them)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from strata_testlib import HELM, REPO, Kubectl, Result, helm_home_env, node_bin, operator_bin, run

ROOT = REPO
HERE = ROOT / "tests" / "helm"
CHART = ROOT / "charts" / "strata"
VALUES = HERE / "values"
OPERATOR_BIN = str(operator_bin())
NODE_BIN = str(node_bin())
# Namespaces may keep a test's objects for another; the fixtures below pick them.
NAMESPACE = "strata-test"


def helm(*args: str, kubeconfig: str | None = None, check: bool = True) -> Result:
    env = dict(os.environ, **helm_home_env())
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    return run([HELM, *args], env=env, check=check)


def template(*args: str, check: bool = True, release: str = "strata") -> Result:
    return helm("template", release, str(CHART), "--namespace", NAMESPACE, *args, check=check)


def render(*args: str, release: str = "strata") -> list[dict]:
    """`helm template` parsed: every object, in order."""
    return [d for d in yaml.safe_load_all(template(*args, release=release).out) if d]


class Kube(Kubectl):
    """The test bed's API server: kubectl as the admin, or with any kubeconfig."""

    def __init__(self, directory: Path):
        self.dir = directory
        super().__init__(str(directory / "kubeconfig"))

    def get(self, *args: str, kubeconfig: str | None = None) -> dict | None:
        r = self.kubectl("get", *args, "-o", "yaml", kubeconfig=kubeconfig, check=False)
        if r.rc != 0:
            if "NotFound" in r.err:
                return None
            pytest.fail(f"kubectl get {' '.join(args)}: {r.text}")
        return yaml.safe_load(r.out)

    def helm(self, *args: str, check: bool = True) -> Result:
        return helm(*args, kubeconfig=self.kubeconfig, check=check)

    def can_i(self, verb: str, resource: str, user: str, namespace: str = NAMESPACE,
              subresource: str | None = None) -> bool:
        args = ["auth", "can-i", verb, resource, f"--as={user}"]
        args += ["-n", namespace] if namespace else []
        args += [f"--subresource={subresource}"] if subresource else []
        r = self.kubectl(*args, check=False)
        answer = r.out.strip().splitlines()[-1] if r.out.strip() else ""
        if answer not in ("yes", "no"):
            pytest.fail(f"kubectl {' '.join(args)}: {r.text}")
        return answer == "yes"

    def token_kubeconfig(self, service_account: str, namespace: str, path: Path) -> str:
        """A kubeconfig that authenticates as the ServiceAccount, with a token from the
        TokenRequest API (what the kubelet mounts into a pod)."""
        token = self.kubectl("create", "token", service_account, "-n", namespace,
                             "--duration=1h").out.strip()
        admin = yaml.safe_load(Path(self.kubeconfig).read_text())
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": admin["clusters"],
            "users": [{"name": service_account, "user": {"token": token}}],
            "contexts": [{"name": service_account, "context": {
                "cluster": admin["clusters"][0]["name"], "user": service_account,
                "namespace": namespace}}],
            "current-context": service_account,
        }
        path.write_text(yaml.safe_dump(cfg))
        path.chmod(0o600)
        return str(path)


@pytest.fixture(scope="session")
def kube(tmp_path_factory) -> Kube:
    """A fresh etcd + kube-apiserver for the session, stopped at its end."""
    d = tmp_path_factory.mktemp("kube")
    script = str(ROOT / "tests" / "testbed" / "kube.sh")
    r = subprocess.run(["bash", script, "start", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"kube.sh start failed:\n{r.stdout}{r.stderr}")
    try:
        yield Kube(d)
    finally:
        subprocess.run(["bash", script, "stop", str(d)], capture_output=True)
