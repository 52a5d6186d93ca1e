#!/usr/bin/env bash
# Imports image tarballs (from `make images`, crane or `docker save`) into the
# local cluster's containerd, in the k8s.io namespace the kubelet uses. Pods
# then run them with imagePullPolicy: Never or IfNotPresent (nothing can be
# pulled here).
#
#   hack/cluster/import.sh bin/images/*.tar
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
need_root
[ $# -gt 0 ] || die "usage: $0 IMAGE.tar..."
pid_of containerd >/dev/null || die "containerd is not running: start the cluster first (hack/cluster/up.sh)"
for t in "$@"; do
  [ -s "$t" ] || die "$t: no such image tarball (run make images)"
  log "importing $t"
  ctr -n k8s.io images import --snapshotter overlayfs "$t" >&2
done
log "images in the cluster:"
ctr -n k8s.io images ls -q 2>/dev/null | grep -v "^sha256:" | sed "s/^/  /" >&2
