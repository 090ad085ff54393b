#!/bin/sh
# Regenerate the plain manifests in webhooks/ from the Helm chart, so the two
# install paths never drift apart. They are the chart's default render with
# certs.mode=existingSecret (Secret slo-guard-tls, caBundle "${CA_BUNDLE}"),
# release "slo-guard" in namespace "slo-guard", without Helm's own labels.
#
# Usage: webhooks/generate.sh           rewrite the files
#        webhooks/generate.sh --check   exit 1 if they differ from the chart
#
# Needs helm 3 on PATH (or HELM=/path/to/helm) and POSIX sh + awk.
# webhooks/local/ is not generated: it is written by hand for tests.

set -eu

here="$(cd "$(dirname "$0")" && pwd)"
chart="$here/../charts/slo-guard"
helm="${HELM:-helm}"
check=0
case "${1:-}" in
    --check) check=1 ;;
    "") ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

command -v "$helm" >/dev/null 2>&1 || { echo "generate.sh: helm not found (set HELM=...)" >&2; exit 1; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/slo-guard-webhooks.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP

# --kube-version pins the render (matchConditions need 1.28+), independent of
# the helm build's default.
"$helm" template slo-guard "$chart" \
    --namespace slo-guard \
    --kube-version 1.28.0 \
    --set certs.mode=existingSecret \
    --set certs.existingSecret.name=slo-guard-tls \
    --set-string 'certs.existingSecret.caBundle=${CA_BUNDLE}' \
    > "$tmp/render.yaml"

header() {
    # $1 = title line
    cat <<EOF
# $1
# Generated from charts/slo-guard by webhooks/generate.sh: edit the chart, then
# run webhooks/generate.sh. See webhooks/README.md for how to apply.
EOF
}

# Split the render by source template, dropping Helm-only labels and the
# "# Source:" markers.
awk -v dir="$tmp" '
    function target(src) {
        if (src ~ /\/serviceaccount\.yaml$/ || src ~ /\/rbac\.yaml$/) return "rbac.yaml"
        if (src ~ /\/deployment\.yaml$/) return "deployment.yaml"
        if (src ~ /\/service\.yaml$/) return "service.yaml"
        if (src ~ /\/pdb\.yaml$/) return "pdb.yaml"
        if (src ~ /\/validatingwebhookconfiguration\.yaml$/) return "validating-webhook.yaml"
        if (src ~ /\/mutatingwebhookconfiguration\.yaml$/) return "mutating-webhook.yaml"
        if (src ~ /\/reflect-cronjob\.yaml$/) return "reflect-cronjob.yaml"
        if (src ~ /\/networkpolicy\.yaml$/) return "networkpolicy.yaml"
        return ""
    }
    /^---$/ { out = ""; next }
    /^# Source: / {
        out = target($3)
        if (out == "") { print "generate.sh: unexpected template " $3 > "/dev/stderr"; exit 1 }
        if (seen[out]++) print "---" > (dir "/" out ".body")
        next
    }
    /^ *helm\.sh\/chart: / { next }
    /^ *app\.kubernetes\.io\/managed-by: / { next }
    out != "" { print > (dir "/" out ".body") }
' "$tmp/render.yaml"

{
    header "Namespace for slo-guard, enforcing the restricted Pod Security profile."
    cat <<'EOF'
apiVersion: v1
kind: Namespace
metadata:
  name: slo-guard
  labels:
    app.kubernetes.io/name: slo-guard
    app.kubernetes.io/part-of: slo-guard
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
    pod-security.kubernetes.io/warn: restricted
    pod-security.kubernetes.io/audit: restricted
EOF
} > "$tmp/namespace.yaml"

title_rbac="ServiceAccount and least-privilege RBAC of the slo-guard server."
title_deployment="The slo-guard server: 2 replicas, restricted security context, HTTPS on 8443. Needs Secret slo-guard-tls."
title_service="Service the API server calls the webhooks through (443 -> 8443), and the metrics port (8080)."
title_pdb="Keeps one slo-guard replica up during node drains."
title_validating="Validating webhooks. Replace \${CA_BUNDLE} with envsubst before applying."
title_mutating="Mutating webhook. Replace \${CA_BUNDLE} with envsubst before applying."

title_reflect="CronJob that learns from outcomes (slo-guard reflect): tightening proposals."
title_networkpolicy="Only the API server may reach the webhook port, only Prometheus the metrics port. Set the webhook port's sources for your cluster (webhooks/README.md)."

for f in rbac deployment service pdb validating-webhook mutating-webhook reflect-cronjob networkpolicy; do
    [ -s "$tmp/$f.yaml.body" ] || { echo "generate.sh: the render has no $f.yaml" >&2; exit 1; }
    case "$f" in
        rbac) t="$title_rbac" ;;
        deployment) t="$title_deployment" ;;
        service) t="$title_service" ;;
        pdb) t="$title_pdb" ;;
        validating-webhook) t="$title_validating" ;;
        mutating-webhook) t="$title_mutating" ;;
        reflect-cronjob) t="$title_reflect" ;;
        networkpolicy) t="$title_networkpolicy" ;;
    esac
    { header "$t"; cat "$tmp/$f.yaml.body"; } > "$tmp/$f.yaml"
done

files="namespace.yaml rbac.yaml deployment.yaml service.yaml pdb.yaml networkpolicy.yaml validating-webhook.yaml mutating-webhook.yaml reflect-cronjob.yaml"
if [ "$check" -eq 1 ]; then
    rc=0
    for f in $files; do
        if ! cmp -s "$tmp/$f" "$here/$f"; then
            echo "generate.sh: webhooks/$f is out of date with the chart" >&2
            diff -u "$here/$f" "$tmp/$f" >&2 || true
            rc=1
        fi
    done
    [ "$rc" -eq 0 ] && echo "generate.sh: webhooks/ matches the chart" >&2
    exit "$rc"
fi
for f in $files; do
    cp "$tmp/$f" "$here/$f"
done
echo "generate.sh: wrote $(echo "$files" | wc -w | tr -d ' ') files in $here" >&2
