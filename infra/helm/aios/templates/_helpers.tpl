{{/* Names and labels. */}}
{{- define "aios.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "aios.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "aios.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "aios.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: aios
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "orchestrator"). */}}
{{- define "aios.selectorLabels" -}}
app.kubernetes.io/name: {{ include "aios.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "aios.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "aios.secretName" -}}
{{- default (include "aios.fullname" .) .Values.secret.existingSecret -}}
{{- end -}}

{{- define "aios.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "aios.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "aios.kafkaTlsEnabled" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end -}}
{{- end -}}

{{- define "aios.kafkaSaslEnabled" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end -}}
{{- end -}}

{{/*
The environment of an AIOS container; call with (dict "root" $ "env" .env "api" bool "worker" bool).
Plain values first (chart-set, then `config` merged under the workload's own `env`), then the
Secret's keys as optional references, so an absent key leaves the setting unset.
*/}}
{{- define "aios.env" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
- name: AIOS_TOPIC_PREFIX
  value: {{ $v.topicPrefix | quote }}
- name: AIOS_ROLES
  value: {{ join "," $v.agents.roles | quote }}
- name: AIOS_TOPIC_PARTITIONS
  value: {{ $v.topics.partitions | quote }}
- name: AIOS_TOPIC_REPLICATION
  value: {{ $v.topics.replication | quote }}
- name: AIOS_KAFKA_BOOTSTRAP
  value: {{ $v.kafka.bootstrap | quote }}
- name: AIOS_KAFKA_SECURITY_PROTOCOL
  value: {{ $v.kafka.securityProtocol | quote }}
{{- with $v.kafka.saslMechanism }}
- name: AIOS_KAFKA_SASL_MECHANISM
  value: {{ . | quote }}
{{- end }}
{{- if $v.kafka.tls.secretName }}
- name: AIOS_KAFKA_SSL_CAFILE
  value: /etc/aios/kafka-tls/ca.crt
{{- if $v.kafka.tls.mutual }}
- name: AIOS_KAFKA_SSL_CERTFILE
  value: /etc/aios/kafka-tls/tls.crt
- name: AIOS_KAFKA_SSL_KEYFILE
  value: /etc/aios/kafka-tls/tls.key
{{- end }}
{{- end }}
- name: AIOS_DATA_DIR
  value: /var/lib/aios
- name: AIOS_METRICS_PORT
  value: {{ $v.metrics.port | quote }}
- name: AIOS_METRICS_HOST
  value: 0.0.0.0
{{- if .worker }}
# The pod name: unique among a Deployment's pods, and kept across container restarts, so a
# restarted container fences its own predecessor's open transaction at once.
- name: AIOS_INSTANCE
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- if .api }}
- name: AIOS_API_HOST
  value: 0.0.0.0
- name: AIOS_API_PORT
  value: {{ $v.api.port | quote }}
{{- end }}
{{- range $name, $value := mergeOverwrite (deepCopy $v.config) (.env | default dict) }}
{{- if ne (toString $value) "" }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end }}
{{- range $key, $_ := $v.secret.values }}
{{- if or $.api (not (hasPrefix "AIOS_API_" $key)) }}
- name: {{ $key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "aios.secretName" $root }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes of every AIOS pod: the writable data directory and /tmp, the Kafka TLS files, extras. */}}
{{- define "aios.volumes" -}}
- name: data
  emptyDir:
    sizeLimit: {{ .Values.dataDir.sizeLimit }}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
{{- with .Values.kafka.tls.secretName }}
- name: kafka-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "aios.volumeMounts" -}}
- name: data
  mountPath: /var/lib/aios
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.secretName }}
- name: kafka-tls
  mountPath: /etc/aios/kafka-tls
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every AIOS pod. */}}
{{- define "aios.podCommon" -}}
serviceAccountName: {{ include "aios.serviceAccountName" . }}
# No process here talks to the Kubernetes API.
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
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
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  {{- include "aios.volumes" . | nindent 2 }}
{{- end -}}

{{/* Pod annotations: scrape hints and a checksum of the rendered Secret, so new keys roll the pods. */}}
{{- define "aios.podAnnotations" -}}
{{- if .Values.metrics.annotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The non-empty `secret.values`, as YAML lines (empty when there are none). */}}
{{- define "aios.secretValues" -}}
{{- range $key, $value := .Values.secret.values }}
{{- if $value }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- end }}
{{- end -}}
