#!/usr/bin/env bash
# The Helm chart suite (charts/strata): lint and render it with several value files, refuse bad
# values, install it into a real kube-apiserver with etcd (tests/testbed/kube.sh: server-side
# validation of every object), then run strata-operator as a local process with the chart's
# ServiceAccount token to prove its RBAC is enough and no more; upgrade and uninstall.
#
#   tests/helm/run.sh [pytest args...]
#
#   STRATA_CACHE=DIR           test-bed cache (default ~/.cache/strata-testbed): the venv is
#                              $STRATA_CACHE/testbed-venv (tests/testbed/venv.sh), helm
#                              $STRATA_CACHE/helm, the API server binaries $STRATA_CACHE/kube
#   STRATA_OPERATOR_BIN=PATH   strata-operator binary  } default: cargo build, then
#   STRATA_NODE_BIN=PATH       strata-node binary      } $CARGO_TARGET_DIR/debug
#   CARGO_TARGET_DIR=DIR       default $STRATA_CACHE/cargo-target, as tests/run.sh
#
# A cold run builds helm (tests/testbed/helm.sh) and etcd, kube-apiserver and kubectl
# (tests/testbed/kube.sh) from the Go module proxy: minutes, once.
# Exits with pytest's status; "no tests collected" (5) counts as a failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/helm"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
export STRATA_CACHE="$CACHE"

PY="$(bash "$ROOT/tests/testbed/venv.sh")" || { echo "helm: venv.sh failed" >&2; exit 1; }

bash "$ROOT/tests/testbed/helm.sh" install || { echo "helm: helm.sh install failed" >&2; exit 1; }
bash "$ROOT/tests/testbed/kube.sh" install || { echo "helm: kube.sh install failed" >&2; exit 1; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/cargo-target}"
build=()
[[ -z "${STRATA_OPERATOR_BIN:-}" ]] && build+=(-p strata-operator) && export STRATA_OPERATOR_BIN="$CARGO_TARGET_DIR/debug/strata-operator"
[[ -z "${STRATA_NODE_BIN:-}" ]] && build+=(-p strata-node) && export STRATA_NODE_BIN="$CARGO_TARGET_DIR/debug/strata-node"
if [[ ${#build[@]} -gt 0 ]]; then
  (cd "$ROOT" && cargo build -q "${build[@]}") || { echo "helm: build failed" >&2; exit 1; }
fi

cd "$HERE"
"$PY" -m pytest -p no:cacheprovider "$@" .
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "helm: pytest collected no tests; treating as failure" >&2
  exit 1
fi
exit $rc
