#!/usr/bin/env bash
# Benchmarks: Strata side by side with Apache Kafka and Tansu on this machine, one run.
#
#   bash bench/run.sh [--full]   minutes; writes docs/benchmarks.md, docs/benchmarks.json and
#                                docs/benchmarks-w2-latency.png
#   bash bench/run.sh --smoke    every workload for a few seconds (a few minutes in all once
#                                things are built); writes to $BENCH_OUT (default
#                                ${TMPDIR:-/tmp}/strata-bench-smoke/), never to docs/.
#                                Exits non-zero if a workload fails on Strata or Kafka.
#
# Environment: STRATA_CACHE (default ~/.cache/strata-testbed), BENCH_OUT, BENCH_BROKERS
# (comma-separated subset of kafka,strata-never,strata-acks-all,tansu), BENCH_TANSU=0 to skip
# Tansu, BENCH_WORK_DIR (where broker data dirs go, default $TMPDIR). See bench/README.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
export STRATA_CACHE="$CACHE"

MODE=full
for a in "$@"; do
  case "$a" in
    --smoke) MODE=smoke ;;
    --full) MODE=full ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "usage: bench/run.sh [--smoke|--full]" >&2; exit 2 ;;
  esac
done

log() { echo "[run.sh] $*" >&2; }

# ---- build and install (idempotent, cached) ----------------------------------------------
log "testbed (Apache Kafka jars, ...)"
bash "$REPO/tests/testbed/install.sh"

log "strata-node (release)"
(cd "$REPO" && cargo build --release -p strata-node --quiet)

log "bench/loadgen (release)"
LOADGEN_TARGET="${BENCH_LOADGEN_TARGET_DIR:-$CACHE/loadgen-target}"
cargo build --release --quiet --manifest-path "$HERE/loadgen/Cargo.toml" --target-dir "$LOADGEN_TARGET"
export BENCH_LOADGEN="${BENCH_LOADGEN:-$LOADGEN_TARGET/release/strata-bench-loadgen}"

TANSU_UNAVAILABLE=""
# Tansu takes about 20 minutes to build on 2 cores: smoke runs use it only once a full run (or
# BENCH_TANSU=1) has installed it.
if [[ "$MODE" == smoke && -z "${BENCH_TANSU:-}" && ! -x "$CACHE/tansu/bin/tansu" ]]; then
  TANSU_UNAVAILABLE="skipped in smoke mode (not installed yet; a full run installs it)"
elif [[ "${BENCH_TANSU:-1}" == 0 ]]; then
  TANSU_UNAVAILABLE="skipped (BENCH_TANSU=0)"
elif ! bash "$HERE/install-tansu.sh"; then
  TANSU_UNAVAILABLE="$(cat "$CACHE/tansu/FAILED" 2>/dev/null || echo 'install failed')"
fi

# The test bed's venv (matplotlib for the chart, among the rest).
PY="$(bash "$REPO/tests/testbed/venv.sh")"

# ---- run ---------------------------------------------------------------------------------
if [[ "$MODE" == smoke ]]; then
  OUT="${BENCH_OUT:-${TMPDIR:-/tmp}/strata-bench-smoke}"
  mkdir -p "$OUT"
  MD="$OUT/benchmarks-smoke.md"; PNG="$OUT/benchmarks-smoke-w2-latency.png"
else
  OUT="${BENCH_OUT:-$REPO/docs}"
  mkdir -p "$OUT"
  MD="$OUT/benchmarks.md"; PNG="$OUT/benchmarks-w2-latency.png"
fi

export STRATA_BIN="${STRATA_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/strata-node}"
# Transactions side by side (bench/txn.py); a full run's figures go to
# docs/benchmarks-transactions.md by hand (see bench/README.md).
if [[ "$MODE" == smoke ]]; then
  log "transactions (smoke)"
  "$PY" "$HERE/txn.py" --smoke --strata-bin "$STRATA_BIN" > "$OUT/txn-smoke.md" \
    || { log "bench/txn.py failed"; exit 1; }
fi
exec "$PY" "$HERE/bench.py" --mode "$MODE" --out "$MD" --chart "$PNG" \
  --chart-python "$PY" \
  --brokers "${BENCH_BROKERS:-kafka,strata-never,strata-acks-all,tansu}" \
  --tansu-unavailable "$TANSU_UNAVAILABLE"
