#!/usr/bin/env bash
# A real Kubernetes control plane (etcd + kube-apiserver) on 127.0.0.1 for the
# slo-guard end-to-end tests. No kubelet, scheduler or controller-manager:
# objects are stored, validated, defaulted, authorized (RBAC) and sent through
# admission webhooks exactly as in a real cluster, but Deployments never get
# Pods and namespaces are never finalized.
#
# Usage:
#   tests/e2e/cluster.sh up       start (or reuse a running) cluster, print env
#   tests/e2e/cluster.sh down     stop everything this script started
#   tests/e2e/cluster.sh env      print `export KUBECONFIG=... PATH=...`
#   tests/e2e/cluster.sh status   exit 0 if the apiserver answers /readyz
#
#   eval "$(tests/e2e/cluster.sh up)"; kubectl get ns
#
# Environment:
#   SLO_GUARD_E2E_STATE  state dir (default /tmp/slo-guard-e2e): pki/, kubeconfig,
#                        logs/, pids/, ports.env, etcd-data/
#   SLO_GUARD_E2E_CACHE  tool cache for build-tools.sh (default ~/.cache/slo-guard-e2e)
#   SLO_GUARD_E2E_BIN    use binaries from this dir instead of running build-tools.sh
#   SLO_GUARD_E2E_ETCD   use this etcd binary instead of the one in the bin dir
#   SLO_GUARD_E2E_READY_TIMEOUT  seconds to wait for /readyz (default 180)
#   SLO_GUARD_E2E_APISERVER_PROFILING  true: the apiserver serves /debug/pprof (off by default)
#   SLO_GUARD_E2E_MUTATING_ADMISSION_POLICY  true: MutatingAdmissionPolicy (beta in 1.34,
#                        off by default) is turned on: its feature gate and
#                        admissionregistration.k8s.io/v1beta1 (off by default)
#
# `up` prints only the env lines on stdout (progress goes to stderr), so
# `eval "$(cluster.sh up)"` works.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${SLO_GUARD_E2E_STATE:-/tmp/slo-guard-e2e}"
PKI="$STATE/pki"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
KUBECONFIG_FILE="$STATE/kubeconfig"
READY_TIMEOUT="${SLO_GUARD_E2E_READY_TIMEOUT:-180}"
# Never send loopback traffic (apiserver -> webhook, kubectl -> apiserver) through a proxy.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"

log() { echo "cluster.sh: $*" >&2; }
die() { echo "cluster.sh: ERROR: $*" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not on PATH"; }

resolve_bin() {
  if [ -n "${SLO_GUARD_E2E_BIN:-}" ]; then
    BIN="$SLO_GUARD_E2E_BIN"
  elif [ -f "$STATE/bin-dir" ] && [ "${1:-}" = "--from-state" ]; then
    BIN="$(cat "$STATE/bin-dir")"
  else
    BIN="$("$HERE/build-tools.sh" | tail -n1)" || die "build-tools.sh failed"
  fi
  ETCD="${SLO_GUARD_E2E_ETCD:-$BIN/etcd}"
  for b in "$BIN/kube-apiserver" "$BIN/kubectl" "$ETCD"; do
    [ -x "$b" ] || die "missing binary $b (run tests/e2e/build-tools.sh)"
  done
}

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
  else
    local p
    for _ in $(seq 1 100); do
      p=$(( 20000 + RANDOM % 30000 ))
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    die "no free port found"
  fi
}

pid_alive() { # <name>: the pid file exists and that process is still the one we started
  local f="$PIDS/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1" || return 1
}

stop_one() { # <name>
  local f="$PIDS/$1.pid" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if pid_alive "$1"; then
    log "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$1 (pid $pid) did not stop on SIGTERM, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$f"
}

curl_api() { # <path>
  curl -sS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$APISERVER_PORT$1"
}

print_env() {
  cat <<EOF
export KUBECONFIG=$KUBECONFIG_FILE
export PATH=$BIN:\$PATH
export SLO_GUARD_E2E_STATE=$STATE
export SLO_GUARD_E2E_APISERVER=https://127.0.0.1:$APISERVER_PORT
export SLO_GUARD_E2E_CA=$PKI/ca.crt
EOF
}

gen_pki() {
  need openssl
  mkdir -p "$PKI"
  local d="$PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
    -keyout "$d/ca.key" -out "$d/ca.crt" -subj "/CN=slo-guard-e2e-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

  leaf() { # <name> <subject> <extfile-content>
    openssl req -new -newkey rsa:2048 -nodes -sha256 -keyout "$d/$1.key" -out "$d/$1.csr" -subj "$2" 2>/dev/null
    printf '%s\n' "$3" > "$d/$1.ext"
    openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 3650 -sha256 -extfile "$d/$1.ext" -out "$d/$1.crt" 2>/dev/null
    rm -f "$d/$1.csr" "$d/$1.ext"
  }
  leaf apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  leaf admin "/O=system:masters/CN=slo-guard-e2e-admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  # Service-account token signing key pair.
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  chmod 600 "$d"/*.key
}

write_kubeconfig() {
  local b64="base64 -w0"
  cat > "$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: slo-guard-e2e
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $($b64 < "$PKI/ca.crt")
users:
- name: slo-guard-e2e-admin
  user:
    client-certificate-data: $($b64 < "$PKI/admin.crt")
    client-key-data: $($b64 < "$PKI/admin.key")
contexts:
- name: slo-guard-e2e
  context:
    cluster: slo-guard-e2e
    user: slo-guard-e2e-admin
current-context: slo-guard-e2e
EOF
  chmod 600 "$KUBECONFIG_FILE"
}

cmd_up() {
  need curl
  mkdir -p "$STATE"
  if [ -f "$STATE/ports.env" ] && pid_alive etcd && pid_alive kube-apiserver; then
    # shellcheck disable=SC1091
    . "$STATE/ports.env"
    resolve_bin --from-state
    if [ "$(curl_api /readyz 2>/dev/null)" = "ok" ]; then
      log "cluster already running at https://127.0.0.1:$APISERVER_PORT (state $STATE)"
      print_env
      return 0
    fi
  fi
  # Stale or partial state: clean up and start fresh.
  cmd_down >/dev/null 2>&1 || true
  resolve_bin
  rm -rf "$STATE/etcd-data" "$PKI" "$LOGS" "$PIDS" "$STATE/ports.env" "$KUBECONFIG_FILE"
  mkdir -p "$LOGS" "$PIDS"
  echo "$BIN" > "$STATE/bin-dir"

  ETCD_CLIENT_PORT="$(free_port)"
  ETCD_PEER_PORT="$(free_port)"
  APISERVER_PORT="$(free_port)"
  while [ "$ETCD_PEER_PORT" = "$ETCD_CLIENT_PORT" ]; do ETCD_PEER_PORT="$(free_port)"; done
  while [ "$APISERVER_PORT" = "$ETCD_CLIENT_PORT" ] || [ "$APISERVER_PORT" = "$ETCD_PEER_PORT" ]; do APISERVER_PORT="$(free_port)"; done
  cat > "$STATE/ports.env" <<EOF
ETCD_CLIENT_PORT=$ETCD_CLIENT_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
EOF

  log "generating PKI in $PKI"
  gen_pki
  write_kubeconfig

  log "starting etcd ($("$ETCD" --version | head -n1)) on 127.0.0.1:$ETCD_CLIENT_PORT"
  setsid "$ETCD" \
    --name slo-guard-e2e \
    --data-dir "$STATE/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "slo-guard-e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state new \
    --unsafe-no-fsync \
    --log-level warn \
    </dev/null >"$LOGS/etcd.log" 2>&1 &
  echo $! > "$PIDS/etcd.pid"

  local i
  for i in $(seq 1 100); do
    curl -sS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" 2>/dev/null | grep -q '"health":"true"' && break
    pid_alive etcd || { tail -n 30 "$LOGS/etcd.log" >&2; die "etcd exited during startup (log: $LOGS/etcd.log)"; }
    sleep 0.2
  done
  [ "$i" -lt 100 ] || { tail -n 30 "$LOGS/etcd.log" >&2; die "etcd not healthy after 20s (log: $LOGS/etcd.log)"; }

  local EXTRA_APISERVER_FLAGS=()
  if [ "${SLO_GUARD_E2E_MUTATING_ADMISSION_POLICY:-false}" = true ]; then
    EXTRA_APISERVER_FLAGS+=(--feature-gates MutatingAdmissionPolicy=true
      --runtime-config admissionregistration.k8s.io/v1beta1=true)
  fi
  log "starting kube-apiserver ($("$BIN/kube-apiserver" --version)) on https://127.0.0.1:$APISERVER_PORT"
  setsid "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address 127.0.0.1 \
    --advertise-address 127.0.0.1 \
    --secure-port "$APISERVER_PORT" \
    --cert-dir "$STATE/apiserver-certs" \
    --tls-cert-file "$PKI/apiserver.crt" \
    --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --authorization-mode Node,RBAC \
    --anonymous-auth=false \
    --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --api-audiences "https://kubernetes.default.svc.cluster.local" \
    --service-cluster-ip-range 10.0.0.0/24 \
    --endpoint-reconciler-type none \
    --allow-privileged=true \
    --profiling="${SLO_GUARD_E2E_APISERVER_PROFILING:-false}" \
    "${EXTRA_APISERVER_FLAGS[@]}" \
    --v 1 \
    </dev/null >"$LOGS/kube-apiserver.log" 2>&1 &
  echo $! > "$PIDS/kube-apiserver.pid"

  local deadline=$(( SECONDS + READY_TIMEOUT )) out=""
  while :; do
    out="$(curl_api /readyz 2>/dev/null || true)"
    [ "$out" = "ok" ] && break
    pid_alive kube-apiserver || { tail -n 40 "$LOGS/kube-apiserver.log" >&2; die "kube-apiserver exited during startup (log: $LOGS/kube-apiserver.log)"; }
    if [ "$SECONDS" -ge "$deadline" ]; then
      curl_api '/readyz?verbose' >&2 || true
      tail -n 40 "$LOGS/kube-apiserver.log" >&2
      die "kube-apiserver not ready after ${READY_TIMEOUT}s (log: $LOGS/kube-apiserver.log)"
    fi
    sleep 0.5
  done

  # The bootstrap controller creates default/kube-system/kube-public shortly after readyz.
  for i in $(seq 1 60); do
    "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" get namespace default >/dev/null 2>&1 && break
    sleep 0.5
  done
  [ "$i" -lt 60 ] || die "namespace 'default' does not exist 30s after readyz"
  log "ready: https://127.0.0.1:$APISERVER_PORT (state $STATE, logs $LOGS)"
  print_env
}

cmd_down() {
  stop_one kube-apiserver
  stop_one etcd
  log "stopped (state left in $STATE)"
}

cmd_env() {
  [ -f "$STATE/ports.env" ] || die "no cluster state in $STATE (run: $0 up)"
  # shellcheck disable=SC1091
  . "$STATE/ports.env"
  resolve_bin --from-state
  print_env
}

cmd_status() {
  [ -f "$STATE/ports.env" ] || die "no cluster state in $STATE"
  # shellcheck disable=SC1091
  . "$STATE/ports.env"
  pid_alive etcd || die "etcd is not running"
  pid_alive kube-apiserver || die "kube-apiserver is not running"
  [ "$(curl_api /readyz 2>/dev/null)" = "ok" ] || die "kube-apiserver /readyz is not ok"
  log "running: https://127.0.0.1:$APISERVER_PORT"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  env) cmd_env ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|env|status" >&2; exit 2 ;;
esac
