#!/usr/bin/env bash
# The tiering suite: strata-node with --object-store against MinIO (built once from the Go
# module proxy by tests/testbed/minio.sh) and against file://, with Kafka clients from PyPI.
#
#   tests/tiering/run.sh [pytest args...]
#
#   STRATA_NODE_BIN=PATH   strata-node binary (default: cargo build, then target/debug)
#   STRATA_CACHE=DIR       test-bed cache (default ~/.cache/strata-testbed)
#
# Exits with pytest's status; "no tests collected" (5) counts as a failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/tiering"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
export STRATA_CACHE="$CACHE"

"$ROOT/tests/testbed/minio.sh" install || { echo "tiering: cannot install MinIO" >&2; exit 1; }

PY="$(bash "$ROOT/tests/testbed/venv.sh")" || { echo "tiering: venv.sh failed" >&2; exit 1; }

if [[ -z "${STRATA_NODE_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build -q -p strata-node) || { echo "tiering: build failed" >&2; exit 1; }
  export STRATA_NODE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/strata-node"
fi

cd "$HERE"
"$PY" -m pytest -p no:cacheprovider --timeout 300 "$@" .
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "tiering: pytest collected no tests; treating as failure" >&2
  exit 1
fi
exit $rc
