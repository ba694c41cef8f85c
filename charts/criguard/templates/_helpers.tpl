{{- define "criguard.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "criguard.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* criguard.selector: selector labels of one component (dict "ctx" . "component" "installer"). */}}
{{- define "criguard.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* criguard.image: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "criguard.image" -}}
{{- if .img.digest -}}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" .img.digest) -}}
{{- fail (printf "%s digest %q is not sha256:<64 hex digits>" .img.repository .img.digest) -}}
{{- end -}}
{{- printf "%s@%s" .img.repository .img.digest -}}
{{- else -}}
{{- printf "%s:%s" .img.repository (default .ctx.Chart.AppVersion .img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "criguard.serviceAccountName" -}}
{{- default (include "criguard.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The sidecar runs when it syncs policies or relays metrics. */}}
{{- define "criguard.syncEnabled" -}}
{{- if or (eq .Values.policy.source "imagePolicies") .Values.metrics.enabled -}}true{{- end -}}
{{- end -}}

{{- define "criguard.policyConfigMap" -}}
{{- if eq .Values.policy.source "configMap" -}}
{{- required "policy.existingConfigMap is required with policy.source configMap" .Values.policy.existingConfigMap -}}
{{- else -}}
{{- printf "%s-policy" (include "criguard.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "criguard.keysConfigMap" -}}
{{- default (printf "%s-keys" (include "criguard.fullname" .)) .Values.existingKeysConfigMap -}}
{{- end -}}

{{/* Where the sync sidecar writes ImagePolicy objects on the host; the installer copies them to /etc/criguard/policy. */}}
{{- define "criguard.clusterPolicyDir" -}}/etc/criguard/cluster-policy{{- end -}}

{{- define "criguard.checkValues" -}}
{{- if not (has .Values.policy.source (list "values" "configMap" "imagePolicies")) -}}
{{- fail (printf "policy.source %q: want values, configMap or imagePolicies" .Values.policy.source) -}}
{{- end -}}
{{- end -}}
