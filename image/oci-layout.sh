#!/usr/bin/env bash
# Pack a directory as a one-layer OCI image layout in a tar, with no base image
# and no container engine. Used by image/build.sh (slo-guard's image) and by
# tests/e2e/real-cluster.sh (the pod sandbox "pause" image).
#
# Usage: image/oci-layout.sh --rootfs DIR --entrypoint PATH --name REPO:TAG [--name ...]
#          [--user UID:GID] [--env K=V]... [--label K=V]... --out FILE
# The layer is reproducible: same files, same bytes (sorted, mtime 0, owner 0).
set -euo pipefail

die() { echo "image/oci-layout.sh: ERROR: $*" >&2; exit 1; }

ROOTFS="" ENTRYPOINT="" USER_SPEC="" OUT=""
NAMES=() ENVS=() LABELS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rootfs) ROOTFS="${2:?}"; shift 2 ;;
    --entrypoint) ENTRYPOINT="${2:?}"; shift 2 ;;
    --user) USER_SPEC="${2:?}"; shift 2 ;;
    --name) NAMES+=("${2:?}"); shift 2 ;;
    --env) ENVS+=("${2:?}"); shift 2 ;;
    --label) LABELS+=("${2:?}"); shift 2 ;;
    --out) OUT="${2:?}"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[ -d "$ROOTFS" ] || die "--rootfs must be a directory"
[ -n "$ENTRYPOINT" ] && [ -x "$ROOTFS$ENTRYPOINT" ] || die "--entrypoint must name an executable inside the rootfs"
[ "${#NAMES[@]}" -gt 0 ] || die "at least one --name is needed"
[ -n "$OUT" ] || die "--out is required"
for tool in jq sha256sum tar gzip; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required"
done
case "$(uname -m)" in
  x86_64) ARCH=amd64 ;;
  aarch64) ARCH=arm64 ;;
  *) die "unsupported architecture $(uname -m)" ;;
esac

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
LAYOUT="$WORK/layout"
BLOBS="$LAYOUT/blobs/sha256"
mkdir -p "$BLOBS"

tar -C "$ROOTFS" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -cf "$WORK/layer.tar" .
diff_id="$(sha256sum "$WORK/layer.tar" | cut -d' ' -f1)"
gzip -n -6 < "$WORK/layer.tar" > "$WORK/layer.tar.gz"

blob() { # <file>: move it into blobs/sha256, print "digest size"
  local digest size
  digest="$(sha256sum "$1" | cut -d' ' -f1)"
  size="$(stat -c %s "$1")"
  mv "$1" "$BLOBS/$digest"
  echo "$digest $size"
}
read -r layer_digest layer_size < <(blob "$WORK/layer.tar.gz")

json_array() { printf '%s\n' "$@" | jq -R . | jq -cs 'map(select(. != ""))'; }
json_labels() { printf '%s\n' "$@" | jq -R 'select(. != "") | split("=") | {(.[0]): (.[1:] | join("="))}' | jq -cs 'add // {}'; }

jq -cn --arg arch "$ARCH" --arg entry "$ENTRYPOINT" --arg user "$USER_SPEC" \
  --argjson env "$(json_array "${ENVS[@]+"${ENVS[@]}"}")" \
  --argjson labels "$(json_labels "${LABELS[@]+"${LABELS[@]}"}")" \
  --arg diff "sha256:$diff_id" \
  '{architecture: $arch, os: "linux",
    config: ({Entrypoint: [$entry], Env: $env, WorkingDir: "/", Labels: $labels}
             + (if $user == "" then {} else {User: $user} end)),
    rootfs: {type: "layers", diff_ids: [$diff]},
    history: [{created_by: "image/oci-layout.sh"}]}' | tr -d '\n' > "$WORK/config.json"
read -r config_digest config_size < <(blob "$WORK/config.json")

jq -cn --arg cd "sha256:$config_digest" --argjson cs "$config_size" \
  --arg ld "sha256:$layer_digest" --argjson ls "$layer_size" \
  '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
    layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $ld, size: $ls}]}' \
  | tr -d '\n' > "$WORK/manifest.json"
read -r manifest_digest manifest_size < <(blob "$WORK/manifest.json")

# One index entry per name: containerd reads io.containerd.image.name, other
# tools the OCI ref.name (the tag).
json_array "${NAMES[@]}" | jq -c --arg md "sha256:$manifest_digest" --argjson ms "$manifest_size" --arg arch "$ARCH" \
  '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: map({mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $md, size: $ms,
                    platform: {architecture: $arch, os: "linux"},
                    annotations: {"io.containerd.image.name": ., "org.opencontainers.image.ref.name": (split(":") | last)}})}' \
  | tr -d '\n' > "$LAYOUT/index.json"
printf '%s' '{"imageLayoutVersion":"1.0.0"}' > "$LAYOUT/oci-layout"

mkdir -p "$(dirname "$OUT")"
tar -C "$LAYOUT" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$OUT.tmp" .
mv "$OUT.tmp" "$OUT"
echo "image/oci-layout.sh: ${NAMES[*]}: manifest sha256:$manifest_digest, layer $((layer_size / 1024)) KiB" >&2
echo "$OUT"
