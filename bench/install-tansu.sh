#!/usr/bin/env bash
# Install Tansu (https://crates.io/crates/tansu), a Kafka-compatible broker in Rust, as a
# benchmark peer: `cargo install` into ${STRATA_CACHE:-~/.cache/strata-testbed}/tansu, with the
# `dynostore` feature that provides its memory:// storage engine. Idempotent; the first build
# takes a while (about 15 minutes on 2 cores). Prints nothing on success when already installed.
#
# Exit status 0 when $CACHE/tansu/bin/tansu works; otherwise non-zero, with the reason on stderr
# and in $CACHE/tansu/FAILED (bench/run.sh then runs without Tansu and reports why).
set -uo pipefail

TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
ROOT="$CACHE/tansu"
BIN="$ROOT/bin/tansu"
mkdir -p "$ROOT"

if [[ -x "$BIN" ]] && "$BIN" --version 2>/dev/null | grep -q " $TANSU_VERSION\$"; then
  rm -f "$ROOT/FAILED"
  exit 0
fi

echo "[install-tansu] cargo install tansu $TANSU_VERSION --features dynostore -> $ROOT" >&2
if CARGO_TARGET_DIR="$ROOT/build" cargo install tansu --version "$TANSU_VERSION" --locked \
     --features dynostore --root "$ROOT" > "$ROOT/install.log" 2>&1 \
   && "$BIN" --version >/dev/null 2>&1; then
  rm -f "$ROOT/FAILED"
  rm -rf "$ROOT/build"   # several GB of intermediate artefacts
  exit 0
fi
reason="cargo install tansu $TANSU_VERSION failed: $(grep -m1 -E '^error' "$ROOT/install.log" || tail -n1 "$ROOT/install.log")"
echo "$reason" > "$ROOT/FAILED"
echo "[install-tansu] $reason (log: $ROOT/install.log)" >&2
exit 1
