#!/usr/bin/env bash
# The security suite: strata-node with TLS, mutual TLS, SASL (PLAIN, SCRAM-SHA-256/512,
# OAUTHBEARER), ACLs and connection limits, driven by kafka-python, confluent-kafka
# (librdkafka) and Kafka's own kafka-configs / kafka-acls tools from the Maven jars.
#
#   tests/security/run.sh [pytest args...]
#
#   STRATA_NODE_BIN=PATH   strata-node binary (default: cargo build, then target/debug)
#   STRATA_CACHE=DIR       test-bed cache (default ~/.cache/strata-testbed)
#
# Exits with pytest's status; "no tests collected" (5) counts as a failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/security"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
export STRATA_CACHE="$CACHE"

"$ROOT/tests/testbed/install.sh" || { echo "security: install.sh failed" >&2; exit 1; }
PY="$(bash "$ROOT/tests/testbed/venv.sh")" || { echo "security: venv.sh failed" >&2; exit 1; }

if [[ -z "${STRATA_NODE_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build -q -p strata-node) || { echo "security: build failed" >&2; exit 1; }
  export STRATA_NODE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/strata-node"
fi

cd "$HERE"
"$PY" -m pytest -p no:cacheprovider --timeout 300 "$@" .
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "security: pytest collected no tests; treating as failure" >&2
  exit 1
fi
exit $rc
