#!/usr/bin/env bash
# CPU profile of strata-node under W1 load: `perf record --call-graph dwarf` on the broker while bench/loadgen
# produces 1 KB records as fast as it can (8 partitions, acks=all, linger.ms=5, batch 1 MB), then
# the top symbols.  Needs perf (Debian: linux-perf) and what bench/run.sh builds.
#
#   bash bench/profile.sh [SECONDS] [FLUSH_POLICY]     defaults: 15 never
#
# Output: $OUT/perf.data and $OUT/report.txt (OUT defaults to ${TMPDIR:-/tmp}/strata-profile).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
SECS="${1:-15}"
POLICY="${2:-never}"
OUT="${OUT:-${TMPDIR:-/tmp}/strata-profile}"
STRATA_BIN="${STRATA_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/strata-node}"
LOADGEN="$HERE/loadgen/target/release/strata-bench-loadgen"
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 1; }
[[ -x "$STRATA_BIN" && -x "$LOADGEN" ]] || { echo "build first: bash bench/run.sh --smoke" >&2; exit 1; }

mkdir -p "$OUT"
DATA="$(mktemp -d "${TMPDIR:-/tmp}/strata-profile-data.XXXXXX")"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$STRATA_BIN" --listen "127.0.0.1:$PORT" --data-dir "$DATA" --flush-policy "$POLICY" \
  > "$OUT/strata.log" 2>&1 &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done

"$LOADGEN" create-topic --brokers "127.0.0.1:$PORT" --topic prof --partitions 8 --warm >/dev/null
perf record --call-graph dwarf,16384 -F 299 -p "$PID" -o "$OUT/perf.data" -- sleep "$((SECS + 1))" 2> "$OUT/perf-record.log" &
PERF=$!
"$LOADGEN" produce --brokers "127.0.0.1:$PORT" --topic prof --size 1024 --duration "$SECS" \
  --acks all --linger-ms 5 --batch-size 1000000 > "$OUT/loadgen.json"
wait "$PERF" || true
perf report -i "$OUT/perf.data" --stdio --no-children --sort symbol --percent-limit 0.5 \
  -g none 2>/dev/null > "$OUT/report.txt"
perf report -i "$OUT/perf.data" --stdio --children --sort symbol --percent-limit 3 \
  -g none 2>/dev/null > "$OUT/report-children.txt"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("loadgen: %.0f records/s, %.1f MB/s" % (d["records_per_s"], d["mb_per_s"]))' "$OUT/loadgen.json"
echo "top symbols (self time), full report in $OUT/report.txt:"
grep -E '^ +[0-9]' "$OUT/report.txt" | head -30
