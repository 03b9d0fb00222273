{{/*
The chart name, overridable with nameOverride.
*/}}
{{- define "stsguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the release's resources. 56 characters leave room for the
`-ca`/`-tls` suffixes of the TLS objects.
*/}}
{{- define "stsguard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 56 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 56 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "stsguard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stsguard.labels" -}}
helm.sh/chart: {{ include "stsguard.chart" . }}
{{ include "stsguard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: admission-webhook
app.kubernetes.io/part-of: stsguard
{{- end }}

{{/*
Labels of the helm test's objects: not the selector labels, so that the Service,
the PodDisruptionBudget, the NetworkPolicy and the pods' anti-affinity never take
the test Pod for a webhook pod.
*/}}
{{- define "stsguard.testLabels" -}}
helm.sh/chart: {{ include "stsguard.chart" . }}
app.kubernetes.io/name: {{ include "stsguard.name" . }}-smoke-test
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: smoke-test
app.kubernetes.io/part-of: stsguard
{{- end }}

{{- define "stsguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stsguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The webhook's failurePolicy: webhook.failurePolicy when set; otherwise Ignore when
every policy of the release is in monitor mode (a webhook that only observes must
not block writes while it is down), Fail when any policy enforces.
*/}}
{{- define "stsguard.failurePolicy" -}}
{{- if .Values.webhook.failurePolicy -}}
{{- .Values.webhook.failurePolicy -}}
{{- else -}}
{{- $enforced := false -}}
{{- range .Values.config.policies -}}
{{- if ne (.mode | default "enforce") "monitor" }}{{ $enforced = true }}{{ end -}}
{{- end -}}
{{- ternary "Fail" "Ignore" $enforced -}}
{{- end -}}
{{- end }}

{{/* Why the failurePolicy is what it is, for NOTES. */}}
{{- define "stsguard.failurePolicyReason" -}}
{{- if .Values.webhook.failurePolicy -}}
set by webhook.failurePolicy
{{- else if eq (include "stsguard.failurePolicy" .) "Ignore" -}}
every policy is in monitor mode, so writes go through while the webhook is down
{{- else -}}
a policy enforces, so no StatefulSet write bypasses it while the webhook is down
{{- end -}}
{{- end }}

{{- define "stsguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stsguard.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "stsguard.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Name of the Secret holding tls.crt, tls.key (and ca.crt when the chart or cert-manager
made it).
*/}}
{{- define "stsguard.tlsSecretName" -}}
{{- if eq .Values.tls.mode "secret" }}
{{- required "tls.existingSecret is required with tls.mode=secret" .Values.tls.existingSecret }}
{{- else }}
{{- printf "%s-tls" (include "stsguard.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The DNS names the API server may use for the Service.
*/}}
{{- define "stsguard.dnsNames" -}}
{{- $svc := include "stsguard.fullname" . -}}
{{- $ns := .Release.Namespace -}}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/*
The server's whole-review deadline in milliseconds: config.requestTimeout when set
(`<n>s` or `<n>ms`), else 80 % of the webhook's timeoutSeconds. Fails when it would not
stay below timeoutSeconds: the API server would give up before the server answers.
*/}}
{{- define "stsguard.requestTimeoutMs" -}}
{{- $limitMs := mul (int .Values.webhook.timeoutSeconds) 1000 -}}
{{- $ms := div (mul $limitMs 8) 10 -}}
{{- with .Values.config.requestTimeout }}
{{- $ms = int (include "stsguard.durationMs" .) -}}
{{- end }}
{{- if ge (int $ms) (int $limitMs) }}
{{- fail (printf "config.requestTimeout (%s) must be below webhook.timeoutSeconds (%ds): the API server would give up before stsguard answers" .Values.config.requestTimeout (int .Values.webhook.timeoutSeconds)) }}
{{- end }}
{{- if le (int $ms) 0 }}
{{- fail "config.requestTimeout must be positive" }}
{{- end }}
{{- $ms }}
{{- end }}

{{/*
A duration as the server writes it (`<n>ms`, `<n>s`, `<n>m`, `<n>h`; the schema's
`duration`) in milliseconds: the one place the chart reads durations.
*/}}
{{- define "stsguard.durationMs" -}}
{{- $units := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 -}}
{{- mul (int64 (regexFind "^[0-9]+" .)) (get $units (regexFind "[a-z]+$" .)) -}}
{{- end }}

{{/*
The requestTimeout as a duration string for the config file.
*/}}
{{- define "stsguard.requestTimeout" -}}
{{- $ms := int (include "stsguard.requestTimeoutMs" .) -}}
{{- if eq (mod $ms 1000) 0 }}{{ div $ms 1000 }}s{{ else }}{{ $ms }}ms{{ end }}
{{- end }}

{{/*
The mount point of a custom policy module.
*/}}
{{- define "stsguard.modulesDir" -}}
/etc/stsguard/modules
{{- end }}

{{/*
The distinct `oci://` references of config.policies[].module, as a JSON list; empty
when there are none. The one place that tells a registry module from the others.
*/}}
{{- define "stsguard.ociModules" -}}
{{- $refs := list -}}
{{- range .Values.config.policies -}}
{{- if hasPrefix "oci://" (.module | toString) }}{{ $refs = append $refs .module }}{{ end -}}
{{- end -}}
{{- with $refs | uniq }}{{ toJson . }}{{ end -}}
{{- end }}

{{/*
Whether an init container compiles the policies before the server starts:
`precompile.enabled` always, never, or auto (when custom modules are configured:
mounted by policyModules, brought by initContainers, or pulled from a registry;
the built-ins come compiled in the image).
*/}}
{{- define "stsguard.precompile" -}}
{{- $mode := .Values.precompile.enabled -}}
{{- $custom := or .Values.policyModules .Values.initContainers (include "stsguard.ociModules" .) -}}
{{- if or (eq $mode "always") (and (eq $mode "auto") $custom) -}}
true
{{- end -}}
{{- end }}

{{/*
The mounts that hold the configuration, the policy modules, the registry
credentials and CA, and the compilation cache: the server's, the compile init
container's and the audit's. Directories, never subPath:
the kubelet only updates whole-directory mounts, and the server re-reads the files
when they change.
*/}}
{{- define "stsguard.policyMounts" -}}
{{- $modulesDir := include "stsguard.modulesDir" . -}}
- name: config
  mountPath: /etc/stsguard/config
  readOnly: true
- name: cache
  mountPath: /var/cache/stsguard
{{- range .Values.policyModules }}
- name: module-{{ .name }}
  mountPath: {{ printf "%s/%s" $modulesDir .name }}
  readOnly: true
{{- end }}
{{- with .Values.registry.credentialsSecret }}
- name: registry-credentials
  mountPath: {{ include "stsguard.registryCredentialsDir" $ }}
  readOnly: true
{{- end }}
{{- if include "stsguard.registryCaSource" . }}
- name: registry-ca
  mountPath: {{ include "stsguard.registryCaDir" . }}
  readOnly: true
{{- end }}
{{- if include "stsguard.verificationKeysSource" . }}
- name: verification-keys
  mountPath: {{ include "stsguard.verificationKeysDir" . }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The volumes behind the registry mounts of stsguard.policyMounts, in the server's pod
and the audit's: the credentials Secret and the CA bundle, each only when set.
*/}}
{{- define "stsguard.registryVolumes" -}}
{{- with .Values.registry.credentialsSecret }}
# Only the .dockerconfigjson key: a Secret of another type fails the mount, at once
# and by name, instead of every pull failing later.
- name: registry-credentials
  secret:
    secretName: {{ . }}
    items:
      - key: .dockerconfigjson
        path: .dockerconfigjson
{{- end }}
{{- with include "stsguard.registryCaSource" . }}
{{- $key := $.Values.registry.caBundle.key }}
- name: registry-ca
  {{- if eq . "configMap" }}
  configMap:
    name: {{ $.Values.registry.caBundle.configMap }}
  {{- else }}
  secret:
    secretName: {{ $.Values.registry.caBundle.secret }}
  {{- end }}
    items:
      - key: {{ $key }}
        path: {{ $key }}
{{- end }}
{{- end }}

{{/*
The volumes behind stsguard.policyMounts but the config (each pod lists that first,
the server's followed by its tls): the cache, the policy modules, the registry
volumes and extraVolumes. The server's pod and the audit's both use this, so that
the audit always sees the server's modules.
*/}}
{{- define "stsguard.policyVolumes" -}}
- name: cache
  emptyDir:
    sizeLimit: {{ .Values.cacheSizeLimit }}
{{- range .Values.policyModules }}
- name: module-{{ .name }}
  {{- if and .configMap .image }}
  {{- fail (printf "policyModules %q: set either configMap or image, not both" .name) }}
  {{- else if .configMap }}
  configMap:
    name: {{ .configMap }}
    items:
      - key: {{ .file }}
        path: {{ .file }}
  {{- else if .image }}
  {{- if not (semverCompare ">=1.31.0-0" $.Capabilities.KubeVersion.Version) }}
  {{- fail (printf "policyModules %q: image volumes need Kubernetes >= 1.31 (enabled by default from 1.35); use configMap or initContainers" .name) }}
  {{- end }}
  image:
    reference: {{ .image.reference | quote }}
    pullPolicy: {{ .image.pullPolicy | default "IfNotPresent" }}
  {{- else }}
  {{- fail (printf "policyModules %q: set configMap or image" .name) }}
  {{- end }}
{{- end }}
{{- with include "stsguard.registryVolumes" . }}
{{- . | nindent 0 }}
{{- end }}
{{- with include "stsguard.verificationKeysSource" . }}
- name: verification-keys
  {{- if eq . "configMap" }}
  configMap:
    name: {{ $.Values.verification.keysFrom.configMap }}
  {{- else }}
  secret:
    secretName: {{ $.Values.verification.keysFrom.secret }}
  {{- end }}
{{- end }}
{{- with .Values.extraVolumes }}
{{- toYaml . | nindent 0 }}
{{- end }}
{{- end }}

{{/*
Where the registry credentials Secret and the CA bundle are mounted: directories of
their own, never subPath, like every other mount here.
*/}}
{{- define "stsguard.registryCredentialsDir" -}}
/etc/stsguard/registry
{{- end }}

{{- define "stsguard.registryCaDir" -}}
/etc/stsguard/registry-ca
{{- end }}

{{/*
Where verification.keysFrom is mounted, whole (every key a public key): the server
reads the directory at each load, so a key added to the ConfigMap is trusted
without a config change.
*/}}
{{- define "stsguard.verificationKeysDir" -}}
/etc/stsguard/verification
{{- end }}

{{/*
Which object verification.keysFrom names: `configMap`, `secret`, or nothing.
*/}}
{{- define "stsguard.verificationKeysSource" -}}
{{- with .Values.verification.keysFrom -}}
{{- if and .configMap .secret -}}
{{- fail "verification.keysFrom: set either configMap or secret, not both" -}}
{{- else if .configMap -}}
configMap
{{- else if .secret -}}
secret
{{- end -}}
{{- end -}}
{{- end }}

{{/*
The server's verification section: the inline keys and the mounted directory, or
nothing when no key is given.
*/}}
{{- define "stsguard.verification" -}}
{{- $keys := .Values.verification.keys | default list -}}
{{- if include "stsguard.verificationKeysSource" . -}}
{{- $keys = append $keys (include "stsguard.verificationKeysDir" .) -}}
{{- end -}}
{{- if $keys -}}
{{- $section := dict "keys" $keys "required" .Values.verification.required "files" .Values.verification.files -}}
{{- with .Values.verification.annotations -}}
{{- $_ := set $section "annotations" . -}}
{{- end -}}
{{- toYaml $section -}}
{{- else if or .Values.verification.annotations .Values.verification.files -}}
{{- fail "verification: annotations or files without keys verify nothing; give verification.keys or verification.keysFrom" -}}
{{- end -}}
{{- end }}

{{/*
Which object registry.caBundle names: `configMap`, `secret`, or nothing.
*/}}
{{- define "stsguard.registryCaSource" -}}
{{- with .Values.registry.caBundle -}}
{{- if and .configMap .secret -}}
{{- fail "registry.caBundle: set either configMap or secret, not both" -}}
{{- else if .configMap -}}
configMap
{{- else if .secret -}}
secret
{{- end -}}
{{- end -}}
{{- end }}

{{/*
How the commands that load policies (serve, compile, audit) reach registries for
`oci://` modules: one env var per registry value that is set, none by default (the
server's own defaults apply). serve's tag recheck is not here: only the server
keeps running to recheck.
*/}}
{{- define "stsguard.registryEnv" -}}
{{- with .Values.registry -}}
{{- if .credentialsSecret }}
- name: STSGUARD_REGISTRY_AUTH
  value: {{ printf "%s/.dockerconfigjson" (include "stsguard.registryCredentialsDir" $) | quote }}
{{- end }}
{{- if include "stsguard.registryCaSource" $ }}
- name: STSGUARD_REGISTRY_CA
  value: {{ printf "%s/%s" (include "stsguard.registryCaDir" $) .caBundle.key | quote }}
{{- end }}
{{- with .insecure }}
- name: STSGUARD_INSECURE_REGISTRIES
  value: {{ join "," . | quote }}
{{- end }}
{{- with .timeout }}
- name: STSGUARD_REGISTRY_TIMEOUT
  value: {{ . | quote }}
{{- end }}
{{- with .maxModuleSize }}
- name: STSGUARD_MAX_MODULE_SIZE
  value: {{ . | quote }}
{{- end }}
{{- end -}}
{{- end }}

{{/*
The namespace `helm test` dry-runs in: test.namespace, else `default`, else (the
release lives in `default`, or it is excluded) `kube-public`, which the API server
creates in every cluster. It must be one the webhook sees, or the test could not pass.
*/}}
{{- define "stsguard.testNamespace" -}}
{{- $excluded := concat (list .Release.Namespace "kube-system") .Values.webhook.excludeNamespaces -}}
{{- with .Values.test.namespace -}}
{{- if has . $excluded -}}
{{- fail (printf "test.namespace %q is a namespace the webhook never sees (its own, kube-system and webhook.excludeNamespaces), so helm test could not pass; choose one it covers, or leave it empty" .) -}}
{{- end -}}
{{- . -}}
{{- else -}}
{{- $picked := "" -}}
{{- range list "default" "kube-public" -}}
{{- if and (not $picked) (not (has . $excluded)) }}{{ $picked = . }}{{ end -}}
{{- end -}}
{{- $picked | required "the webhook sees neither default nor kube-public (webhook.excludeNamespaces), so helm test has nowhere to dry-run: set test.namespace to a namespace it covers" -}}
{{- end -}}
{{- end -}}

{{/*
The RBAC rules for the kinds the configured policies are granted
(config.policies[].reads), as JSON: get, list and watch on each, cluster-wide (the
server's caches watch every namespace). The resource is the kind's lowercase
plural as Kubernetes guesses it (Service -> services, StorageClass ->
storageclasses, NetworkPolicy -> networkpolicies); a custom resource with another
plural adds its rule in `clusterReadsExtraRules`.
*/}}
{{- define "stsguard.readRules" -}}
{{- $rules := list -}}
{{- $seen := list -}}
{{- range .Values.config.policies }}
{{- range .reads }}
{{- $parts := splitList "/" .apiVersion -}}
{{- $group := "" -}}
{{- if eq (len $parts) 2 }}{{ $group = first $parts }}{{ end -}}
{{- $kind := lower .kind -}}
{{- $plural := printf "%ss" $kind -}}
{{- if eq $kind "endpoints" }}{{ $plural = $kind }}
{{- else if hasSuffix "s" $kind }}{{ $plural = printf "%ses" $kind }}
{{- else if hasSuffix "y" $kind }}{{ $plural = printf "%sies" (trimSuffix "y" $kind) }}
{{- end -}}
{{- $key := printf "%s/%s" $group $plural -}}
{{- if not (has $key $seen) -}}
{{- $seen = append $seen $key -}}
{{- $rules = append $rules (dict "apiGroups" (list $group) "resources" (list $plural) "verbs" (list "get" "list" "watch")) -}}
{{- end -}}
{{- end }}
{{- end }}
{{- range .Values.clusterReadsExtraRules }}
{{- $rules = append $rules . -}}
{{- end }}
{{- toJson $rules -}}
{{- end -}}
