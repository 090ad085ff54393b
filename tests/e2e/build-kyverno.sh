#!/usr/bin/env bash
# Build Kyverno's admission controller (github.com/kyverno/kyverno/cmd/kyverno) from
# its pinned Go module, for the peer benchmark `cargo bench --bench apiserver`:
#
#   kyverno  <- tests/e2e/tools/kyverno/go.mod  (github.com/kyverno/kyverno v1.18.x)
#
# The binary goes to ${SLO_GUARD_E2E_CACHE:-$HOME/.cache/slo-guard-e2e}/bin/kyverno,
# next to the control plane that build-tools.sh builds, with its own build key
# (bin/.kyverno-build-key): the build is skipped when the key matches. build-tools.sh
# replaces bin/ as a whole when it rebuilds, so run this script after it (the Go build
# cache makes that rebuild quick). Kyverno's CRDs ship in the module (config/crds) and
# are found with `go list -m -f '{{.Dir}}'` from tools/kyverno; this script prints
# that directory too.
#
# Not part of tests/run-all.sh: only the benchmark uses Kyverno.
#
# Usage: tests/e2e/build-kyverno.sh [--force]
# Prints two lines last on stdout: the binary's path, then the module's directory.
# Any failure exits non-zero with the reason on stderr.
set -euo pipefail

die() { echo "build-kyverno.sh: ERROR: $*" >&2; exit 1; }

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg (usage: $0 [--force])" ;;
  esac
done

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MOD="$HERE/tools/kyverno"
CACHE="${SLO_GUARD_E2E_CACHE:-$HOME/.cache/slo-guard-e2e}"
BIN="$CACHE/bin"

command -v go >/dev/null 2>&1 || die "'go' is not on PATH; Go >= 1.26 is needed to build Kyverno"
command -v sha256sum >/dev/null 2>&1 || die "'sha256sum' is not on PATH"
[ -f "$MOD/go.mod" ] && [ -f "$MOD/go.sum" ] || die "missing $MOD/go.mod or go.sum"

VERSION="$(cd "$MOD" && go list -m -f '{{.Version}}' github.com/kyverno/kyverno)" \
  || die "cannot resolve github.com/kyverno/kyverno in $MOD/go.mod"
LDFLAGS="-s -w -X github.com/kyverno/kyverno/pkg/version.BuildVersion=$VERSION"

KEY="$(
  {
    cat "$MOD/go.mod" "$MOD/go.sum"
    go env GOVERSION GOOS GOARCH CGO_ENABLED
    echo "$LDFLAGS"
    cat "$0"
  } | sha256sum | cut -c1-16
)"

module_dir() {
  (cd "$MOD" && go mod download github.com/kyverno/kyverno >/dev/null \
    && go list -m -f '{{.Dir}}' github.com/kyverno/kyverno) || die "cannot locate the Kyverno module's source"
}

if [ "$FORCE" = 0 ] && [ -x "$BIN/kyverno" ] && [ -f "$BIN/.kyverno-build-key" ] \
  && [ "$(cat "$BIN/.kyverno-build-key")" = "$KEY" ]; then
  echo "build-kyverno.sh: up to date (key $KEY): kyverno $VERSION" >&2
  echo "$BIN/kyverno"
  module_dir
  exit 0
fi

mkdir -p "$BIN"
STAGE="$(mktemp -d "$CACHE/kyverno.tmp.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
t0=$SECONDS
echo "build-kyverno.sh: building github.com/kyverno/kyverno/cmd/kyverno $VERSION (first build: about 30 min on 2 cores) ..." >&2
(cd "$MOD" && go build -trimpath -ldflags="$LDFLAGS" -o "$STAGE/kyverno" github.com/kyverno/kyverno/cmd/kyverno) \
  || die "go build of github.com/kyverno/kyverno/cmd/kyverno $VERSION failed (see the compiler output above)"
echo "build-kyverno.sh:   done in $((SECONDS - t0))s" >&2
"$STAGE/kyverno" --help >/dev/null 2>&1 || die "built kyverno does not run ($STAGE/kyverno --help failed)"
mv -f "$STAGE/kyverno" "$BIN/kyverno"
echo "$KEY" > "$BIN/.kyverno-build-key"
echo "$BIN/kyverno"
module_dir
