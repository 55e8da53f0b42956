{{/*
Names. "<release>-strata", or the release name when it already contains "strata", as most charts
do; every object name below is that plus a suffix, so two releases in one namespace do not meet.
The suffixed names stay within 63 characters (the limit of label values and Service names).
*/}}
{{- define "strata.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "strata.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 42 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 42 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 42 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "strata.operatorName" -}}
{{- printf "%s-operator" (include "strata.fullname" .) -}}
{{- end -}}

{{- define "strata.controllerServiceName" -}}
{{- printf "%s-controller" (include "strata.fullname" .) -}}
{{- end -}}

{{- define "strata.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "strata.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "strata.nodeServiceAccountName" -}}
{{- if .Values.nodeServiceAccount.create -}}
{{- default (printf "%s-node" (include "strata.fullname" .)) .Values.nodeServiceAccount.name -}}
{{- else -}}
{{- required "nodeServiceAccount.name must name an existing ServiceAccount when nodeServiceAccount.create is false" .Values.nodeServiceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "strata.leaseName" -}}
{{- default (include "strata.operatorName" .) .Values.operator.leaseName -}}
{{- end -}}

{{- define "strata.stateSecret" -}}
{{- default (printf "%s-controller-state" (include "strata.fullname" .)) .Values.operator.stateSecret -}}
{{- end -}}

{{/* The legacy state ConfigMap: read once to migrate the state into the Secret, then deleted. */}}
{{- define "strata.stateConfigMap" -}}
{{- default (printf "%s-controller-state" (include "strata.fullname" .)) .Values.operator.stateConfigMap -}}
{{- end -}}

{{/* An image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "strata.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "strata.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "strata.labels" -}}
helm.sh/chart: {{ include "strata.chart" . }}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: strata
{{- end -}}

{{/* Selector of the operator pods (stable across upgrades: never add to it). */}}
{{- define "strata.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
Checks across values that JSON Schema cannot express; each fails the install with the rule.
*/}}
{{- define "strata.validate" -}}
{{- $c := .Values.operator.controller -}}
{{- if lt (int64 $c.sessionTimeoutMs) (mul 2 (int64 $c.heartbeatIntervalMs)) -}}
{{- fail (printf "operator.controller.sessionTimeoutMs (%v) must be at least twice operator.controller.heartbeatIntervalMs (%v): two missed heartbeats must not declare a node dead" $c.sessionTimeoutMs $c.heartbeatIntervalMs) -}}
{{- end -}}
{{- if eq (int .Values.operator.controllerPort) (int .Values.operator.metricsPort) -}}
{{- fail (printf "operator.controllerPort and operator.metricsPort must differ (both are %v)" .Values.operator.controllerPort) -}}
{{- end -}}
{{- $os := .Values.examples.cluster.objectStore -}}
{{- if and .Values.examples.cluster.enabled (not $os.bucket) (or $os.prefix $os.endpoint $os.region $os.credentialsSecretRef.name) -}}
{{- fail "examples.cluster.objectStore: prefix, endpoint, region or credentialsSecretRef is set but bucket is empty (an empty bucket means no tiering)" -}}
{{- end -}}
{{- end -}}

{{/* HOST:PORT for a listen flag, bracketing an IPv6 host. Argument: (list host port). */}}
{{- define "strata.hostPort" -}}
{{- $host := index . 0 -}}
{{- if contains ":" $host -}}
{{- printf "[%s]:%v" $host (index . 1) -}}
{{- else -}}
{{- printf "%s:%v" $host (index . 1) -}}
{{- end -}}
{{- end -}}
