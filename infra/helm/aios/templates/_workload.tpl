{{/*
One AIOS Deployment and its PodDisruptionBudget. Call with a dict:
  root        the chart's root context
  component   e.g. "orchestrator", "agents-planner", "api"
  args        the `aios` arguments, e.g. (list "worker" "orchestrator")
  replicas    used unless autoscaled (then KEDA's HPA owns the count and the chart leaves it out,
              so an upgrade does not reset it)
  resources, env, api (bool), autoscaled (bool)
*/}}
{{- define "aios.workload" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $name := printf "%s-%s" (include "aios.fullname" $root) .component | trunc 63 | trimSuffix "-" -}}
{{- $selector := dict "root" $root "component" .component -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "aios.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ .replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "aios.selectorLabels" $selector | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "aios.labels" $root | nindent 8 }}
        app.kubernetes.io/component: {{ .component }}
      annotations:
        {{- include "aios.podAnnotations" $root | trim | nindent 8 }}
    spec:
      {{- include "aios.podCommon" $root | nindent 6 }}
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      containers:
        - name: aios
          image: {{ include "aios.image" $root }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args:
            {{- toYaml .args | nindent 12 }}
          env:
            {{- include "aios.env" (dict "root" $root "env" .env "api" .api "worker" (not .api)) | nindent 12 }}
          ports:
            {{- if .api }}
            - name: http
              containerPort: {{ $v.api.port }}
              protocol: TCP
            {{- end }}
            - name: metrics
              containerPort: {{ $v.metrics.port }}
              protocol: TCP
          {{- if .api }}
          startupProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          # /readyz checks Kafka, Redis, the history store and the live view: a pod that cannot
          # reach them leaves the Service instead of answering 5xx.
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 10
            timeoutSeconds: 5
            failureThreshold: 2
          {{- else }}
          # Workers serve no HTTP but /metrics, which starts first thing. Its server is a thread,
          # so this catches a dead or wedged process; a crashed stream service ends the process
          # itself, and a restarted container starts over from the committed offsets.
          startupProbe:
            httpGet:
              path: /metrics
              port: metrics
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet:
              path: /metrics
              port: metrics
            periodSeconds: 20
            timeoutSeconds: 5
            failureThreshold: 3
          {{- end }}
          {{- with .resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          volumeMounts:
            {{- include "aios.volumeMounts" $root | nindent 12 }}
{{- if $v.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  labels:
    {{- include "aios.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  maxUnavailable: {{ $v.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "aios.selectorLabels" $selector | nindent 6 }}
{{- end }}
{{- end -}}

{{/*
A KEDA ScaledObject on a consumer group's lag. Call with a dict:
  root, component (names the Deployment), group, topic ("" = every topic the group commits),
  scaling (minReplicaCount, maxReplicaCount, idleReplicaCount, pollingInterval, cooldownPeriod,
  lagThreshold, activationLagThreshold)
*/}}
{{- define "aios.scaledObject" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $s := .scaling -}}
{{- $name := printf "%s-%s" (include "aios.fullname" $root) .component | trunc 63 | trimSuffix "-" -}}
{{- if gt (int $s.maxReplicaCount) (int $v.topics.partitions) -}}
{{- fail (printf "%s: maxReplicaCount %v is above topics.partitions %v; KEDA caps replicas at the partition count, so raise the partitions instead" .component $s.maxReplicaCount $v.topics.partitions) -}}
{{- end -}}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ $name }}
  labels:
    {{- include "aios.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  pollingInterval: {{ $s.pollingInterval }}
  cooldownPeriod: {{ $s.cooldownPeriod }}
  minReplicaCount: {{ $s.minReplicaCount }}
  maxReplicaCount: {{ $s.maxReplicaCount }}
  {{- if not (kindIs "invalid" $s.idleReplicaCount) }}
  idleReplicaCount: {{ $s.idleReplicaCount }}
  {{- end }}
  triggers:
    - type: kafka
      metadata:
        bootstrapServers: {{ $v.kafka.bootstrap | quote }}
        consumerGroup: {{ .group | quote }}
        {{- with .topic }}
        topic: {{ . | quote }}
        {{- end }}
        lagThreshold: {{ $s.lagThreshold | quote }}
        activationLagThreshold: {{ $s.activationLagThreshold | quote }}
        offsetResetPolicy: earliest
        allowIdleConsumers: "false"
        {{- if include "aios.kafkaTlsEnabled" $root }}
        tls: enable
        {{- end }}
        {{- if include "aios.kafkaSaslEnabled" $root }}
        sasl: {{ get (dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512") $v.kafka.saslMechanism | quote }}
        {{- end }}
      {{- if or (include "aios.kafkaSaslEnabled" $root) $v.kafka.tls.secretName }}
      authenticationRef:
        name: {{ include "aios.fullname" $root }}-kafka
      {{- end }}
{{- end -}}
