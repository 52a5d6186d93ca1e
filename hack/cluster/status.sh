#!/usr/bin/env bash
# Shows whether the local cluster runs: each daemon with its PID and memory
# (RSS), the containerd shims of its pods, the node and the kubeconfig.
# Exits 0 when every daemon runs, 1 otherwise.
#
#   hack/cluster/status.sh
set -uo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
up=0 total=0
printf '%-24s %8s %10s\n' DAEMON PID RSS
for d in "${DAEMONS[@]}"; do
  if pid=$(pid_of "$d"); then
    r=$(rss_kib "$pid")
    total=$((total + r))
    up=$((up + 1))
    printf '%-24s %8s %7d MiB\n' "$d" "$pid" $((r / 1024))
  else
    printf '%-24s %8s %10s\n' "$d" - stopped
  fi
done
shims=0 shim_rss=0
for p in /proc/[0-9]*; do
  if tr '\0' ' ' 2>/dev/null <"$p/cmdline" | has "^/usr/bin/containerd-shim.* -address $CONTAINERD_SOCK"; then
    shims=$((shims + 1))
    shim_rss=$((shim_rss + $(rss_kib "${p#/proc/}")))
  fi
done
printf '%-24s %8s %7d MiB\n' "daemons in all" "" $((total / 1024))
printf '%-24s %8s %7d MiB\n' "pod shims ($shims)" "" $((shim_rss / 1024))
if [ "$up" -eq ${#DAEMONS[@]} ]; then
  echo
  kubectl_admin get nodes -o wide 2>&1
  echo
  echo "export KUBECONFIG=$KUBECONFIG_OUT"
  exit 0
fi
echo
if [ "$up" -eq 0 ]; then echo "the cluster is down"; else echo "the cluster is partly running: hack/cluster/up.sh restarts what is missing, hack/cluster/down.sh stops it"; fi
exit 1
