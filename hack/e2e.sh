#!/usr/bin/env bash
# The end-to-end suite (test/e2e) on the local single-node cluster:
#
#   hack/e2e.sh            # what `make e2e` runs
#
# It starts a PostgreSQL for the queue on the node's bridge address
# (10.200.0.1, which pods reach), runs the suite with the chart, the images
# and the cluster's own kubectl, and afterwards removes that PostgreSQL. A
# cluster this script found stopped is stopped again (E2E_KEEP_CLUSTER=1
# keeps it), so CI leaves the machine as it was.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
GO=${GO:-go}
cache=${WORKERPOOL_CACHE:-$HOME/.cache/workerpool-operator}
k8s_bin=$cache/cluster/k8s-${K8S_VERSION:-1.37.2}
export KUBECONFIG=${CLUSTER_KUBECONFIG:-$cache/cluster/kubeconfig}
log() { echo "e2e: $*" >&2; }

# PostgreSQL for the queue, private to the suite.
export PG_DIR=${E2E_PG_DIR:-/var/tmp/workerpool-operator-e2e-postgres}
export PG_PORT=${E2E_PG_PORT:-54330} PG_LISTEN=10.200.0.1 PG_ALLOW="10.88.0.0/16 10.200.0.0/24"
cleanup() {
  code=$?
  bash hack/local-postgres.sh destroy || true
  if [ "$was_stopped" = 1 ] && [ "${E2E_KEEP_CLUSTER:-0}" != 1 ]; then
    log "stopping the cluster this run started (E2E_KEEP_CLUSTER=1 keeps it)"
    bash hack/cluster/down.sh || true
  fi
  exit "$code"
}
was_stopped=0
bash hack/cluster/status.sh >/dev/null 2>&1 || was_stopped=1
trap cleanup EXIT

log "bringing up the local cluster with this checkout's images (make cluster-up)"
${MAKE:-make} --no-print-directory cluster-up
log "PostgreSQL for the queue on $PG_LISTEN:$PG_PORT"
# A run that was killed before its cleanup left its database behind: the
# suite counts the steps of its queues, so it starts from an empty one.
bash hack/local-postgres.sh destroy >/dev/null 2>&1 || true
url=$(bash hack/local-postgres.sh start)

mkdir -p bin
$GO build -modfile=hack/tools/go.mod -o bin/helm helm.sh/helm/v3/cmd/helm

export PATH="$k8s_bin:$PATH" # kubectl matching the cluster
export E2E_OPERATOR_IMAGE=workerpool-operator:dev E2E_WORKER_IMAGE=tasker-worker:dev E2E_PAUSE_IMAGE=localhost/pause:dev
export E2E_PYTHON_WORKER_IMAGE=tasker-python-worker:dev E2E_RUBY_WORKER_IMAGE=tasker-ruby-worker:dev
export E2E_DATABASE_URL=$url E2E_HELM="$root/bin/helm"
log "the Prometheus server (scrapes the pools and the operator, evaluates the shipped alert rules)"
E2E_PROMETHEUS=$(GO=$GO bash hack/build-prometheus.sh prometheus)/prometheus
export E2E_PROMETHEUS
log "kubectl $(kubectl version --client -o json | sed -n 's/.*"gitVersion": "\(.*\)".*/\1/p' | head -n1), cluster $(kubectl get nodes --no-headers | awk '{print $1, $2}')"
$GO test -tags e2e -count=1 -v -timeout 45m ./test/e2e/ 2>&1 | grep -v '^=== \(PAUSE\|CONT\)'
