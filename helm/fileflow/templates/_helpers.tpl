{{/*
Names. Every object is called <fullname>-<component>; converter names become DNS labels
("office_pdf" -> "office-pdf").
*/}}
{{- define "fileflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fileflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "fileflow.converterName" -}}
{{- printf "%s-%s" (include "fileflow.fullname" .root) (.name | replace "_" "-") | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "fileflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "fileflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component: "fileflow.selectorLabels" (dict "root" $ "component" "mediator") */}}
{{- define "fileflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fileflow.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "fileflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "fileflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference: "fileflow.image" (dict "root" $ "flavour" "ocr") */}}
{{- define "fileflow.image" -}}
{{- $image := .root.Values.image -}}
{{- $digest := get $image.digests .flavour -}}
{{- if $digest -}}
{{- printf "%s/%s@%s" $image.repository .flavour $digest -}}
{{- else -}}
{{- printf "%s/%s:%s" $image.repository .flavour (default .root.Chart.AppVersion $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "fileflow.exporterUrl" -}}
{{- printf "http://%s-exporter.%s.svc.cluster.local:%d" (include "fileflow.fullname" .) .Release.Namespace (int .Values.exporter.service.port) -}}
{{- end -}}

{{/* The Secret holding the storage credentials, if any. */}}
{{- define "fileflow.storageSecret" -}}
{{- .Values.storage.credentials.existingSecret -}}
{{- end -}}

{{/*
Environment shared by every fileflow container: the Prefect API (URL and optional basic-auth
string from a Secret, or the URL from values) and the storage (bucket from values, keys from a
Secret or none at all for IRSA / workload identity).
*/}}
{{- define "fileflow.env" -}}
{{- $prefect := .Values.prefect -}}
{{- if and $prefect.existingSecret.name $prefect.existingSecret.apiUrlKey }}
- name: PREFECT_API_URL
  valueFrom:
    secretKeyRef:
      name: {{ $prefect.existingSecret.name }}
      key: {{ $prefect.existingSecret.apiUrlKey }}
{{- else }}
- name: PREFECT_API_URL
  value: {{ required "prefect.apiUrl is required (or prefect.existingSecret.name with apiUrlKey)" $prefect.apiUrl | quote }}
{{- end }}
{{- if and $prefect.existingSecret.name $prefect.existingSecret.authStringKey }}
- name: PREFECT_API_AUTH_STRING
  valueFrom:
    secretKeyRef:
      name: {{ $prefect.existingSecret.name }}
      key: {{ $prefect.existingSecret.authStringKey }}
{{- end }}
- name: PREFECT_SERVER_ANALYTICS_ENABLED
  value: "false"
- name: PREFECT_CLIENT_MAX_RETRIES
  value: {{ $prefect.clientMaxRetries | quote }}
{{- if lt (int $prefect.crashedAfterSeconds) (mul 2 (int $prefect.heartbeatSeconds)) }}
{{- fail "prefect.crashedAfterSeconds must be at least twice prefect.heartbeatSeconds, or live runs are marked Crashed" }}
{{- end }}
- name: PREFECT_FLOWS_HEARTBEAT_FREQUENCY
  value: {{ $prefect.heartbeatSeconds | quote }}
- name: FILEFLOW_LIVENESS_HEARTBEAT_S
  value: {{ $prefect.heartbeatSeconds | quote }}
- name: FILEFLOW_LIVENESS_CRASHED_AFTER_S
  value: {{ $prefect.crashedAfterSeconds | quote }}
- name: FILEFLOW_LIVENESS_PENDING_AFTER_S
  value: {{ $prefect.pendingAfterSeconds | quote }}
- name: PREFECT_HOME
  value: /tmp/prefect
- name: HOME
  value: /tmp
- name: TMPDIR
  value: /tmp
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
- name: FILEFLOW_SCRATCH_DIR
  value: /scratch
- name: FILEFLOW_STORAGE_KIND
  value: s3
- name: FILEFLOW_STORAGE_BUCKET
  value: {{ required "storage.bucket is required: the S3 bucket every fileflow pod reads and writes" .Values.storage.bucket | quote }}
- name: FILEFLOW_STORAGE_PREFIX
  value: {{ .Values.storage.prefix | quote }}
{{- with .Values.storage.region }}
- name: FILEFLOW_STORAGE_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.endpointUrl }}
- name: FILEFLOW_STORAGE_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.storage.credentials.existingSecret }}
- name: FILEFLOW_STORAGE_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.storage.credentials.accessKeyIdKey }}
- name: FILEFLOW_STORAGE_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.storage.credentials.secretAccessKeyKey }}
{{- end }}
{{- with .Values.notify.webhookUrl }}
- name: FILEFLOW_NOTIFY_WEBHOOK_URL
  value: {{ . | quote }}
- name: FILEFLOW_NOTIFY_EVENTS
  value: {{ toJson $.Values.notify.events | quote }}
{{- end }}
{{- with .Values.notify.headersSecret }}
- name: FILEFLOW_NOTIFY_WEBHOOK_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.notify.headersKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Placement: converters with a ScaledJob run on their pool, the others in the mediator's children. */}}
{{- define "fileflow.placement" -}}
{{- $placement := dict -}}
{{- range $name, $c := .Values.converters -}}
{{- $_ := set $placement $name (ternary "pool" "local" $c.enabled) -}}
{{- end -}}
{{- range $name, $where := .Values.mediator.placementOverrides -}}
{{- if not (hasKey $.Values.converters $name) -}}
{{- fail (printf "mediator.placementOverrides.%s: no such converter" $name) -}}
{{- end -}}
{{- $_ := set $placement $name $where -}}
{{- end -}}
{{- toJson $placement -}}
{{- end -}}

{{/* FILEFLOW_CONVERTER_MODULES of the pods that run converters (mediator, ScaledJobs); none when empty. */}}
{{- define "fileflow.converterModulesEnv" -}}
{{- range $name, $module := .Values.converterModules -}}
{{- if not (hasKey $.Values.converters $name) -}}
{{- fail (printf "converterModules.%s: no such converter" $name) -}}
{{- end -}}
{{- end -}}
{{- with .Values.converterModules }}
- name: FILEFLOW_CONVERTER_MODULES
  value: {{ toJson . | quote }}
{{- end }}
{{- end -}}

{{- define "fileflow.workerEnv" -}}
- name: PREFECT_WORKER_QUERY_SECONDS
  value: {{ .Values.prefect.workerQuerySeconds | quote }}
- name: PREFECT_WORKER_PREFETCH_SECONDS
  value: {{ .Values.prefect.workerPrefetchSeconds | quote }}
{{- end -}}

{{- define "fileflow.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "fileflow.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The writable places of a read-only container: /tmp and /scratch, both emptyDir. */}}
{{- define "fileflow.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: scratch
  mountPath: /scratch
{{- end -}}

{{/* "fileflow.volumes" (dict "tmp" "1Gi" "scratch" "4Gi") */}}
{{- define "fileflow.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .tmp }}
- name: scratch
  emptyDir:
    sizeLimit: {{ .scratch }}
{{- end -}}

{{- define "fileflow.podCommon" -}}
serviceAccountName: {{ include "fileflow.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- include "fileflow.podSecurityContext" . | nindent 2 }}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Where a component's pods go: "fileflow.podPlacement" (dict "root" $ "pod" .Values.<component>.pod).
nodeSelector: the chart-wide one merged with the component's (the component's wins); tolerations:
both lists; affinity and priorityClassName: the component's. */}}
{{- define "fileflow.podPlacement" -}}
{{- $nodeSelector := merge (deepCopy (.pod.nodeSelector | default dict)) (.root.Values.nodeSelector | default dict) -}}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with concat (.root.Values.tolerations | default list) (.pod.tolerations | default list) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* NetworkPolicy egress every fileflow pod needs: the cluster DNS and the Prefect API (called with .Values.networkPolicy). */}}
{{- define "fileflow.egressDnsAndPrefect" -}}
- to:
    - namespaceSelector:
        matchLabels:
          {{- toYaml .dns.namespaceSelector | nindent 10 }}
      podSelector:
        matchLabels:
          {{- toYaml .dns.podSelector | nindent 10 }}
  ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
- to:
    - namespaceSelector:
        matchLabels:
          {{- toYaml .prefectApi.namespaceSelector | nindent 10 }}
      podSelector:
        matchLabels:
          {{- toYaml .prefectApi.podSelector | nindent 10 }}
  ports:
    - protocol: TCP
      port: {{ .prefectApi.port }}
{{- end }}
{{/* The mediator pods' egress to the Redis of the step locks (networkPolicy.redis); an empty
namespaceSelector keeps the rule to the release's namespace. */}}
{{- define "fileflow.egressRedis" -}}
- to:
    - {{- with .redis.namespaceSelector }}
      namespaceSelector:
        matchLabels:
          {{- toYaml . | nindent 10 }}
      {{- end }}
      podSelector:
        matchLabels:
          {{- toYaml .redis.podSelector | nindent 10 }}
  ports:
    - protocol: TCP
      port: {{ .redis.port }}
{{- end }}
{{/* FILEFLOW_LOCK_REDIS_URL of the mediator pods (locks.*): the step locks every pod shares. */}}
{{- define "fileflow.lockEnv" -}}
{{- if .Values.locks.redisUrlSecret }}
- name: FILEFLOW_LOCK_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.locks.redisUrlSecret }}
      key: {{ .Values.locks.redisUrlKey }}
{{- else if .Values.locks.redisUrl }}
- name: FILEFLOW_LOCK_REDIS_URL
  value: {{ .Values.locks.redisUrl | quote }}
{{- end }}
{{- end -}}
{{- define "fileflow.egressStorage" -}}
- to:
    {{- range .storage.cidrs }}
    - ipBlock:
        cidr: {{ . }}
        {{- with $.storage.except }}
        except:
          {{- toYaml . | nindent 10 }}
        {{- end }}
    {{- end }}
  ports:
    {{- range .storage.ports }}
    - protocol: TCP
      port: {{ . }}
    {{- end }}
{{- end }}

{{/* FILEFLOW_SETUP_LIMITS of the setup hook: the limits it creates when missing, by name (null:
none). Converter caps follow the pools' maxReplicaCount so that no limit stops KEDA (issue 21). */}}
{{- define "fileflow.setupLimits" -}}
{{- $limits := dict "fileflow-active-files" .Values.limits.activeFiles -}}
{{- $mode := .Values.limits.converters -}}
{{- range $name, $c := .Values.converters -}}
{{- $key := printf "fileflow-converter-%s" $name -}}
{{- if eq (toString $mode) "maxReplicaCount" -}}
{{- if $c.enabled -}}
{{- $_ := set $limits $key (mul $c.maxReplicaCount $c.targetPendingPerPod) -}}
{{- else -}}
{{- $_ := set $limits $key nil -}}
{{- end -}}
{{- else -}}
{{- $_ := set $limits $key $mode -}}
{{- end -}}
{{- end -}}
{{- toJson $limits -}}
{{- end -}}
