{{/*
The chart name, overridable with nameOverride.
*/}}
{{- define "counter-app.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources. Truncated to 52 characters: the StatefulSet's
pods add `-<ordinal>` and its controller-revision-hash label adds 11 characters, and
both must stay within 63.
*/}}
{{- define "counter-app.fullname" -}}
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
Name of the headless Service that gives every pod a stable DNS name:
<fullname>-<ordinal>.<headless>.<namespace>.svc.
*/}}
{{- define "counter-app.headlessName" -}}
{{- printf "%s-headless" (include "counter-app.fullname" .) }}
{{- end }}

{{- define "counter-app.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "counter-app.labels" -}}
helm.sh/chart: {{ include "counter-app.chart" . }}
{{ include "counter-app.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stsguard
{{- end }}

{{- define "counter-app.selectorLabels" -}}
app.kubernetes.io/name: {{ include "counter-app.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "counter-app.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
