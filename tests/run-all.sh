#!/usr/bin/env bash
# Runs every test slo-guard has, on a fresh machine as on a developer's:
#   1. installs the system packages the tests use (Debian/apt; idempotent),
#   2. builds kube-apiserver, kubectl, etcd and helm from pinned Go modules (cached),
#   3. checks formatting and lints, then runs `cargo test` (unit, router over TLS,
#      golden responses, CLI, real Prometheus, real apiserver end to end),
#   4. builds the image and runs slo-guard as users do: a real single-node cluster
#      (kubelet, containerd), `helm install`, the in-cluster scenarios
#      (tests/e2e/real-cluster.sh).
# A missing dependency is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

need_packages=()
command -v openssl >/dev/null || need_packages+=(openssl)
command -v curl >/dev/null || need_packages+=(curl)
command -v jq >/dev/null || need_packages+=(jq)
command -v python3 >/dev/null || need_packages+=(python3)
command -v prometheus >/dev/null || need_packages+=(prometheus)
command -v promtool >/dev/null || need_packages+=(prometheus)
# The real cluster's node: container runtime, CNI plugins, and gcc for the pause image.
command -v containerd >/dev/null || need_packages+=(containerd)
command -v runc >/dev/null || need_packages+=(runc)
[ -x /usr/lib/cni/bridge ] || need_packages+=(containernetworking-plugins)
command -v gcc >/dev/null || need_packages+=(gcc)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ "$(uname -m)" != x86_64 ] || need_packages+=(libc6-dev)
command -v ip >/dev/null || need_packages+=(iproute2)
if [ "${#need_packages[@]}" -gt 0 ]; then
  step "installing ${need_packages[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "need root (or sudo) to apt-get install: ${need_packages[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_packages[@]}"
fi

step "building the e2e cluster tools from Go modules (cached)"
BIN="$(bash tests/e2e/build-tools.sh | tail -n1)"
for tool in kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler etcd helm; do
  [ -x "$BIN/$tool" ] || { echo "missing $BIN/$tool after build-tools.sh" >&2; exit 1; }
done
export SLO_GUARD_E2E_BIN="$BIN"

# After build-tools.sh, which replaces bin/ as a whole: tests/slo_sources_prometheus.rs
# runs `sloth generate`, and fails without it.
step "building Sloth from its Go module (cached)"
SLOTH="$(bash tests/e2e/build-sloth.sh | tail -n1)"
[ -x "$SLOTH" ] || { echo "missing $SLOTH after build-sloth.sh" >&2; exit 1; }

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "policy test suites (policies/tests)"
cargo run --quiet --locked -- test policies/tests --junit target/slo-guard-junit.xml

step "cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --all-targets --locked 2>&1 | tee "$log"

step "a real cluster: the image, helm install, the in-cluster scenarios (tests/e2e/real-cluster.sh)"
real_cluster=0
bash tests/e2e/real-cluster.sh 2>&1 | tee -a "$log" || real_cluster=$?

# One closing line for the whole run: cargo's test results and the real cluster's.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     /^real-cluster: [0-9]+ passed, [0-9]+ failed$/ { p += $2; f += $4; rc = 1 }
     END { printf "summary: %d passed, %d failed\n", p, f; if (p == 0 || !rc) exit 1 }' "$log"
[ "$real_cluster" -eq 0 ] || { echo "tests/e2e/real-cluster.sh failed (exit $real_cluster)" >&2; exit 1; }
