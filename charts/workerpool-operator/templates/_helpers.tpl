{{/* The chart name (app.kubernetes.io/name). */}}
{{- define "workerpool-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name, the prefix of every object's name: the release name, with the
chart name appended unless the release name already contains it. At most 52
characters, so that every suffixed name stays a valid DNS label.
*/}}
{{- define "workerpool-operator.fullname" -}}
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

{{- define "workerpool-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object the chart renders (except the CRD, kept as generated). */}}
{{- define "workerpool-operator.labels" -}}
helm.sh/chart: {{ include "workerpool-operator.chart" . }}
{{ include "workerpool-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: workerpool-operator
{{- end }}

{{- define "workerpool-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "workerpool-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's pods: the Deployment's selector, the metrics Service's and the NetworkPolicy's. */}}
{{- define "workerpool-operator.podSelectorLabels" -}}
{{ include "workerpool-operator.selectorLabels" . }}
app.kubernetes.io/component: controller-manager
{{- end }}

{{- define "workerpool-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "workerpool-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image, tag defaulting to the chart's appVersion. */}}
{{- define "workerpool-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The rules of a role in config/rbac, from the chart's generated copy
(files/config/rbac/NAME.yaml, `make chart-generate`). Call with (list $ "NAME").
*/}}
{{- define "workerpool-operator.configRules" -}}
{{- $root := index . 0 }}
{{- $file := printf "files/config/rbac/%s.yaml" (index . 1) }}
{{- $role := $root.Files.Get $file | fromYaml }}
{{- if or (hasKey $role "Error") (not $role.rules) }}
{{- fail (printf "%s: no rules (%v); run make chart-generate" $file $role) }}
{{- end }}
{{- /* Reading Secrets serves only queue reading: without it, no access. */}}
{{- $rules := list }}
{{- range $role.rules }}
{{- if and .resources (not $root.Values.readQueues) (has "secrets" .resources) }}
{{- $rest := without .resources "secrets" }}
{{- if $rest }}
{{- $rules = append $rules (set (deepCopy .) "resources" $rest) }}
{{- end }}
{{- else }}
{{- $rules = append $rules . }}
{{- end }}
{{- end }}
{{- toYaml $rules }}
{{- end }}

{{/* The same role's labels that start with "rbac.authorization.k8s.io/aggregate-to-". */}}
{{- define "workerpool-operator.aggregateLabels" -}}
{{- $root := index . 0 }}
{{- $role := $root.Files.Get (printf "files/config/rbac/%s.yaml" (index . 1)) | fromYaml }}
{{- range $k, $v := $role.metadata.labels }}
{{- if hasPrefix "rbac.authorization.k8s.io/aggregate-to-" $k }}
{{ $k }}: {{ $v | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether leader election is on; more than one replica requires it. */}}
{{- define "workerpool-operator.leaderElect" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicaCount %d needs leaderElection.enabled: without it every replica reconciles" (int .Values.replicaCount)) }}
{{- end }}
{{- if .Values.leaderElection.enabled }}true{{ end }}
{{- end }}
