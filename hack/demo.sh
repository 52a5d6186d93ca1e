#!/usr/bin/env bash
# The demo: from a fresh machine to two WorkerPools side by side, one of
# native Go handlers (payments) and one of Python handlers (scoring: the
# tasker-python-worker image with handler code from a ConfigMap), draining a
# stream of steps, watched live with kubectl. What `make demo` runs.
#
#   hack/demo.sh          # local single-node cluster (built and started if needed)
#   hack/demo.sh down     # remove the demo, its PostgreSQL and the local cluster
#
# DEMO_USE_CURRENT_KUBECONFIG=1 uses the cluster of the current kubeconfig
# instead; it then needs DEMO_DATABASE_URL (a PostgreSQL its pods reach) and
# images it can run (DEMO_OPERATOR_IMAGE, DEMO_WORKER_IMAGE,
# DEMO_PYTHON_WORKER_IMAGE).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
GO=${GO:-go}
MAKE=${MAKE:-make}
cache=${WORKERPOOL_CACHE:-$HOME/.cache/workerpool-operator}
k8s_bin=$cache/cluster/k8s-${K8S_VERSION:-1.37.2}
ns=${DEMO_NAMESPACE:-demo}
pool=payments
pypool=scoring
started=$(date +%s.%N)
export PG_DIR=/var/tmp/workerpool-operator-demo-postgres PG_PORT=54331 PG_LISTEN=10.200.0.1 PG_ALLOW="10.88.0.0/16 10.200.0.0/24"

step=0
say() { step=$((step + 1)); printf '\n\033[1m[%d/7] %s\033[0m\n' "$step" "$*"; }
info() { echo "  $*"; }
since() { awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
local_cluster() { [ "${DEMO_USE_CURRENT_KUBECONFIG:-0}" != 1 ]; }

if [ "${1:-}" = down ]; then
  if [ -x "$k8s_bin/kubectl" ]; then export PATH="$k8s_bin:$PATH"; fi
  if local_cluster; then export KUBECONFIG=${CLUSTER_KUBECONFIG:-$cache/cluster/kubeconfig}; fi
  if kubectl version >/dev/null 2>&1; then
    kubectl delete namespace "$ns" --ignore-not-found --wait=false
    [ -x bin/helm ] && bin/helm uninstall wpo -n workerpool-system 2>/dev/null || true
  fi
  bash hack/local-postgres.sh destroy
  if local_cluster; then bash hack/cluster/down.sh; fi
  echo "demo removed"
  exit 0
fi

say "Building the binaries, images and helm"
$MAKE --no-print-directory build >/dev/null
$GO build -modfile=hack/tools/go.mod -o bin/helm helm.sh/helm/v3/cmd/helm
info "bin/manager, bin/tasker-worker, bin/helm built ($(since) s)"

if local_cluster; then
  say "Starting the local single-node cluster (first run builds Kubernetes from Go modules: about 10 minutes)"
  $MAKE --no-print-directory cluster-up | sed 's/^/  /'
  export KUBECONFIG=${CLUSTER_KUBECONFIG:-$cache/cluster/kubeconfig}
  export PATH="$k8s_bin:$PATH"
  operator_image=workerpool-operator:dev worker_image=tasker-worker:dev python_image=tasker-python-worker:dev pull=Never
else
  say "Using the current kubeconfig ($(kubectl config current-context))"
  operator_image=${DEMO_OPERATOR_IMAGE:?set DEMO_OPERATOR_IMAGE to an operator image the cluster can pull}
  worker_image=${DEMO_WORKER_IMAGE:?set DEMO_WORKER_IMAGE to a tasker-worker image the cluster can pull}
  python_image=${DEMO_PYTHON_WORKER_IMAGE:?set DEMO_PYTHON_WORKER_IMAGE to a tasker-python-worker image the cluster can pull}
  pull=IfNotPresent
fi
info "$(kubectl get nodes --no-headers | awk '{print "node " $1 " " $2}') ($(since) s)"

say "Starting PostgreSQL for the step queue"
if local_cluster; then
  db=$(bash hack/local-postgres.sh start)
else
  db=${DEMO_DATABASE_URL:?set DEMO_DATABASE_URL to a PostgreSQL URL that the pods of the cluster can reach}
fi
info "$db (pods reach it on the node's bridge address)"
DATABASE_URL=$db bin/tasker-worker migrate | sed 's/^/  /'

say "Installing the operator with helm"
# The demo's operator watches only the demo's namespace, so the e2e suite's
# own release (make test e2e) can run beside it; --take-ownership: the
# cluster-wide CRD may have been installed by that release.
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
bin/helm upgrade --install wpo charts/workerpool-operator --namespace workerpool-system --create-namespace --take-ownership \
  --set image.repository="${operator_image%:*}" --set image.tag="${operator_image##*:}" --set image.pullPolicy=$pull \
  --set "watchNamespaces={$ns}" --set manager.statusInterval=2s --wait --timeout 5m | sed -n '1,6p' | sed 's/^/  /'
info "operator running ($(since) s)"

say "Applying two WorkerPool samples in namespace $ns: $pool (native Go handlers, 3 replicas) and $pypool (Python handlers from a ConfigMap, 2 replicas)"
kubectl -n "$ns" create secret generic tasker-db --from-literal=url="$db" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
sed -e "s#image: tasker-worker:dev#image: $worker_image#" -e "s#imagePullPolicy: IfNotPresent#imagePullPolicy: $pull#" \
  config/samples/workers_v1alpha1_workerpool_native.yaml | kubectl -n "$ns" apply -f - | sed 's/^/  /'
kubectl -n "$ns" apply -f config/samples/scoring_handlers_configmap.yaml | sed 's/^/  /'
sed -e "s#image: tasker-python-worker:dev#image: $python_image\n  imagePullPolicy: $pull#" \
  config/samples/workers_v1alpha1_workerpool_python_handlers.yaml | kubectl -n "$ns" apply -f - | sed 's/^/  /'
deadline=$(($(date +%s) + 300))
for p in $pool $pypool; do
  until [ "$(kubectl -n "$ns" get wp "$p" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; do
    if [ "$(date +%s)" -gt "$deadline" ]; then
      echo "the pool $p did not become Ready within 5 minutes:" >&2
      kubectl -n "$ns" describe wp "$p" >&2
      exit 1
    fi
    printf '  waiting for %s to be Ready: %s\r' "$p" "$(kubectl -n "$ns" get wp "$p" --no-headers 2>/dev/null | awk '{print "ready=" $2 " replicas=" $3}')"
    sleep 1
  done
done
ready_after=$(since)
echo
kubectl -n "$ns" get wp -o wide | sed 's/^/  /'
info "both pools Ready $ready_after s after the demo started"

say "Enqueueing a stream of steps for 30 s: fast, slow, failing once (retried), failing for good; Go and Python"
w() { DATABASE_URL=$db bin/tasker-worker "$@" >/dev/null; }
w enqueue --queue refunds --handler fail --payload '{"retryable":false}' --count 5
w enqueue --queue scoring --handler score --payload '{"features":[]}' --count 2
(
  for _ in $(seq 15); do
    w enqueue --queue payments --handler noop --count 200
    w enqueue --queue payments --handler sleep --payload '{"ms":1500}' --count 60
    w enqueue --queue refunds --handler sleep --payload '{"ms":4000}' --count 10
    w enqueue --queue refunds --handler fail --payload '{"fail_attempts":1}' --count 3
    w enqueue --queue scoring --handler score --payload '{"features":[0.2,0.9,0.4]}' --count 100
    w enqueue --queue scoring --handler sleep --payload '{"ms":800}' --count 10
    w enqueue --queue scoring --handler fail --payload '{"fail_attempts":1}' --count 2
    sleep 2
  done
) &
producer=$!
total=$((5 + 2 + 15 * (200 + 60 + 10 + 3 + 100 + 10 + 2)))
info "producer running in the background: $total steps in waves every 2 s"
enqueued=$(date +%s.%N)

say "Watching both pools until the queues are drained (kubectl get wp -o wide, every 2 s)"
deadline=$(($(date +%s) + 600))
while :; do
  left=$(DATABASE_URL=$db bin/tasker-worker stats | awk 'NR > 1 { ready += $2; scheduled += $3; claimed += $4 } END { print ready + scheduled + claimed }')
  kubectl -n "$ns" get wp -o wide --no-headers | while read -r line; do printf '  %s\n' "$line"; done
  printf '  %s steps left\n' "$left"
  if [ "$left" = 0 ] && ! kill -0 "$producer" 2>/dev/null; then break; fi
  if [ "$(date +%s)" -gt "$deadline" ]; then echo "the queue did not drain within 10 minutes" >&2; exit 1; fi
  sleep 2
done
drained=$(awk -v a="$enqueued" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo
DATABASE_URL=$db bin/tasker-worker stats | sed 's/^/  /'
cat <<MSG

Done: $total steps drained in $drained s by 3 native and 2 Python pods (pools Ready $ready_after s after start).
Look around:
  export KUBECONFIG=$KUBECONFIG PATH=$k8s_bin:\$PATH
  kubectl -n $ns describe wp $pool          # status, conditions, per-pod figures, events
  kubectl -n $ns describe wp $pypool           # the Python pool: FFI pending events, starvation
  kubectl -n $ns logs deploy/$pypool           # the Python runner and its handler files
  kubectl -n $ns get wp -o wide -w          # live; try: DATABASE_URL=$db bin/tasker-worker enqueue --queue payments --handler sleep --payload '{"ms":500}' --count 500
  kubectl -n $ns scale wp $pool --replicas=1
Tear it all down (the demo, its PostgreSQL and the local cluster):
  make demo-down
MSG
