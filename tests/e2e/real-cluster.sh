#!/usr/bin/env bash
# slo-guard as platform teams run it: a real single-node cluster built from
# source (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet on Debian's containerd and runc, pods on the CNI bridge), the image
# built by image/build.sh, and `helm install charts/slo-guard`. Then the
# scenarios of issue 12: install, denials through the Service, availability
# while a pod dies and during a rolling upgrade, fail-closed, the reflect Job,
# uninstall.
#
#   bash tests/e2e/real-cluster.sh            # exit 0 when every scenario passed
#
# The last line is "real-cluster: N passed, M failed". Must run as root (the
# kubelet and containerd need it). Nothing is pulled: the pause image and the
# slo-guard image are built here.
#
# Network: the node's pods live in network namespaces that containerd makes
# for this test, on a bridge this script creates (sgcni0, 10.244.0.1/24); the
# API server, the kubelet and the test's Prometheus listen on the bridge's
# address. The API server reaches the webhook through its Service with
# --enable-aggregator-routing (no kube-proxy); the pods reach the API server
# through the chart's kubernetesService.host. No other address is used.
#
# Environment:
#   SLO_GUARD_REAL_STATE  state dir (default /tmp/slo-guard-real)
#   SLO_GUARD_REAL_KEEP=1 leave the cluster running at the end (then run
#                         `tests/e2e/real-cluster.sh down` to stop it)
#   SLO_GUARD_E2E_BIN     binaries (default: tests/e2e/build-tools.sh builds them)
#   SLO_GUARD_BINARY      slo-guard release binary (default: cargo build --release)
#   SLO_GUARD_E2E_DISRUPTIONS  pods deleted one after another under the admission
#                         stream of scenario 3 (default 1; more for a drain stress run)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
STATE="${SLO_GUARD_REAL_STATE:-/tmp/slo-guard-real}"
PKI="$STATE/pki"
LOGS="$STATE/logs"
BRIDGE=sgcni0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.0.0.0/24
NODE_NAME=slo-guard-node
RELEASE=slo-guard
GUARD_NS=slo-guard
IMAGE_REPO=ghcr.io/slo-guard/slo-guard
PAUSE_IMAGE=docker.io/slo-guard-e2e/pause:1
APISERVER_PORT=16443
ETCD_PORT=12379
ETCD_PEER_PORT=12380
KUBELET_PORT=10250
PROM_PORT=19090
CONTAINERD_SOCK="$STATE/containerd/containerd.sock"
export NO_PROXY="127.0.0.1,localhost,$NODE_IP,$POD_CIDR,$SERVICE_CIDR${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

PASSED=0
FAILED=0
FAILURES=()

log() { echo "real-cluster: $*" >&2; }
die() { echo "real-cluster: ERROR: $*" >&2; exit 1; }
pass() { PASSED=$((PASSED + 1)); echo "PASS  $*"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$*"); echo "FAIL  $*"; }
check() { # <description> <command...>: pass or fail on the command's exit status
  local what="$1"; shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}

# ---------------------------------------------------------------- teardown

# Stop everything this script started, in the reverse order, and remove what it
# left on the host: pod sandboxes, mounts under $STATE, network namespaces of
# the pods, the bridge.
cmd_down() {
  local name pid
  for name in kubelet kube-scheduler kube-controller-manager; do stop_pid "$name"; done
  if [ -S "$CONTAINERD_SOCK" ]; then
    local ctr_k8s=(ctr --address "$CONTAINERD_SOCK" -n k8s.io)
    for task in $("${ctr_k8s[@]}" tasks ls -q 2>/dev/null); do
      "${ctr_k8s[@]}" tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
    done
    sleep 1
    for task in $("${ctr_k8s[@]}" tasks ls -q 2>/dev/null); do
      "${ctr_k8s[@]}" tasks delete -f "$task" >/dev/null 2>&1 || true
    done
  fi
  stop_pid containerd
  for name in prometheus kube-apiserver etcd; do stop_pid "$name"; done
  # Mounts the kubelet (secrets, projected tokens) and containerd (rootfs, shm) made.
  grep -F " $STATE/" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  # The pods' network namespaces, recorded by containerd under its state dir.
  if [ -f "$STATE/netns.before" ]; then
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-' || true); do
      grep -qx "$ns" "$STATE/netns.before" || ip netns delete "$ns" 2>/dev/null || true
    done
  fi
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE" 2>/dev/null || true
  log "stopped (state and logs left in $STATE)"
}

stop_pid() { # <name>
  local f="$STATE/pids/$1.pid" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

start_bg() { # <name> <command...>: start in its own session, log to $LOGS/<name>.log
  local name="$1"; shift
  setsid "$@" </dev/null >"$LOGS/$name.log" 2>&1 &
  echo $! > "$STATE/pids/$name.pid"
}

wait_for() { # <seconds> <description> <command...>
  local secs="$1" what="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { log "timed out after ${secs}s waiting for: $what"; return 1; }
    sleep 1
  done
}

if [ "${1:-}" = "down" ]; then
  cmd_down
  exit 0
fi
[ "${1:-}" = "" ] || die "usage: $0 [down]"
[ "$(id -u)" -eq 0 ] || die "must run as root (kubelet, containerd, network namespaces)"

# ---------------------------------------------------------------- tools

for tool in containerd runc ctr gcc openssl curl jq python3 ip; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is not installed (tests/run-all.sh installs it with apt-get)"
done
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] \
  || die "CNI plugins missing in /usr/lib/cni (apt-get install containernetworking-plugins)"

BIN="${SLO_GUARD_E2E_BIN:-$(bash "$HERE/build-tools.sh" | tail -n1)}"
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl helm; do
  [ -x "$BIN/$b" ] || die "missing $BIN/$b (run tests/e2e/build-tools.sh)"
done
export PATH="$BIN:$PATH"

cmd_down >/dev/null 2>&1 || true
rm -rf "$STATE"
mkdir -p "$STATE/pids" "$LOGS" "$PKI"
ip netns list 2>/dev/null | awk '{print $1}' > "$STATE/netns.before" || true
if [ "${SLO_GUARD_REAL_KEEP:-0}" != 1 ]; then
  trap 'cmd_down' EXIT
fi
T0=$SECONDS

# ---------------------------------------------------------------- images

log "building the images"
if [ -n "${SLO_GUARD_BINARY:-}" ]; then
  GUARD_BINARY="$SLO_GUARD_BINARY"
else
  (cd "$ROOT" && cargo build --release --locked --bin slo-guard >&2) || die "cargo build --release failed"
  GUARD_BINARY="$ROOT/target/release/slo-guard"
fi
# Two tags of one image: the rolling upgrade changes the tag, as a release would.
GUARD_IMAGE_TAR="$(bash "$ROOT/image/build.sh" --binary "$GUARD_BINARY" \
  --name "$IMAGE_REPO:e2e-1" --name "$IMAGE_REPO:e2e-2" --out "$STATE/images/slo-guard.tar" | tail -n1)"
mkdir -p "$STATE/images/pause-rootfs"
gcc -static -O2 -o "$STATE/images/pause-rootfs/pause" "$HERE/node/pause.c"
PAUSE_TAR="$(bash "$ROOT/image/oci-layout.sh" --rootfs "$STATE/images/pause-rootfs" --entrypoint /pause \
  --user 65535:65535 --name "$PAUSE_IMAGE" --out "$STATE/images/pause.tar" | tail -n1)"

# The image as users get it: no shell, a non-root user, the binary as entrypoint.
image_layer_list() {
  local dir="$STATE/images/inspect" manifest layer
  rm -rf "$dir" && mkdir -p "$dir" && tar -C "$dir" -xf "$GUARD_IMAGE_TAR"
  manifest="$(jq -r '.manifests[0].digest' "$dir/index.json" | cut -d: -f2)"
  layer="$(jq -r '.layers[0].digest' "$dir/blobs/sha256/$manifest" | cut -d: -f2)"
  tar -tzf "$dir/blobs/sha256/$layer"
}
image_config() {
  local dir="$STATE/images/inspect" manifest config
  manifest="$(jq -r '.manifests[0].digest' "$dir/index.json" | cut -d: -f2)"
  config="$(jq -r '.config.digest' "$dir/blobs/sha256/$manifest" | cut -d: -f2)"
  cat "$dir/blobs/sha256/$config"
}
LAYER_FILES="$(image_layer_list)"
check "image: no shell or package manager in the image" \
  bash -c '! grep -Eq "^\./(bin|usr/bin)/(sh|bash|dash|busybox|apt|dpkg)$" <<<"$1"' _ "$LAYER_FILES"
check "image: entrypoint /slo-guard, user 65532:65532" \
  bash -c 'jq -e ".config.User == \"65532:65532\" and .config.Entrypoint == [\"/slo-guard\"]" >/dev/null <<<"$1"' _ "$(image_config)"
log "image files: $(echo "$LAYER_FILES" | grep -v '/$' | tr '\n' ' ')"

# ---------------------------------------------------------------- PKI

openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 -keyout "$PKI/ca.key" -out "$PKI/ca.crt" \
  -subj "/CN=slo-guard-real-ca" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
leaf() { # <name> <subject> <extendedKeyUsage> [subjectAltName]
  openssl req -new -newkey rsa:2048 -nodes -sha256 -keyout "$PKI/$1.key" -out "$PKI/$1.csr" -subj "$2" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$3"
    [ -z "${4:-}" ] || echo "subjectAltName=$4"
  } > "$PKI/$1.ext"
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile "$PKI/$1.ext" -out "$PKI/$1.crt" 2>/dev/null
  rm -f "$PKI/$1.csr" "$PKI/$1.ext"
}
leaf apiserver "/CN=kube-apiserver" serverAuth \
  "IP:$NODE_IP,IP:127.0.0.1,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
leaf admin "/O=system:masters/CN=real-cluster-admin" clientAuth
leaf controller-manager "/CN=system:kube-controller-manager" clientAuth
leaf scheduler "/CN=system:kube-scheduler" clientAuth
leaf kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
leaf kubelet-serving "/CN=$NODE_NAME" serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
chmod 600 "$PKI"/*.key

kubeconfig() { # <name>: a kubeconfig for the client certificate <name>
  cat > "$STATE/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: real
  cluster: {server: "https://$NODE_IP:$APISERVER_PORT", certificate-authority: "$PKI/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$PKI/$1.crt", client-key: "$PKI/$1.key"}
contexts:
- name: real
  context: {cluster: real, user: $1}
current-context: real
EOF
}
for c in admin controller-manager scheduler kubelet; do kubeconfig "$c"; done
export KUBECONFIG="$STATE/admin.kubeconfig"

# ---------------------------------------------------------------- network

ip link add "$BRIDGE" type bridge
ip addr add "$NODE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
mkdir -p "$STATE/cni/net.d" "$STATE/cni/ipam"
cat > "$STATE/cni/net.d/10-slo-guard.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "slo-guard-real",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "rangeStart": "10.244.0.10", "gateway": "$NODE_IP"}]]}},
    {"type": "loopback"}
  ]
}
EOF

# ---------------------------------------------------------------- control plane

log "starting etcd and kube-apiserver on $NODE_IP:$APISERVER_PORT"
start_bg etcd "$BIN/etcd" --name real --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "real=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn
wait_for 30 "etcd health" curl -sf "http://127.0.0.1:$ETCD_PORT/health" || die "etcd did not start (log $LOGS/etcd.log)"

start_bg kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
  --cert-dir "$STATE/apiserver-certs" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
  --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
  --authorization-mode Node,RBAC --anonymous-auth=false \
  --enable-admission-plugins NodeRestriction \
  --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --api-audiences "https://kubernetes.default.svc.cluster.local" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --enable-aggregator-routing=true \
  --allow-privileged=true --profiling=false --v 1
wait_for 120 "kube-apiserver /readyz" kubectl get --raw /readyz || die "kube-apiserver not ready (log $LOGS/kube-apiserver.log)"
wait_for 60 "namespace default" kubectl get namespace default || die "namespace default never appeared"

log "starting kube-controller-manager and kube-scheduler"
start_bg kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --use-service-account-credentials=true --leader-elect=false \
  --bind-address 127.0.0.1 --secure-port 10257 \
  --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
  --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller' --v 1
start_bg kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig "$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port 10259 --v 1

# ---------------------------------------------------------------- node

log "starting containerd and the kubelet (node $NODE_NAME)"
mkdir -p "$STATE/containerd"
cat > "$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$STATE/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
EOF
start_bg containerd containerd --config "$STATE/containerd/config.toml"
wait_for 30 "containerd socket" ctr --address "$CONTAINERD_SOCK" version || die "containerd did not start (log $LOGS/containerd.log)"
for tar in "$PAUSE_TAR" "$GUARD_IMAGE_TAR"; do
  ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$tar" >&2 || die "ctr images import $tar failed"
done
ctr --address "$CONTAINERD_SOCK" -n k8s.io images ls -q >&2

# Pods get a resolv.conf that resolves nothing: no cluster DNS runs here, and no
# query may leave the machine.
echo "nameserver 127.0.0.1" > "$STATE/resolv.conf"
cat > "$STATE/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$PKI/kubelet-serving.crt"
tlsPrivateKeyFile: "$PKI/kubelet-serving.key"
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
containerRuntimeEndpoint: "unix://$CONTAINERD_SOCK"
resolvConf: "$STATE/resolv.conf"
clusterDomain: cluster.local
evictionHard: {"memory.available": "0%", "nodefs.available": "0%", "imagefs.available": "0%", "nodefs.inodesFree": "0%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
maxPods: 60
EOF
start_bg kubelet "$BIN/kubelet" \
  --config "$STATE/kubelet-config.yaml" --kubeconfig "$STATE/kubelet.kubeconfig" \
  --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki" \
  --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v 1
node_ready() { [ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
wait_for 120 "node $NODE_NAME Ready" node_ready || { tail -n 30 "$LOGS/kubelet.log" >&2; die "the node never became Ready (log $LOGS/kubelet.log)"; }
log "cluster up in $((SECONDS - T0))s: $(kubectl get node "$NODE_NAME" --no-headers)"

# A real Prometheus with known SLO histories (tests/prometheus), on the bridge,
# so the pods' SLO gates query a live server.
PROM_ENV="$(python3 "$ROOT/tests/prometheus/harness.py" start "$STATE/prometheus" --host "$NODE_IP" --port "$PROM_PORT")" \
  || die "the Prometheus harness did not start"
echo "$PROM_ENV" | sed -n 's/^PROM_PID=//p' > "$STATE/pids/prometheus.pid"
PROM_URL="http://$NODE_IP:$PROM_PORT"

# ---------------------------------------------------------------- scenarios
. "$HERE/node/scenarios.sh"
run_scenarios

echo
echo "real-cluster: run took $((SECONDS - T0))s"
for f in "${FAILURES[@]+"${FAILURES[@]}"}"; do echo "failed: $f"; done
echo "real-cluster: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
