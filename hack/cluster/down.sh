#!/usr/bin/env bash
# Stops the local cluster and puts the machine back as it was before
# hack/cluster/up.sh: in the order shared/docs/LOCAL-CLUSTER.md gives, pod
# sandboxes are removed (crictl), kubelet and kube-proxy stopped, then the
# control plane, etcd and containerd; what is still mounted is unmounted;
# the bridges, the iptables chains of the cluster (KUBE-*, CNI-*, and the
# traffic guards), the pod cgroups and the cluster's state are removed; the
# sysctls that the cluster changed get their old values back. The binaries
# (~/.cache/workerpool-operator/cluster) and the Debian packages stay.
#
#   hack/cluster/down.sh
#
# Safe to run at any time, and again.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
t0=$SECONDS

# stop NAME [SECONDS]: SIGTERM, then SIGKILL after the grace period.
stop() {
  local name=$1 grace=${2:-15} pid i
  pid=$(pid_of "$name") || { rm -f "$PIDS/$name.pid"; return 0; }
  local t=$SECONDS
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < grace * 10; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "$name did not stop in ${grace}s: killing it"
    kill -KILL "$pid" 2>/dev/null
    sleep 0.2
  fi
  rm -f "$PIDS/$name.pid"
  log "  $name stopped after $((SECONDS - t))s"
}

remove_sandboxes() {
  pid_of containerd >/dev/null || return 0
  local ids
  ids=$(crictl pods -q 2>/dev/null) || return 0
  [ -n "$ids" ] || return 0
  log "removing $(echo "$ids" | wc -l) pod sandbox(es)"
  # shellcheck disable=SC2086
  crictl stopp $ids >/dev/null 2>&1
  # shellcheck disable=SC2086
  crictl rmp -f $ids >/dev/null 2>&1 || log "crictl rmp failed; containerd's shims are stopped below"
}

if [ -d "$RUN_DIR" ] || [ -d "$STATE" ]; then
  # 1. Pod sandboxes (again after kubelet stops, in case it started one meanwhile).
  remove_sandboxes
  # 2. kubelet and kube-proxy.
  stop kubelet
  stop kube-proxy
  remove_sandboxes
  # 3. The control plane, then etcd.
  stop kube-scheduler
  stop kube-controller-manager
  stop kube-apiserver
  stop etcd
  # 4. containerd, and any shim of ours still running.
  stop containerd
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | has "^/usr/bin/containerd-shim.* -address $CONTAINERD_SOCK"; then
      log "killing leftover shim ${p#/proc/}"
      kill -KILL "${p#/proc/}" 2>/dev/null
    fi
  done
fi

# 5. Unmount what is left (deepest first): pod volumes, the kubelet's root,
# containerd's rootfs and shm mounts, network namespaces of pods.
mapfile -t mounts < <(awk '{print $5}' /proc/self/mountinfo |
  grep -E "^($STATE|$RUN_DIR|/run/containerd|/var/lib/kubelet|/run/netns/cni-)" | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-)
for m in "${mounts[@]}"; do
  umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
done
if [ ${#mounts[@]} -gt 0 ]; then log "unmounted ${#mounts[@]} mount(s)"; fi
for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns delete "$ns" 2>/dev/null; done

# 6. Links: pod veths go with their namespaces; then the two bridges.
for l in $(ip -o link show master "$POD_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
  ip link delete "$l" 2>/dev/null
done
for b in "$POD_BRIDGE" "$NODE_BRIDGE"; do
  if ip link show "$b" >/dev/null 2>&1; then
    log "removing bridge $b"
    ip link delete "$b"
  fi
done

# 7. iptables: kube-proxy's own cleanup, then every KUBE-*, CNI-* and guard
# chain left in any table (IPv4 and IPv6), with the rules that jump to them.
if [ -x "$BIN_DIR/kube-proxy" ] && { iptables-save 2>/dev/null; ip6tables-save 2>/dev/null; } | has '^:KUBE-'; then
  "$BIN_DIR/kube-proxy" --cleanup --v=0 >/dev/null 2>&1 || true
fi
sweep() { # iptables-binary
  local ipt=$1 table chains c rule
  for table in $("$ipt-save" 2>/dev/null | sed -n 's/^\*//p'); do
    chains=$("$ipt-save" -t "$table" | sed -n "s/^:\(KUBE-[^ ]*\|CNI-[^ ]*\|$GUARD_CHAIN\) .*/\1/p")
    [ -n "$chains" ] || continue
    # Rules in the built-in chains that jump to ours.
    "$ipt-save" -t "$table" | grep -E '^-A (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ' |
      grep -E -- "-j (KUBE-|CNI-|$GUARD_CHAIN)" | while read -r rule; do
      eval "$ipt -w 5 -t $table ${rule/-A /-D }" 2>/dev/null
    done
    for c in $chains; do "$ipt" -w 5 -t "$table" -F "$c" 2>/dev/null; done
    for c in $chains; do "$ipt" -w 5 -t "$table" -X "$c" 2>/dev/null; done
  done
}
if command -v iptables-save >/dev/null; then
  before=$({ iptables-save; ip6tables-save; } 2>/dev/null | grep -cE "^:(KUBE-|CNI-|$GUARD_CHAIN)")
  sweep iptables
  sweep ip6tables
  # With the nf_tables backend, a table that did not exist before and is now
  # empty is deleted too (iptables itself cannot delete a table).
  if [ -f "$STATE/iptables-tables" ] && command -v nft >/dev/null && iptables -V 2>/dev/null | has nf_tables; then
    for fam in ip ip6; do
      [ "$fam" = ip ] && ipt=iptables || ipt=ip6tables
      for table in $("$ipt-save" 2>/dev/null | sed -n 's/^\*//p'); do
        grep -qx "$fam $table" "$STATE/iptables-tables" && continue
        "$ipt-save" -t "$table" 2>/dev/null | has -E '^(-A |:[^ ]+ (-|DROP) )' && continue
        nft delete table "$fam" "$table" 2>/dev/null
      done
    done
  fi
  left=$({ iptables-save; ip6tables-save; } 2>/dev/null | grep -cE "^:(KUBE-|CNI-|$GUARD_CHAIN)")
  if [ "$left" -gt 0 ]; then log "could not remove $left iptables chain(s)"; elif [ "$before" -gt 0 ]; then log "removed $before iptables chain(s)"; fi
fi

# 8. Sysctls back to their values before the first start.
if [ -f "$STATE/sysctls" ]; then
  while IFS='=' read -r k v; do
    [ -n "$k" ] || continue
    [ "$(sysctl -n "$k" 2>/dev/null | tr '\t' ' ')" = "$v" ] || sysctl -qw "$k=$v" 2>/dev/null || log "could not restore $k=$v"
  done <"$STATE/sysctls"
  log "sysctls restored"
fi

# 9. The pods' cgroups (kubelet's cgroupfs hierarchy), deepest first.
for top in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
  [ -d "$top" ] || continue
  find "$top" -depth -type d -exec rmdir {} \; 2>/dev/null
  [ ! -d "$top" ] || log "could not remove $top (processes left in it?)"
done

# 10. State, and what kubelet, containerd and libcni created outside it.
if [ -f "$STATE/created-paths" ]; then
  while read -r p; do
    case $p in
    "") ;;
    */netns) rmdir "$p" 2>/dev/null ;; # other tools may keep namespaces there
    *) rm -rf "$p" ;;
    esac
  done <"$STATE/created-paths"
else
  # Without the record, remove only what is known to be the cluster's own.
  rm -rf /var/lib/kubelet/device-plugins
  rmdir /var/lib/kubelet 2>/dev/null
fi
if [ -d "$STATE" ] || [ -d "$RUN_DIR" ] || [ -f "$KUBECONFIG_OUT" ]; then
  rm -rf "$STATE" "$RUN_DIR"
  rm -f "$KUBECONFIG_OUT"
  log "removed $STATE, $RUN_DIR and $KUBECONFIG_OUT"
fi
log "cluster down ($((SECONDS - t0))s)"
