#!/usr/bin/env bash
# The whole test suite, from a fresh machine: builds Strata, installs and caches the test
# clients and peers (under ${STRATA_CACHE:-~/.cache/strata-testbed}), then runs
#   0. build, then lint: cargo fmt --check and cargo clippy -D warnings
#   1. unit and property tests (cargo test --workspace)
#   2. the client-compatibility suite against a real strata-node process
#   2b. security: TLS, mTLS, SASL, ACLs and connection limits with real clients (tests/security)
#   3. tiered storage against MinIO and file:// (tests/tiering)
#   3b. replication and failover: a controller and three nodes (tests/cluster)
#   3c. the operator on a real kube-apiserver + etcd: CRD validation, Topic resources (tests/operator)
#   4. each fuzz target briefly
#   5. the benchmark suite in smoke mode (so it cannot rot)
#   6. the Helm chart (tests/helm), then Strata on a real one-node Kubernetes: images from the
#      Dockerfile, the chart installed with helm, pods, Services, volumes (tests/k8s; needs root;
#      STRATA_K8S=0 skips it)
# Every stage runs; the script fails if any stage failed and prints a summary line.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TERM_COLOR=never
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
# Build outputs live in the test-bed cache, outside the clone, so that a fresh clone on a
# machine that ran the suite before rebuilds only what changed. A fresh machine builds all.
CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/cargo-target}"
export FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$CACHE/fuzz-target}"
export STRATA_NODE_BIN="${STRATA_NODE_BIN:-$CARGO_TARGET_DIR/debug/strata-node}"
mkdir -p "$CACHE"

passed=0
failed=0
failures=()
stage() {
  local name="$1"; shift
  echo
  echo "=== stage: $name"
  local t0=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    echo "=== stage $name: ok ($((SECONDS - t0)) s)"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "=== stage $name: FAILED ($((SECONDS - t0)) s)"
  fi
}

stage build cargo build --workspace --all-targets
lint() { cargo fmt --all -- --check && cargo clippy --workspace --all-targets -q -- -D warnings; }
stage lint lint
stage unit cargo test --workspace
stage compat bash tests/run-compat.sh -q
[ -f tests/security/run.sh ] && stage security bash tests/security/run.sh -q -p no:warnings
[ -f tests/tiering/run.sh ] && stage tiering bash tests/tiering/run.sh -q
[ -f tests/cluster/run.sh ] && stage cluster bash tests/cluster/run.sh -q
[ -f tests/operator/run.sh ] && stage operator bash tests/operator/run.sh -q -p no:warnings
[ -f tests/fuzz.sh ] && stage fuzz bash tests/fuzz.sh "${STRATA_FUZZ_SECONDS:-15}"
[ -f bench/run.sh ] && stage bench-smoke bash bench/run.sh --smoke
[ -f tests/helm/run.sh ] && stage helm bash tests/helm/run.sh -q
[ -f tests/k8s/run.sh ] && [ "${STRATA_K8S:-1}" != 0 ] && stage k8s bash tests/k8s/run.sh -q

echo
if [ "$failed" -gt 0 ]; then
  echo "failed stages: ${failures[*]}"
fi
echo "stages: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
