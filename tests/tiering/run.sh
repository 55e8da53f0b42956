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

VENV="$CACHE/tiering-venv"
want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)-$(python3 -c 'import sys; print(sys.version.split()[0])')"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.stamp" 2>/dev/null)" != "$want" ]]; then
  echo "[tiering] python venv -> $VENV" >&2
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" || exit 1
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt" || exit 1
  echo "$want" > "$VENV/.stamp"
fi

if [[ -z "${STRATA_NODE_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build -q -p strata-node) || { echo "tiering: build failed" >&2; exit 1; }
  export STRATA_NODE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/strata-node"
fi

cd "$HERE"
"$VENV/bin/python" -m pytest -p no:cacheprovider --timeout 300 "$@" .
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "tiering: pytest collected no tests; treating as failure" >&2
  exit 1
fi
exit $rc
