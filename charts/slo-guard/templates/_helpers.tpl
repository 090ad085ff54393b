{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "slo-guard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: "<release>-<chart>", or the release name when it already contains
the chart name. Truncated to 52 characters so that suffixed names
("-certs-create", "-selfsigned", ...) stay within 63.
*/}}
{{- define "slo-guard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart label value.
*/}}
{{- define "slo-guard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every resource of the release (no component).
*/}}
{{- define "slo-guard.commonLabels" -}}
helm.sh/chart: {{ include "slo-guard.chart" . }}
app.kubernetes.io/name: {{ include "slo-guard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: slo-guard
{{- end }}

{{/*
Labels of the webhook server's resources.
*/}}
{{- define "slo-guard.labels" -}}
{{ include "slo-guard.commonLabels" . }}
app.kubernetes.io/component: webhook
{{- end }}

{{/*
Labels of the certificate resources (hook Jobs, cert-manager objects). The
component differs from the server's, so the Service, the PDB and the
Deployment never select the Job pods.
*/}}
{{- define "slo-guard.certsLabels" -}}
{{ include "slo-guard.commonLabels" . }}
app.kubernetes.io/component: certs
{{- end }}

{{/*
Selector labels (immutable in the Deployment selector: never change them).
*/}}
{{- define "slo-guard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slo-guard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{/*
ServiceAccount of the server.
*/}}
{{- define "slo-guard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "slo-guard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Username the API server sees for the server's ServiceAccount.
*/}}
{{- define "slo-guard.serviceAccountUsername" -}}
{{- printf "system:serviceaccount:%s:%s" .Release.Namespace (include "slo-guard.serviceAccountName" .) }}
{{- end }}

{{/*
Service name (the webhook clientConfig and the certificate SANs use it).
*/}}
{{- define "slo-guard.serviceName" -}}
{{- include "slo-guard.fullname" . }}
{{- end }}

{{/*
Names of the two webhook configurations (cluster-scoped).
*/}}
{{- define "slo-guard.validatingWebhookName" -}}
{{- include "slo-guard.fullname" . }}
{{- end }}
{{- define "slo-guard.mutatingWebhookName" -}}
{{- include "slo-guard.fullname" . }}
{{- end }}

{{/*
Name of the kubernetes.io/tls Secret the server mounts.
*/}}
{{- define "slo-guard.tlsSecretName" -}}
{{- if eq .Values.certs.mode "existingSecret" }}
{{- required "certs.existingSecret.name is required when certs.mode is existingSecret" .Values.certs.existingSecret.name }}
{{- else }}
{{- default (printf "%s-tls" (include "slo-guard.fullname" .)) .Values.certs.secretName }}
{{- end }}
{{- end }}

{{/*
Container image reference.
*/}}
{{- define "slo-guard.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Values checks that must fail the render early, with a clear message.
*/}}
{{- define "slo-guard.validateValues" -}}
{{- $modes := list "selfSigned" "certManager" "existingSecret" }}
{{- if not (has .Values.certs.mode $modes) }}
{{- fail (printf "certs.mode must be one of %s, got %q" (join ", " $modes) .Values.certs.mode) }}
{{- end }}
{{- if eq .Values.certs.mode "existingSecret" }}
{{- if not .Values.certs.existingSecret.name }}
{{- fail "certs.existingSecret.name is required when certs.mode is existingSecret" }}
{{- end }}
{{- if not .Values.certs.existingSecret.caBundle }}
{{- fail "certs.existingSecret.caBundle (base64 PEM of the CA that signed the Secret's tls.crt) is required when certs.mode is existingSecret" }}
{{- end }}
{{- end }}
{{- range $k, $v := dict "webhooks.validating.failurePolicy" .Values.webhooks.validating.failurePolicy "webhooks.mutating.failurePolicy" .Values.webhooks.mutating.failurePolicy "webhooks.config.failurePolicy" .Values.webhooks.config.failurePolicy }}
{{- if not (has $v (list "Fail" "Ignore")) }}
{{- fail (printf "%s must be Fail or Ignore, got %q" $k $v) }}
{{- end }}
{{- end }}
{{- if not (has .Values.webhooks.mutating.reinvocationPolicy (list "Never" "IfNeeded")) }}
{{- fail (printf "webhooks.mutating.reinvocationPolicy must be Never or IfNeeded, got %q" .Values.webhooks.mutating.reinvocationPolicy) }}
{{- end }}
{{- $t := int .Values.webhooks.timeoutSeconds }}
{{- if or (lt $t 1) (gt $t 30) }}
{{- fail (printf "webhooks.timeoutSeconds must be between 1 and 30, got %d" $t) }}
{{- end }}
{{- if not (has .Values.podAntiAffinity (list "soft" "hard" "")) }}
{{- fail (printf "podAntiAffinity must be soft, hard or empty, got %q" .Values.podAntiAffinity) }}
{{- end }}
{{- end }}

{{/*
caBundle line for a webhook clientConfig (existingSecret mode only; the other
modes fill it after install: the certs Job or cert-manager's cainjector).
*/}}
{{- define "slo-guard.caBundle" -}}
{{- if eq .Values.certs.mode "existingSecret" }}
caBundle: {{ .Values.certs.existingSecret.caBundle | quote }}
{{- end }}
{{- end }}

{{/*
Annotations of both webhook configurations.
*/}}
{{- define "slo-guard.webhookAnnotations" -}}
{{- $a := dict }}
{{- if eq .Values.certs.mode "certManager" }}
{{- $_ := set $a "cert-manager.io/inject-ca-from" (printf "%s/%s-tls" .Release.Namespace (include "slo-guard.fullname" .)) }}
{{- end }}
{{- $a = merge $a (.Values.webhooks.annotations | default dict) }}
{{- if $a }}
annotations:
  {{- toYaml $a | nindent 2 }}
{{- end }}
{{- end }}

{{/*
namespaceSelector of the workload webhooks: skip kube-system, the release
namespace and webhooks.excludeNamespaces, ANDed with webhooks.namespaceSelector.
Argument: (dict "root" $ "includeReleaseNamespace" bool)
*/}}
{{- define "slo-guard.namespaceSelector" -}}
{{- $root := .root }}
{{- $excluded := list "kube-system" }}
{{- if not .includeReleaseNamespace }}
{{- $excluded = append $excluded $root.Release.Namespace }}
{{- end }}
{{- $excluded = concat $excluded ($root.Values.webhooks.excludeNamespaces | default list) | uniq }}
{{- $extra := $root.Values.webhooks.namespaceSelector | default dict }}
namespaceSelector:
  {{- with $extra.matchLabels }}
  matchLabels:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values:
        {{- toYaml $excluded | nindent 8 }}
    {{- with $extra.matchExpressions }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
Whether to render matchConditions (GA in 1.30, beta on by default in 1.28).
*/}}
{{- define "slo-guard.matchConditionsEnabled" -}}
{{- if and .Values.webhooks.matchConditions (semverCompare ">=1.28-0" .Capabilities.KubeVersion.Version) }}true{{ end }}
{{- end }}

{{/*
matchConditions: skip slo-guard's own requests (and, for the workload
webhooks, webhooks.skipUsernames) inside the API server, without a call.
Argument: (dict "root" $ "skipUsers" bool)
*/}}
{{- define "slo-guard.matchConditions" -}}
{{- $root := .root }}
{{- if include "slo-guard.matchConditionsEnabled" $root }}
matchConditions:
  - name: not-slo-guard-itself
    expression: {{ printf "request.userInfo.username != %s" (include "slo-guard.serviceAccountUsername" $root | toJson) | include "slo-guard.yamlSingleQuote" }}
  {{- if and .skipUsers $root.Values.webhooks.skipUsernames }}
  - name: not-skipped-users
    expression: {{ printf "!(request.userInfo.username in %s)" ($root.Values.webhooks.skipUsernames | toJson) | include "slo-guard.yamlSingleQuote" }}
  {{- end }}
  {{- if .skipControllers }}
  # The ReplicaSet and Deployment controllers (and kubelets' mirror pods) make
  # pods all day; slo-guard never judges them as agents, so their requests need
  # not leave the API server.
  - name: not-controllers
    expression: '!(request.userInfo.username == "system:kube-controller-manager" || request.userInfo.username.startsWith("system:serviceaccount:kube-system:") || request.userInfo.username.startsWith("system:node:"))'
  {{- end }}
  {{- if .skipWorkloadDeletes }}
  # validate.slo-guard.io gets these deletes and judges what they own as well.
  - name: not-judged-by-validate
    expression: '!((request.resource.group == "apps" && request.resource.resource in ["deployments", "statefulsets"]) || (request.resource.group == "autoscaling" && request.resource.resource == "horizontalpodautoscalers"))'
  # Of the updates, only those that give the object an owner it did not have (a
  # delete has no object to read).
  - name: deletes-and-new-owners
    expression: 'request.operation == "DELETE" || (has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(o, !has(oldObject.metadata.ownerReferences) || !oldObject.metadata.ownerReferences.exists(p, p.uid == o.uid)))'
  {{- end }}
{{- end }}
{{- end }}

{{/*
A string as a YAML single-quoted scalar (CEL expressions read better with
their double quotes unescaped).
*/}}
{{- define "slo-guard.yamlSingleQuote" -}}
{{- printf "'%s'" (replace "'" "''" .) }}
{{- end }}

{{/*
Pod-level scheduling shared by the server and the certificate Jobs.
*/}}
{{- define "slo-guard.podPlacement" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
KUBERNETES_SERVICE_HOST/PORT for every slo-guard container, when
kubernetesService.host is set (clusters whose pods cannot reach the
`kubernetes` Service's ClusterIP). Rendered as env list items.
*/}}
{{- define "slo-guard.kubernetesServiceEnv" -}}
{{- with .Values.kubernetesService.host }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ . | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ default "443" $.Values.kubernetesService.port | toString | quote }}
{{- end }}
{{- end }}
