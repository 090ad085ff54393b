#!/usr/bin/env bash
# Build Sloth's CLI (github.com/slok/sloth/cmd/sloth) from its Go module through the Go
# module proxy, for the SLO-source tests (tests/slo_sources_prometheus.rs), which run
# `sloth generate` on a spec and backfill the rules it writes into a real Prometheus:
#
#   sloth  <- go install github.com/slok/sloth/cmd/sloth@$SLOTH_VERSION  (v0.16.0)
#
# The binary goes to ${SLO_GUARD_E2E_CACHE:-$HOME/.cache/slo-guard-e2e}/bin/sloth, with
# its own build key (bin/.sloth-build-key): the build is skipped when the key matches.
# build-tools.sh replaces bin/ as a whole when it rebuilds, so run this script after it
# (the Go build cache makes that rebuild quick).
#
# Usage: tests/e2e/build-sloth.sh [--force]
# Prints the binary's path last on stdout. Any failure exits non-zero with the reason
# on stderr.
set -euo pipefail

die() { echo "build-sloth.sh: ERROR: $*" >&2; exit 1; }

FORCE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg (usage: $0 [--force])" ;;
  esac
done

VERSION="${SLOTH_VERSION:-v0.16.0}"
CACHE="${SLO_GUARD_E2E_CACHE:-$HOME/.cache/slo-guard-e2e}"
BIN="$CACHE/bin"

command -v go >/dev/null 2>&1 || die "'go' is not on PATH; Go >= 1.25 is needed to build Sloth"
command -v sha256sum >/dev/null 2>&1 || die "'sha256sum' is not on PATH"

KEY="$(
  {
    echo "github.com/slok/sloth/cmd/sloth@$VERSION"
    go env GOVERSION GOOS GOARCH CGO_ENABLED
    cat "$0"
  } | sha256sum | cut -c1-16
)"

if [ "$FORCE" = 0 ] && [ -x "$BIN/sloth" ] && [ -f "$BIN/.sloth-build-key" ] \
  && [ "$(cat "$BIN/.sloth-build-key")" = "$KEY" ]; then
  echo "build-sloth.sh: up to date (key $KEY): sloth $VERSION" >&2
  echo "$BIN/sloth"
  exit 0
fi

mkdir -p "$BIN"
STAGE="$(mktemp -d "$CACHE/sloth.tmp.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
t0=$SECONDS
echo "build-sloth.sh: building github.com/slok/sloth/cmd/sloth $VERSION (first build: several minutes on 2 cores) ..." >&2
# go install with a version ignores any go.mod around it and builds the module as
# published; -buildvcs=false since the build has no VCS checkout to stamp.
(cd "$STAGE" && GOBIN="$STAGE" GOFLAGS=-buildvcs=false go install -trimpath \
  "github.com/slok/sloth/cmd/sloth@$VERSION") \
  || die "go install github.com/slok/sloth/cmd/sloth@$VERSION failed (see the compiler output above)"
echo "build-sloth.sh:   done in $((SECONDS - t0))s" >&2
"$STAGE/sloth" generate --help >/dev/null 2>&1 || die "built sloth does not run ($STAGE/sloth generate --help failed)"
mv -f "$STAGE/sloth" "$BIN/sloth"
echo "$KEY" > "$BIN/.sloth-build-key"
echo "$BIN/sloth"
