#!/usr/bin/env bash
# The Kubernetes suite (tests/k8s): Strata on a real one-node cluster. Starts the cluster
# (tests/testbed/k8s.sh up), builds the images from the Dockerfile and loads them into its
# containerd (tests/testbed/images.sh), then runs pytest under CLIENT_EXEC (so the tests and
# their Kafka clients resolve *.svc.cluster.local and reach pod and Service IPs), and tears the
# cluster down (K8S_KEEP=1 leaves it up; a later run reuses it).
#
#   tests/k8s/run.sh [pytest args...]
#
#   STRATA_CACHE=DIR   test-bed cache (default ~/.cache/strata-testbed): the venv is
#                      $STRATA_CACHE/testbed-venv (tests/testbed/venv.sh); binaries, images
#                      and build caches as the test-bed scripts say
#   K8S_KEEP=1         leave the cluster up after the run
#   K8S_TIMINGS=FILE   append every measured time (tab-separated) to FILE
#
# Needs root. A cold run builds the Kubernetes binaries, CoreDNS, helm, the runtime base image
# and a release build of strata-node and strata-operator on this host (images.sh, IMAGES_FROM):
# long, once.
# Exits with pytest's status; "no tests collected" (5) counts as a failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/k8s"
TB="$ROOT/tests/testbed"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
export STRATA_CACHE="$CACHE"
[[ $EUID == 0 ]] || { echo "k8s: needs root (runc, network namespaces)" >&2; exit 1; }

PY="$(bash "$ROOT/tests/testbed/venv.sh")" || { echo "k8s: venv.sh failed" >&2; exit 1; }

bash "$TB/helm.sh" install || { echo "k8s: helm.sh install failed" >&2; exit 1; }
export HELM="$(bash "$TB/helm.sh" path)"
# MinIO for the tiering test (started by the test on the node's address).
bash "$TB/minio.sh" install || { echo "k8s: minio.sh install failed" >&2; exit 1; }

t0=$SECONDS
bash "$TB/k8s.sh" up > "$CACHE/k8s-up.env" || { echo "k8s: k8s.sh up failed" >&2; bash "$TB/k8s.sh" down; exit 1; }
t_up=$((SECONDS - t0))
cleanup() { [[ "${K8S_KEEP:-0}" == 1 ]] || bash "$TB/k8s.sh" down; }
trap cleanup EXIT
set -a; source "$CACHE/k8s-up.env"; set +a

t0=$SECONDS
images="$(bash "$TB/images.sh" build)" || { echo "k8s: images.sh failed" >&2; exit 1; }
t_images=$((SECONDS - t0))
eval "$(echo "$images" | grep -E '^(NODE|OPERATOR)_IMAGE=')"
export NODE_IMAGE OPERATOR_IMAGE
# A second tag of the node image for the rolling change (same content, a new reference).
export NODE_IMAGE_ROLL="${NODE_IMAGE}-roll"
ctr --address "$CONTAINERD_ADDRESS" -n k8s.io images tag --force "$NODE_IMAGE" "$NODE_IMAGE_ROLL" >/dev/null

echo "[k8s] cluster up in $t_up s, images built and loaded in $t_images s" >&2
if [[ -n "${K8S_TIMINGS:-}" ]]; then
  printf 'k8s.sh up\t%s\nimages.sh build + load\t%s\n' "$t_up" "$t_images" >> "$K8S_TIMINGS"
fi

cd "$HERE"
$CLIENT_EXEC "$PY" -m pytest -p no:cacheprovider "$@" .
rc=$?
if [[ $rc -eq 5 ]]; then
  echo "k8s: pytest collected no tests; treating as failure" >&2
  exit 1
fi
exit $rc
