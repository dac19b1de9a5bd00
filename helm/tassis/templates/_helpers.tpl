{{/*
Helpers. Templates that concern one role take a context `dict "root" $ "role" "<role>"`.
*/}}

{{/* The four roles, in dependency order. */}}
{{- define "tassis.roles" -}}
gateway keystore messaging attachments
{{- end }}

{{- define "tassis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 50 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name. At most 50 characters so that `<fullname>-attachments` fits the
63 characters of a DNS label (Service names, and the `--messaging-service` the gateways watch).
*/}}
{{- define "tassis.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of a role's objects (Deployment, Service, …): `<fullname>-<role>`. */}}
{{- define "tassis.roleName" -}}
{{- printf "%s-%s" (include "tassis.fullname" .root) .role }}
{{- end }}

{{- define "tassis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the release (role-less objects). */}}
{{- define "tassis.commonLabels" -}}
helm.sh/chart: {{ include "tassis.chart" . }}
app.kubernetes.io/name: {{ include "tassis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tassis
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of a role's objects. */}}
{{- define "tassis.labels" -}}
{{ include "tassis.commonLabels" .root }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{/* Selector labels of a role's pods (immutable in Deployments: never add to these). */}}
{{- define "tassis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tassis.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "tassis.image" -}}
{{- $img := .Values.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag | toString) }}
{{- end }}
{{- end }}

{{/* "true" when keystore and messaging run on Redis, "" on their embedded backends. */}}
{{- define "tassis.redisConfigured" -}}
{{- if or .Values.redis.url .Values.redis.urlSecretKey }}true{{ end }}
{{- end }}

{{/* The Secret holding the Redis password, "" when there is no password. */}}
{{- define "tassis.redisSecretName" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecret }}
{{- else if .Values.redis.password }}
{{- printf "%s-redis" (include "tassis.fullname" .) }}
{{- end }}
{{- end }}

{{/* "true" when the Redis password is mounted (a chart-made Secret, or existingSecret). */}}
{{- define "tassis.redisPassword" -}}
{{- if or .Values.redis.password (and .Values.redis.existingSecret .Values.redis.existingSecretPasswordKey) }}true{{ end }}
{{- end }}

{{/* The Secret holding the S3 access key pair, "" when credentials come from the AWS chain. */}}
{{- define "tassis.s3SecretName" -}}
{{- if .Values.s3.existingSecret }}
{{- .Values.s3.existingSecret }}
{{- else if .Values.s3.accessKeyId }}
{{- printf "%s-s3" (include "tassis.fullname" .) }}
{{- end }}
{{- end }}

{{/* "true" when federation is on for `.role` (keystore and messaging take part), else "". */}}
{{- define "tassis.federated" -}}
{{- if and .root.Values.federation.enabled (has .role (list "keystore" "messaging")) }}true{{ end }}
{{- end }}

{{/* Name of the federation endpoint's Service and Ingress: `<fullname>-federation`. */}}
{{- define "tassis.federationName" -}}
{{- printf "%s-federation" (include "tassis.fullname" .) }}
{{- end }}

{{/* The Secret holding the presence Redis password, "" when there is no password. */}}
{{- define "tassis.presenceRedisSecretName" -}}
{{- $p := .Values.federation.presenceRedis }}
{{- if $p.existingSecret }}
{{- $p.existingSecret }}
{{- else if $p.password }}
{{- printf "%s-presence-redis" (include "tassis.fullname" .) }}
{{- end }}
{{- end }}

{{/* "true" when the presence Redis password is mounted (a chart-made Secret, or existingSecret). */}}
{{- define "tassis.presenceRedisPassword" -}}
{{- $p := .Values.federation.presenceRedis }}
{{- if or $p.password (and $p.existingSecret $p.existingSecretPasswordKey) }}true{{ end }}
{{- end }}

{{/* The Secret holding the federation signing key, "" when none is given. */}}
{{- define "tassis.signingKeySecretName" -}}
{{- $k := .Values.federation.signingKey }}
{{- if $k.existingSecret }}
{{- $k.existingSecret }}
{{- else if $k.value }}
{{- printf "%s-federation" (include "tassis.fullname" .) }}
{{- end }}
{{- end }}

{{/* `--federation-peers`: `name=<public key>@<url>,…`. */}}
{{- define "tassis.federationPeers" -}}
{{- $peers := list }}
{{- range .Values.federation.peers }}
{{- $peers = append $peers (printf "%s=%s@%s" .name .publicKey .url) }}
{{- end }}
{{- join "," $peers }}
{{- end }}

{{/* The federation endpoint as peers list it, "" when the chart does not know it. */}}
{{- define "tassis.federationUrl" -}}
{{- $f := .Values.federation }}
{{- if and $f.ingress.enabled $f.ingress.host }}
{{- printf "https://%s:443" $f.ingress.host }}
{{- end }}
{{- end }}

{{/* The gateways' public base URL (`--public-url`), "" when unknown. */}}
{{- define "tassis.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl | trimSuffix "/" }}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts }}
{{- $host := (first .Values.ingress.hosts).host }}
{{- if $host }}
{{- printf "%s://%s" (ternary "https" "http" (gt (len .Values.ingress.tls) 0)) $host }}
{{- end }}
{{- end }}
{{- end }}

{{/* Replicas of a role. */}}
{{- define "tassis.replicas" -}}
{{- $v := index .root.Values .role }}
{{- if kindIs "invalid" $v.replicas }}
{{- if and (has .role (list "keystore" "messaging")) (not (include "tassis.redisConfigured" .root)) }}1{{ else }}2{{ end }}
{{- else }}
{{- $v.replicas | int }}
{{- end }}
{{- end }}

{{/* The drain settings of a role (its `drain` over the global one), as YAML. */}}
{{- define "tassis.drain" -}}
{{- $v := index .root.Values .role }}
{{- $g := .root.Values.drain }}
{{- $r := default (dict) $v.drain }}
{{- $pre := int (ternary $r.preStopSleepSeconds $g.preStopSleepSeconds (hasKey $r "preStopSleepSeconds")) }}
{{- $grace := int (ternary $r.shutdownGraceSeconds $g.shutdownGraceSeconds (hasKey $r "shutdownGraceSeconds")) }}
{{- $term := ternary $r.terminationGracePeriodSeconds $g.terminationGracePeriodSeconds (hasKey $r "terminationGracePeriodSeconds") }}
{{- if kindIs "invalid" $term }}{{ $term = add $pre $grace 5 }}{{ end }}
preStopSleepSeconds: {{ $pre }}
shutdownGraceSeconds: {{ $grace }}
terminationGracePeriodSeconds: {{ int $term }}
{{- end }}

{{/* The name of a role's ServiceAccount. */}}
{{- define "tassis.serviceAccountName" -}}
{{- $v := index .root.Values .role }}
{{- if .root.Values.serviceAccount.create }}
{{- include "tassis.roleName" . }}
{{- else }}
{{- default "default" $v.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* A `config` value as the string the flag expects (YAML numbers arrive as floats). */}}
{{- define "tassis.flagValue" -}}
{{- if and (kindIs "float64" .) (eq . (floor .)) }}
{{- . | int64 | toString }}
{{- else }}
{{- . | toString }}
{{- end }}
{{- end }}

{{/*
The environment of a role's container. Chart-derived TASSIS_* variables come first; a key of the
role's `config` with the same variable replaces the chart's value instead of duplicating it.
*/}}
{{- define "tassis.env" -}}
{{- $root := .root }}
{{- $role := .role }}
{{- $v := index $root.Values $role }}
{{- $config := dict }}
{{- range $flag, $val := $v.config }}
{{- $_ := set $config (printf "TASSIS_%s" ($flag | trimPrefix "--" | replace "-" "_" | upper)) (include "tassis.flagValue" $val) }}
{{- end }}
{{- $env := list }}
{{- $env = append $env (list "TASSIS_LISTEN" (printf "0.0.0.0:%d" (int $v.port))) }}
{{- $env = append $env (list "TASSIS_ADMIN_LISTEN" (printf "0.0.0.0:%d" (int $root.Values.adminPort))) }}
{{- $env = append $env (list "TASSIS_LOG_FORMAT" $root.Values.logFormat) }}
{{- $env = append $env (list "TASSIS_LOG" $root.Values.logLevel) }}
{{- $drain := include "tassis.drain" . | fromYaml }}
{{- $env = append $env (list "TASSIS_SHUTDOWN_GRACE" (printf "%ds" (int $drain.shutdownGraceSeconds))) }}
{{- $ks := printf "http://%s:%d" (include "tassis.roleName" (dict "root" $root "role" "keystore")) (int $root.Values.keystore.port) }}
{{- if eq $role "gateway" }}
{{- $env = append $env (list "TASSIS_KEYSTORE" $ks) }}
{{- $env = append $env (list "TASSIS_ATTACHMENTS" (printf "http://%s:%d" (include "tassis.roleName" (dict "root" $root "role" "attachments")) (int $root.Values.attachments.port))) }}
{{- $msg := include "tassis.roleName" (dict "root" $root "role" "messaging") }}
{{- if $v.messagingDiscovery }}
{{- $env = append $env (list "TASSIS_MESSAGING_SERVICE" (printf "%s/%s" $root.Release.Namespace $msg)) }}
{{- $env = append $env (list "TASSIS_MESSAGING_PORT_NAME" "grpc") }}
{{- else }}
{{- $env = append $env (list "TASSIS_MESSAGING" (printf "http://%s:%d" $msg (int $root.Values.messaging.port))) }}
{{- end }}
{{- end }}
{{- if eq $role "messaging" }}
{{- $env = append $env (list "TASSIS_KEYSTORE" $ks) }}
{{- end }}
{{- if and (has $role (list "gateway" "keystore" "messaging")) (include "tassis.redisConfigured" $root) }}
{{- if not $root.Values.redis.urlSecretKey }}
{{- $env = append $env (list "TASSIS_REDIS_URL" $root.Values.redis.url) }}
{{- end }}
{{- if include "tassis.redisPassword" $root }}
{{- $env = append $env (list "TASSIS_REDIS_PASSWORD_FILE" "/etc/tassis/redis/password") }}
{{- end }}
{{- $env = append $env (list "TASSIS_REDIS_POOL_SIZE" (include "tassis.flagValue" $root.Values.redis.poolSize)) }}
{{- $env = append $env (list "TASSIS_REDIS_CONNECT_TIMEOUT" $root.Values.redis.connectTimeout) }}
{{- $env = append $env (list "TASSIS_REDIS_COMMAND_TIMEOUT" $root.Values.redis.commandTimeout) }}
{{- end }}
{{- if include "tassis.federated" . }}
{{- $f := $root.Values.federation }}
{{- $env = append $env (list "TASSIS_PUBLIC_ADDR" $f.publicAddr) }}
{{- if not $f.presenceRedis.urlSecretKey }}
{{- $env = append $env (list "TASSIS_PRESENCE_REDIS_URL" $f.presenceRedis.url) }}
{{- end }}
{{- if include "tassis.presenceRedisPassword" $root }}
{{- $env = append $env (list "TASSIS_PRESENCE_REDIS_PASSWORD_FILE" "/etc/tassis/presence-redis/password") }}
{{- end }}
{{- if eq $role "messaging" }}
{{- $env = append $env (list "TASSIS_FEDERATION_LISTEN" (printf "0.0.0.0:%d" (int $f.port))) }}
{{- $env = append $env (list "TASSIS_FEDERATION_SIGNING_KEY_FILE" "/etc/tassis/federation/signing-key") }}
{{- $env = append $env (list "TASSIS_FEDERATION_PEERS" (include "tassis.federationPeers" $root)) }}
{{- $env = append $env (list "TASSIS_FEDERATION_RETRY_INTERVAL" $f.retryInterval) }}
{{- $env = append $env (list "TASSIS_FEDERATION_TIMEOUT" $f.timeout) }}
{{- $env = append $env (list "TASSIS_FEDERATION_BATCH" (include "tassis.flagValue" $f.batch)) }}
{{- $env = append $env (list "TASSIS_FEDERATION_MAX_QUEUE_LEN" (include "tassis.flagValue" $f.maxQueueLen)) }}
{{- $env = append $env (list "TASSIS_FEDERATION_REQUEST_TIMEOUT" $f.requestTimeout) }}
{{- $env = append $env (list "TASSIS_FEDERATION_MAX_CLOCK_SKEW" $f.maxClockSkew) }}
{{- $env = append $env (list "TASSIS_FEDERATION_LEASE_TTL" $f.leaseTtl) }}
{{- $env = append $env (list "TASSIS_FEDERATION_MAX_REQUEST_SIZE" (include "tassis.flagValue" $f.maxRequestSize)) }}
{{- end }}
{{- end }}
{{- if and (eq $role "attachments") $root.Values.s3.bucket }}
{{- $s3 := $root.Values.s3 }}
{{- $env = append $env (list "TASSIS_S3_BUCKET" $s3.bucket) }}
{{- with $s3.region }}{{ $env = append $env (list "TASSIS_S3_REGION" .) }}{{ end }}
{{- with $s3.endpoint }}{{ $env = append $env (list "TASSIS_S3_ENDPOINT" .) }}{{ end }}
{{- $env = append $env (list "TASSIS_S3_PATH_STYLE" (toString $s3.pathStyle)) }}
{{- with $s3.publicUrl }}{{ $env = append $env (list "TASSIS_S3_PUBLIC_URL" .) }}{{ end }}
{{- with $s3.expireAfter }}{{ $env = append $env (list "TASSIS_S3_EXPIRE_AFTER" .) }}{{ end }}
{{- with include "tassis.publicUrl" $root }}{{ $env = append $env (list "TASSIS_PUBLIC_URL" .) }}{{ end }}
{{- end }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- range $env }}
{{- if not (hasKey $config (index . 0)) }}
- name: {{ index . 0 }}
  value: {{ index . 1 | quote }}
{{- end }}
{{- end }}
{{- if and (has $role (list "gateway" "keystore" "messaging")) $root.Values.redis.urlSecretKey (not (hasKey $config "TASSIS_REDIS_URL")) }}
- name: TASSIS_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.redis.existingSecret }}
      key: {{ $root.Values.redis.urlSecretKey }}
{{- end }}
{{- if and (include "tassis.federated" .) $root.Values.federation.presenceRedis.urlSecretKey (not (hasKey $config "TASSIS_PRESENCE_REDIS_URL")) }}
- name: TASSIS_PRESENCE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.federation.presenceRedis.existingSecret }}
      key: {{ $root.Values.federation.presenceRedis.urlSecretKey }}
{{- end }}
{{- if and (eq $role "attachments") (include "tassis.s3SecretName" $root) }}
{{- $s3 := $root.Values.s3 }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "tassis.s3SecretName" $root }}
      key: {{ ternary $s3.existingSecretAccessKeyIdKey "AWS_ACCESS_KEY_ID" (ne $s3.existingSecret "") }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "tassis.s3SecretName" $root }}
      key: {{ ternary $s3.existingSecretSecretAccessKeyKey "AWS_SECRET_ACCESS_KEY" (ne $s3.existingSecret "") }}
{{- end }}
{{- with $root.Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ $root.Values.otel.protocol | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "tassis-%s" $role | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: "service.namespace=$(POD_NAMESPACE),k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME)"
{{- end }}
{{- range $name := keys $config | sortAlpha }}
- name: {{ $name }}
  value: {{ index $config $name | quote }}
{{- end }}
{{- with $root.Values.env }}
{{ toYaml . }}
{{- end }}
{{- with $v.env }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Checks that stop a render with a message instead of producing pods that cannot work. */}}
{{- define "tassis.validate" -}}
{{- $root := . }}
{{- if not (include "tassis.redisConfigured" $root) }}
{{- range $role := list "keystore" "messaging" }}
{{- $v := index $root.Values $role }}
{{- if or $v.autoscaling.enabled (gt (int (include "tassis.replicas" (dict "root" $root "role" $role))) 1) }}
{{- fail (printf "%s: more than one replica needs Redis (set redis.url); the embedded in-memory backend cannot be shared by replicas" $role) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $root.Values.redis.urlSecretKey (not $root.Values.redis.existingSecret) }}
{{- fail "redis.urlSecretKey needs redis.existingSecret (the Secret holding the URL)" }}
{{- end }}
{{- if and $root.Values.s3.accessKeyId (not $root.Values.s3.secretAccessKey) (not $root.Values.s3.existingSecret) }}
{{- fail "s3.accessKeyId needs s3.secretAccessKey" }}
{{- end }}
{{- if and $root.Values.s3.bucket (not $root.Values.s3.publicUrl) (not (include "tassis.publicUrl" $root)) }}
{{- fail "s3.bucket needs publicUrl (the gateways' public URL, e.g. https://chat.example.com), an enabled ingress with a host, or s3.publicUrl" }}
{{- end }}
{{- $f := $root.Values.federation }}
{{- if $f.enabled }}
{{- if not (include "tassis.redisConfigured" $root) }}
{{- fail "federation needs redis.url: the forwarding outbox is kept in this deployment's Redis" }}
{{- end }}
{{- if not $f.publicAddr }}
{{- fail "federation.enabled needs federation.publicAddr (this deployment's name in the federation)" }}
{{- end }}
{{- if not (or $f.presenceRedis.url $f.presenceRedis.urlSecretKey) }}
{{- fail "federation.enabled needs federation.presenceRedis.url (or urlSecretKey and existingSecret): the presence directory shared by the federated deployments" }}
{{- end }}
{{- if and $f.presenceRedis.urlSecretKey (not $f.presenceRedis.existingSecret) }}
{{- fail "federation.presenceRedis.urlSecretKey needs federation.presenceRedis.existingSecret (the Secret holding the URL)" }}
{{- end }}
{{- if not (include "tassis.signingKeySecretName" $root) }}
{{- fail "federation.enabled needs federation.signingKey.existingSecret (or signingKey.value): the key made by `tassis federation-keygen`" }}
{{- end }}
{{- if not $f.peers }}
{{- fail "federation.enabled needs at least one entry in federation.peers" }}
{{- end }}
{{- $names := list }}
{{- range $f.peers }}
{{- if eq .name $f.publicAddr }}
{{- fail (printf "federation.peers lists this deployment itself (%s)" .name) }}
{{- end }}
{{- if has .name $names }}
{{- fail (printf "federation.peers lists %s twice" .name) }}
{{- end }}
{{- $names = append $names .name }}
{{- end }}
{{- if and $f.ingress.enabled (not $f.ingress.host) }}
{{- fail "federation.ingress needs federation.ingress.host (the name peers connect to)" }}
{{- end }}
{{- end }}
{{- range $role := list "gateway" "keystore" "messaging" "attachments" }}
{{- $d := include "tassis.drain" (dict "root" $root "role" $role) | fromYaml }}
{{- if lt (int $d.terminationGracePeriodSeconds) (add $d.preStopSleepSeconds $d.shutdownGraceSeconds | int) }}
{{- fail (printf "%s: terminationGracePeriodSeconds (%d) must cover preStopSleepSeconds + shutdownGraceSeconds (%d + %d)" $role (int $d.terminationGracePeriodSeconds) (int $d.preStopSleepSeconds) (int $d.shutdownGraceSeconds)) }}
{{- end }}
{{- $a := (index $root.Values $role).autoscaling }}
{{- if $a.enabled }}
{{- $conn := and (eq $role "gateway") $a.connections $a.connections.enabled }}
{{- if not (or $a.targetCPUUtilizationPercentage $a.targetMemoryUtilizationPercentage $conn) }}
{{- fail (printf "%s.autoscaling needs a metric: targetCPUUtilizationPercentage, targetMemoryUtilizationPercentage or connections.enabled" $role) }}
{{- end }}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) }}
{{- fail (printf "%s.autoscaling.minReplicas is above maxReplicas" $role) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
