#!/usr/bin/env bash
# Run the client-compatibility suite: install/refresh the cached test bed, then pytest.
#
#   tests/run-compat.sh [pytest args...]
#
#   STRATA_TEST_TARGET=strata|kafka   broker under test (default strata: target/debug/strata-node)
#   STRATA_NODE_BIN=PATH              strata-node binary to test
#   STRATA_CACHE=DIR                  cache root (default ~/.cache/strata-testbed)
#
# Exits with pytest's status, except that "no tests collected" (5) counts as a failure (1).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

"$ROOT/tests/testbed/install.sh" || { echo "run-compat: install.sh failed" >&2; exit 1; }

PY="$(bash "$ROOT/tests/testbed/venv.sh")" || { echo "run-compat: venv.sh failed" >&2; exit 1; }

cd "$ROOT"
"$PY" -m pytest tests/compat "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "run-compat: pytest collected no tests; treating as failure" >&2
  exit 1
fi
exit $rc
