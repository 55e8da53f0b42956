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
