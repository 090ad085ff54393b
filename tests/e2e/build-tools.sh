#!/usr/bin/env bash
# Build the real Kubernetes control plane used by the slo-guard e2e tests,
# from pinned Go modules (no prebuilt binaries are downloaded or committed):
#
#   kube-apiserver, kubectl  <- tests/e2e/tools/go.mod       (k8s.io/kubernetes v1.34.x)
#   kubelet, kube-controller-manager, kube-scheduler
#                            <- tests/e2e/tools/node/go.mod  (the same k8s.io/kubernetes, with
#                               the kubelet's own dependencies: cadvisor, CSI, dbus, ...)
#   etcd                     <- tests/e2e/tools/etcd/go.mod  (go.etcd.io/etcd/server/v3 v3.6.x)
#   helm                     <- tests/e2e/tools/helm/go.mod  (helm.sh/helm/v3 v3.19.x)
#
# Binaries go to ${SLO_GUARD_E2E_CACHE:-$HOME/.cache/slo-guard-e2e}/bin.
# The build is skipped when that directory already holds binaries built from
# the same go.mod/go.sum files, Go version and flags (the "build key").
# The normal Go module cache and build cache are used, so a rebuild after a
# key change only recompiles what changed.
#
# Usage: tests/e2e/build-tools.sh [--force]
# Prints the bin dir as the last line of stdout. Any failure exits non-zero.
set -euo pipefail

die() { echo "build-tools.sh: ERROR: $*" >&2; exit 1; }

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg (usage: $0 [--force])" ;;
  esac
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="$HERE/tools"
CACHE="${SLO_GUARD_E2E_CACHE:-$HOME/.cache/slo-guard-e2e}"
BIN="$CACHE/bin"

command -v go >/dev/null 2>&1 || die "'go' is not on PATH; Go >= 1.26 is needed to build the e2e tools"
command -v sha256sum >/dev/null 2>&1 || die "'sha256sum' is not on PATH"

# Pinned versions: read them from the go.mod files so there is a single source of truth.
modver() { # <go.mod dir> <module path>
  (cd "$1" && go list -m -f '{{.Version}}' "$2") || die "cannot resolve $2 in $1/go.mod"
}
K8S_VERSION="$(modver "$TOOLS" k8s.io/kubernetes)"
HELM_VERSION="$(modver "$TOOLS/helm" helm.sh/helm/v3)"
K8S_MINOR="$(echo "$K8S_VERSION" | cut -d. -f2)"

K8S_LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$K8S_MINOR -X $pkg.gitTreeState=clean"
done
HELM_LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
HELM_LDFLAGS+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$K8S_MINOR"
ETCD_LDFLAGS="-s -w"

# Build key: every go.mod/go.sum, the Go toolchain, target platform, flags, and this script.
KEY="$(
  {
    for f in go.mod go.sum node/go.mod node/go.sum etcd/go.mod etcd/go.sum helm/go.mod helm/go.sum; do
      [ -f "$TOOLS/$f" ] || die "missing $TOOLS/$f"
      echo "== $f"; cat "$TOOLS/$f"
    done
    go env GOVERSION GOOS GOARCH CGO_ENABLED
    echo "$K8S_LDFLAGS|$HELM_LDFLAGS|$ETCD_LDFLAGS"
    cat "$0"
  } | sha256sum | cut -c1-16
)"

BINARIES=(kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler etcd helm)

have_all() {
  [ -f "$BIN/.build-key" ] && [ "$(cat "$BIN/.build-key")" = "$KEY" ] || return 1
  for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done
}

if [ "$FORCE" = 0 ] && have_all; then
  echo "build-tools.sh: up to date (key $KEY): kube-apiserver/kubectl $K8S_VERSION, helm $HELM_VERSION" >&2
  echo "$BIN"
  exit 0
fi

mkdir -p "$CACHE"
STAGE="$(mktemp -d "$CACHE/bin.tmp.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT

build() { # <module dir> <ldflags> <package>...
  local dir="$1" ldflags="$2"; shift 2
  local t0=$SECONDS
  echo "build-tools.sh: building $* (module $(cd "$dir" && go list -m)) ..." >&2
  (cd "$dir" && go build -trimpath -ldflags="$ldflags" -o "$STAGE/" "$@") \
    || die "go build of $* failed (see the compiler output above)"
  echo "build-tools.sh:   done in $((SECONDS - t0))s" >&2
}

build "$TOOLS"      "$K8S_LDFLAGS"  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
build "$TOOLS/node" "$K8S_LDFLAGS"  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler
build "$TOOLS/etcd" "$ETCD_LDFLAGS" go.etcd.io/etcd/server/v3
# go.etcd.io/etcd/server/v3 is the etcd main package; go names its binary "server".
for n in server v3; do [ -x "$STAGE/$n" ] && mv "$STAGE/$n" "$STAGE/etcd"; done
build "$TOOLS/helm" "$HELM_LDFLAGS" helm.sh/helm/v3/cmd/helm

for b in "${BINARIES[@]}"; do
  [ -x "$STAGE/$b" ] || die "binary $b was not produced"
done
"$STAGE/kube-apiserver" --version >&2 || die "built kube-apiserver does not run"
"$STAGE/kubectl" version --client >&2 || die "built kubectl does not run"
for b in kubelet kube-controller-manager kube-scheduler; do
  "$STAGE/$b" --version >&2 || die "built $b does not run"
done
"$STAGE/etcd" --version >&2 || die "built etcd does not run"
"$STAGE/helm" version --short >&2 || die "built helm does not run"

echo "$KEY" > "$STAGE/.build-key"
rm -rf "$BIN.old"
[ -e "$BIN" ] && mv "$BIN" "$BIN.old"
mv "$STAGE" "$BIN" || die "cannot move $STAGE to $BIN"
trap - EXIT
rm -rf "$BIN.old"
ls -l "$BIN" >&2
echo "$BIN"
