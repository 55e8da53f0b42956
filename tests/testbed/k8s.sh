#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this machine (pods run, Services resolve), for the
# Kubernetes suite (tests/k8s). Needs root (runc, network namespaces, mounts).
#
#   tests/testbed/k8s.sh install   build and cache every binary (once; see below)
#   tests/testbed/k8s.sh up        start the cluster; prints KUBECONFIG=..., CLIENT_EXEC=...
#   tests/testbed/k8s.sh env       print the same variables for a running cluster (exit 1 if none)
#   tests/testbed/k8s.sh down      stop everything and remove the cluster's state
#   tests/testbed/k8s.sh status    exit 0 if the cluster is up and its node is Ready
#   tests/testbed/k8s.sh smoke     a pod from a locally made image behind a Service: Running,
#                                  its name resolves and answers under CLIENT_EXEC, and a pod
#                                  reaches it and the API server by name (needs images.sh)
#
# Layout. The control plane runs in this machine's network namespace: etcd on 127.0.0.1,
# kube-apiserver on 10.213.0.1:6443 (a veth address of its own, reachable from the pods),
# kube-controller-manager, kube-scheduler. The node runs in a network namespace made here
# ("strata-k8s", eth0 = 10.213.0.2, veth peer of the host's stk8s0 = 10.213.0.1) and in one
# private mount namespace held by a `sleep` process: containerd (Debian's, with runc), kubelet,
# kube-proxy (iptables mode, rules only inside that namespace) and CoreDNS (listening on
# 10.213.0.2:53, the kubelet's clusterDNS). Pods get 10.244.0.0/24 on a bridge (CNI bridge,
# host-local, portmap, loopback from Debian's containernetworking-plugins); Services
# 10.96.0.0/24. Volumes: a default StorageClass "strata-local" with static hostPath
# PersistentVolumes made here (directories owned by 65532, the image user), so the
# StatefulSets' claims bind; K8S_PVS of them (default 12).
#
# CLIENT_EXEC is `ip netns exec strata-k8s`: a process under it resolves *.svc.cluster.local
# (its resolv.conf is /etc/netns/strata-k8s/resolv.conf, ndots:5 like a pod's) and reaches pod
# and Service IPs. Nothing listens on an address outside 127.0.0.1 and 10.213.0.0/30, and no
# iptables rule is added outside the namespace.
#
# Binaries: kube-apiserver, kubectl, kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy, etcd (tests/testbed/kube.sh install / install-node, Go module proxy), CoreDNS
# (Go module, built here into $STRATA_CACHE/k8s/bin), the pause image (images.sh pause);
# containerd, runc, CNI plugins, iptables, conntrack are Debian packages (apt-get).
# State: K8S_STATE (default /var/tmp/strata-k8s), removed by `down`.
# Environment: STRATA_CACHE, K8S_STATE, K8S_PVS, COREDNS_VERSION, K8S_START_TIMEOUT (s, 180).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${STRATA_CACHE:-$HOME/.cache/strata-testbed}"
STATE="${K8S_STATE:-/var/tmp/strata-k8s}"
KBIN="$CACHE/kube/bin"
K8S="$CACHE/k8s"
COREDNS_VERSION="${COREDNS_VERSION:-v1.12.4}"
COREDNS="$K8S/bin/coredns"
NS=strata-k8s
HOST_IF=stk8s0
HOST_IP=10.213.0.1
NODE_IP=10.213.0.2
POD_CIDR=10.244.0.0/24
SVC_CIDR=10.96.0.0/24
API_PORT=6443
NODE_NAME=strata-k8s
DEBS="containerd runc containernetworking-plugins iptables conntrack socat"

log() { echo "[k8s] $*" >&2; }
die() { log "$*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---- install --------------------------------------------------------------------------------

install_debs() {
  local missing=() d
  for d in $DEBS; do dpkg -s "$d" >/dev/null 2>&1 || missing+=("$d"); done
  ((${#missing[@]} == 0)) && return 0
  log "apt-get install ${missing[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >&2
  # Debian's containerd package may start its own daemon (systemd); this test bed runs its own.
}

install_coredns() {
  [[ -x "$COREDNS" && "$(cat "$K8S/.stamp-coredns" 2>/dev/null)" == "$COREDNS_VERSION" ]] && return 0
  local t0=$SECONDS src="$K8S/src/coredns"
  log "building CoreDNS $COREDNS_VERSION (Go module)"
  rm -rf "$src"; mkdir -p "$src" "$K8S/bin"
  printf 'module strata-testbed/coredns\n\ngo 1.24\n' > "$src/go.mod"
  # Shares kube.sh's module and build caches (client-go and friends are already there).
  (cd "$src" && GOMODCACHE="$CACHE/kube/gomod" GOCACHE="$CACHE/kube/gocache" GOFLAGS=-mod=mod \
     GOWORK=off CGO_ENABLED=0 GOPATH="$CACHE/kube/gopath" nice -n 15 \
     go get "github.com/coredns/coredns@$COREDNS_VERSION" 2>&1 | grep -vE '^go: (added|upgraded|downloading) ' >&2 || true)
  (cd "$src" && GOMODCACHE="$CACHE/kube/gomod" GOCACHE="$CACHE/kube/gocache" GOFLAGS=-mod=mod \
     GOWORK=off CGO_ENABLED=0 GOPATH="$CACHE/kube/gopath" nice -n 15 \
     go build -trimpath -ldflags "-s -w" -o "$COREDNS.new" github.com/coredns/coredns)
  mv "$COREDNS.new" "$COREDNS"
  echo "$COREDNS_VERSION" > "$K8S/.stamp-coredns"
  log "CoreDNS built in $((SECONDS - t0)) s"
}

install() {
  [[ $EUID == 0 ]] || die "needs root"
  install_debs
  bash "$HERE/kube.sh" install-node
  install_coredns
  bash "$HERE/images.sh" pause >/dev/null
}

# ---- helpers --------------------------------------------------------------------------------

running() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
holder() { cat "$STATE/holder.pid"; }
# Run in the node's network and mount namespaces.
innode() { nsenter -t "$(holder)" -m -n -- "$@"; }
holder_ready() {
  [[ "$(readlink "/proc/$(holder)/exe")" == */sleep \
     && "$(readlink "/proc/$(holder)/ns/mnt")" != "$(readlink /proc/self/ns/mnt)" ]]
}
kctl() { "$KBIN/kubectl" --kubeconfig "$STATE/kubeconfig" "$@"; }

start_bg() {  # NAME CMD... (in the host namespaces)
  local name="$1"; shift
  nohup "$@" >>"$STATE/log/$name.log" 2>&1 < /dev/null &
  echo $! > "$STATE/$name.pid"
}

start_node_bg() {  # NAME CMD... (in the node's namespaces)
  local name="$1"; shift
  nohup nsenter -t "$(holder)" -m -n -- "$@" >>"$STATE/log/$name.log" 2>&1 < /dev/null &
  echo $! > "$STATE/$name.pid"
}

wait_until() {  # WHAT TIMEOUT CMD...
  local what="$1" timeout="$2"; shift 2
  local deadline=$(( $(date +%s) + timeout ))
  until "$@" >/dev/null 2>&1; do
    (( $(date +%s) < deadline )) || { log "timed out after $timeout s waiting for $what"; return 1; }
    sleep 0.3
  done
}

print_env() {  # shell-sourceable: VAR='value'
  local kv
  for kv in "KUBECONFIG=$STATE/kubeconfig" "CLIENT_EXEC=ip netns exec $NS" \
            "KUBECTL=$KBIN/kubectl" "CONTAINERD_ADDRESS=$STATE/containerd/containerd.sock" \
            "HOST_IP=$HOST_IP" "NODE_IP=$NODE_IP" "K8S_STATE=$STATE"; do
    echo "${kv%%=*}='${kv#*=}'"
  done
}

# ---- up -------------------------------------------------------------------------------------

setup_network() {
  ip netns add "$NS"
  ip link add "$HOST_IF" type veth peer name eth0 netns "$NS"
  ip addr add "$HOST_IP/30" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  ip -n "$NS" addr add "$NODE_IP/30" dev eth0
  ip -n "$NS" link set eth0 up
  ip -n "$NS" link set lo up
  # Service IPs only (kube-proxy rewrites them before they leave): no default route, so
  # nothing from the pods is routed past the host's veth end.
  ip -n "$NS" route add "$SVC_CIDR" via "$HOST_IP"
  ip netns exec "$NS" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$NS" sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
  mkdir -p "/etc/netns/$NS"
  cat > "/etc/netns/$NS/resolv.conf" <<EOF
search default.svc.cluster.local svc.cluster.local cluster.local
nameserver $NODE_IP
options ndots:5
EOF
}

write_configs() {
  local d="$STATE"
  mkdir -p "$d/log" "$d/certs" "$d/cni/net.d" "$d/cni/ipam" "$d/pv" "$d/etcd" "$d/pod-logs"
  chmod 700 "$d/etcd"
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  local token; token="$(openssl rand -hex 16)"
  echo "$token,strata-admin,strata-admin,\"system:masters\"" > "$d/tokens.csv"
  echo "$token" > "$d/admin.token"
  chmod 600 "$d/sa.key" "$d/tokens.csv" "$d/admin.token"

  cat > "$d/containerd.toml" <<EOF
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.grpc.v1.introspection.tracing"]
[grpc]
  address = "$d/containerd/containerd.sock"
[ttrpc]
  address = "$d/containerd/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/strata-testbed/pause:3.10"
  enable_selinux = false
  # Pod network namespaces under the state directory, not /run/netns.
  netns_mounts_under_state_dir = true
  # No CAP_SYS_RESOURCE here: a container cannot get an oom_score_adj below containerd's own
  # (the kubelet asks -998 for sandboxes), so CRI raises it to containerd's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "$d/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni/net.d"
EOF

  cat > "$d/cni/net.d/10-strata.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "strata",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$d/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

  echo "nameserver $NODE_IP" > "$d/kubelet-resolv.conf"
  cat > "$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$d/containerd/containerd.sock
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: true}   # the API server calls it without a client certificate (logs, exec)
  webhook: {enabled: true}
authorization:
  mode: AlwaysAllow
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
resolvConf: $d/kubelet-resolv.conf
podLogsDir: $d/pod-logs
failSwapOn: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
EOF

  cat > "$d/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $d/kubeconfig
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF

  # Cluster names from the API; every other name is NXDOMAIN at once (there is no upstream).
  cat > "$d/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $NODE_IP
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $d/kubeconfig strata
        pods insecure
        ttl 5
    }
}
.:53 {
    bind $NODE_IP
    template ANY ANY {
        rcode NXDOMAIN
    }
}
EOF
}

write_kubeconfig() {
  local d="$STATE"
  # The API server's self-made serving certificate is followed by the CA that signed it.
  awk '/-----BEGIN CERTIFICATE-----/ { b = "" } { b = b $0 "\n" } END { printf "%s", b }' \
    "$d/certs/apiserver.crt" > "$d/ca.crt"
  cat > "$d/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: strata
  cluster:
    server: https://$HOST_IP:$API_PORT
    certificate-authority-data: $(base64 -w0 < "$d/ca.crt")
users:
- name: strata-admin
  user:
    token: $(cat "$d/admin.token")
contexts:
- name: strata
  context:
    cluster: strata
    user: strata-admin
    namespace: default
current-context: strata
EOF
  chmod 600 "$d/kubeconfig"
}

readyz() {
  curl -sk --max-time 3 -H "Authorization: Bearer $(cat "$STATE/admin.token")" \
    "https://$HOST_IP:$API_PORT/readyz" 2>/dev/null | grep -qx ok
}

node_ready() {
  [[ "$(kctl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

make_storage() {
  local i n="${K8S_PVS:-12}" y="$STATE/storage.yaml"
  cat > "$y" <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: strata-local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
reclaimPolicy: Retain
volumeBindingMode: Immediate
EOF
  for ((i = 0; i < n; i++)); do
    mkdir -p "$STATE/pv/pv$i"; chown 65532:65532 "$STATE/pv/pv$i"; chmod 0770 "$STATE/pv/pv$i"
    cat >> "$y" <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata:
  name: strata-local-$i
spec:
  capacity: {storage: 100Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: strata-local
  hostPath: {path: $STATE/pv/pv$i, type: Directory}
EOF
  done
  kctl apply -f "$y" >/dev/null
}

up() {
  [[ $EUID == 0 ]] || die "needs root"
  if status; then log "already up"; print_env; return 0; fi
  [[ -e "$STATE" || -e "/run/netns/$NS" ]] && { log "leftovers of an earlier cluster: down first"; down; }
  install
  local t0; t0="$(now)"
  mkdir -p "$STATE"
  [[ -d /run/containerd ]] || touch "$STATE/.made-run-containerd"
  [[ -d /var/lib/cni ]] || touch "$STATE/.made-var-lib-cni"
  [[ -d /var/log/containers ]] || touch "$STATE/.made-var-log-containers"
  write_configs
  setup_network

  # etcd and the control plane, in this machine's namespaces.
  local ec ep
  ec="$(PYTHONPATH="$HERE/../lib" python3 -c 'from strata_testlib import free_port; print(free_port())')"
  ep="$(PYTHONPATH="$HERE/../lib" python3 -c 'from strata_testlib import free_port; print(free_port())')"
  start_bg etcd "$KBIN/etcd" --name strata --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ec" --advertise-client-urls "http://127.0.0.1:$ec" \
    --listen-peer-urls "http://127.0.0.1:$ep" --initial-advertise-peer-urls "http://127.0.0.1:$ep" \
    --initial-cluster "strata=http://127.0.0.1:$ep" --listen-metrics-urls "" \
    --unsafe-no-fsync --watch-progress-notify-interval=5s --log-level=warn
  start_bg kube-apiserver "$KBIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ec" \
    --bind-address "$HOST_IP" --advertise-address "$HOST_IP" --secure-port "$API_PORT" \
    --cert-dir "$STATE/certs" \
    --service-account-key-file "$STATE/sa.key" --service-account-signing-key-file "$STATE/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "$SVC_CIDR" \
    --authorization-mode Node,RBAC --token-auth-file "$STATE/tokens.csv" \
    --allow-privileged=true --endpoint-reconciler-type lease \
    --kubelet-preferred-address-types InternalIP
  wait_until "etcd + kube-apiserver /readyz" "${K8S_START_TIMEOUT:-180}" readyz \
    || { tail -20 "$STATE/log/kube-apiserver.log" >&2; return 1; }
  write_kubeconfig
  log "kube-apiserver ready on https://$HOST_IP:$API_PORT after $(since "$t0") s"

  start_bg kube-controller-manager "$KBIN/kube-controller-manager" \
    --kubeconfig "$STATE/kubeconfig" --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
    --service-account-private-key-file "$STATE/sa.key" --root-ca-file "$STATE/ca.crt" \
    --service-cluster-ip-range "$SVC_CIDR" --cluster-cidr "$POD_CIDR" --allocate-node-cidrs=false \
    --use-service-account-credentials=false --controllers '*,-nodeipam,-cloud-node-lifecycle' \
    --node-monitor-grace-period 20s
  start_bg kube-scheduler "$KBIN/kube-scheduler" \
    --kubeconfig "$STATE/kubeconfig" --leader-elect=false --bind-address 127.0.0.1 --secure-port 0

  # The node: one process holding a network + private mount namespace; everything else joins it.
  # nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup hierarchies.
  # nsenter and unshare (without --fork) exec in place: the pid is the sleep's.
  nohup nsenter --net="/run/netns/$NS" unshare --mount --propagation private sleep infinity \
    >/dev/null 2>&1 < /dev/null &
  echo $! > "$STATE/holder.pid"
  wait_until "the node's namespaces" 10 holder_ready

  ulimit -n 20000 2>/dev/null || true
  start_node_bg containerd /usr/bin/containerd --config "$STATE/containerd.toml"
  wait_until "containerd" 30 test -S "$STATE/containerd/containerd.sock"
  local pause_tar; pause_tar="$(bash "$HERE/images.sh" pause)"
  innode ctr --address "$STATE/containerd/containerd.sock" -n k8s.io images import "$pause_tar" >/dev/null
  start_node_bg kubelet "$KBIN/kubelet" --config "$STATE/kubelet.yaml" \
    --kubeconfig "$STATE/kubeconfig" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
    --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki" --v=1
  start_node_bg kube-proxy "$KBIN/kube-proxy" --config "$STATE/kube-proxy.yaml"
  start_node_bg coredns "$COREDNS" -conf "$STATE/Corefile"
  make_storage
  wait_until "node $NODE_NAME Ready" "${K8S_START_TIMEOUT:-180}" node_ready \
    || { tail -30 "$STATE/log/kubelet.log" >&2; return 1; }
  # Pods get a default ServiceAccount only once the controller made it.
  wait_until "the default ServiceAccount" 60 kctl get serviceaccount default
  log "up in $(since "$t0") s"
  print_env
}

# ---- down -----------------------------------------------------------------------------------

kill_pidfile() {  # PIDFILE [TIMEOUT]
  local f="$1" t="${2:-10}" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    t=$((t * 10))
    while ((t-- > 0)) && kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# Processes in the pod cgroups the kubelet made (cgroupfs driver: /kubepods in each hierarchy).
pod_pids() {
  local c
  for c in /sys/fs/cgroup/pids/kubepods /sys/fs/cgroup/memory/kubepods /sys/fs/cgroup/cpu/kubepods; do
    if [[ -d "$c" ]]; then find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null || true; fi
  done | sort -u
}

# Processes in the node's mount namespace (containerd, shims, kubelet, kube-proxy, coredns).
node_pids() {
  local h="$1" ns p
  ns="$(readlink "/proc/$h/ns/mnt" 2>/dev/null)" || return 0
  for p in /proc/[0-9]*; do
    if [[ "$(readlink "$p/ns/mnt" 2>/dev/null)" == "$ns" ]]; then echo "${p#/proc/}"; fi
  done
  return 0
}

down() {
  local t0; t0="$(now)"
  if [[ -d "$STATE" ]]; then
    kill_pidfile "$STATE/kubelet.pid" 3
    local pids h=""
    [[ -f "$STATE/holder.pid" ]] && h="$(cat "$STATE/holder.pid")"
    # Containers first (so no shim restarts anything), then the node's daemons.
    pids="$(pod_pids)"; [[ -n "$pids" ]] && kill -KILL $pids 2>/dev/null || true
    kill_pidfile "$STATE/kube-proxy.pid" 5
    kill_pidfile "$STATE/coredns.pid" 5
    kill_pidfile "$STATE/containerd.pid" 5
    if [[ -n "$h" ]] && kill -0 "$h" 2>/dev/null; then
      pids="$(node_pids "$h")"; [[ -n "$pids" ]] && kill -KILL $pids 2>/dev/null || true
    fi
    for _ in 1 2 3; do
      pids="$(pod_pids)"; [[ -z "$pids" ]] && break
      kill -KILL $pids 2>/dev/null || true; sleep 0.3
    done
    kill_pidfile "$STATE/holder.pid" 2
    kill_pidfile "$STATE/kube-scheduler.pid" 5
    kill_pidfile "$STATE/kube-controller-manager.pid" 5
    kill_pidfile "$STATE/kube-apiserver.pid" 5
    kill_pidfile "$STATE/etcd.pid" 5
  fi
  # The pod cgroups, deepest first.
  local c
  for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods; do
    [[ -d "$c" ]] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  # Mounts under the state directory seen from here (normally none: they lived in the node's
  # private mount namespace, gone with its last process).
  if [[ -d "$STATE" ]]; then
    awk -v s="$STATE" '$2 == s || index($2, s "/") == 1 { print $2 }' /proc/self/mounts | sort -r \
      | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
  ip netns del "$NS" 2>/dev/null || true
  ip link del "$HOST_IF" 2>/dev/null || true
  rm -rf "/etc/netns/$NS"
  rmdir /etc/netns 2>/dev/null || true
  # Pod network namespaces' bind-mount files whose mounts lived in the node's mount namespace.
  local f
  for f in /run/netns/cni-*; do
    [[ -e "$f" ]] || continue
    mountpoint -q "$f" || rm -f "$f"
  done
  if [[ -d "$STATE" ]]; then
    [[ -f "$STATE/.made-run-containerd" ]] && rm -rf /run/containerd
    [[ -f "$STATE/.made-var-lib-cni" ]] && rm -rf /var/lib/cni
    find /var/log/containers -maxdepth 1 -type l -lname "$STATE/*" -delete 2>/dev/null || true
    [[ -f "$STATE/.made-var-log-containers" ]] && rmdir /var/log/containers 2>/dev/null || true
    rm -rf "$STATE"
  fi
  log "down in $(since "$t0") s"
}

status() {
  [[ -f "$STATE/kubeconfig" ]] && running "$STATE/kube-apiserver.pid" && running "$STATE/holder.pid" \
    && readyz && node_ready
}

# ---- smoke ----------------------------------------------------------------------------------

# A pod from a locally made image (images.sh's runtime base) behind a Service; checks that it
# runs, that its Service name resolves under CLIENT_EXEC and answers through the Service IP,
# and that a pod reaches another Service and the API server by name.
SMOKE_SERVER='$s = IO::Socket::INET->new(LocalPort => 8080, Listen => 5, ReuseAddr => 1) or die;
while ($c = $s->accept) { while (<$c>) { last if /^\r?\n$/ } print $c "HTTP/1.0 200 OK\r\n\r\nhello from $ENV{HOSTNAME}\n"; close $c }'
SMOKE_CLIENT='my $s = IO::Socket::INET->new(PeerAddr => "web:80", Timeout => 5) or die "web: $!";
print $s "GET / HTTP/1.0\r\n\r\n"; print <$s>;
IO::Socket::INET->new(PeerAddr => "kubernetes.default:443", Timeout => 5) or die "api: $!";
print "api reachable\n"'

smoke() {
  status || die "not up"
  local img=localhost/strata-testbed/bookworm-runtime:12 t0 ns=strata-smoke got
  t0="$(now)"
  bash "$HERE/images.sh" bases >/dev/null
  bash "$HERE/images.sh" load "$img"
  ns="$ns-$(date +%s)"
  kctl create namespace "$ns" >/dev/null
  kctl -n "$ns" create service clusterip web --tcp=80:8080 >/dev/null
  kctl -n "$ns" run web --image "$img" --image-pull-policy Never --labels app=web \
    --command -- perl -MIO::Socket::INET -e "$SMOKE_SERVER" >/dev/null
  kctl -n "$ns" wait --for=condition=Ready pod/web --timeout=60s >/dev/null \
    || die "smoke: pod web not Ready"
  got="$(ip netns exec "$NS" curl -sf --retry 5 --retry-connrefused --max-time 5 \
           "http://web.$ns.svc.cluster.local/")" \
    || die "smoke: http://web.$ns.svc.cluster.local/ from CLIENT_EXEC failed"
  [[ "$got" == "hello from web" ]] || die "smoke: got '$got'"
  kctl -n "$ns" run client --image "$img" --image-pull-policy Never --restart Never \
    --command -- perl -MIO::Socket::INET -e "$SMOKE_CLIENT" >/dev/null
  kctl -n "$ns" wait --for=jsonpath='{.status.phase}'=Succeeded pod/client --timeout=60s >/dev/null \
    || { kctl -n "$ns" logs client >&2; die "smoke: the client pod failed"; }
  got="$(kctl -n "$ns" logs client)"
  [[ "$got" == *"hello from web"*"api reachable"* ]] || die "smoke: client pod said '$got'"
  kctl delete namespace "$ns" --wait=false >/dev/null
  log "smoke ok in $(since "$t0") s: a pod from a local image, its Service's DNS name from CLIENT_EXEC, pod -> Service and API server by name"
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down ;;
  env) status || { log "not up"; exit 1; }; print_env ;;
  status) status ;;
  smoke) smoke ;;
  *) echo "usage: $0 install | up | down | env | status | smoke" >&2; exit 2 ;;
esac
