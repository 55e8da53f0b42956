#!/usr/bin/env bash
# The operator suite: the committed CRDs (crds/) applied to a real kube-apiserver with etcd
# (tests/testbed/kube.sh), valid resources accepted, each invalid one refused with its message.
#
#   tests/operator/run.sh [pytest args...]
#
#   STRATA_CACHE=DIR   test-bed cache (default ~/.cache/strata-testbed); the venv is
#                      $STRATA_CACHE/testbed-venv (tests/testbed/venv.sh), the API server
#                      binaries $STRATA_CACHE/kube
#
# A cold `kube.sh install` builds etcd, kube-apiserver and kubectl from source (long, once).
# Exits with pytest's status; "no tests collected" (5) counts as a failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/operator"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
export STRATA_CACHE="$CACHE"

PY="$(bash "$ROOT/tests/testbed/venv.sh")" || { echo "operator: venv.sh failed" >&2; exit 1; }

bash "$ROOT/tests/testbed/kube.sh" install || { echo "operator: kube.sh install failed" >&2; exit 1; }

# The Topic tests run strata-operator and strata-node processes (the kubelet's part).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/cargo-target}"
if [[ -z "${STRATA_NODE_BIN:-}" || -z "${STRATA_OPERATOR_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build -q -p strata-node -p strata-operator) || { echo "operator: build failed" >&2; exit 1; }
fi

cd "$HERE"
"$PY" -m pytest -p no:cacheprovider "$@" .
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "operator: pytest collected no tests; treating as failure" >&2
  exit 1
fi
exit $rc
