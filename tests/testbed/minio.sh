#!/usr/bin/env bash
# MinIO (an S3-compatible server) for the tiering tests, built from the Go module proxy and
# cached outside the repo:
#
#   tests/testbed/minio.sh install            build once into $STRATA_CACHE/minio/bin/minio
#   tests/testbed/minio.sh start DIR PORT     serve DIR on 127.0.0.1:PORT (MINIO_HOST:PORT when
#                                             set, e.g. an address pods reach), wait until ready
#   tests/testbed/minio.sh stop DIR           SIGTERM (SIGKILL after 10 s)
#   tests/testbed/minio.sh path               print the binary's path (after install)
#
# The pinned version is the RELEASE.2025-09-07T16-13-09Z tag (commit 07c3a429bfed), as the
# proxy names it. Credentials: MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (default
# strata / strata-secret). A warm install does nothing and touches no network.
set -euo pipefail

CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
VERSION="v0.0.0-20250907161309-07c3a429bfed"
BIN_DIR="$CACHE/minio/bin"
BIN="$BIN_DIR/minio"
STAMP="$CACHE/minio/.stamp"
export MINIO_ROOT_USER="${MINIO_ROOT_USER:-strata}"
export MINIO_ROOT_PASSWORD="${MINIO_ROOT_PASSWORD:-strata-secret}"

log() { echo "[minio] $*" >&2; }

install() {
  if [[ -x "$BIN" && "$(cat "$STAMP" 2>/dev/null)" == "$VERSION" ]]; then
    return 0
  fi
  command -v go >/dev/null || { log "go is not installed"; return 1; }
  log "building github.com/minio/minio@$VERSION (first time: several minutes)"
  mkdir -p "$BIN_DIR"
  # -mod=mod: build outside any module; CGO off keeps the binary self-contained.
  GOBIN="$BIN_DIR" GOFLAGS=-mod=mod CGO_ENABLED=0 go install "github.com/minio/minio@$VERSION"
  echo "$VERSION" > "$STAMP"
  log "ok: $BIN"
}

start() {
  local dir="$1" port="$2"
  install
  mkdir -p "$dir/data"
  if [[ -f "$dir/minio.pid" ]] && kill -0 "$(cat "$dir/minio.pid")" 2>/dev/null; then
    log "already running (pid $(cat "$dir/minio.pid"))"
    return 0
  fi
  # The console gets a port too; keep it off the S3 port's neighbours by asking for :0.
  MINIO_BROWSER=off MINIO_UPDATE=off nohup "$BIN" server "$dir/data" \
    --address "${MINIO_HOST:-127.0.0.1}:$port" --console-address "${MINIO_HOST:-127.0.0.1}:0" --quiet \
    >"$dir/minio.log" 2>&1 &
  echo $! > "$dir/minio.pid"
  for _ in $(seq 1 300); do
    if curl -sf "http://${MINIO_HOST:-127.0.0.1}:$port/minio/health/ready" >/dev/null 2>&1; then
      return 0
    fi
    kill -0 "$(cat "$dir/minio.pid")" 2>/dev/null || { log "exited:"; tail -20 "$dir/minio.log" >&2; return 1; }
    sleep 0.1
  done
  log "not ready after 30 s"; tail -20 "$dir/minio.log" >&2
  return 1
}

stop() {
  local dir="$1" pid
  [[ -f "$dir/minio.pid" ]] || return 0
  pid="$(cat "$dir/minio.pid")"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/minio.pid"
}

case "${1:-}" in
  install) install ;;
  start) start "$2" "$3" ;;
  stop) stop "$2" ;;
  path) echo "$BIN" ;;
  *) echo "usage: $0 install | start DIR PORT | stop DIR | path" >&2; exit 2 ;;
esac
