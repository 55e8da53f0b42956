#!/usr/bin/env bash
# Container images for the Kubernetes test bed (tests/testbed/k8s.sh), built without a Docker
# engine or a registry: podman (Debian) with runc, its storage in the test-bed cache.
#
#   tests/testbed/images.sh [build]   the strata-node and strata-operator images from the repo's
#                                     Dockerfile (targets node and operator), loaded into the
#                                     running test cluster's containerd; prints their references
#   tests/testbed/images.sh bases     only the base images (below); prints their references
#   tests/testbed/images.sh pause     the pod sandbox ("pause") image as a docker archive; prints
#                                     its path (k8s.sh up loads it)
#   tests/testbed/images.sh load REF  save REF from podman and import it into the cluster's
#                                     containerd (k8s.sh must be up)
#   tests/testbed/images.sh clean     remove podman's storage (the cached tarballs stay)
#
# No base image can be pulled here, so the Dockerfile's two base images are build arguments
# (BUILDER, RUNTIME_BASE; public defaults rust:bookworm and distroless) and this script makes
# local ones from Debian 12 packages with debootstrap, imported with `podman import`:
#   localhost/strata-testbed/bookworm-build:12     minbase + gcc, g++, make, cmake, perl; the
#                                                   Rust toolchain is the host's, bind-mounted
#                                                   read-only at build time (RUSTUP_HOME,
#                                                   CARGO_HOME/bin), not copied into any image;
#                                                   so is the host's CA bundle (cargo reaches
#                                                   crates.io through the host's TLS proxy)
#   localhost/strata-testbed/bookworm-runtime:12   minbase + ca-certificates and the distroless
#                                                   "nonroot" user (65532, /home/nonroot); also
#                                                   the image of the test bed's own test pods
#   localhost/strata-testbed/pause:3.10            a static Go pause process (pod sandboxes)
# The cargo registry and the release target directory are the Dockerfile's BuildKit-style cache
# mounts, which podman keeps under $TMPDIR (set to the cache): a rebuild compiles only what
# changed.
#
# Cache layout ($STRATA_CACHE/images): rootfs-*.tar (debootstrap results), debs/ (downloaded
# .deb files), storage/ (podman's image store), tmp/ (podman's build cache mounts), pause/.
# IMAGES_FROM=host (the default) compiles the release binaries on this host, where the other
# suites' builds already made most of them, and builds the images with the Dockerfile's
# BINARIES=prebuilt (same runtime stages, no compile in a container: the builder base is not
# even made); IMAGES_FROM=source compiles inside the builder image as a user's `docker build`
# does (on a fresh machine about 23 minutes more).
# Environment: STRATA_CACHE, IMAGE_TAG (default: the git short hash, "-dirty" when the tree has
# changes), IMAGES_NICE (default 15), DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
ROOT="$CACHE/images"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
NICE="${IMAGES_NICE:-15}"
BUILD_REF=localhost/strata-testbed/bookworm-build:12
RUNTIME_REF=localhost/strata-testbed/bookworm-runtime:12
PAUSE_REF=localhost/strata-testbed/pause:3.10
RUNROOT=/run/strata-testbed-podman

log() { echo "[images] $*" >&2; }
die() { log "$*"; exit 1; }

podman_() {
  mkdir -p "$ROOT/storage" "$ROOT/tmp"
  # Our own store and run directory (nothing under /var/lib/containers), cgroupfs (no
  # systemd), runc (crun refuses this machine's hybrid cgroup layout).
  TMPDIR="$ROOT/tmp" nice -n "$NICE" podman --root "$ROOT/storage" --runroot "$RUNROOT" \
    --storage-driver overlay --runtime /usr/sbin/runc --cgroup-manager cgroupfs \
    --events-backend file "$@"
}

have_image() { podman_ image exists "$1" 2>/dev/null; }

need() {
  local missing=() c
  for c in "$@"; do command -v "$c" >/dev/null || missing+=("$c"); done
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]} (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman debootstrap runc >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman debootstrap runc >/dev/null; }
}

# debootstrap NAME PACKAGES: a Debian 12 minbase rootfs tarball, cached.
rootfs() {
  local name="$1" include="$2" tar="$ROOT/rootfs-$1.tar" dir t0=$SECONDS
  local want="bookworm minbase $include"
  if [[ -f "$tar" && "$(cat "$tar.stamp" 2>/dev/null)" == "$want" ]]; then return 0; fi
  need debootstrap
  mkdir -p "$ROOT/debs"
  dir="$(mktemp -d "$ROOT/rootfs-$name.XXXXXX")"
  log "debootstrap bookworm ($name: $include), first time: a few minutes"
  nice -n "$NICE" debootstrap --variant=minbase --include="$include" \
    --cache-dir="$ROOT/debs" bookworm "$dir" "$MIRROR" > "$ROOT/debootstrap-$name.log" 2>&1 \
    || { tail -20 "$ROOT/debootstrap-$name.log" >&2; rm -rf "$dir"; die "debootstrap failed"; }
  # What distroless' nonroot variant has: user and group 65532 "nonroot", its home.
  echo 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >> "$dir/etc/passwd"
  echo 'nonroot:x:65532:' >> "$dir/etc/group"
  mkdir -p "$dir/home/nonroot"; chown 65532:65532 "$dir/home/nonroot"; chmod 700 "$dir/home/nonroot"
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/*.log
  tar --numeric-owner -C "$dir" -cf "$tar.new" .
  rm -rf "$dir"
  mv "$tar.new" "$tar"; echo "$want" > "$tar.stamp"
  log "rootfs $name: $(du -h "$tar" | cut -f1) in $((SECONDS - t0)) s"
}

import_base() {  # REF TAR CHANGES...
  local ref="$1" tar="$2"; shift 2
  local stamp="$ROOT/.imported-${ref//[\/:]/_}" want
  want="$(stat -c %Y-%s "$tar")"
  if have_image "$ref" && [[ "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then return 0; fi
  local args=() c
  for c in "$@"; do args+=(--change "$c"); done
  podman_ import -q "${args[@]}" "$tar" "$ref" >/dev/null
  echo "$want" > "$stamp"
  log "imported $ref"
}

bases() {  # [runtime]: only the runtime base
  need podman debootstrap
  rootfs runtime ca-certificates
  local path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  import_base "$RUNTIME_REF" "$ROOT/rootfs-runtime.tar" "ENV PATH=$path" \
    "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" "USER 65532:65532" \
    "WORKDIR /home/nonroot"
  [[ "${1:-}" == runtime ]] && return 0
  rootfs build ca-certificates,gcc,g++,libc6-dev,make,cmake,perl,pkg-config
  import_base "$BUILD_REF" "$ROOT/rootfs-build.tar" \
    "ENV PATH=/usr/local/cargo/bin:$path" "ENV RUSTUP_HOME=/usr/local/rustup" \
    "ENV CARGO_HOME=/usr/local/cargo"
}

pause() {
  local dir="$ROOT/pause" out="$ROOT/pause/pause.tar"
  if [[ -f "$out" ]]; then echo "$out"; return 0; fi
  need podman
  mkdir -p "$dir/src" "$dir/rootfs"
  cat > "$dir/src/main.go" <<'GO'
// The pod sandbox process: holds the pod's namespaces, reaps orphans, exits on INT/TERM.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, _ := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 {
				break
			}
		}
	}
}
GO
  printf 'module strata-testbed/pause\n\ngo 1.22\n' > "$dir/src/go.mod"
  (cd "$dir/src" && CGO_ENABLED=0 GOWORK=off GOFLAGS= nice -n "$NICE" go build -trimpath \
      -ldflags "-s -w" -o "$dir/rootfs/pause" .)
  tar --numeric-owner -C "$dir/rootfs" -cf "$dir/rootfs.tar" pause
  podman_ import -q --change 'ENTRYPOINT ["/pause"]' --change 'USER 65535:65535' \
    "$dir/rootfs.tar" "$PAUSE_REF" >/dev/null
  rm -f "$out.new"
  podman_ save -q --format docker-archive -o "$out.new" "$PAUSE_REF" >/dev/null
  mv "$out.new" "$out"
  echo "$out"
}

# The running test cluster's containerd (k8s.sh env).
ctr_() {
  local sock
  sock="$(bash "$HERE/k8s.sh" env | sed -n "s/^CONTAINERD_ADDRESS='\(.*\)'$/\1/p")"
  [[ -S "$sock" ]] || die "the test cluster is not up (bash tests/testbed/k8s.sh up)"
  ctr --address "$sock" --namespace k8s.io "$@"
}

load() {  # REF...
  local ref tar
  for ref in "$@"; do
    tar="$ROOT/tmp/load-${ref//[\/:]/_}.tar"
    rm -f "$tar"
    podman_ save -q --format docker-archive -o "$tar" "$ref" >/dev/null
    ctr_ images import --no-unpack=false "$tar" >/dev/null 2>&1 || ctr_ images import "$tar" >/dev/null
    rm -f "$tar"
    log "loaded $ref into the cluster's containerd"
  done
}

image_tag() {
  if [[ -n "${IMAGE_TAG:-}" ]]; then echo "$IMAGE_TAG"; return; fi
  local h
  h="$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo dev)"
  if [[ -n "$(git -C "$REPO" status --porcelain --untracked-files=no -- . ':!tests' ':!docs' 2>/dev/null)" ]]; then
    h+="-dirty"
  fi
  echo "$h"
}

# The release binaries built on this host (Debian 12, the runtime base's glibc), put where the
# Dockerfile's "prebuilt" stage copies them from.
host_binaries() {
  local dir="${CARGO_TARGET_DIR:-$REPO/target}/release" t1=$SECONDS
  log "release build of strata-node and strata-operator on this host (IMAGES_FROM=host)"
  (cd "$REPO" && nice -n "$NICE" cargo build --release --locked -q -p strata-node -p strata-operator) \
    || die "cargo build --release failed"
  rm -rf "$REPO/.prebuilt"
  mkdir -p "$REPO/.prebuilt"
  cp "$dir/strata-node" "$dir/strata-operator" "$REPO/.prebuilt/"
  log "host release build in $((SECONDS - t1)) s"
}

build() {
  local tag t0=$SECONDS target rustup cargo_bin from="${IMAGES_FROM:-host}" binaries
  case "$from" in
    host) bases runtime; binaries=prebuilt ;;
    source) bases; binaries=build ;;
    *) die "IMAGES_FROM is host or source, not $from" ;;
  esac
  tag="$(image_tag)"
  rustup="${RUSTUP_HOME:-$HOME/.rustup}"
  cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
  if [[ "$from" == source ]]; then
    [[ -d "$rustup/toolchains" && -x "$cargo_bin/cargo" ]] || die "no host Rust toolchain in $rustup"
  fi
  if [[ "$from" == host ]]; then
    trap 'rm -rf "$REPO/.prebuilt"' EXIT
    if ! have_image "localhost/strata-node:$tag" || ! have_image "localhost/strata-operator:$tag" \
       || [[ "$tag" == *-dirty ]]; then
      host_binaries
    fi
  fi
  for target in node operator; do
    local ref="localhost/strata-$target:$tag" t1=$SECONDS
    if have_image "$ref" && [[ "$tag" != *-dirty ]]; then
      log "$ref exists"
    else
      log "building $ref (Dockerfile --target $target)"
      # --network host: cargo fetches crates inside the build (no bridge network made here).
      podman_ build --pull=never --network host --target "$target" \
        --ulimit nofile=1024:20000 --ulimit nproc=4096:4096 \
        --build-arg "BUILDER=$BUILD_REF" --build-arg "RUNTIME_BASE=$RUNTIME_REF" \
        --build-arg "BINARIES=$binaries" \
        -v "$rustup:/usr/local/rustup:ro" -v "$cargo_bin:/usr/local/cargo/bin:ro" \
        -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
        --layers -t "$ref" -f "$REPO/Dockerfile" "$REPO" > "$ROOT/build-$target.log" 2>&1 \
        || { tail -40 "$ROOT/build-$target.log" >&2; die "podman build --target $target failed (log: $ROOT/build-$target.log)"; }
      log "built $ref in $((SECONDS - t1)) s"
    fi
  done
  if bash "$HERE/k8s.sh" env >/dev/null 2>&1; then
    load "localhost/strata-node:$tag" "localhost/strata-operator:$tag"
  else
    log "the test cluster is not up: images not loaded"
  fi
  log "done in $((SECONDS - t0)) s"
  echo "NODE_IMAGE=localhost/strata-node:$tag"
  echo "OPERATOR_IMAGE=localhost/strata-operator:$tag"
}

case "${1:-build}" in
  build) build ;;
  bases) bases; echo "$BUILD_REF"; echo "$RUNTIME_REF" ;;
  pause) pause ;;
  load) shift; load "$@" ;;
  clean) podman_ system reset -f >/dev/null 2>&1 || true; rm -rf "$ROOT/storage" "$ROOT/tmp" ;;
  *) echo "usage: $0 [build] | bases | pause | load REF... | clean" >&2; exit 2 ;;
esac
