#!/usr/bin/env bash
# Checks the local cluster end to end with the project's own images (make
# images, imported by make cluster-up):
#   - the node is Ready;
#   - a pod of tasker-worker:dev (imagePullPolicy: Never) runs `version` and exits 0;
#   - the operator (workerpool-operator:dev) starts as a Deployment under a
#     ServiceAccount bound to cluster-admin, reaches the apiserver through the
#     kubernetes Service (10.96.0.1), syncs its caches and becomes Ready;
#   - its /healthz answers on the pod IP, through a ClusterIP Service and
#     through kubectl port-forward, all from the host.
# Everything it creates is in the namespace wpo-smoke (and one
# ClusterRoleBinding), deleted at the end unless KEEP=1.
#
#   hack/cluster/smoke.sh
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
export KUBECONFIG=$KUBECONFIG_OUT
[ -s "$KUBECONFIG" ] || die "no kubeconfig at $KUBECONFIG: start the cluster (make cluster-up)"
command -v curl >/dev/null || die "curl is needed (apt-get install curl)"
k() { "$BIN_DIR/kubectl" "$@"; }
ns=wpo-smoke
pf_pid=
cleanup() {
  [ -z "$pf_pid" ] || kill "$pf_pid" 2>/dev/null || true
  if [ "${KEEP:-0}" != 1 ]; then
    k delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true
    k delete clusterrolebinding wpo-smoke-operator --ignore-not-found >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
fail() {
  log "FAILED: $*"
  k -n "$ns" get pods -o wide >&2 2>/dev/null || true
  k -n "$ns" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 15 >&2 || true
  exit 1
}

k get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | has -x True ||
  fail "node $NODE_NAME is not Ready"
log "node $NODE_NAME Ready ($(k get node "$NODE_NAME" -o jsonpath='{.status.nodeInfo.kubeletVersion}'))"

k create namespace "$ns" --dry-run=client -o yaml | k apply -f - >/dev/null
k -n "$ns" delete pod worker-version --ignore-not-found >/dev/null
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: worker-version, namespace: $ns}
spec:
  restartPolicy: Never
  containers:
  - {name: worker, image: tasker-worker:dev, imagePullPolicy: Never, args: ["version"]}
EOF
k -n "$ns" wait --for=jsonpath='{.status.phase}'=Succeeded pod/worker-version --timeout=60s >/dev/null ||
  fail "the tasker-worker pod did not succeed"
log "tasker-worker:dev version -> $(k -n "$ns" logs worker-version) (exit $(k -n "$ns" get pod worker-version \
  -o jsonpath='{.status.containerStatuses[0].state.terminated.exitCode}'))"

# The operator watches WorkerPools: install the CRD first (server-side, as make install does).
k apply --server-side --force-conflicts -f "$ROOT/config/crd/bases" >/dev/null
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: operator, namespace: $ns}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: wpo-smoke-operator}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: operator, namespace: $ns}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: operator, namespace: $ns}
spec:
  replicas: 1
  selector: {matchLabels: {app: operator}}
  template:
    metadata: {labels: {app: operator}}
    spec:
      serviceAccountName: operator
      containers:
      - name: manager
        image: workerpool-operator:dev
        imagePullPolicy: Never
        args: ["--leader-elect=false", "--metrics-secure=false", "--metrics-bind-address=:8080"]
        ports: [{name: probes, containerPort: 8081}, {name: metrics, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /readyz, port: probes}, periodSeconds: 2}
        livenessProbe: {httpGet: {path: /healthz, port: probes}}
---
apiVersion: v1
kind: Service
metadata: {name: operator-probes, namespace: $ns}
spec:
  selector: {app: operator}
  ports: [{name: probes, port: 8081, targetPort: probes}]
EOF
t=$SECONDS
k -n "$ns" rollout status deploy/operator --timeout=90s >/dev/null || fail "the operator did not become Ready"
log "operator Deployment available after $((SECONDS - t))s"
for _ in $(seq 20); do
  k -n "$ns" logs deploy/operator 2>/dev/null | has '"Starting workers"' && break
  sleep 0.5
done
k -n "$ns" logs deploy/operator | has '"Starting workers"' || fail "the operator's caches did not sync"
log "operator started and synced its caches (through the kubernetes Service, $KUBERNETES_SVC_IP)"

pod_ip=$(k -n "$ns" get pod -l app=operator -o jsonpath='{.items[0].status.podIP}')
svc_ip=$(k -n "$ns" get svc operator-probes -o jsonpath='{.spec.clusterIP}')
[ "$(curl -s -m 5 "http://$pod_ip:8081/healthz")" = ok ] || fail "/healthz on the pod IP $pod_ip"
log "/healthz on the pod IP $pod_ip: ok"
ok=
for _ in $(seq 20); do
  [ "$(curl -s -m 2 "http://$svc_ip:8081/healthz")" = ok ] && ok=1 && break
  sleep 0.5
done
[ -n "$ok" ] || fail "/healthz on the ClusterIP $svc_ip"
log "/healthz on the ClusterIP $svc_ip: ok"
port=$((20000 + RANDOM % 20000))
k -n "$ns" port-forward deploy/operator "$port:8081" >/dev/null 2>&1 &
pf_pid=$!
ok=
for _ in $(seq 20); do
  [ "$(curl -s -m 2 "http://127.0.0.1:$port/healthz" 2>/dev/null)" = ok ] && ok=1 && break
  sleep 0.5
done
[ -n "$ok" ] || fail "/healthz through kubectl port-forward"
log "/healthz through kubectl port-forward (127.0.0.1:$port): ok"
log "smoke test passed"
