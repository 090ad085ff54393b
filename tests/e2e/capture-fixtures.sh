#!/usr/bin/env bash
# Capture REAL AdmissionReview requests from a real kube-apiserver and store them
# as pretty-printed fixtures in tests/fixtures/captured/.
#
#   1. builds the tools if needed and starts a fresh control plane
#      (cluster.sh, in its own state dir so a dev cluster is left alone),
#   2. starts capture/capture_webhook.py (HTTPS on 127.0.0.1, self-signed CA)
#      and registers it with a ValidatingWebhookConfiguration,
#   3. drives kubectl as the agent / HPA controller / a person / a platform
#      engineer (impersonation, real RBAC), and saves the one AdmissionReview
#      each step produced,
#   4. stops everything it started.
#
# Usage: tests/e2e/capture-fixtures.sh [--keep]     (--keep: leave the cluster up)
# Environment:
#   SLO_GUARD_E2E_CAPTURE_STATE  state dir (default /tmp/slo-guard-e2e-capture)
#   SLO_GUARD_E2E_FIXTURES       output dir (default tests/fixtures/captured)
#   plus those of cluster.sh / build-tools.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
MANIFESTS="$HERE/capture/manifests"
CSTATE="${SLO_GUARD_E2E_CAPTURE_STATE:-/tmp/slo-guard-e2e-capture}"
OUT="${SLO_GUARD_E2E_FIXTURES:-$REPO/tests/fixtures/captured}"
KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1

AGENT=system:serviceaccount:ai-agents:fixer
HPA=system:serviceaccount:kube-system:horizontal-pod-autoscaler
DECISION=7f3a9c2e-1b4d-4e8a-9c6f-2d1e0b7a5c3f
IMG=registry.example.com/payments/checkout

log() { echo "capture-fixtures.sh: $*" >&2; }
die() { echo "capture-fixtures.sh: ERROR: $*" >&2; exit 1; }
for c in openssl jq python3 curl; do command -v "$c" >/dev/null 2>&1 || die "'$c' is required"; done

export SLO_GUARD_E2E_STATE="$CSTATE/cluster"
RAW="$CSTATE/raw"
WPKI="$CSTATE/webhook-pki"
CAPTURE_PID=""

cleanup() {
  local rc=$?
  if [ -n "$CAPTURE_PID" ] && kill -0 "$CAPTURE_PID" 2>/dev/null; then
    kill "$CAPTURE_PID" 2>/dev/null || true
    wait "$CAPTURE_PID" 2>/dev/null || true
  fi
  if [ "$KEEP" = 0 ]; then
    "$HERE/cluster.sh" down >/dev/null 2>&1 || true
  else
    log "--keep: cluster left running; eval \"\$(SLO_GUARD_E2E_STATE=$SLO_GUARD_E2E_STATE $HERE/cluster.sh env)\""
  fi
  [ "$rc" = 0 ] || log "FAILED (rc=$rc); raw captures in $RAW, logs in $SLO_GUARD_E2E_STATE/logs and $CSTATE/capture.log"
}
trap cleanup EXIT

# ---- 1. fresh control plane ------------------------------------------------
"$HERE/cluster.sh" down >/dev/null 2>&1 || true
CLUSTER_ENV="$("$HERE/cluster.sh" up)" || die "cluster.sh up failed"
eval "$CLUSTER_ENV"
command -v kubectl >/dev/null || die "kubectl not on PATH after cluster.sh up"

# ---- 2. capture webhook ------------------------------------------------------
rm -rf "$RAW" "$WPKI"
mkdir -p "$RAW" "$WPKI" "$OUT"
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 \
  -keyout "$WPKI/ca.key" -out "$WPKI/ca.crt" -subj "/CN=slo-guard-capture-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -new -newkey rsa:2048 -nodes -sha256 -keyout "$WPKI/tls.key" -out "$WPKI/tls.csr" \
  -subj "/CN=127.0.0.1" 2>/dev/null
printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
  "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" > "$WPKI/tls.ext"
openssl x509 -req -in "$WPKI/tls.csr" -CA "$WPKI/ca.crt" -CAkey "$WPKI/ca.key" -CAcreateserial \
  -days 365 -sha256 -extfile "$WPKI/tls.ext" -out "$WPKI/tls.crt" 2>/dev/null

rm -f "$CSTATE/capture.port"
python3 "$HERE/capture/capture_webhook.py" --cert "$WPKI/tls.crt" --key "$WPKI/tls.key" \
  --out "$RAW" --port-file "$CSTATE/capture.port" >"$CSTATE/capture.log" 2>&1 &
CAPTURE_PID=$!
for _ in $(seq 1 50); do [ -s "$CSTATE/capture.port" ] && break; sleep 0.1; done
[ -s "$CSTATE/capture.port" ] || { cat "$CSTATE/capture.log" >&2; die "capture webhook did not start"; }
CAPTURE_PORT="$(cat "$CSTATE/capture.port")"
curl -sf --cacert "$WPKI/ca.crt" "https://127.0.0.1:$CAPTURE_PORT/healthz" >/dev/null \
  || die "capture webhook not answering on https://127.0.0.1:$CAPTURE_PORT"
log "capture webhook on https://127.0.0.1:$CAPTURE_PORT"

# ---- namespaces, identities, RBAC (as admin, before the webhook exists) ------
kubectl apply -f "$MANIFESTS/00-setup.yaml" >/dev/null

CA_BUNDLE="$(base64 -w0 < "$WPKI/ca.crt")"
kubectl apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: slo-guard-capture
webhooks:
- name: capture.slo-guard.io
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 10
  clientConfig:
    url: https://127.0.0.1:$CAPTURE_PORT/validate
    caBundle: $CA_BUNDLE
  namespaceSelector:
    matchExpressions:
    - {key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, kube-public, kube-node-lease]}
  rules:
  - apiGroups: [apps]
    apiVersions: [v1]
    operations: [CREATE, UPDATE, DELETE]
    resources: [deployments, statefulsets, deployments/scale, statefulsets/scale]
    scope: Namespaced
  - apiGroups: [autoscaling]
    apiVersions: [v2]
    operations: [CREATE, UPDATE, DELETE]
    resources: [horizontalpodautoscalers]
    scope: Namespaced
  - apiGroups: [""]
    apiVersions: [v1]
    operations: [CREATE, UPDATE, DELETE]
    resources: [configmaps]
    scope: Namespaced
EOF

# The apiserver picks up webhook configurations asynchronously: probe until it calls us.
probe_ok=0
for i in $(seq 1 60); do
  kubectl -n default create configmap "capture-probe-$i" >/dev/null
  if grep -l "\"capture-probe-$i\"" "$RAW"/*.json >/dev/null 2>&1; then probe_ok=1; break; fi
  sleep 0.5
done
[ "$probe_ok" = 1 ] || die "kube-apiserver never called the capture webhook (see $SLO_GUARD_E2E_STATE/logs/kube-apiserver.log)"
log "webhook is live"

# Captures are $RAW/000001.json, 000002.json, ... (globs sort them in arrival order).
last_seq() { local f last=""; for f in "$RAW"/[0-9]*.json; do [ -e "$f" ] && last="${f##*/}"; done; echo "${last%.json}"; }

# capture <fixture> <operation> <resource> <subResource|-> <name> -- <command...>
# Runs the command and saves the single AdmissionReview it produced for
# (operation, resource, subResource, name) in namespace payments.
capture() {
  local fixture="$1" op="$2" res="$3" sub="$4" name="$5"; shift 6
  local before; before="$(last_seq)"; before="${before:-000000}"
  log "$fixture: $*"
  "$@" >"$CSTATE/cmd.out" 2>&1 || { cat "$CSTATE/cmd.out" >&2; die "$fixture: command failed: $*"; }
  local matches=() f
  for f in "$RAW"/[0-9]*.json; do
    [ -e "$f" ] || continue
    f="${f##*/}"
    [ "${f%.json}" \> "$before" ] || continue
    if jq -e --arg op "$op" --arg res "$res" --arg sub "$sub" --arg name "$name" '
        .request.operation == $op and .request.resource.resource == $res
        and (.request.subResource // "-") == $sub and .request.name == $name
        and .request.namespace == "payments"' "$RAW/$f" >/dev/null; then
      matches+=("$f")
    fi
  done
  [ "${#matches[@]}" -eq 1 ] \
    || die "$fixture: expected exactly 1 matching AdmissionReview ($op $res/$sub $name), got ${#matches[@]}: ${matches[*]:-none}"
  jq --indent 2 . "$RAW/${matches[0]}" > "$OUT/$fixture.json"
  log "  -> $OUT/$fixture.json ($(jq -r '.request.userInfo.username' "$OUT/$fixture.json"))"
}

as_agent() { kubectl --as="$AGENT" "$@"; }

# ---- 3. the scenarios ----------------------------------------------------------
capture deployment-create CREATE deployments - checkout -- \
  as_agent create -f "$MANIFESTS/deployment-checkout.yaml"

capture deployment-image-change UPDATE deployments - checkout -- \
  as_agent -n payments patch deployment checkout --type=strategic -p "$(jq -cn --arg d "$DECISION" --arg img "$IMG:1.41.1" '{
    metadata: {annotations: {
      "slo-guard.io/decision-id": $d,
      "slo-guard.io/reason": "1.41.0 still crash-loops: TLS handshake to payments gateway fails (CVE-2025-0001 hotfix); roll forward to 1.41.1",
      "slo-guard.io/confidence": "0.92",
      "slo-guard.io/action": "fix-image",
      "slo-guard.io/trigger": "alertmanager:CheckoutPodsCrashLooping/payments"}},
    spec: {template: {spec: {containers: [{name: "checkout", image: $img}]}}}}')"

# Admin strips the agent annotations so the next change carries none (not captured).
kubectl -n payments annotate deployment checkout \
  slo-guard.io/decision-id- slo-guard.io/reason- slo-guard.io/confidence- slo-guard.io/action- slo-guard.io/trigger- >/dev/null

capture deployment-image-change-no-annotations UPDATE deployments - checkout -- \
  as_agent -n payments set image deployment/checkout "checkout=$IMG:1.42.0"

capture deployment-replicas-change UPDATE deployments - checkout -- \
  as_agent -n payments patch deployment checkout --type=merge -p '{"spec":{"replicas":4}}'

capture scale-agent UPDATE deployments scale checkout -- \
  as_agent -n payments scale deployment/checkout --replicas=25

# The HPA controller reads the scale subresource and PUTs it back (it has no
# "patch" and no plain "get deployments" in its bootstrap role), so do exactly that.
hpa_scale() {
  local url=/apis/apps/v1/namespaces/payments/deployments/checkout/scale
  kubectl --as="$HPA" get --raw "$url" | jq -c '.spec.replicas = 30' > "$CSTATE/scale-hpa.json"
  kubectl --as="$HPA" replace --raw "$url" -f "$CSTATE/scale-hpa.json"
}
capture scale-hpa-controller UPDATE deployments scale checkout -- hpa_scale

capture scale-person UPDATE deployments scale checkout -- \
  kubectl --as=alice@example.com --as-group=sre -n payments scale deployment/checkout --replicas=10

kubectl create -f "$MANIFESTS/statefulset-ledger.yaml" >/dev/null
capture statefulset-scale-agent UPDATE statefulsets scale ledger -- \
  as_agent -n payments scale statefulset/ledger --replicas=5

kubectl create -f "$MANIFESTS/hpa-checkout.yaml" >/dev/null
capture hpa-update UPDATE horizontalpodautoscalers - checkout -- \
  as_agent -n payments patch hpa checkout --type=merge -p '{"spec":{"maxReplicas":30}}'

# Server-side dry run of a declarative image change (no replicas in the manifest,
# so only the template changes).
sed -e "s#$IMG:1.41.0#$IMG:1.43.0#" \
    -e '/^  replicas: 3$/d' \
    -e 's#^    slo-guard.io/reason: .*#    slo-guard.io/reason: "p99 latency regression in 1.42.0 (N+1 query in cart pricing); 1.43.0 reverts it"#' \
    -e 's#^    slo-guard.io/confidence: .*#    slo-guard.io/confidence: "0.81"#' \
    -e 's#^    slo-guard.io/trigger: .*#    slo-guard.io/trigger: "alertmanager:CheckoutLatencyHigh/payments"#' \
    "$MANIFESTS/deployment-checkout.yaml" > "$CSTATE/deployment-checkout-1.43.0.yaml"
grep -q "$IMG:1.43.0" "$CSTATE/deployment-checkout-1.43.0.yaml" || die "dry-run manifest not generated"
capture deployment-dryrun-update UPDATE deployments - checkout -- \
  as_agent apply --dry-run=server -f "$CSTATE/deployment-checkout-1.43.0.yaml"

capture deployment-metadata-only UPDATE deployments - checkout -- \
  as_agent -n payments annotate deployment checkout "slo-guard.io/approve=$DECISION"

capture configmap-policy-create CREATE configmaps - checkout -- \
  kubectl --as=platform@example.com --as-group=platform-engineers apply -f "$MANIFESTS/policy-checkout.yaml"

# The agent deletes a ConfigMap; the tests' watch cache makes it an owner of
# checkout (tests/kit fixtures.rs), so the garbage collector would delete checkout
# after it. kubectl sends the propagation policy in the DeleteOptions.
# The agent may delete ConfigMaps here, as with an edit Role.
kubectl -n payments create role configmap-deleter --verb=delete --resource=configmaps >/dev/null
kubectl -n payments create rolebinding fixer-configmap-deleter --role=configmap-deleter \
  --serviceaccount=ai-agents:fixer >/dev/null
kubectl -n payments create configmap checkout-handle >/dev/null
kubectl -n payments create configmap checkout-handle-orphaned >/dev/null
capture configmap-owner-delete DELETE configmaps - checkout-handle -- \
  as_agent -n payments delete configmap checkout-handle
capture configmap-owner-delete-orphan DELETE configmaps - checkout-handle-orphaned -- \
  as_agent -n payments delete configmap checkout-handle-orphaned --cascade=orphan

# The agent gives a ConfigMap an owner of its own (chain-root); the tests' watch cache
# makes that ConfigMap an owner of checkout, so deleting chain-root would have the
# garbage collector delete it, then checkout.
kubectl -n payments create role configmap-patcher --verb=get,patch --resource=configmaps >/dev/null
kubectl -n payments create rolebinding fixer-configmap-patcher --role=configmap-patcher \
  --serviceaccount=ai-agents:fixer >/dev/null
kubectl -n payments create configmap checkout-handle-chained >/dev/null
kubectl -n payments create configmap chain-root >/dev/null
ROOT_UID="$(kubectl -n payments get configmap chain-root -o jsonpath='{.metadata.uid}')"
capture configmap-owner-given-owner UPDATE configmaps - checkout-handle-chained -- \
  as_agent -n payments patch configmap checkout-handle-chained --type merge \
    -p "{\"metadata\":{\"ownerReferences\":[{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"name\":\"chain-root\",\"uid\":\"$ROOT_UID\"}]}}"

capture deployment-delete DELETE deployments - checkout -- \
  as_agent -n payments delete deployment checkout

# ---- sanity checks on what was captured ---------------------------------------
chk() { jq -e "$2" "$OUT/$1.json" >/dev/null || die "$1.json fails check: $2"; }
chk deployment-create '.request.object.metadata.annotations["slo-guard.io/decision-id"] == "'"$DECISION"'" and .request.oldObject == null'
chk deployment-image-change '.request.object.spec.template.spec.containers[0].image | endswith(":1.41.1")'
chk deployment-image-change-no-annotations '(.request.object.metadata.annotations // {} | keys | map(select(startswith("slo-guard.io/"))) | length) == 0'
chk deployment-replicas-change '.request.object.spec.replicas == 4 and .request.oldObject.spec.replicas == 3'
chk scale-agent '.request.kind.kind == "Scale" and .request.object.spec.replicas == 25'
chk scale-hpa-controller '.request.userInfo.username == "'"$HPA"'" and .request.object.spec.replicas == 30'
chk scale-person '.request.userInfo.username == "alice@example.com" and (.request.userInfo.groups | index("sre"))'
chk statefulset-scale-agent '.request.kind.kind == "Scale" and .request.object.spec.replicas == 5'
chk hpa-update '.request.object.spec.maxReplicas == 30 and .request.oldObject.spec.maxReplicas == 10'
chk deployment-dryrun-update '.request.dryRun == true'
chk deployment-metadata-only '.request.object.metadata.annotations["slo-guard.io/approve"] == "'"$DECISION"'"'
chk configmap-policy-create '.request.object.metadata.labels["slo-guard.io/policy"] == "true" and (.request.object.data | has("policy.yaml"))'
chk deployment-delete '.request.object == null and .request.oldObject != null'
chk configmap-owner-delete '.request.options.propagationPolicy == "Background" and .request.oldObject.metadata.uid != null'
chk configmap-owner-delete-orphan '.request.options.propagationPolicy == "Orphan"'
chk configmap-owner-given-owner '(.request.object.metadata.ownerReferences | length) == 1 and .request.oldObject.metadata.ownerReferences == null'

log "done: $(find "$OUT" -maxdepth 1 -name '*.json' | wc -l) fixtures in $OUT"
ls -l "$OUT" >&2
