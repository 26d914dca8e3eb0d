{{/* Names, labels and small values shared by the templates. */}}

{{/* The chart name, or nameOverride. */}}
{{- define "traindeploy-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: object names are derived from it. Release names that already
contain the chart name are not repeated ("traindeploy-operator", not "...-traindeploy-operator").
Cut to 52 characters so that suffixes such as "-discovery" keep names under 63. */}}
{{- define "traindeploy-operator.fullname" -}}
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

{{/* The chart label value: name-version. */}}
{{- define "traindeploy-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The labels that select the operator pod: they never change after the first install. */}}
{{- define "traindeploy-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "traindeploy-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The labels on every object of the chart. */}}
{{- define "traindeploy-operator.labels" -}}
helm.sh/chart: {{ include "traindeploy-operator.chart" . }}
{{ include "traindeploy-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: traindeploy
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "traindeploy-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "traindeploy-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The subject of the operator's role bindings: its ServiceAccount. */}}
{{- define "traindeploy-operator.rbacSubject" -}}
- kind: ServiceAccount
  name: {{ include "traindeploy-operator.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* The image reference; the tag defaults to the chart's appVersion. */}}
{{- define "traindeploy-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The port of kopf's liveness endpoint (--liveness), used by both probes. */}}
{{- define "traindeploy-operator.probePort" -}}
8080
{{- end }}

{{/* "true" when the replicas elect a leader through a Lease: asked for, or more than one replica. */}}
{{- define "traindeploy-operator.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) -}}
true
{{- end }}
{{- end }}
