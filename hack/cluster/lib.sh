# Shared settings and helpers of the local cluster scripts (hack/cluster/*.sh).
# Sourced, not run. Everything the cluster writes at run time lives in
# $STATE and $RUN_DIR (outside the repository); the binaries and the admin
# kubeconfig live in $CACHE.
# shellcheck shell=bash disable=SC2034 # the scripts that source this use its settings

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
K8S_VERSION=${K8S_VERSION:-1.37.2}
CACHE=${WORKERPOOL_CACHE:-$HOME/.cache/workerpool-operator}
BIN_DIR=$CACHE/cluster/k8s-$K8S_VERSION
KUBECONFIG_OUT=${CLUSTER_KUBECONFIG:-$CACHE/cluster/kubeconfig}
STATE=${CLUSTER_STATE:-/var/lib/workerpool-operator-cluster}
RUN_DIR=/run/workerpool-operator-cluster
PKI=$STATE/pki
LOGS=$STATE/logs
PIDS=$RUN_DIR/pids
CONTAINERD_SOCK=$RUN_DIR/containerd/containerd.sock
GO=${GO:-go}

# Networks: all private to this machine (see docs/local-cluster.md).
NODE_NAME=node1
NODE_BRIDGE=k8snode0
NODE_IP=10.200.0.1
NODE_CIDR=10.200.0.0/24
POD_BRIDGE=cni0
POD_CIDR=10.88.0.0/16
POD_GATEWAY=10.88.0.1
SERVICE_CIDR=10.96.0.0/24
KUBERNETES_SVC_IP=10.96.0.1
APISERVER_PORT=6443
ETCD_CLIENT_PORT=12379
ETCD_PEER_PORT=12380
PAUSE_IMAGE=localhost/pause:dev
GUARD_CHAIN=WPO-CLUSTER-GUARD

# Daemons in start order; down.sh stops them in the order LOCAL-CLUSTER.md gives.
DAEMONS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
# Sysctls that kubelet, kube-proxy, the CNI bridge plugin or up.sh may change;
# their values before the first start are kept in $STATE/sysctls and restored.
SYSCTLS=(net.ipv4.ip_forward vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.bridge.bridge-nf-call-iptables
  net.bridge.bridge-nf-call-ip6tables net.ipv4.conf.all.route_localnet net.netfilter.nf_conntrack_max
  net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_timeout_close_wait)
# Paths that kubelet, containerd's CRI or libcni write outside $STATE whatever
# their settings; removed by down.sh when the first start created them.
OUTSIDE_PATHS=(/var/lib/kubelet /var/lib/cni /var/log/pods /var/log/containers /var/run/netns /run/containerd /var/lib/containerd /etc/cni /opt/cni)

log() { echo "cluster: $*" >&2; }
# `... | has PATTERN`: like grep -q, but reads all its input, so that the
# writer never dies of SIGPIPE (which pipefail would report as a failure).
has() { grep "$@" >/dev/null; }
die() {
  log "ERROR: $*"
  exit 1
}

need_root() { [ "$(id -u)" = 0 ] || die "run as root (the cluster creates bridges, iptables rules and mounts)"; }

# alive PID: the process exists and is not a zombie waiting for init to reap it.
alive() {
  local st
  st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

pid_of() { # daemon -> pid if running (and really that daemon), else nothing
  local f=$PIDS/$1.pid pid exe
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  alive "$pid" || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [ "$(basename "${exe% (deleted)}")" = "$1" ] || return 1
  echo "$pid"
}

kubectl_admin() { "$BIN_DIR/kubectl" --kubeconfig "$STATE/kubeconfig/admin.kubeconfig" "$@"; }

# crictl, built once from hack/cluster/tools (rebuilt when its go.mod changes).
crictl_bin() {
  local bin=$CACHE/cluster/tools/crictl mod=$ROOT/hack/cluster/tools/go.mod
  if [ ! -x "$bin" ] || [ "$mod" -nt "$bin" ]; then
    log "building crictl (hack/cluster/tools/go.mod)"
    mkdir -p "$(dirname "$bin")"
    (cd "$ROOT" && $GO build -modfile=hack/cluster/tools/go.mod -o "$bin" sigs.k8s.io/cri-tools/cmd/crictl) >&2 || return 1
  fi
  echo "$bin"
}
crictl() { "$(crictl_bin)" --runtime-endpoint "unix://$CONTAINERD_SOCK" --image-endpoint "unix://$CONTAINERD_SOCK" --timeout 10s "$@"; }
ctr() { command ctr --address "$CONTAINERD_SOCK" "$@"; }

# write_file PATH [MODE] < content: replaces PATH only when the content
# differs (kube-proxy exits when its config file is written, even unchanged).
write_file() {
  local tmp=$1.tmp.$$
  cat >"$tmp"
  [ -z "${2:-}" ] || chmod "$2" "$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

# The last lines of a daemon's log, for a failure message.
log_tail() {
  local f=$LOGS/$1.log
  [ -f "$f" ] || return 0
  echo "----- last lines of $f -----" >&2
  tail -n "${2:-30}" "$f" >&2
  echo "-----" >&2
}

# wait_for DESCRIPTION SECONDS DAEMON-WHOSE-LOG-TO-SHOW COMMAND... : polls
# COMMAND until it succeeds, printing progress; on timeout (or when the daemon
# dies) prints the daemon's log tail and fails.
wait_for() {
  local what=$1 limit=$2 daemon=$3 start=$SECONDS next=5
  shift 3
  until "$@" >/dev/null 2>&1; do
    if [ -n "$daemon" ] && ! pid_of "$daemon" >/dev/null; then
      log "$daemon exited while waiting for $what"
      log_tail "$daemon" 40
      exit 1
    fi
    if [ $((SECONDS - start)) -ge "$limit" ]; then
      log "timed out after ${limit}s waiting for $what"
      [ -z "$daemon" ] || log_tail "$daemon" 40
      exit 1
    fi
    if [ $((SECONDS - start)) -ge "$next" ]; then
      log "  still waiting for $what ($((SECONDS - start))s of ${limit}s)"
      next=$((next + 5))
    fi
    sleep 0.5
  done
  log "$what after $((SECONDS - start))s"
}
