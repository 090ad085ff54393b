#!/usr/bin/env bash
# Build slo-guard's container image without a base image or a container engine:
# the release binary, the few shared libraries it links (glibc, libgcc_s), an
# /etc/passwd entry for the non-root user, the CA bundle, and nothing else (no
# shell, no package manager). The result is an OCI image layout in a tar, which
#   containerd: ctr -n k8s.io images import <tar>
#   Docker 25+: docker load -i <tar>
#   a registry: skopeo copy oci-archive:<tar> docker://ghcr.io/you/slo-guard:TAG
# all accept. The Dockerfile next to this directory builds the same layout with
# Docker (distroless base) for users who prefer that.
#
# Usage: image/build.sh [--binary PATH] [--name REPO:TAG]... [--out FILE]
#   --binary  the slo-guard binary (default: cargo build --release, then
#             target/release/slo-guard)
#   --name    image name(s) to record, fully qualified (default
#             ghcr.io/slo-guard/slo-guard:<version from Cargo.toml>)
#   --out     output tar (default target/image/slo-guard-oci.tar)
# The last line of stdout is the path of the tar.
set -euo pipefail

die() { echo "image/build.sh: ERROR: $*" >&2; exit 1; }
log() { echo "image/build.sh: $*" >&2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BINARY=""
NAMES=()
OUT="$ROOT/target/image/slo-guard-oci.tar"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) BINARY="${2:?--binary needs a path}"; shift 2 ;;
    --name) NAMES+=("${2:?--name needs REPO:TAG}"); shift 2 ;;
    --out) OUT="${2:?--out needs a path}"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done

for tool in ldd install; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required"
done

VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -n1)"
[ -n "$VERSION" ] || die "cannot read the version from Cargo.toml"
[ "${#NAMES[@]}" -gt 0 ] || NAMES=("ghcr.io/slo-guard/slo-guard:$VERSION")
for name in "${NAMES[@]}"; do
  case "$name" in
    */*:*) ;;
    *) die "image name '$name' must be fully qualified, e.g. ghcr.io/slo-guard/slo-guard:$VERSION (the CRI looks images up by their full name)" ;;
  esac
done

if [ -z "$BINARY" ]; then
  log "building the release binary"
  (cd "$ROOT" && cargo build --release --locked --bin slo-guard >&2) || die "cargo build failed"
  BINARY="$ROOT/target/release/slo-guard"
fi
[ -x "$BINARY" ] || die "binary $BINARY does not exist or is not executable"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
FS="$WORK/rootfs"
mkdir -p "$FS/etc/ssl/certs" "$FS/tmp"
chmod 1777 "$FS/tmp"
install -m 0755 "$BINARY" "$FS/slo-guard"

# The shared libraries the binary links, at the paths the dynamic loader expects.
# `ldd` prints "name => /path (addr)" for libraries and "/path (addr)" for the loader.
libs="$(ldd "$BINARY" | awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }')"
[ -n "$libs" ] || die "ldd found no libraries for $BINARY (a static binary needs none: remove this check)"
for lib in $libs; do
  real="$(readlink -f "$lib")"
  mkdir -p "$FS$(dirname "$lib")"
  cp "$real" "$FS$lib"
  log "library $lib"
done

cat > "$FS/etc/passwd" <<'PASSWD'
root:x:0:0:root:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin
PASSWD
cat > "$FS/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
# Public CAs, for a Prometheus behind HTTPS with a public certificate.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$FS/etc/ssl/certs/ca-certificates.crt"
else
  log "no /etc/ssl/certs/ca-certificates.crt on this machine: the image has no public CA bundle"
fi
[ ! -e "$FS/bin/sh" ] || die "the image must not contain a shell"

name_args=()
for name in "${NAMES[@]}"; do name_args+=(--name "$name"); done
"$ROOT/image/oci-layout.sh" --rootfs "$FS" --entrypoint /slo-guard --user 65532:65532 \
  --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --label "org.opencontainers.image.version=$VERSION" \
  "${name_args[@]}" --out "$OUT"
