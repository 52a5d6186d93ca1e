#!/usr/bin/env bash
# Starts (or reuses) a real single-node Kubernetes cluster on this machine:
# containerd, etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet and kube-proxy as plain processes (setsid nohup, PIDs in
# /run/workerpool-operator-cluster/pids), with the settings that
# shared/docs/LOCAL-CLUSTER.md requires. Binaries come from
# hack/cluster/build.sh, which this runs when they are missing.
#
#   hack/cluster/up.sh        # then: export KUBECONFIG=~/.cache/workerpool-operator/cluster/kubeconfig
#
# Running it again while the cluster runs changes nothing; after a crash or a
# reboot it restarts what is missing with the state it finds. hack/cluster/down.sh
# stops everything and puts the machine back as it was.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
t0=$SECONDS

# --- Debian packages ---------------------------------------------------------
pkgs=(containerd runc containernetworking-plugins iptables nftables conntrack socat ethtool iproute2 kmod openssl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | has "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# --- binaries -----------------------------------------------------------------
for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd; do
  if [ ! -x "$BIN_DIR/$c" ]; then
    log "binaries missing in $BIN_DIR: building them (about 7 minutes on a cold Go cache)"
    bash "$ROOT/hack/cluster/build.sh" >/dev/null
    break
  fi
done
mkdir -p "$LOGS" "$PIDS" "$STATE/kubeconfig" "$STATE/config"
chmod 700 "$STATE"
crictl_bin >/dev/null

# --- what the machine looked like before the first start ----------------------
# Kept until down.sh, which restores it; a second `up` does not overwrite it.
if [ ! -f "$STATE/sysctls" ]; then
  for s in "${SYSCTLS[@]}"; do
    v=$(sysctl -n "$s" 2>/dev/null) && printf '%s=%s\n' "$s" "$(echo "$v" | tr '\t' ' ')"
  done >"$STATE/sysctls.tmp"
  mv "$STATE/sysctls.tmp" "$STATE/sysctls"
fi
if [ ! -f "$STATE/iptables-tables" ]; then
  { iptables-save 2>/dev/null | sed -n 's/^\*/ip /p'; ip6tables-save 2>/dev/null | sed -n 's/^\*/ip6 /p'; } >"$STATE/iptables-tables"
fi
if [ ! -f "$STATE/created-paths" ]; then
  for p in "${OUTSIDE_PATHS[@]}"; do [ -e "$p" ] || echo "$p"; done >"$STATE/created-paths"
fi

# --- PKI (openssl) ------------------------------------------------------------
# cert NAME CN O EXT-USAGE [SAN]
cert() {
  local name=$1 cn=$2 o=$3 usage=$4 san=${5:-}
  [ -s "$PKI/$name.crt" ] && return 0
  local subj="/CN=$cn"
  [ -z "$o" ] || subj="/O=$o$subj"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [ -z "$san" ] || echo "subjectAltName=$san"
  } >"$PKI/$name.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$PKI/$name.key" \
    -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days 3650 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}
if [ ! -s "$PKI/ca.crt" ]; then
  log "creating the PKI in $PKI"
  rm -rf "$PKI"
  mkdir -p "$PKI"
  chmod 700 "$PKI"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$PKI/ca.key" \
    -subj "/CN=workerpool-operator-local-ca" -days 3650 -out "$PKI/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
fi
cert apiserver kube-apiserver "" serverAuth \
  "IP:$NODE_IP,IP:$KUBERNETES_SVC_IP,IP:127.0.0.1,DNS:localhost,DNS:$NODE_NAME,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth
cert admin admin system:masters clientAuth
cert controller-manager system:kube-controller-manager "" clientAuth
cert scheduler system:kube-scheduler "" clientAuth
cert kube-proxy system:kube-proxy system:node-proxier clientAuth
cert kubelet "system:node:$NODE_NAME" system:nodes clientAuth
cert kubelet-server "$NODE_NAME" "" serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"

# kubeconfig NAME CERT
kubeconfig() {
  write_file "$STATE/kubeconfig/$1.kubeconfig" 600 <<EOF
apiVersion: v1
kind: Config
clusters:
- name: workerpool-local
  cluster:
    server: https://$NODE_IP:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$2.crt")
    client-key-data: $(base64 -w0 "$PKI/$2.key")
contexts:
- name: workerpool-local
  context: {cluster: workerpool-local, user: $2}
current-context: workerpool-local
EOF
}
for k in admin controller-manager scheduler kube-proxy kubelet; do kubeconfig "$k" "$k"; done

# --- network --------------------------------------------------------------------
# The node's IP on a bridge of its own (the kernel has no dummy links); pods on
# the CNI bridge cni0 (created by the bridge plugin); services in SERVICE_CIDR.
if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
  log "creating bridge $NODE_BRIDGE ($NODE_IP/24)"
  ip link add "$NODE_BRIDGE" type bridge
fi
ip addr show dev "$NODE_BRIDGE" | has "inet $NODE_IP/" || ip addr add "$NODE_IP/24" dev "$NODE_BRIDGE"
ip link set "$NODE_BRIDGE" up
# br_netfilter is built into this kernel; load it where it is a module.
[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null || true
sysctl -qw net.ipv4.ip_forward=1
[ ! -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1

# Traffic guards: nothing to or from the cluster's ranges leaves through an
# interface other than the cluster's own (mangle/POSTROUTING, before any
# masquerade), and nothing is forwarded to or from the uplink.
ipt() { iptables -w 5 "$@"; }
ipt -t mangle -N "$GUARD_CHAIN" 2>/dev/null || true
ipt -t mangle -F "$GUARD_CHAIN"
for ifc in lo "$NODE_BRIDGE" "$POD_BRIDGE" veth+; do
  ipt -t mangle -A "$GUARD_CHAIN" -o "$ifc" -j RETURN
done
for net in "$NODE_CIDR" "$POD_CIDR" "$SERVICE_CIDR"; do
  ipt -t mangle -A "$GUARD_CHAIN" -s "$net" -j DROP
  ipt -t mangle -A "$GUARD_CHAIN" -d "$net" -j DROP
done
ipt -t mangle -C POSTROUTING -j "$GUARD_CHAIN" 2>/dev/null || ipt -t mangle -I POSTROUTING 1 -j "$GUARD_CHAIN"
ipt -N "$GUARD_CHAIN" 2>/dev/null || true
ipt -F "$GUARD_CHAIN"
uplinks=$(ip -4 route show default | sed -n 's/.* dev \([^ ]*\).*/\1/p' | sort -u)
for u in $uplinks; do
  ipt -A "$GUARD_CHAIN" -i "$u" -j DROP
  ipt -A "$GUARD_CHAIN" -o "$u" -j DROP
done
ipt -C FORWARD -j "$GUARD_CHAIN" 2>/dev/null || ipt -I FORWARD 1 -j "$GUARD_CHAIN"

mkdir -p "$STATE/cni/net.d" "$STATE/cni/networks"
write_file "$STATE/cni/net.d/10-workerpool.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "workerpool-local",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$POD_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/networks",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
# Pods resolve nothing (there is no cluster DNS): they use service IPs or the
# injected KUBERNETES_SERVICE_HOST-style variables.
echo "nameserver 127.0.0.1" | write_file "$STATE/config/resolv.conf"

# --- containerd -------------------------------------------------------------------
# Nothing can be pulled: every registry a pod might name answers at once from a
# closed local port, so a missing image fails fast instead of hanging.
for host in _default docker.io registry.k8s.io quay.io ghcr.io gcr.io; do
  mkdir -p "$STATE/containerd/certs.d/$host"
  printf 'server = "http://127.0.0.1:9"\n\n[host."http://127.0.0.1:9"]\n  capabilities = ["pull", "resolve"]\n' |
    write_file "$STATE/containerd/certs.d/$host/hosts.toml"
done
write_file "$STATE/config/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$RUN_DIR/containerd/state"
oom_score = 0

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # The VM lacks CAP_SYS_RESOURCE: without this every sandbox fails with
  # runc's "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUN_DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$STATE/containerd/certs.d"
EOF

# start NAME COMMAND...: starts a daemon in its own session unless it runs.
started=()
start() {
  local name=$1
  shift
  if pid=$(pid_of "$name"); then
    log "$name is running (pid $pid)"
    return 0
  fi
  log "starting $name"
  echo "===== $(date -u +%FT%TZ) $*" >>"$LOGS/$name.log"
  setsid nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
  started+=("$name")
}

start containerd /usr/bin/containerd --config "$STATE/config/containerd.toml"
wait_for "containerd" 30 containerd ctr version

# containerd's sandbox image: a locally built static pause program.
if ! ctr -n k8s.io images ls -q 2>/dev/null | has -x "$PAUSE_IMAGE"; then
  [ -s "$ROOT/bin/images/pause.tar" ] || VERSION=${VERSION:-dev} bash "$ROOT/hack/cluster/images.sh" pause >&2
  bash "$ROOT/hack/cluster/import.sh" "$ROOT/bin/images/pause.tar" >&2
fi

start etcd "$BIN_DIR/etcd" --name "$NODE_NAME" --data-dir "$STATE/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "$NODE_NAME=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" --log-level warn

start kube-apiserver "$BIN_DIR/kube-apiserver" \
  --advertise-address="$NODE_IP" --bind-address="$NODE_IP" --secure-port="$APISERVER_PORT" \
  --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
  --service-cluster-ip-range="$SERVICE_CIDR" --service-node-port-range=30000-32767 \
  --client-ca-file="$PKI/ca.crt" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true \
  --profiling=false --v=1
wait_for "the apiserver (/readyz)" 90 kube-apiserver kubectl_admin get --raw /readyz

start kube-controller-manager "$BIN_DIR/kube-controller-manager" \
  --kubeconfig="$STATE/kubeconfig/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE/kubeconfig/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE/kubeconfig/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" --allocate-node-cidrs=false --profiling=false --v=1

start kube-scheduler "$BIN_DIR/kube-scheduler" \
  --kubeconfig="$STATE/kubeconfig/scheduler.kubeconfig" \
  --authentication-kubeconfig="$STATE/kubeconfig/scheduler.kubeconfig" \
  --authorization-kubeconfig="$STATE/kubeconfig/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1

write_file "$STATE/config/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet-server.crt
tlsPrivateKeyFile: $PKI/kubelet-server.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
# This machine: cgroup v1, no systemd, swap allowed, no CAP_SYS_RESOURCE.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
resolvConf: $STATE/config/resolv.conf
clusterDomain: cluster.local
# Imported images cannot be pulled again: never garbage-collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 5%, imagefs.available: 5%}
serializeImagePulls: false
maxPods: 110
EOF
start kubelet "$BIN_DIR/kubelet" --config="$STATE/config/kubelet.yaml" \
  --kubeconfig="$STATE/kubeconfig/kubelet.kubeconfig" --root-dir="$STATE/kubelet" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1

write_file "$STATE/config/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kubeconfig/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
oomScoreAdj: 0
# Leave the machine's conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {localhostNodePorts: false, masqueradeAll: false, syncPeriod: 30s, minSyncPeriod: 1s}
EOF
start kube-proxy "$BIN_DIR/kube-proxy" --config="$STATE/config/kube-proxy.yaml" --v=1

node_ready() {
  [ "$(kubectl_admin get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
wait_for "node $NODE_NAME Ready" 120 kubelet node_ready
wait_for "the default ServiceAccount" 60 kube-controller-manager kubectl_admin -n default get serviceaccount default
for d in "${DAEMONS[@]}"; do pid_of "$d" >/dev/null || { log "$d is not running"; log_tail "$d" 40; exit 1; }; done

mkdir -p "$(dirname "$KUBECONFIG_OUT")"
install -m 600 "$STATE/kubeconfig/admin.kubeconfig" "$KUBECONFIG_OUT"
if [ ${#started[@]} -gt 0 ]; then
  log "cluster up in $((SECONDS - t0))s (started: ${started[*]})"
else
  log "cluster already running ($((SECONDS - t0))s)"
fi
log "kubectl $K8S_VERSION: $BIN_DIR/kubectl; logs: $LOGS; stop with hack/cluster/down.sh (make cluster-down)"
echo "export KUBECONFIG=$KUBECONFIG_OUT"
