#!/usr/bin/env bash
# CPU profile of strata-node under load: `perf record --call-graph dwarf` on the broker, then the
# top symbols and how much of the broker's CPU went to copying bytes, zeroing buffers and CRCs.  Needs perf
# (Debian: linux-perf) and what bench/run.sh builds.
#
#   bash bench/profile.sh [SECONDS] [FLUSH_POLICY] [WORKLOAD]     defaults: 15 never produce
#
# WORKLOAD produce: W1, bench/loadgen produces 1 KB records as fast as it can for SECONDS (8
# partitions, acks=all, linger.ms=5, batch 1 MB) while perf records.
# WORKLOAD consume: W3, bench/loadgen first writes a backlog ($PROFILE_BACKLOG_MIB MiB of 1 KB
# records, default 2048, round-robin over 8 partitions, not profiled), then perf records while
# loadgen reads it all from the start, $PROFILE_PASSES times (default 3; SECONDS is unused).
#
# Environment: STRATA_BIN (default $CARGO_TARGET_DIR or target, release/strata-node),
# BENCH_LOADGEN (default the cache's loadgen-target build, as run.sh builds it), OUT.
# Output: $OUT/perf.data, $OUT/report.txt (self time), $OUT/report-children.txt and
# $OUT/summary.json (OUT defaults to ${TMPDIR:-/tmp}/strata-profile).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
SECS="${1:-15}"
POLICY="${2:-never}"
WORKLOAD="${3:-produce}"
OUT="${OUT:-${TMPDIR:-/tmp}/strata-profile}"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
STRATA_BIN="${STRATA_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/strata-node}"
LOADGEN="${BENCH_LOADGEN:-$CACHE/loadgen-target/release/strata-bench-loadgen}"
command -v perf >/dev/null || { echo "perf not found (apt-get install linux-perf)" >&2; exit 1; }
[[ -x "$STRATA_BIN" && -x "$LOADGEN" ]] || { echo "build first: bash bench/run.sh --smoke" >&2; exit 1; }
[[ "$WORKLOAD" == produce || "$WORKLOAD" == consume ]] || { echo "WORKLOAD: produce or consume" >&2; exit 2; }

mkdir -p "$OUT"
DATA="$(mktemp -d "${TMPDIR:-/tmp}/strata-profile-data.XXXXXX")"
PORT="$(PYTHONPATH="$REPO/tests/lib" python3 -c 'from strata_testlib import free_port; print(free_port())')"
"$STRATA_BIN" --listen "127.0.0.1:$PORT" --data-dir "$DATA" --flush-policy "$POLICY" \
  > "$OUT/strata.log" 2>&1 &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done

"$LOADGEN" create-topic --brokers "127.0.0.1:$PORT" --topic prof --partitions 8 --warm >/dev/null
if [[ "$WORKLOAD" == produce ]]; then
  perf record --call-graph dwarf,16384 -F 299 -p "$PID" -o "$OUT/perf.data" -- sleep "$((SECS + 1))" \
    2> "$OUT/perf-record.log" &
  PERF=$!
  "$LOADGEN" produce --brokers "127.0.0.1:$PORT" --topic prof --size 1024 --duration "$SECS" \
    --acks all --linger-ms 5 --batch-size 1000000 > "$OUT/loadgen.json"
  wait "$PERF" || true
else
  COUNT=$(( ${PROFILE_BACKLOG_MIB:-2048} * 1024 ))
  "$LOADGEN" produce --brokers "127.0.0.1:$PORT" --topic prof --size 1024 --duration 3600 \
    --count "$COUNT" --round-robin --acks all --linger-ms 5 --batch-size 1000000 > "$OUT/fill.json"
  perf record --call-graph dwarf,16384 -F 299 -p "$PID" -o "$OUT/perf.data" \
    2> "$OUT/perf-record.log" &
  PERF=$!
  sleep 0.5
  for pass in $(seq "${PROFILE_PASSES:-3}"); do
    "$LOADGEN" consume --brokers "127.0.0.1:$PORT" --topic prof --count "$COUNT" --timeout 900 \
      > "$OUT/loadgen-$pass.json"
  done
  # The passes' totals, in loadgen's own format.
  python3 - "$OUT" <<'PY'
import glob, json, sys
runs = [json.load(open(f)) for f in sorted(glob.glob(f"{sys.argv[1]}/loadgen-*.json"))]
secs = sum(r["seconds"] for r in runs)
json.dump({"mode": "consume", "passes": len(runs), "seconds": secs,
           "records_per_s": sum(r["records"] for r in runs) / secs,
           "mb_per_s": sum(r["bytes"] for r in runs) / 2**20 / secs},
          open(f"{sys.argv[1]}/loadgen.json", "w"))
PY
  kill -INT "$PERF"
  wait "$PERF" || true
fi
perf report -i "$OUT/perf.data" --stdio --no-children --sort symbol --percent-limit 0.5 \
  -g none 2>/dev/null > "$OUT/report.txt"
perf report -i "$OUT/perf.data" --stdio --children --sort symbol --percent-limit 3 \
  -g none 2>/dev/null > "$OUT/report-children.txt"
# Self time of every symbol (no limit), summed into copies and zeroing in user space, copies in
# the kernel and CRCs: the shares of the broker's CPU samples that the fixes are about.
perf report -i "$OUT/perf.data" --stdio --no-children --sort symbol -g none 2>/dev/null \
  > "$OUT/report-all.txt"
python3 - "$OUT" "$WORKLOAD" <<'PY'
import json, re, sys
out, workload = sys.argv[1], sys.argv[2]
lg = json.load(open(f"{out}/loadgen.json"))
groups = {
    # glibc's memcpy/memmove variants (__memmove_avx_unaligned_erms, ...)
    "user_memcpy_pct": re.compile(r"^\[\.\] .*(memcpy|memmove)"),
    # zeroing buffers before reading into them
    "user_memset_pct": re.compile(r"^\[\.\] .*memset"),
    # the kernel's copies between user memory and the page cache or socket buffers
    "kernel_copy_pct": re.compile(r"^\[k\] .*(copy_(user|to_iter|from_iter|folio|page)|"
                                  r"_copy_(to|from)_(iter|user)|rep_movs|memcpy|memmove)"),
    "crc_pct": re.compile(r"crc32c|crc_u64"),
}
shares = {k: 0.0 for k in groups}
for line in open(f"{out}/report-all.txt"):
    m = re.match(r"^\s+([0-9.]+)%\s+(\[[.k]\] .*?)\s*$", line)
    if not m:
        continue
    pct, sym = float(m.group(1)), m.group(2)
    for k, rx in groups.items():
        if rx.search(sym):
            shares[k] += pct
            break
summary = {"workload": workload, "records_per_s": lg.get("records_per_s"),
           "mb_per_s": lg.get("mb_per_s"), **{k: round(v, 2) for k, v in shares.items()}}
json.dump(summary, open(f"{out}/summary.json", "w"))
print("loadgen %s: %.0f records/s, %.1f MB/s" % (workload, lg.get("records_per_s") or 0,
                                                  lg.get("mb_per_s") or 0))
print("share of broker CPU samples: memcpy (user) %.1f%%, memset (user) %.1f%%, "
      "kernel copies %.1f%%, CRC %.1f%%" % (shares["user_memcpy_pct"], shares["user_memset_pct"],
                                            shares["kernel_copy_pct"], shares["crc_pct"]))
PY
echo "top symbols (self time), full report in $OUT/report.txt:"
grep -E '^ +[0-9]' "$OUT/report.txt" | head -30
