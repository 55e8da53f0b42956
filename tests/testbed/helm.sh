#!/usr/bin/env bash
# Helm 3 for the chart tests (tests/helm), built from the Go module proxy and cached outside
# the repo in ${STRATA_CACHE}/helm:
#
#   tests/testbed/helm.sh install     build helm once into helm/bin/helm
#   tests/testbed/helm.sh path        print the binary's path (after install)
#
# v3.19.x is the line built against the Kubernetes 1.34 client libraries, the minor of the
# test bed's kube-apiserver (tests/testbed/kube.sh). helm.sh/helm/v3 has no replace directives,
# so a plain `go install` works. The ldflags are what helm's Makefile sets: the version, and the
# Kubernetes version that `helm template` and `helm lint` assume without a cluster (the minor of
# the client libraries, 1.34; without it helm assumes 1.20).
#
# Cache layout: helm/bin/helm, helm/.stamp (version), helm/gomod + helm/gocache (GOMODCACHE and
# GOCACHE of this build only; HELM_KEEP_GOCACHE=0 deletes them after a successful build).
# A warm install does nothing and touches no network.
#
# Environment: STRATA_CACHE, HELM_VERSION, HELM_KUBE_MINOR, HELM_BUILD_NICE (default 10), HELM_BUILD_P (go build
# -p; default: Go's own, the number of cores).
set -euo pipefail

CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
HELM_VERSION="${HELM_VERSION:-v3.19.5}"
HELM_KUBE_MINOR="${HELM_KUBE_MINOR:-34}"   # the minor of k8s.io/client-go in helm's go.mod
WANT="helm=$HELM_VERSION kube=1.$HELM_KUBE_MINOR"
ROOT="$CACHE/helm"
BIN_DIR="$ROOT/bin"
BIN="$BIN_DIR/helm"
STAMP="$ROOT/.stamp"

log() { echo "[helm] $*" >&2; }

install() {
  if [[ -x "$BIN" && "$(cat "$STAMP" 2>/dev/null)" == "$WANT" ]]; then
    return 0
  fi
  command -v go >/dev/null || { log "go is not installed"; return 1; }
  mkdir -p "$BIN_DIR"
  rm -f "$STAMP"
  local t0=$SECONDS p=() ldflags
  [[ -n "${HELM_BUILD_P:-}" ]] && p=("-p=$HELM_BUILD_P")
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in pkg/chartutil pkg/lint/rules; do
    ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_KUBE_MINOR"
  done
  log "building helm.sh/helm/v3/cmd/helm@$HELM_VERSION (first time: a few minutes)"
  # -mod=mod: build outside any module; CGO off keeps the binary self-contained.
  GOBIN="$BIN_DIR" GOMODCACHE="$ROOT/gomod" GOCACHE="$ROOT/gocache" GOPATH="$ROOT/gopath" \
    GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0 nice -n "${HELM_BUILD_NICE:-10}" \
    go install "${p[@]}" -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  "$BIN" version --short >&2
  if [[ "${HELM_KEEP_GOCACHE:-1}" == 0 ]]; then
    chmod -R u+w "$ROOT/gomod" 2>/dev/null || true
    rm -rf "$ROOT/gomod" "$ROOT/gocache" "$ROOT/gopath"
  fi
  echo "$WANT" > "$STAMP"
  log "ok in $((SECONDS - t0)) s: $BIN"
}

case "${1:-}" in
  install) install ;;
  path) echo "$BIN" ;;
  *) echo "usage: $0 install | path" >&2; exit 2 ;;
esac
