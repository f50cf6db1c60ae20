{{/* Name prefix of every object: the release name, plus "-microsandbox" unless it contains it. */}}
{{- define "microsandbox.fullname" -}}
{{- if contains "microsandbox" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-microsandbox" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "microsandbox.labels" -}}
app.kubernetes.io/name: microsandbox
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "microsandbox.operatorName" -}}{{ include "microsandbox.fullname" . }}-operator{{- end -}}
{{- define "microsandbox.agentName" -}}{{ include "microsandbox.fullname" . }}-node-agent{{- end -}}

{{- define "microsandbox.image" -}}
{{- $root := index . 0 -}}{{- $img := index . 1 -}}
{{- printf "%s/%s:%s" $root.Values.imageRegistry $img.repository (default $root.Chart.AppVersion $img.tag) -}}
{{- end -}}
