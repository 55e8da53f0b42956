#!/usr/bin/env bash
# A real Kubernetes API server (etcd + kube-apiserver, no kubelet) for the operator tests, built
# from the Go module proxy and cached outside the repo in ${STRATA_CACHE}/kube:
#
#   tests/testbed/kube.sh install      build etcd, kube-apiserver, kubectl once into kube/bin
#   tests/testbed/kube.sh start DIR    start etcd + kube-apiserver on loopback (free ports, data
#                                      in DIR), wait for /readyz, write DIR/kubeconfig, print it
#   tests/testbed/kube.sh stop DIR     SIGTERM both (SIGKILL after KUBE_STOP_TIMEOUT s, def. 20)
#   tests/testbed/kube.sh status DIR   exit 0 if both run and /readyz answers ok
#   tests/testbed/kube.sh env          print `export KUBECTL=... KUBE_APISERVER=... ETCD=...`
#   tests/testbed/kube.sh install-node also build kube-controller-manager, kube-scheduler,
#                                      kubelet and kube-proxy (same release, same wrapper module
#                                      and Go caches) for a real node (tests/testbed/k8s.sh)
#
# kube-apiserver and kubectl come from a wrapper module: k8s.io/kubernetes replaces its staging
# modules (k8s.io/api, apimachinery, ...) with local folders, so `go install ...@v1.x` refuses;
# the wrapper requires k8s.io/kubernetes and replaces each staging module with its published
# v0.x twin. The version ldflags are what `make` would set (the API server's compatibility
# version is derived from them). etcd the same way, without ldflags.
#
# Cache layout: kube/bin/{etcd,kube-apiserver,kubectl}, kube/.stamp (versions), kube/src
# (wrapper modules), kube/gomod + kube/gocache (GOMODCACHE/GOCACHE, so a rebuild is warm;
# KUBE_KEEP_GOCACHE=0 deletes both after a successful build). A warm install does nothing.
#
# Environment: STRATA_CACHE, KUBE_VERSION, ETCD_VERSION, KUBE_START_TIMEOUT (s, default 120),
# KUBE_STOP_TIMEOUT (s, default 20), KUBE_BUILD_NICE (default 10), KUBE_BUILD_P (go build -p,
# default: Go's own, i.e. the number of cores).
set -euo pipefail

CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
KUBE_VERSION="${KUBE_VERSION:-v1.34.12}"   # CEL transition rules + optionalOldSelf are GA
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
ROOT="$CACHE/kube"
BIN_DIR="$ROOT/bin"
STAMP="$ROOT/.stamp"
WANT="kubernetes=$KUBE_VERSION etcd=$ETCD_VERSION"
ETCD="$BIN_DIR/etcd"
KUBE_APISERVER="$BIN_DIR/kube-apiserver"
KUBECTL="$BIN_DIR/kubectl"

log() { echo "[kube] $*" >&2; }
die() { log "$*"; exit 1; }

# ---- install --------------------------------------------------------------------------------

# `go get` lists every module it adds (hundreds for Kubernetes); keep the rest as progress.
quiet_get() { grep -vE '^go: (added|upgraded) ' >&2 || true; }

gorun() {
  # Our own module and build caches; CGO off for self-contained static binaries (as upstream).
  GOMODCACHE="$ROOT/gomod" GOCACHE="$ROOT/gocache" GOFLAGS="-mod=mod" CGO_ENABLED=0 \
    GOWORK=off GOPATH="$ROOT/gopath" nice -n "${KUBE_BUILD_NICE:-10}" go "$@"
}

build_p() { [[ -n "${KUBE_BUILD_P:-}" ]] && echo "-p=$KUBE_BUILD_P" || true; }

install_etcd() {
  local src="$ROOT/src/etcd"
  rm -rf "$src"; mkdir -p "$src"
  log "etcd $ETCD_VERSION: resolving go.etcd.io/etcd/server/v3"
  printf 'module strata-testbed/etcd\n\ngo 1.24\n' > "$src/go.mod"
  (cd "$src" && gorun get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" 2>&1 | quiet_get)
  log "etcd $ETCD_VERSION: building"
  (cd "$src" && gorun build $(build_p) -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd.new" \
      go.etcd.io/etcd/server/v3)
  mv "$BIN_DIR/etcd.new" "$ETCD"
}

install_kube() {
  local src="$ROOT/src/kubernetes" gomod minor pkgs ldflags v
  rm -rf "$src"; mkdir -p "$src"
  minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  log "kubernetes $KUBE_VERSION: reading k8s.io/kubernetes's go.mod"
  gomod="$(cd "$src" && gorun mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
           | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  [[ -f "$gomod" ]] || die "no go.mod for k8s.io/kubernetes@$KUBE_VERSION"
  # Same go/godebug lines as upstream (GODEBUG defaults follow the main module).
  {
    echo "module strata-testbed/kubernetes"; echo
    grep -E '^go [0-9]' "$gomod"
    grep -E '^godebug ' "$gomod" || true
  } > "$src/go.mod"
  # "k8s.io/api => ./staging/src/k8s.io/api" becomes "k8s.io/api => k8s.io/api v0.X.Y".
  local m edits=()
  while read -r m; do
    edits+=("-replace=$m=$m@v0.${KUBE_VERSION#v1.}")
  done < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/src/.*#\1#p' "$gomod")
  (( ${#edits[@]} > 10 )) || die "found only ${#edits[@]} staging replaces in $gomod"
  (cd "$src" && go mod edit "${edits[@]}")
  log "kubernetes $KUBE_VERSION: ${#edits[@]} staging modules replaced; resolving (go get)"
  pkgs="k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl"
  (cd "$src" && gorun get "k8s.io/kubernetes@$KUBE_VERSION" \
      $(for p in $pkgs; do echo "$p@$KUBE_VERSION"; done) 2>&1 | quiet_get)
  ldflags="$(kube_ldflags)"
  for p in $pkgs; do
    log "kubernetes $KUBE_VERSION: building ${p##*/} (first time: long)"
    local t0=$SECONDS
    (cd "$src" && gorun build $(build_p) -trimpath -ldflags "$ldflags" \
        -o "$BIN_DIR/${p##*/}.new" "$p")
    mv "$BIN_DIR/${p##*/}.new" "$BIN_DIR/${p##*/}"
    log "kubernetes $KUBE_VERSION: ${p##*/} built in $((SECONDS - t0)) s"
  done
}

kube_ldflags() {
  local minor v ldflags="-s -w"
  minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  for v in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $v.gitVersion=$KUBE_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor"
    ldflags+=" -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ldflags"
}

# The node's binaries, from the wrapper module install_kube made (its go.mod already replaces
# the staging modules; `go get` only adds these packages' imports at the versions
# k8s.io/kubernetes requires).
NODE_PKGS="kube-controller-manager kube-scheduler kubelet kube-proxy"
NODE_STAMP="$ROOT/.stamp-node"

node_installed() {
  local b
  for b in $NODE_PKGS; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
  [[ "$(cat "$NODE_STAMP" 2>/dev/null)" == "$WANT" ]]
}

install_node() {
  install
  node_installed && return 0
  exec 9>"$ROOT/.lock"
  command -v flock >/dev/null && flock 9
  if ! node_installed; then
    local src="$ROOT/src/kubernetes" p t0 ldflags
    [[ -f "$src/go.mod" ]] || die "no wrapper module in $src (kube.sh install first)"
    rm -f "$NODE_STAMP"
    log "kubernetes $KUBE_VERSION: resolving $NODE_PKGS"
    (cd "$src" && gorun get $(for p in $NODE_PKGS; do echo "k8s.io/kubernetes/cmd/$p@$KUBE_VERSION"; done) \
        2>&1 | quiet_get)
    ldflags="$(kube_ldflags)"
    for p in $NODE_PKGS; do
      t0=$SECONDS
      log "kubernetes $KUBE_VERSION: building $p"
      (cd "$src" && gorun build $(build_p) -trimpath -ldflags "$ldflags" \
          -o "$BIN_DIR/$p.new" "k8s.io/kubernetes/cmd/$p")
      mv "$BIN_DIR/$p.new" "$BIN_DIR/$p"
      log "kubernetes $KUBE_VERSION: $p built in $((SECONDS - t0)) s"
    done
    echo "$WANT" > "$NODE_STAMP"
  fi
  exec 9>&-
}

installed() {
  [[ -x "$ETCD" && -x "$KUBE_APISERVER" && -x "$KUBECTL" \
     && "$(cat "$STAMP" 2>/dev/null)" == "$WANT" ]]
}

install() {
  installed && return 0
  mkdir -p "$BIN_DIR"
  # Parallel first starts (pytest-xdist) build once: the others wait on the lock.
  exec 9>"$ROOT/.lock"
  if command -v flock >/dev/null; then
    flock 9
    installed && { exec 9>&-; return 0; }
  fi
  build_all
  exec 9>&-  # not inherited by the servers start() launches
}

build_all() {
  command -v go >/dev/null || die "go is not installed"
  local t0=$SECONDS
  rm -f "$STAMP"
  log "installing $WANT into $BIN_DIR ($(go version | cut -d' ' -f3))"
  install_etcd
  log "etcd built ($((SECONDS - t0)) s so far)"
  install_kube
  "$ETCD" --version 2>&1 | sed -n 1p >&2
  "$KUBE_APISERVER" --version >&2
  "$KUBECTL" version --client 2>&1 | sed -n 1p >&2
  if [[ "${KUBE_KEEP_GOCACHE:-1}" == 0 ]]; then
    chmod -R u+w "$ROOT/gomod" 2>/dev/null || true
    rm -rf "$ROOT/gomod" "$ROOT/gocache" "$ROOT/gopath"
  fi
  echo "$WANT" > "$STAMP"
  log "ok in $((SECONDS - t0)) s: $BIN_DIR ($(du -sh "$ROOT" | cut -f1) in $ROOT)"
}

# ---- start / stop ---------------------------------------------------------------------------

free_port() {  # tests/lib's: below the ephemeral range
  PYTHONPATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)" python3 -c \
    'from strata_testlib import free_port; print(free_port())'
}

rand_hex() { openssl rand -hex 16 2>/dev/null || od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# PKCS#1 RSA key for signing service-account tokens: openssl if present, else Go's stdlib.
gen_rsa_key() {
  local out="$1" tmp
  if command -v openssl >/dev/null && openssl genrsa -out "$out" 2048 2>/dev/null; then
    return 0
  fi
  tmp="$(mktemp -d)"
  cat > "$tmp/main.go" <<'GO'
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
)

func main() {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	pem.Encode(os.Stdout, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}
GO
  (cd "$tmp" && GOFLAGS= GOWORK=off go run main.go) > "$out"
  rm -rf "$tmp"
}

running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

envval() { sed -n "s/^$2=//p" "$1/kube.env"; }  # DIR KEY

readyz() {  # DIR [verbose]
  curl -sk --max-time 5 -H "Authorization: Bearer $(envval "$1" ADMIN_TOKEN)" \
    "https://127.0.0.1:$(envval "$1" APISERVER_PORT)/readyz${2:+?verbose}" 2>/dev/null
}

start() {
  local dir="$1" t0 token ec ep ap deadline
  [[ -n "$dir" ]] || die "usage: $0 start DIR"
  install
  mkdir -p "$dir"; dir="$(cd "$dir" && pwd)"
  if [[ -f "$dir/kube.env" ]] && running "$dir/etcd.pid" && running "$dir/kube-apiserver.pid" \
     && [[ "$(readyz "$dir")" == ok ]]; then
    log "already running"; echo "$dir/kubeconfig"; return 0
  fi
  stop "$dir"
  t0="$(now)"
  # First start: ports, admin token, service-account key. A restart keeps them and etcd's data.
  if [[ ! -f "$dir/kube.env" ]]; then
    mkdir -p "$dir/certs"; mkdir -m 700 "$dir/etcd-data"
    gen_rsa_key "$dir/sa.key"
    token="$(rand_hex)"
    echo "$token,strata-admin,strata-admin,\"system:masters\"" > "$dir/tokens.csv"
    chmod 600 "$dir/sa.key" "$dir/tokens.csv"
    {
      echo "ETCD_CLIENT_PORT=$(free_port)"
      echo "ETCD_PEER_PORT=$(free_port)"
      echo "APISERVER_PORT=$(free_port)"
      echo "ADMIN_TOKEN=$token"
    } > "$dir/kube.env"
  fi
  ec="$(envval "$dir" ETCD_CLIENT_PORT)"
  ep="$(envval "$dir" ETCD_PEER_PORT)"
  ap="$(envval "$dir" APISERVER_PORT)"

  nohup "$ETCD" --name strata --data-dir "$dir/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ec" --advertise-client-urls "http://127.0.0.1:$ec" \
    --listen-peer-urls "http://127.0.0.1:$ep" --initial-advertise-peer-urls "http://127.0.0.1:$ep" \
    --initial-cluster "strata=http://127.0.0.1:$ep" \
    --unsafe-no-fsync --watch-progress-notify-interval=5s --log-level=warn \
    >>"$dir/etcd.log" 2>&1 &
  echo $! > "$dir/etcd.pid"
  deadline=$(( $(date +%s) + 30 ))
  until curl -sf --max-time 2 "http://127.0.0.1:$ec/health" 2>/dev/null | grep -q '"health":"true"'; do
    running "$dir/etcd.pid" || { log "etcd exited:"; tail -20 "$dir/etcd.log" >&2; return 1; }
    (( $(date +%s) < deadline )) || { log "etcd not healthy after 30 s"; stop "$dir"; return 1; }
    sleep 0.1
  done
  log "etcd healthy on 127.0.0.1:$ec after $(since "$t0") s"

  nohup "$KUBE_APISERVER" \
    --etcd-servers "http://127.0.0.1:$ec" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$ap" \
    --cert-dir "$dir/certs" \
    --service-account-key-file "$dir/sa.key" --service-account-signing-key-file "$dir/sa.key" \
    --service-account-issuer "https://127.0.0.1:$ap" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --authorization-mode RBAC --token-auth-file "$dir/tokens.csv" \
    --disable-admission-plugins ServiceAccount --allow-privileged=true \
    >>"$dir/kube-apiserver.log" 2>&1 &
  echo $! > "$dir/kube-apiserver.pid"

  deadline=$(( $(date +%s) + ${KUBE_START_TIMEOUT:-120} ))
  until [[ "$(readyz "$dir")" == ok ]]; do
    if ! running "$dir/kube-apiserver.pid"; then
      log "kube-apiserver exited:"; tail -30 "$dir/kube-apiserver.log" >&2; stop "$dir"; return 1
    fi
    if ! running "$dir/etcd.pid"; then
      log "etcd exited:"; tail -20 "$dir/etcd.log" >&2; stop "$dir"; return 1
    fi
    if (( $(date +%s) > deadline )); then
      log "not ready after ${KUBE_START_TIMEOUT:-120} s; /readyz?verbose says:"
      readyz "$dir" verbose | grep -v '\] ok$' >&2 || true
      tail -20 "$dir/kube-apiserver.log" >&2; stop "$dir"; return 1
    fi
    sleep 0.2
  done

  # The self-generated serving cert (DIR/certs/apiserver.crt: IP 127.0.0.1, not "localhost") is
  # followed in that file by the self-signed CA that signed it; that last block is DIR/ca.crt.
  awk '/-----BEGIN CERTIFICATE-----/ { b = "" } { b = b $0 "\n" } END { printf "%s", b }' \
    "$dir/certs/apiserver.crt" > "$dir/ca.crt"
  cat > "$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: strata
  cluster:
    server: https://127.0.0.1:$ap
    certificate-authority-data: $(base64 -w0 < "$dir/ca.crt")
users:
- name: strata-admin
  user:
    token: $(envval "$dir" ADMIN_TOKEN)
contexts:
- name: strata
  context:
    cluster: strata
    user: strata-admin
    namespace: default
current-context: strata
EOF
  chmod 600 "$dir/kubeconfig"
  log "kube-apiserver ready on https://127.0.0.1:$ap after $(since "$t0") s"
  echo "$dir/kubeconfig"
}

stop_pid() {  # PIDFILE NAME
  local pid t
  [[ -f "$1" ]] || return 0
  pid="$(cat "$1")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    t=$(( ${KUBE_STOP_TIMEOUT:-20} * 10 ))
    while (( t-- > 0 )) && kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$2 still running ${KUBE_STOP_TIMEOUT:-20} s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
  fi
  rm -f "$1"
}

stop() {  # API server first, so it does not spin on a vanished etcd
  local dir="$1"
  [[ -n "$dir" ]] || die "usage: $0 stop DIR"
  stop_pid "$dir/kube-apiserver.pid" kube-apiserver
  stop_pid "$dir/etcd.pid" etcd
}

status() {
  local dir="$1"
  [[ -n "$dir" && -f "$dir/kube.env" ]] || return 1
  running "$dir/etcd.pid" && running "$dir/kube-apiserver.pid" && [[ "$(readyz "$dir")" == ok ]]
}

case "${1:-}" in
  install) install ;;
  install-node) install_node ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  status) status "${2:-}" ;;
  env) printf 'export KUBECTL=%q KUBE_APISERVER=%q ETCD=%q\n' "$KUBECTL" "$KUBE_APISERVER" "$ETCD" ;;
  *) echo "usage: $0 install | install-node | start DIR | stop DIR | status DIR | env" >&2; exit 2 ;;
esac
