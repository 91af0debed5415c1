{{/* Names and labels. */}}
{{- define "certgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "certgate.fullname" -}}
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

{{/* The image: repository:tag, or repository:tag@digest when image.digest pins it. */}}
{{- define "certgate.image" -}}
{{- $ref := printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- if .Values.image.digest }}{{ $ref = printf "%s@%s" $ref .Values.image.digest }}{{ end }}
{{- $ref }}
{{- end }}

{{- define "certgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "certgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "certgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "certgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The `helm test` Pod's own labels (the NetworkPolicy admits it by these). */}}
{{- define "certgate.testLabels" -}}
app.kubernetes.io/name: {{ include "certgate.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "certgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "certgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Is the TCP gRPC / HTTP listener on? The sidecar shape keeps gRPC on the socket only. */}}
{{- define "certgate.grpcEnabled" -}}
{{- if and .Values.listeners.grpc (eq .Values.mode "service") }}true{{ end }}
{{- end }}
{{- define "certgate.httpEnabled" -}}
{{- if and .Values.listeners.http (ne .Values.mode "module") }}true{{ end }}
{{- end }}

{{/*
The listen and store sections: the only parts of certgate.yaml whose change needs a
restart, so the pod template carries a checksum of exactly these.
*/}}
{{- define "certgate.restartConfig" -}}
{{- $v := .Values }}
{{- $listen := dict "admin" (printf "0.0.0.0:%v" $v.ports.admin) }}
{{- if include "certgate.grpcEnabled" . }}
{{- $_ := set $listen "grpc" (printf "0.0.0.0:%v" $v.ports.grpc) }}
{{- else }}
{{- $_ := set $listen "grpc" "" }}
{{- end }}
{{- if eq $v.mode "sidecar" }}
{{- $_ := set $listen "grpc_unix" (printf "%s/%s" $v.sidecar.socketDir $v.sidecar.socketName) }}
{{- end }}
{{- if include "certgate.httpEnabled" . }}
{{- $_ := set $listen "http" (printf "0.0.0.0:%v" $v.ports.http) }}
{{- else }}
{{- $_ := set $listen "http" "" }}
{{- end }}
{{- $store := dict "backend" $v.store.backend "cache_ttl" $v.store.cacheTtl }}
{{- if eq $v.store.backend "embedded" }}
{{- $_ := set $store "path" "/var/lib/certgate/certgate.db" }}
{{- else }}
{{- $d := $v.store.dynamodb }}
{{- $ddb := dict "principals_table" $d.principalsTable "certificates_table" $d.certificatesTable }}
{{- with $d.region }}{{ $_ := set $ddb "region" . }}{{ end }}
{{- with $d.endpointUrl }}{{ $_ := set $ddb "endpoint_url" . }}{{ end }}
{{- $_ := set $store "dynamodb" $ddb }}
{{- end }}
{{- $cfg := dict "listen" $listen "store" $store }}
{{- with $v.config.listen }}{{ $_ := set $cfg "listen" (mergeOverwrite $listen (deepCopy .)) }}{{ end }}
{{- with $v.config.store }}{{ $_ := set $cfg "store" (mergeOverwrite $store (deepCopy .)) }}{{ end }}
{{- toYaml $cfg }}
{{- end }}

{{/* The whole certgate.yaml: generated sections, then the user's `config` on top. */}}
{{- define "certgate.config" -}}
{{- $restart := include "certgate.restartConfig" . | fromYaml }}
{{- $trust := dict "ca_bundle" (printf "/etc/certgate/trust/%s" .Values.trust.caBundle.key) }}
{{- $cfg := dict "listen" $restart.listen "store" $restart.store "trust" $trust }}
{{- $user := omit (deepCopy .Values.config) "listen" "store" }}
{{- toYaml (mergeOverwrite $cfg $user) }}
{{- end }}

{{/* Chart-level checks that JSON schema cannot express. */}}
{{- define "certgate.validate" -}}
{{- if and (eq .Values.store.backend "embedded") (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) }}
{{- fail "store.backend: embedded is one SQLite file on one volume: replicaCount must be 1 and autoscaling.enabled false (use store.backend: dynamodb for more replicas)" }}
{{- end }}
{{- $ca := .Values.trust.caBundle }}
{{- $n := 0 }}
{{- if $ca.configMap }}{{ $n = add1 $n }}{{ end }}
{{- if $ca.secret }}{{ $n = add1 $n }}{{ end }}
{{- if $ca.pem }}{{ $n = add1 $n }}{{ end }}
{{- if ne $n 1 }}
{{- fail "trust.caBundle: set exactly one of configMap, secret or pem" }}
{{- end }}
{{- if and (eq .Values.mode "sidecar") (not .Values.sidecar.containers) }}
{{- fail "mode: sidecar needs sidecar.containers (at least the Envoy that calls certgate over the socket)" }}
{{- end }}
{{- if and (eq .Values.mode "module") (not .Values.module.envoyConfig) }}
{{- fail "mode: module needs module.envoyConfig (Envoy's bootstrap with certgate's dynamic_modules filter)" }}
{{- end }}
{{- if and (eq .Values.mode "module") (eq .Values.module.source "initContainer") (not .Values.module.init.image) }}
{{- fail "mode: module with module.source: initContainer needs module.init.image (an image holding libcertgate_envoy.so)" }}
{{- end }}
{{- if and (eq .Values.mode "service") (not .Values.listeners.grpc) (not .Values.listeners.http) }}
{{- fail "mode: service needs listeners.grpc or listeners.http" }}
{{- end }}
{{- end }}
