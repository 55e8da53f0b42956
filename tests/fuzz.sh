#!/usr/bin/env bash
# Fuzz Strata's decoders of network and disk bytes for a short while each.
#
#   tests/fuzz.sh [SECONDS_PER_TARGET]        (default 20)
#
# Targets (fuzz/fuzz_targets/): request_frame (a request frame through parse_frame and
# dispatch on a real broker), record_batches (a produce record set through validation,
# append, read-back and recovery), log_recovery (a crashed partition directory through
# PartitionLog::open with recovery), disk_cache_entry (a file of the disk cache for bucket
# reads through its decoder and a real cache directory), bucket_documents (a partition's
# manifest or a topic's catalog entry from the bucket through their parsers), controller_log
# (the controller's metadata log through its frame decoder, replay and a real FileStore),
# txn_records (a segment's aborted-transaction index, a control batch and a transaction
# state record through their decoders).
#
# Builds with cargo-fuzz on the stable toolchain: without a sanitizer (-s none) cargo-fuzz
# only passes stable -C flags (SanitizerCoverage passes, --cfg fuzzing, debug assertions
# and overflow checks). Set FUZZ_SANITIZER=address to build with ASan instead; that needs
# nightly flags, which RUSTC_BOOTSTRAP=1 unlocks on stable; it builds into its own
# target dir.
#
# Each target runs on its corpus (fuzz/corpus/TARGET, kept between runs, gitignored) plus
# the checked-in seeds (fuzz/seeds/TARGET, regenerate with fuzz/seedgen). Crash inputs go
# to fuzz/artifacts/TARGET/; the script exits non-zero if any target crashed, leaked past
# its RSS limit or timed out, and prints the input's path and how to replay it.
#
# Environment: FUZZ_TARGETS="a b" (subset), FUZZ_SANITIZER (none|address), FUZZ_TARGET_DIR
# (build output, default fuzz/target),
# FUZZ_TIMEOUT (seconds one input may take, default 30), FUZZ_JOBS (parallel targets,
# default 1), FUZZ_KEEP_GOING=1 (libFuzzer fork mode: carry on after crashes, OOMs and
# timeouts to collect every distinct one in the time given; still exits non-zero).
set -uo pipefail

secs=${1:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
fuzz=$root/fuzz
read -r -a targets <<<"${FUZZ_TARGETS:-request_frame record_batches log_recovery disk_cache_entry bucket_documents sasl_exchange controller_log txn_records}"
sanitizer=${FUZZ_SANITIZER:-none}
timeout=${FUZZ_TIMEOUT:-30}

die() { echo "fuzz.sh: $*" >&2; exit 2; }

command -v cargo >/dev/null || die "cargo not found"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || die "cannot install cargo-fuzz"
fi

build=(fuzz build -s "$sanitizer")
# FUZZ_TARGET_DIR lets CI keep the instrumented build between clones.
target_dir=${FUZZ_TARGET_DIR:-$fuzz/target}
if [ "$sanitizer" != none ]; then
    export RUSTC_BOOTSTRAP=1
    target_dir=$target_dir/$sanitizer
fi
build+=(--target-dir "$target_dir")
triple=$(rustc -vV | sed -n 's/^host: //p')
bin_dir=$target_dir/$triple/release

echo "== building fuzz targets (sanitizer: $sanitizer)"
(cd "$root" && cargo "${build[@]}") || die "build failed"

scratch_base=/dev/shm
[ -d "$scratch_base" ] && [ -w "$scratch_base" ] || scratch_base=${TMPDIR:-/tmp}

export RUST_BACKTRACE=1
failed=()

run_target() {
    local t=$1
    local corpus=$fuzz/corpus/$t artifacts=$fuzz/artifacts/$t seeds=$fuzz/seeds/$t
    mkdir -p "$corpus" "$artifacts"
    local log=$artifacts/last-run.log
    touch "$artifacts/.run-start"
    local scratch extra=()
    scratch=$(mktemp -d "$scratch_base/strata-fuzz.XXXXXX")
    if [ "${FUZZ_KEEP_GOING:-0}" = 1 ]; then
        extra=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
    fi
    STRATA_FUZZ_TMPDIR=$scratch "$bin_dir/$t" "${extra[@]}" \
        -rss_limit_mb=2048 -max_len=1048576 -max_total_time="$secs" -timeout="$timeout" \
        -print_final_stats=1 -artifact_prefix="$artifacts/" \
        "$corpus" "$seeds" >"$log" 2>&1
    local rc=$?
    rm -rf "$scratch"
    # Fork mode ignores what it finds in its exit code; new artifacts tell.
    if [ "$rc" = 0 ] && [ -n "$(new_artifacts "$t")" ]; then
        rc=1
    fi
    return $rc
}

# Crash, OOM, timeout and leak inputs written by the last run of target $1.
new_artifacts() {
    local a=$fuzz/artifacts/$1
    find "$a" -maxdepth 1 -type f -newer "$a/.run-start" \
        \( -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' -o -name 'leak-*' \) | sort
}

summarize() {
    local t=$1 rc=$2
    local log=$fuzz/artifacts/$t/last-run.log
    local execs rate cov corpus
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    [ -n "$execs" ] || execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    [ -n "$rate" ] || rate=$(grep -o 'exec/s:\? [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1)
    corpus=$(grep -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -1)
    printf '%-15s %s  execs=%s exec/s=%s %s %s\n' "$t" \
        "$([ "$rc" = 0 ] && echo ok || echo FAILED)" "${execs:-?}" "${rate:-?}" "${cov:-}" "${corpus:-}"
    if [ "$rc" != 0 ]; then
        echo "---- $t: exit $rc; end of $log:"
        grep -v -e '^#[0-9]' -e 'NEW_FUNC' -e '^"' "$log" | tail -60
        echo "----"
        local input
        for input in $(new_artifacts "$t"); do
            echo "$t: crash input: $input"
            echo "$t: replay: $bin_dir/$t $input"
        done
        # request_frame keeps broker state between inputs: it saves the frames that led up
        # to a panic.
        local h
        for h in $(find "$fuzz/artifacts/$t" -maxdepth 1 -type d -name 'history-*' \
            -newer "$fuzz/artifacts/$t/.run-start" | sort); do
            echo "$t: frames leading to the crash: $h/ (replay: $bin_dir/$t $h/*)"
        done
    fi
}

jobs=${FUZZ_JOBS:-1}
echo "== fuzzing ${targets[*]} for ${secs}s each"
declare -A rcs=()
if [ "$jobs" -gt 1 ]; then
    declare -A pids=()
    for t in "${targets[@]}"; do
        run_target "$t" &
        pids[$t]=$!
    done
    for t in "${targets[@]}"; do
        wait "${pids[$t]}"
        rcs[$t]=$?
    done
else
    for t in "${targets[@]}"; do
        run_target "$t"
        rcs[$t]=$?
    done
fi

for t in "${targets[@]}"; do
    summarize "$t" "${rcs[$t]}"
    [ "${rcs[$t]}" = 0 ] || failed+=("$t")
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: all targets ran ${secs}s without a crash"
