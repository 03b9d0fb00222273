{{/*
The audit's name (its CronJob or Deployment, ServiceAccount, ClusterRole and binding;
in watch mode its Service and ServiceMonitor too) and its labels: not the webhook
pods' selector labels, so that the Service, the PodDisruptionBudget, the
NetworkPolicy and the anti-affinity never take an audit pod for a webhook pod, nor
the audit's Deployment a webhook pod for one of its own.
*/}}
{{- define "stsguard.auditName" -}}
{{- printf "%s-audit" (include "stsguard.fullname" .) }}
{{- end }}

{{- define "stsguard.auditSelectorLabels" -}}
app.kubernetes.io/name: {{ include "stsguard.name" . }}-audit
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "stsguard.auditLabels" -}}
helm.sh/chart: {{ include "stsguard.chart" . }}
{{ include "stsguard.auditSelectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: audit
app.kubernetes.io/part-of: stsguard
{{- end }}

{{/*
`true` when the audit runs continuously (`audit.mode: watch`): a Deployment, `watch`
in its ClusterRole, a metrics Service, and with the Prometheus Operator's objects a
ServiceMonitor and alerts. Empty when the audit is off or a CronJob. The one place
that tells the modes apart.
*/}}
{{- define "stsguard.auditWatch" -}}
{{- if and .Values.audit.enabled (eq .Values.audit.mode "watch") }}true{{ end -}}
{{- end }}

{{/*
The watching audit's plain-HTTP port (`--metrics-listen`): /metrics, /healthz and
/readyz. Fixed: the audit's pod has a network namespace of its own (never the
node's), so it cannot collide with the server's ports.
*/}}
{{- define "stsguard.auditMetricsPort" -}}
9090
{{- end }}

{{/*
The watching audit's SIGTERM-to-SIGKILL time: it sees the signal at its next event or
report tick (within one `audit.reportInterval`), then writes the reports still
pending, one request per namespace: 10 s for those.
*/}}
{{- define "stsguard.auditTerminationGraceSeconds" -}}
{{- $ms := int64 (include "stsguard.durationMs" .Values.audit.reportInterval) -}}
{{- add (div (add $ms 999) 1000) 10 -}}
{{- end }}

{{/*
The audit's pod spec, for the CronJob's job template and the watch Deployment alike,
so that the two modes run the same container: the webhook's image, config, policy
modules, registry settings and cache, the same security contexts and resources.
What only a watch needs is added here too, behind stsguard.auditWatch: `--watch`,
the report interval and the metrics listener with its port and probes, and a grace
period for the last writes. What only a run to completion needs: restartPolicy
Never, and findings that do not fail the Job.
*/}}
{{- define "stsguard.auditPodSpec" -}}
{{- $watch := include "stsguard.auditWatch" . -}}
{{- $port := include "stsguard.auditMetricsPort" . -}}
serviceAccountName: {{ include "stsguard.auditName" . }}
automountServiceAccountToken: true
{{- if $watch }}
terminationGracePeriodSeconds: {{ include "stsguard.auditTerminationGraceSeconds" . }}
{{- else }}
restartPolicy: Never
{{- end }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
containers:
  - name: audit
    image: {{ include "stsguard.image" . | quote }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    args:
      - audit
      - --all-namespaces
      - --write-reports
      {{- if $watch }}
      - --watch
      - --report-interval
      - {{ .Values.audit.reportInterval | quote }}
      - --metrics-listen
      - 0.0.0.0:{{ $port }}
      {{- end }}
      - --config
      - /etc/stsguard/config/config.yaml
      - --log-format
      - {{ .Values.logFormat }}
    env:
      - name: STSGUARD_LOG
        value: {{ .Values.audit.logLevel | quote }}
      # The emptyDir below (the root filesystem is read-only).
      - name: STSGUARD_CACHE_DIR
        value: /var/cache/stsguard
      {{- if not $watch }}
      # Findings are in the PolicyReports: only a run that could not
      # finish (exit 2) fails the Job.
      - name: STSGUARD_AUDIT_FINDINGS_EXIT_CODE
        value: "0"
      {{- end }}
      {{- with include "stsguard.registryEnv" . }}
      {{- . | nindent 6 }}
      {{- end }}
    {{- if $watch }}
    ports:
      - name: metrics
        containerPort: {{ $port }}
        protocol: TCP
    # The listener opens once the policies are loaded: a new pod has no cache, so
    # custom modules are pulled and compiled first (a Python or JavaScript one takes
    # ~15 s of CPU). Up to 5 minutes before liveness applies.
    startupProbe:
      httpGet:
        path: /healthz
        port: metrics
      periodSeconds: 2
      failureThreshold: 150
    livenessProbe:
      httpGet:
        path: /healthz
        port: metrics
      periodSeconds: 10
      timeoutSeconds: 2
      failureThreshold: 3
    # Ready once every StatefulSet was listed and evaluated (before that no report
    # is written).
    readinessProbe:
      httpGet:
        path: /readyz
        port: metrics
      periodSeconds: 5
      timeoutSeconds: 2
    {{- end }}
    resources:
      {{- toYaml .Values.audit.resources | nindent 6 }}
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    volumeMounts:
      {{- include "stsguard.policyMounts" . | nindent 6 }}
volumes:
  - name: config
    configMap:
      name: {{ include "stsguard.fullname" . }}-config
  {{- include "stsguard.policyVolumes" . | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
