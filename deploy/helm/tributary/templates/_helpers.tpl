{{/* Names, labels and images shared by every template. */}}

{{- define "tributary.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tributary.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "controller"). */}}
{{- define "tributary.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "tributary.componentLabels" -}}
{{ include "tributary.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference: (dict "root" $ "image" .Values.controller.image). */}}
{{- define "tributary.image" -}}
{{- $tag := .image.tag | default .root.Values.imageTag | default .root.Chart.AppVersion -}}
{{- if .root.Values.imageRegistry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.imageRegistry) .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "tributary.controllerName" -}}{{ include "tributary.fullname" . }}-controller{{- end -}}
{{- define "tributary.agentName" -}}{{ include "tributary.fullname" . }}-agent{{- end -}}

{{- define "tributary.controllerServiceAccount" -}}
{{- .Values.serviceAccount.controllerName | default (include "tributary.controllerName" .) -}}
{{- end -}}
{{- define "tributary.agentServiceAccount" -}}
{{- .Values.serviceAccount.agentName | default (include "tributary.agentName" .) -}}
{{- end -}}

{{/* The namespace flag of both binaries: the watched namespaces, comma-separated ("" = all). */}}
{{- define "tributary.watchNamespaces" -}}
{{- join "," .Values.watchNamespaces -}}
{{- end -}}

{{/* Refuses combinations the schema cannot express. */}}
{{- define "tributary.validate" -}}
{{- if and (eq .Values.rbac.scope "namespace") (empty .Values.watchNamespaces) -}}
{{- fail "rbac.scope=namespace needs watchNamespaces: the namespaces whose Connectors, SyncJobs and SyncRuns Tributary serves (or use rbac.scope=cluster)" -}}
{{- end -}}
{{- if and (gt (int .Values.controller.replicas) 1) (not .Values.controller.leaderElection.enabled) -}}
{{- fail "controller.replicas > 1 needs controller.leaderElection.enabled=true: two controllers without a leader would both create runs" -}}
{{- end -}}
{{- if le (int .Values.agent.terminationGracePeriodSeconds) (int .Values.agent.drainTimeoutSeconds) -}}
{{- fail (printf "agent.terminationGracePeriodSeconds (%d) must be larger than agent.drainTimeoutSeconds (%d): the kubelet would kill agents while their syncs drain" (int .Values.agent.terminationGracePeriodSeconds) (int .Values.agent.drainTimeoutSeconds)) -}}
{{- end -}}
{{- if not .Values.quickstart.enabled -}}
{{- if not .Values.database.existingSecret -}}
{{- fail "database.existingSecret is required (a Secret with the libpq URL under database.urlKey), or set quickstart.enabled=true for a throwaway PostgreSQL and Redis" -}}
{{- end -}}
{{- if not .Values.redis.address -}}
{{- fail "redis.address (host:port) is required, or set quickstart.enabled=true" -}}
{{- end -}}
{{- end -}}
{{- if and (eq .Values.agent.cache.type "persistentVolumeClaim") (not .Values.agent.cache.existingClaim) -}}
{{- fail "agent.cache.type=persistentVolumeClaim needs agent.cache.existingClaim (a ReadWriteMany claim shared by every agent pod)" -}}
{{- end -}}
{{- end -}}

{{/* Whether a monitoring object is rendered: (dict "root" $ "enabled" "auto" "api" "monitoring.coreos.com/v1/ServiceMonitor"). */}}
{{- define "tributary.monitoringEnabled" -}}
{{- $e := toString .enabled -}}
{{- if or (eq $e "true") (and (eq $e "auto") (.root.Capabilities.APIVersions.Has .api)) -}}true{{- end -}}
{{- end -}}

{{- define "tributary.quickstartPostgres" -}}{{ include "tributary.fullname" . }}-postgres{{- end -}}
{{- define "tributary.quickstartRedis" -}}{{ include "tributary.fullname" . }}-redis{{- end -}}
