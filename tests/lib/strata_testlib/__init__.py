"""Helpers shared by the Python suites under tests/ and by bench/: one copy of each.

  paths   the repo, the test-bed cache ($STRATA_CACHE), binaries, kafka-libs, helm and kubectl
  net     free_port (below the ephemeral range), port_open, pid_alive
  wait    wait_for(cond, timeout, what): poll until truthy, AssertionError on timeout
  proc    Proc: a restartable process with its output in a log file, killed with the test run
  kube    run() a command into a Result; Kubectl: kubectl with one kubeconfig; helm_home_env;
          condition() of a Kubernetes object

Only the standard library: bench/bench.py imports it from the system python3. Suites find it
through `pythonpath = ../lib` in their pytest.ini; scripts insert tests/lib into sys.path.
"""

from .kube import Kubectl, Result, condition, controller_state, helm_home_env, run
from .net import free_port, pid_alive, port_open
from .paths import CACHE, HELM, KAFKA_LIBS, KUBECTL, REPO, TESTBED, binary, node_bin, operator_bin
from .proc import Proc
from .wait import wait_for

__all__ = [
    "CACHE", "HELM", "KAFKA_LIBS", "KUBECTL", "REPO", "TESTBED", "Kubectl", "Proc", "Result",
    "binary", "condition", "controller_state", "free_port", "helm_home_env", "node_bin", "operator_bin", "pid_alive",
    "port_open", "run", "wait_for",
]
