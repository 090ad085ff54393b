# The in-cluster scenarios of tests/e2e/real-cluster.sh (sourced by it: it
# provides the cluster, check/pass/fail, wait_for and the variables used here).
# Every kubectl command and its output goes to $STATE/transcript.txt.

AGENT=system:serviceaccount:ai-agents:fixer
TRANSCRIPT="$STATE/transcript.txt"

# Run kubectl, keep the command and its output in the transcript, print the output.
k() {
  local out rc=0
  out="$(kubectl "$@" 2>&1)" || rc=$?
  { echo "\$ kubectl $*"; echo "$out"; echo; } >> "$TRANSCRIPT"
  echo "$out"
  return "$rc"
}

# Succeeds when the command fails and its output contains every given text.
denied_with() { # <output> <text>...
  local out="$1"; shift
  local text
  for text in "$@"; do
    grep -qF -- "$text" <<<"$out" || { log "expected '$text' in: $out"; return 1; }
  done
}

values_file() { # <image tag>
  cat > "$STATE/values.yaml" <<EOF
image: {repository: $IMAGE_REPO, tag: $1, pullPolicy: Never}
prometheus: {url: "$PROM_URL"}
# No kube-proxy on this node: the pods reach the API server at its address.
kubernetesService: {host: "$NODE_IP", port: "$APISERVER_PORT"}
# The chart's default webhooks.scope=policies: the workload webhooks are sent
# only the namespaces a policy governs.
webhooks: {scope: policies}
EOF
  echo "$STATE/values.yaml"
}

ready_replicas() { kubectl get deploy "$RELEASE" -n "$GUARD_NS" -o jsonpath='{.status.readyReplicas}' 2>/dev/null; }
guard_ready() { # <n>: n ready replicas, all of the newest ReplicaSet
  [ "$(ready_replicas)" = "$1" ] && [ "$(kubectl get deploy "$RELEASE" -n "$GUARD_NS" -o jsonpath='{.status.updatedReplicas}')" = "$1" ] \
    && [ "$(kubectl get deploy "$RELEASE" -n "$GUARD_NS" -o jsonpath='{.status.replicas}')" = "$1" ]
}
no_guard_pod() { [ -z "$(kubectl get pods -n "$GUARD_NS" -l app.kubernetes.io/name=slo-guard,app.kubernetes.io/component=webhook -o name)" ]; }

# A stream of admissions in the background; stop_stream prints its summary.
start_stream() {
  rm -f "$STATE/stream.stop"
  python3 "$HERE/node/admission_stream.py" --server "https://$NODE_IP:$APISERVER_PORT" \
    --ca "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    --namespace payments --stop-file "$STATE/stream.stop" --rate 20 --workers 4 --max-seconds $((180 + 60 * ${SLO_GUARD_E2E_DISRUPTIONS:-1})) \
    > "$STATE/stream.out" 2>&1 &
  STREAM_PID=$!
  sleep 3
}
# Sets STREAM_SUMMARY (not in a subshell: wait needs the stream's parent).
stop_stream() {
  sleep 3
  touch "$STATE/stream.stop"
  wait "$STREAM_PID" || true
  STREAM_SUMMARY="$(tail -n1 "$STATE/stream.out")"
}
stream_clean() { # <summary json>: some admitted, none failed
  [ -n "$1" ] && jq -e '.failed == 0 and .admitted > 0' >/dev/null <<<"$1"
}
# The sum of one series (a counter or a gauge) over every slo-guard pod, read through the API
# server's pod proxy (a scrape through the Service reaches only one of them).
sum_over_pods() { # <metric name> <label regex>
  local pod total=0 n
  for pod in $(kubectl get pods -n "$GUARD_NS" -l app.kubernetes.io/name=slo-guard,app.kubernetes.io/component=webhook -o jsonpath='{.items[*].metadata.name}'); do
    n="$(kubectl get --raw "/api/v1/namespaces/$GUARD_NS/pods/http:$pod:8080/proxy/metrics" \
      | grep -E "^$1[{ ]" | grep -E -- "$2" | awk '{s += $2} END {print s + 0}')"
    total=$((total + ${n%.*}))
  done
  echo "$total"
}

# The namespaces the validating and mutating workload webhooks are sent, as JSON.
scope_of() { # <kind> <webhook>
  kubectl get "$1" "$RELEASE" -o json | jq -c --arg w "$2" \
    '[.webhooks[] | select(.name == $w) | .namespaceSelector.matchExpressions // [] | .[]
      | select(.key == "kubernetes.io/metadata.name" and .operator == "In") | .values[]]'
}
scope_is() { # <json list>: validate, pods, owners and mutate all sent exactly these namespaces
  [ "$(scope_of validatingwebhookconfiguration validate.slo-guard.io)" = "$1" ] &&
  [ "$(scope_of validatingwebhookconfiguration pods.slo-guard.io)" = "$1" ] &&
  [ "$(scope_of validatingwebhookconfiguration owners.slo-guard.io)" = "$1" ] &&
  [ "$(scope_of mutatingwebhookconfiguration mutate.slo-guard.io)" = "$1" ]
}

scenario_install() {
  log "scenario 1: helm install"
  local t0=$SECONDS out rc=0
  out="$(helm install "$RELEASE" "$ROOT/charts/slo-guard" -n "$GUARD_NS" --create-namespace \
    -f "$(values_file e2e-1)" --wait --timeout 180s 2>&1)" || rc=$?
  echo "$out" > "$STATE/helm-install.txt"
  check "1. helm install --wait succeeded in $((SECONDS - t0))s" test "$rc" -eq 0
  check "1. both replicas Ready" wait_for 60 "2 ready replicas" guard_ready 2
  check "1. certificate Job made Secret $RELEASE-tls with ca.crt" \
    bash -c "kubectl get secret $RELEASE-tls -n $GUARD_NS -o jsonpath='{.data.ca\.crt}' | base64 -d | grep -q 'BEGIN CERTIFICATE'"
  local ca
  ca="$(kubectl get secret "$RELEASE-tls" -n "$GUARD_NS" -o jsonpath='{.data.ca\.crt}')"
  check "1. every webhook registered with the Secret's CA as caBundle" bash -c '
    for kind in validatingwebhookconfiguration mutatingwebhookconfiguration; do
      kubectl get "$kind" "$1" -o json | jq -e --arg ca "$2" "[.webhooks[].clientConfig.caBundle == \$ca] | all and length > 0" >/dev/null || exit 1
    done' _ "$RELEASE" "$ca"
  check "1. PodDisruptionBudget minAvailable 1, 1 disruption allowed" \
    bash -c "[ \"\$(kubectl get pdb $RELEASE -n $GUARD_NS -o jsonpath='{.spec.minAvailable}/{.status.disruptionsAllowed}')\" = 1/1 ]"
  check "1. /metrics scraped through the Service" bash -c 'kubectl get --raw "$1" | grep -q "^slo_guard_open_connections"' _ \
    "/api/v1/namespaces/$GUARD_NS/services/http:$RELEASE:metrics/proxy/metrics"
  # The NetworkPolicy is stored and selects the server pods and their named ports. It
  # is not enforced here: the CNI bridge plugin does not implement NetworkPolicy.
  check "1. the NetworkPolicy selects both server pods and names ports they expose" bash -c "
    policy=\$(kubectl get networkpolicy $RELEASE -n $GUARD_NS -o json) || exit 1
    selector=\$(jq -r '.spec.podSelector.matchLabels | to_entries | map(\"\\(.key)=\\(.value)\") | join(\",\")' <<<\"\$policy\")
    [ \"\$(kubectl get pods -n $GUARD_NS -l \"\$selector\" -o name | wc -l)\" = 2 ] || exit 1
    ports=\$(kubectl get pods -n $GUARD_NS -l \"\$selector\" -o json | jq -c '[.items[0].spec.containers[0].ports[].name] | sort')
    [ \"\$(jq -c '[.spec.ingress[].ports[].port] | sort' <<<\"\$policy\")\" = \"\$ports\" ]"
  check "1. with no policy, the workload webhooks are narrowed to no namespace" \
    wait_for 30 "the scope narrowed" scope_is '["none.slo-guard.io"]'
  check "1. slo_guard_webhook_scope_managed is 1 on both pods" \
    test "$(sum_over_pods slo_guard_webhook_scope_managed .)" = 2
  check "1. pods run as 65532 with a read-only root filesystem" bash -c "
    kubectl get pods -n $GUARD_NS -l app.kubernetes.io/name=slo-guard,app.kubernetes.io/component=webhook -o json \
      | jq -e '[.items[].spec.containers[0].securityContext | .runAsUser == 65532 and .readOnlyRootFilesystem] | all and length == 2' >/dev/null"
}

scenario_denials() {
  log "scenario 2: the kubectl scenarios of docs/annotations.md through the Service"
  k create namespace payments >/dev/null
  k create namespace ai-agents >/dev/null
  k create serviceaccount fixer -n ai-agents >/dev/null
  k create rolebinding fixer-edit -n payments --clusterrole edit --serviceaccount ai-agents:fixer >/dev/null
  # The checkout policy of policies/checkout.yaml, its SLO on the harness's
  # healthy history, without the weekend freeze (the run must not depend on the day).
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: checkout
  namespace: payments
  labels: {slo-guard.io/policy: "true"}
data:
  policy.yaml: |
    match: {kinds: [Deployment], selector: {matchLabels: {app: checkout}}}
    action: enforce
    agents:
      users: ["system:serviceaccount:ai-agents:*"]
      minConfidence: 0.7
      forbidden: [delete]
    slo:
      objective: 99.9
      period: 30d
      errors: sum(rate(http_requests_total{job="healthy",code=~"5.."}[{{window}}]))
      total:  sum(rate(http_requests_total{job="healthy"}[{{window}}]))
      minRequestRate: 1
      budget: {freezeBelow: 0.0, agentFreezeBelow: 0.25}
      burnRate:
        - {long: 1h, short: 5m, factor: 14.4}
    scaling: {minReplicas: 2, maxReplicas: 20, maxStep: 5, cooldown: 5m, appliesTo: agents}
    approval: {requiredFor: [rollout], maxAge: 1h}
    prometheus: {onError: deny-agents, timeout: 2s, maxStaleness: 2m}
EOF
  check "2. the policy's namespace is in the workload webhooks' scope as soon as it is admitted" \
    scope_is '["payments"]'
  check "2. ... and the ConfigMap webhooks still see every namespace" bash -c "
    kubectl get validatingwebhookconfiguration $RELEASE -o json | jq -e '
      [.webhooks[] | select(.name | startswith(\"config.\") or startswith(\"reflection.\"))
       | .namespaceSelector.matchExpressions // [] | .[] | select(.operator == \"In\")] == []' >/dev/null"
  # The guard reloads policies from its ConfigMap watch.
  sleep 3
  local out
  out="$(k apply -f - <<EOF || true
apiVersion: apps/v1
kind: Deployment
metadata: {name: checkout, namespace: payments, labels: {app: checkout}}
spec:
  replicas: 5
  selector: {matchLabels: {app: checkout}}
  template:
    metadata: {labels: {app: checkout}}
    spec:
      containers: [{name: checkout, image: "docker.io/slo-guard-e2e/pause:1"}]
EOF
)"
  check "2. a person's Deployment create is admitted" grep -q "created" <<<"$out"
  check "2. the Deployment controller runs it: 5 pods Running" \
    wait_for 90 "checkout rollout" kubectl rollout status deploy/checkout -n payments --timeout 5s

  out="$(k scale deploy/checkout -n payments --replicas=25 --as "$AGENT" || true)"
  check "2. agent scale over the cap denied (max-replicas, max-step)" denied_with "$out" \
    'admission webhook "validate.slo-guard.io" denied the request: [payments/checkout:max-replicas] scale of Deployment payments/checkout blocked: 25 replicas requested, above the cap of 20 for agent changes.' \
    '[payments/checkout:max-step] scale of Deployment payments/checkout blocked: a step of 20 replicas (5 to 25)'

  out="$(k set image deploy/checkout -n payments checkout=docker.io/slo-guard-e2e/pause:2 --as "$AGENT" || true)"
  check "2. agent rollout without its decision context denied (agent-annotations)" denied_with "$out" \
    '[payments/checkout:agent-annotations] rollout of Deployment payments/checkout blocked: agent change lacks a valid decision context: missing slo-guard.io/decision-id, slo-guard.io/reason, slo-guard.io/confidence, slo-guard.io/action.'

  out="$(k apply -f - <<EOF || true
apiVersion: v1
kind: ConfigMap
metadata: {name: checkout-bad, namespace: payments, labels: {slo-guard.io/policy: "true"}}
data:
  policy.yaml: |
    scaling: {maxReplicas: "twenty"}
EOF
)"
  check "2. a bad policy is rejected at kubectl apply (policy-schema)" denied_with "$out" \
    'admission webhook "config.slo-guard.io" denied the request: [payments/checkout-bad:policy-schema] policy ConfigMap payments/checkout-bad rejected:' \
    'scaling.maxReplicas'

  # An admitted change, rolled out by the real Deployment controller.
  local rs_before
  rs_before="$(kubectl get rs -n payments -l app=checkout -o name | wc -l)"
  out="$(k set env deploy/checkout -n payments RELEASE=2 || true)"
  check "2. a person's rollout is admitted" grep -q "env updated" <<<"$out"
  check "2. ... and rolled out: a new ReplicaSet, 5 new pods Running" bash -c '
    kubectl rollout status deploy/checkout -n payments --timeout 90s >/dev/null &&
    [ "$(kubectl get rs -n payments -l app=checkout -o name | wc -l)" -gt "$1" ] &&
    [ "$(kubectl get pods -n payments -l app=checkout --field-selector status.phase=Running -o json | jq "[.items[] | select(.spec.containers[0].env[0].value == \"2\")] | length")" = 5 ]' _ "$rs_before"
  check "2. the admitted rollout carries the mutating webhook's stamp" bash -c \
    "kubectl get deploy checkout -n payments -o jsonpath='{.metadata.annotations}' | grep -q 'slo-guard.io/verdict'"

  # Two ways an agent could make a controller do what it may not do itself.
  # 1. The Deployment controller still honours the deprecated rollback
  #    annotation in apps/v1: it puts an old pod template back (a rollout),
  #    writing as itself, past every rollout rule. Refused for anyone.
  out="$(k annotate deploy/checkout -n payments deprecated.deployment.rollback.to=1 --as "$AGENT" || true)"
  check "2. an agent's rollback through deprecated.deployment.rollback.to is refused (rollback-annotation)" denied_with "$out" \
    '[payments/checkout:rollback-annotation] metadata of Deployment payments/checkout blocked: the annotation deprecated.deployment.rollback.to=1 would make the Deployment controller put revision 1'"'"'s pod template back' \
    'kubectl rollout undo deployment/checkout -n payments --to-revision=1'
  sleep 5
  check "2. ... and the controller rolled nothing back: the template still has RELEASE=2" bash -c '
    [ "$(kubectl get deploy checkout -n payments -o jsonpath="{.spec.template.spec.containers[0].env[0].value}")" = 2 ]'
  # 2. The garbage collector deletes an object whose owner is gone. An agent
  #    that may not delete the Deployment (agents.forbidden: [delete]) must not
  #    give it an owner it can delete.
  k create configmap handle -n payments --as "$AGENT" >/dev/null || true
  local handle_uid
  handle_uid="$(kubectl get configmap handle -n payments -o jsonpath='{.metadata.uid}')"
  out="$(k patch deploy/checkout -n payments --type merge --as "$AGENT" \
    -p "{\"metadata\":{\"ownerReferences\":[{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"name\":\"handle\",\"uid\":\"$handle_uid\"}]}}" || true)"
  check "2. an agent cannot give a governed Deployment an owner (forbidden-action: delete)" denied_with "$out" \
    '[payments/checkout:forbidden-action]' 'ownerReferences'
  k delete configmap handle -n payments --as "$AGENT" >/dev/null || true
  sleep 5
  check "2. ... and the garbage collector deleted nothing: checkout still exists" \
    kubectl get deploy checkout -n payments
  scenario_owner_delete

  local denied
  denied="$(sum_over_pods slo_guard_decisions_total 'verdict="denied"')"
  check "2. the denials are counted in /metrics (slo_guard_decisions_total, verdict denied: $denied over both pods)" \
    test "$denied" -ge 3
}

# An object that owns a governed workload takes it along when it is deleted: the
# garbage collector (skipped by every webhook: webhooks.skipUsernames) deletes the
# dependents. An agent that may not delete the workload (agents.forbidden:
# [delete]) must not delete its owner either, unless the dependents are orphaned.
scenario_owner_delete() {
  local out
  k apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: ledger, namespace: payments, labels: {app: checkout}}
spec:
  replicas: 0
  selector: {matchLabels: {app: ledger}}
  template:
    metadata: {labels: {app: ledger}}
    spec:
      containers: [{name: ledger, image: "docker.io/slo-guard-e2e/pause:1"}]
EOF
  # A person (the admin) makes ConfigMap $1 the owner of the governed Deployment
  # ledger: people may (an operator's custom resource owns its workloads so).
  own_ledger() { # <configmap>
    local uid
    k create configmap "$1" -n payments >/dev/null
    uid="$(kubectl get configmap "$1" -n payments -o jsonpath='{.metadata.uid}')"
    k patch deploy/ledger -n payments --type merge \
      -p "{\"metadata\":{\"ownerReferences\":[{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"name\":\"$1\",\"uid\":\"$uid\"}]}}"
  }
  out="$(own_ledger ledger-owner || true)"
  check "2. a person makes ConfigMap ledger-owner the owner of the governed Deployment ledger" grep -q "patched" <<<"$out"
  # The guard's watch cache sees the owner.
  sleep 2
  out="$(k delete configmap ledger-owner -n payments --as "$AGENT" || true)"
  check "2. an agent cannot delete the owner of a governed Deployment (forbidden-action: delete)" denied_with "$out" \
    'admission webhook "owners.slo-guard.io" denied the request: [payments/checkout:forbidden-action]' \
    'Deployment payments/ledger' '--cascade=orphan'
  # The same delete as one DeleteCollection request (every ConfigMap the selector
  # matches): the apiserver admits each item it deletes as a DELETE of its own.
  k label configmap ledger-owner -n payments slo-guard-e2e/owner=yes >/dev/null
  out="$(k delete --raw '/api/v1/namespaces/payments/configmaps?labelSelector=slo-guard-e2e%2Fowner%3Dyes' --as "$AGENT" || true)"
  check "2. ... nor by a DeleteCollection of the ConfigMaps it matches" denied_with "$out" \
    'admission webhook "owners.slo-guard.io" denied the request' 'Deployment payments/ledger'
  check "2. ... which deleted nothing: ConfigMap ledger-owner still exists" \
    kubectl get configmap ledger-owner -n payments
  sleep 5
  check "2. ... and the garbage collector deleted nothing: ledger still exists" \
    kubectl get deploy ledger -n payments
  out="$(k delete configmap ledger-owner -n payments --cascade=orphan --as "$AGENT" || true)"
  check "2. the agent may delete it with --cascade=orphan (propagationPolicy Orphan)" grep -q "deleted" <<<"$out"
  check "2. ... and the garbage collector orphans ledger: it still exists, without an owner" \
    wait_for 30 "ledger orphaned" bash -c '
      owners="$(kubectl get deploy ledger -n payments -o jsonpath="{.metadata.ownerReferences}")" && [ -z "$owners" ]'
  k create configmap scratch -n payments --as "$AGENT" >/dev/null || true
  out="$(k delete configmap scratch -n payments --as "$AGENT" || true)"
  check "2. an agent deletes a ConfigMap that owns nothing governed" grep -q "deleted" <<<"$out"
  out="$(own_ledger ledger-owner-2 || true)"
  check "2. a person makes ConfigMap ledger-owner-2 the owner of ledger" grep -q "patched" <<<"$out"
  sleep 2
  # The chain: the agent makes a ConfigMap of its own the owner of ledger-owner-2.
  # Deleting that one would have the garbage collector delete ledger-owner-2, then
  # ledger.
  k create configmap chain-root -n payments --as "$AGENT" >/dev/null || true
  local root_uid
  root_uid="$(kubectl get configmap chain-root -n payments -o jsonpath='{.metadata.uid}')"
  out="$(k patch configmap ledger-owner-2 -n payments --type merge --as "$AGENT" \
    -p "{\"metadata\":{\"ownerReferences\":[{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"name\":\"chain-root\",\"uid\":\"$root_uid\"}]}}" || true)"
  check "2. an agent cannot give the owner of a governed Deployment an owner of its own" denied_with "$out" \
    'admission webhook "owners.slo-guard.io" denied the request: [payments/checkout:forbidden-action]' \
    'giving ConfigMap payments/ledger-owner-2 an owner (ConfigMap chain-root'
  out="$(k label configmap ledger-owner-2 -n payments --as "$AGENT" slo-guard-e2e/touched=yes || true)"
  check "2. ... while its other updates of that ConfigMap are admitted" grep -q "labeled" <<<"$out"
  out="$(k delete configmap chain-root -n payments --as "$AGENT" || true)"
  check "2. ... so deleting its own ConfigMap chain-root deletes just that" grep -q "deleted" <<<"$out"
  sleep 5
  check "2. ... and ledger-owner-2 and ledger still exist" \
    kubectl get configmap/ledger-owner-2 deploy/ledger -n payments
  out="$(k delete configmap ledger-owner-2 -n payments || true)"
  check "2. a person may delete the owner of a governed Deployment" grep -q "deleted" <<<"$out"
  check "2. ... and the garbage collector deletes ledger with it (the route is real)" \
    wait_for 30 "ledger deleted" bash -c '! kubectl get deploy ledger -n payments'
}

scenario_availability() {
  log "scenario 3: availability while a pod is deleted, and during a rolling upgrade"
  local summary victim round rounds="${SLO_GUARD_E2E_DISRUPTIONS:-1}"
  start_stream
  for round in $(seq 1 "$rounds"); do
    victim="$(kubectl get pods -n "$GUARD_NS" -l app.kubernetes.io/name=slo-guard,app.kubernetes.io/component=webhook -o jsonpath='{.items[0].metadata.name}')"
    k delete pod "$victim" -n "$GUARD_NS" --wait=true >/dev/null
    wait_for 90 "2 ready replicas after pod deletion $round of $rounds" guard_ready 2 || true
  done
  stop_stream
  summary="$STREAM_SUMMARY"
  echo "pod deletion x$rounds: $summary" >> "$STATE/availability.txt"
  check "3. admissions while $rounds slo-guard pod(s) were deleted one after another: $(jq -c '{sent, admitted, failed}' <<<"$summary") (none failed)" stream_clean "$summary"
  [ "$(jq .failed <<<"$summary")" = 0 ] || log "failures: $(jq -c .failures <<<"$summary")"

  start_stream
  local t0=$SECONDS
  helm upgrade "$RELEASE" "$ROOT/charts/slo-guard" -n "$GUARD_NS" -f "$(values_file e2e-2)" --wait --timeout 180s \
    > "$STATE/helm-upgrade.txt" 2>&1 || log "helm upgrade failed: $(tail -n 5 "$STATE/helm-upgrade.txt")"
  wait_for 90 "2 ready replicas after the upgrade" guard_ready 2 || true
  stop_stream
  summary="$STREAM_SUMMARY"
  echo "rolling upgrade: $summary" >> "$STATE/availability.txt"
  check "3. helm upgrade to image tag e2e-2 rolled both pods in $((SECONDS - t0))s" bash -c "
    kubectl get pods -n $GUARD_NS -l app.kubernetes.io/name=slo-guard,app.kubernetes.io/component=webhook -o json \
      | jq -e '[.items[] | select(.status.phase == \"Running\") | .spec.containers[0].image] == [\"$IMAGE_REPO:e2e-2\", \"$IMAGE_REPO:e2e-2\"]' >/dev/null"
  check "3. admissions during the rolling upgrade: $(jq -c '{sent, admitted, failed}' <<<"$summary") (none failed)" stream_clean "$summary"
  [ "$(jq .failed <<<"$summary")" = 0 ] || log "failures: $(jq -c .failures <<<"$summary")"
}

scenario_fail_closed() {
  log "scenario 4: fail-closed with no replica"
  k create namespace scratch >/dev/null
  k create deployment scratch -n scratch --image docker.io/slo-guard-e2e/pause:1 >/dev/null
  k scale deploy/"$RELEASE" -n "$GUARD_NS" --replicas 0 >/dev/null
  local t0=$SECONDS
  wait_for 90 "no slo-guard pod" no_guard_pod || kubectl get pods -n "$GUARD_NS" -o wide >&2
  log "the last slo-guard pod was gone $((SECONDS - t0))s after the scale to 0"
  local out
  out="$(k scale deploy/checkout -n payments --replicas 6 || true)"
  check "4. a governed change is refused while slo-guard is down" denied_with "$out" \
    'failed calling webhook "validate.slo-guard.io"'
  out="$(k scale deploy/scratch -n scratch --replicas 3 || true)"
  check "4. a namespace no policy governs is unaffected" grep -q "scaled" <<<"$out"
  k scale deploy/"$RELEASE" -n "$GUARD_NS" --replicas 2 >/dev/null
  check "4. slo-guard scaled back to 2 replicas (its namespace is never guarded)" wait_for 90 "2 ready replicas" guard_ready 2
  out="$(k scale deploy/checkout -n payments --replicas 6 || true)"
  check "4. ... and the governed change is admitted again" grep -q "scaled" <<<"$out"
}

scenario_reflect() {
  log "scenario 5: the reflect CronJob, once, as a Job"
  local sa="system:serviceaccount:$GUARD_NS:$RELEASE-reflect"
  k create job reflect-once -n "$GUARD_NS" --from "cronjob/$RELEASE-reflect" >/dev/null
  check "5. the reflect Job completes" kubectl wait --for condition=complete job/reflect-once -n "$GUARD_NS" --timeout 120s
  k logs job/reflect-once -n "$GUARD_NS" > "$STATE/reflect-job.log" 2>&1 || true
  check "5. it ran as its own ServiceAccount" bash -c \
    "[ \"\$(kubectl get job reflect-once -n $GUARD_NS -o jsonpath='{.spec.template.spec.serviceAccountName}')\" = $RELEASE-reflect ]"
  # It lists the policies and the workloads they govern (checkout, and the
  # ReplicaSets' owners); nothing was admitted for an agent, so nothing to judge.
  check "5. it read the policies and workloads: $(head -n1 "$STATE/reflect-job.log")" \
    grep -Eq '^judged [0-9]+ change\(s\) on [1-9][0-9]* workload\(s\)' "$STATE/reflect-job.log"
  # Enough: what the Job does. No more: nothing else an attacker would want.
  local allowed=(
    "list configmaps --all-namespaces"
    "list deployments.apps --all-namespaces"
    "list statefulsets.apps --all-namespaces"
    "patch configmap/slo-guard-proposals -n $GUARD_NS"
    "create configmaps -n $GUARD_NS"
  )
  local refused=(
    "get secrets -n $GUARD_NS"
    "list secrets --all-namespaces"
    "patch deployments.apps -n payments"
    "update deployments.apps/scale -n payments"
    "patch configmap/checkout -n payments"
    "create configmaps -n payments"
    "update leases.coordination.k8s.io -n $GUARD_NS"
    "patch validatingwebhookconfigurations"
    "create pods -n $GUARD_NS"
  )
  local q bad=""
  for q in "${allowed[@]}"; do
    # shellcheck disable=SC2086
    [ "$(kubectl auth can-i $q --as "$sa" 2>/dev/null)" = yes ] || bad+=" [not allowed: $q]"
  done
  for q in "${refused[@]}"; do
    # shellcheck disable=SC2086
    [ "$(kubectl auth can-i $q --as "$sa" 2>/dev/null)" = no ] || bad+=" [allowed: $q]"
  done
  [ -z "$bad" ] || log "reflect RBAC:$bad"
  check "5. its RBAC is enough and no more (${#allowed[@]} allowed, ${#refused[@]} refused as expected)" test -z "$bad"
}

scenario_uninstall() {
  log "scenario 6: helm uninstall"
  k delete job reflect-once -n "$GUARD_NS" >/dev/null || true
  helm uninstall "$RELEASE" -n "$GUARD_NS" --wait --timeout 120s > "$STATE/helm-uninstall.txt" 2>&1 \
    || log "helm uninstall failed: $(cat "$STATE/helm-uninstall.txt")"
  check "6. no slo-guard webhook configuration is left" bash -c \
    "[ -z \"\$(kubectl get validatingwebhookconfigurations,mutatingwebhookconfigurations -o name | grep slo-guard)\" ]"
  check "6. no cluster-wide RBAC of the release is left" bash -c \
    "[ -z \"\$(kubectl get clusterroles,clusterrolebindings -o name | grep slo-guard)\" ]"
  local out
  out="$(k scale deploy/checkout -n payments --replicas 4 || true)"
  check "6. governed namespaces work again after uninstall" grep -q "scaled" <<<"$out"
  wait_for 60 "the release's pods gone" no_guard_pod || true
  k get all,secrets,configmaps,leases -n "$GUARD_NS" -o name > "$STATE/left-after-uninstall.txt" 2>&1 || true
  log "left in namespace $GUARD_NS after uninstall (not Helm's): $(grep -v -e kube-root-ca.crt "$STATE/left-after-uninstall.txt" | tr '\n' ' ')"
}

run_scenarios() {
  : > "$TRANSCRIPT"
  scenario_install
  if [ "$(ready_replicas)" != 2 ]; then
    fail "slo-guard never became ready: the other scenarios cannot run"
    kubectl get pods -n "$GUARD_NS" -o wide >&2 || true
    kubectl logs -n "$GUARD_NS" -l app.kubernetes.io/name=slo-guard,app.kubernetes.io/component=webhook --tail 30 >&2 || true
    return
  fi
  scenario_denials
  scenario_availability
  scenario_fail_closed
  scenario_reflect
  scenario_uninstall
  log "transcript: $TRANSCRIPT; availability: $(tr '\n' ';' < "$STATE/availability.txt")"
}
