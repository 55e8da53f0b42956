"""Where things are: the repo, the test-bed cache and what the test-bed scripts install there,
and the Strata binaries (run.sh scripts set STRATA_NODE_BIN / STRATA_OPERATOR_BIN)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
TESTBED = REPO / "tests" / "testbed"
CACHE = Path(os.environ.get("STRATA_CACHE") or Path.home() / ".cache" / "strata-testbed")
# Apache Kafka's jars (broker and tools), installed by tests/testbed/install.sh.
KAFKA_LIBS = Path(os.environ.get("STRATA_KAFKA_LIBS") or CACHE / "kafka-libs")
# tests/testbed/helm.sh and kube.sh.
HELM = os.environ.get("HELM") or str(CACHE / "helm" / "bin" / "helm")
KUBECTL = os.environ.get("KUBECTL") or str(CACHE / "kube" / "bin" / "kubectl")

_BIN_ENV = {"strata-node": "STRATA_NODE_BIN", "strata-operator": "STRATA_OPERATOR_BIN"}


def binary(name: str) -> Path:
    """$STRATA_NODE_BIN / $STRATA_OPERATOR_BIN (relative to the repo), else a debug build in
    $CARGO_TARGET_DIR (default <repo>/target, where a plain `cargo build` puts it)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    p = Path(os.environ.get(_BIN_ENV[name]) or target / "debug" / name)
    return p if p.is_absolute() else REPO / p


def node_bin() -> Path:
    return binary("strata-node")


def operator_bin() -> Path:
    return binary("strata-operator")
