{{/* Names and labels. */}}
{{- define "ww.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ww.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "ww.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "ww.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ww.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ww.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ww.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "ww.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "ww.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "ww.secretName" -}}
{{- default (include "ww.fullname" .) .Values.secret.existingSecret -}}
{{- end -}}

{{/* The secret settings, from the chart's Secret or an existing one. */}}
{{- define "ww.mongodbEnv" -}}
- name: MONGODB_URI
  valueFrom:
    secretKeyRef: {name: {{ include "ww.secretName" . }}, key: MONGODB_URI}
{{- end -}}

{{/* The worker's: also the SASL password (the migration Job talks to MongoDB only, and
     the binary refuses a SASL password without a sasl_* KAFKA_SECURITY_PROTOCOL). */}}
{{- define "ww.secretEnv" -}}
{{ include "ww.mongodbEnv" . }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ include "ww.secretName" . }}, key: KAFKA_SASL_PASSWORD, optional: true}
{{- end -}}

{{/* env entries for a dict of settings (ctx: dict "settings" S); empty values are left unset. */}}
{{- define "ww.settingsEnv" -}}
{{- range $k, $v := .settings }}
{{- if ne (toString $v) "" }}
- name: {{ $k }}
  value: {{ toString $v | quote }}
{{- end }}
{{- end }}
{{- end -}}
