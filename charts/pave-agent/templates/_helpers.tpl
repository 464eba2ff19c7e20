{{- define "pave-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "pave-agent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "pave-agent.namespace" -}}
{{- default .Release.Namespace .Values.namespace.name }}
{{- end }}

{{- define "pave-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pave-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pave-agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pave-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pave-agent.serviceAccountName" -}}
{{- default (include "pave-agent.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "pave-agent.secretName" -}}
{{- default (printf "%s-enrollment" (include "pave-agent.fullname" .)) .Values.existingSecret }}
{{- end }}

{{- define "pave-agent.hasCa" -}}
{{- if .Values.existingSecret }}{{ if .Values.existingSecretHasCa }}true{{ end }}{{ else if .Values.caFile }}true{{ end }}
{{- end }}

{{- /*
The name of the cluster-scoped objects: the full name, with the namespace
appended unless it is the same, so that releases of the same name in two
namespaces do not claim the same ClusterRole.
*/}}
{{- define "pave-agent.clusterName" -}}
{{- $ns := include "pave-agent.namespace" . }}
{{- $full := include "pave-agent.fullname" . }}
{{- if eq $ns $full }}{{ $full }}{{ else }}{{ printf "%s-%s" $full $ns | trunc 253 }}{{ end }}
{{- end }}
