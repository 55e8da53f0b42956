"""Fixtures of the chart suite: helm and kubectl from the test-bed cache, a real kube-apiserver
with etcd (tests/testbed/kube.sh), and the operator and node binaries (run.sh builds them)."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "tests" / "helm"
CHART = ROOT / "charts" / "strata"
VALUES = HERE / "values"
CACHE = Path(os.environ.get("STRATA_CACHE", Path.home() / ".cache" / "strata-testbed"))
HELM = os.environ.get("HELM", str(CACHE / "helm" / "bin" / "helm"))
KUBECTL = os.environ.get("KUBECTL", str(CACHE / "kube" / "bin" / "kubectl"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", CACHE / "cargo-target"))
OPERATOR_BIN = os.environ.get("STRATA_OPERATOR_BIN", str(TARGET / "debug" / "strata-operator"))
NODE_BIN = os.environ.get("STRATA_NODE_BIN", str(TARGET / "debug" / "strata-node"))
# Namespaces may keep a test's objects for another; the fixtures below pick them.
NAMESPACE = "strata-test"


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run(cmd: list[str], *, env: dict | None = None, check: bool = True, input: str | None = None,
        timeout: float = 60) -> Result:
    """Run a command; with check, fail the test with its output when it exits non-zero."""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, input=input, timeout=timeout)
    r = Result(p.returncode, p.stdout, p.stderr)
    if check and r.rc != 0:
        pytest.fail(f"{' '.join(cmd)} exited {r.rc}:\n{r.text}")
    return r


def helm(*args: str, kubeconfig: str | None = None, check: bool = True) -> Result:
    env = dict(os.environ)
    # Helm's own state (repositories, cache) stays out of the user's home.
    for var, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"),
                     ("HELM_DATA_HOME", "data")):
        env[var] = str(CACHE / "helm" / "home" / sub)
    if kubeconfig:
        env["KUBECONFIG"] = kubeconfig
    return run([HELM, *args], env=env, check=check)


def template(*args: str, check: bool = True, release: str = "strata") -> Result:
    return helm("template", release, str(CHART), "--namespace", NAMESPACE, *args, check=check)


def render(*args: str, release: str = "strata") -> list[dict]:
    """`helm template` parsed: every object, in order."""
    return [d for d in yaml.safe_load_all(template(*args, release=release).out) if d]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, predicate, timeout: float = 30, every: float = 0.2):
    """Poll until predicate() returns something truthy; return it, or fail saying `what`."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _die_with_parent():
    """In the child before exec: SIGKILL when pytest dies, so no operator outlives a run."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Proc:
    """A process started by a test, its output in a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict, log: Path):
        self.name, self.log = name, log
        self._f = open(log, "ab")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._f, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 30) -> None:
        def seen():
            if self.proc.poll() is not None and needle not in self.output():
                pytest.fail(f"{self.name} exited {self.proc.returncode}:\n{self.output()[-3000:]}")
            return needle in self.output()
        wait_for(f"{needle!r} in the log of {self.name} ({self.log})", seen, timeout)

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._f.close()
        return self.proc.returncode


class Kube:
    """The test bed's API server: kubectl as the admin, or with any kubeconfig."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.kubeconfig = str(directory / "kubeconfig")

    def kubectl(self, *args: str, kubeconfig: str | None = None, check: bool = True,
                input: str | None = None) -> Result:
        env = dict(os.environ, KUBECONFIG=kubeconfig or self.kubeconfig)
        return run([KUBECTL, *args], env=env, check=check, input=input)

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
