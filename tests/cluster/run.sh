#!/usr/bin/env bash
# The replication/failover suite: a controller (`strata-operator local`) and three strata-node
# processes, each node in its own network namespace (root; else all on 127.0.0.1 and the
# network-cut test skips), driven by real Kafka clients (confluent-kafka, kafka-python).
#
#   tests/cluster/run.sh [pytest args...]
#
#   STRATA_NODE_BIN=PATH       strata-node binary      } default: cargo build, then
#   STRATA_OPERATOR_BIN=PATH   strata-operator binary  } $CARGO_TARGET_DIR/debug
#   STRATA_CACHE=DIR           test-bed cache (default ~/.cache/strata-testbed)
#   CARGO_TARGET_DIR=DIR       default $STRATA_CACHE/cargo-target, as tests/run.sh
#   STRATA_CLUSTER_NETNS=0     do not use network namespaces
#   STRATA_CLUSTER_REPORT=FILE JSON file the measured failover time is merged into
#
# Exits with pytest's status; "no tests collected" (5) counts as a failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/cluster"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
export STRATA_CACHE="$CACHE"

PY="$(bash "$ROOT/tests/testbed/venv.sh")" || { echo "cluster: venv.sh failed" >&2; exit 1; }

# Apache Kafka's admin tools (kafka-reassign-partitions and friends, for test_admin_tools.py)
# and the Java client CLI on kafka-clients 4 (test_transactions.py): the test bed's Kafka jars
# and tests/java*/target, installed by tests/testbed/install.sh when missing or stale.
want="$(sha256sum "$ROOT/tests/testbed/kafka/pom.xml" | cut -d' ' -f1)"
if [[ "$(cat "$CACHE/kafka-libs/.stamp" 2>/dev/null)" != "$want" ]] \
   || [[ ! -f "$ROOT/tests/java/target/strata-compat.jar" ]] \
   || [[ ! -d "$ROOT/tests/java-streams/target/libs" ]]; then
  bash "$ROOT/tests/testbed/install.sh" || { echo "cluster: test-bed install failed" >&2; exit 1; }
fi
export STRATA_KAFKA_LIBS="$CACHE/kafka-libs"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/cargo-target}"
target="$CARGO_TARGET_DIR"
build=()
[[ -z "${STRATA_NODE_BIN:-}" ]] && build+=(-p strata-node) && export STRATA_NODE_BIN="$target/debug/strata-node"
[[ -z "${STRATA_OPERATOR_BIN:-}" ]] && build+=(-p strata-operator) && export STRATA_OPERATOR_BIN="$target/debug/strata-operator"
if [[ ${#build[@]} -gt 0 ]]; then
  (cd "$ROOT" && cargo build -q "${build[@]}") || { echo "cluster: build failed" >&2; exit 1; }
fi

cd "$HERE"
"$PY" -m pytest -p no:cacheprovider "$@" .
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "cluster: pytest collected no tests; treating as failure" >&2
  exit 1
fi
exit $rc
