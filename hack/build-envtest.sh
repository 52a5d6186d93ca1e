#!/usr/bin/env bash
# Builds envtest's binaries (kube-apiserver and etcd) from Go modules, because
# setup-envtest cannot download them here. The result is cached outside the
# repository and printed as the directory to use as KUBEBUILDER_ASSETS.
#
#   KUBEBUILDER_ASSETS=$(hack/build-envtest.sh)
#
# kube-apiserver comes from a small wrapper module (hack/k8s-wrapper.sh, shared
# with hack/cluster/build.sh) that requires k8s.io/kubernetes and replaces
# every k8s.io staging module (the "./staging" replace block of kubernetes' own
# go.mod) with its published v0.x release; etcd is go.etcd.io/etcd/server/v3's
# etcdmain at the version kubernetes requires. First build takes about 6
# minutes on 2 cores; a cached rebuild about 1 minute; an existing result is
# reused at once.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-1.37.2}
staging=v0.${K8S_VERSION#1.}
cache=${WORKERPOOL_CACHE:-$HOME/.cache/workerpool-operator}
out=$cache/envtest/k8s-$K8S_VERSION
log() { echo "build-envtest: $*" >&2; }
# shellcheck source-path=SCRIPTDIR
# shellcheck source=k8s-wrapper.sh
. "$(dirname "${BASH_SOURCE[0]}")/k8s-wrapper.sh"

if [ -x "$out/kube-apiserver" ] && [ -x "$out/etcd" ]; then
  echo "$out"
  exit 0
fi

work=$cache/envtest/src-$K8S_VERSION
mkdir -p "$work/cmd/kube-apiserver" "$work/cmd/etcd" "$out"
k8s_wrapper_gomod envtestbuild "$work" "$work/go.mod"

cat >"$work/cmd/kube-apiserver/main.go" <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
GO
cat >"$work/cmd/etcd/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO

cd "$work"
log "resolving modules for kubernetes v$K8S_VERSION (staging $staging), etcd $etcd_version"
GOFLAGS=-mod=mod go mod tidy >&2
# Stamp the version, or clients cannot parse it.
ldflags=$(k8s_version_ldflags)
log "building kube-apiserver (several minutes on a cold cache)"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$out/kube-apiserver.tmp" ./cmd/kube-apiserver
log "building etcd"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" ./cmd/etcd
mv "$out/kube-apiserver.tmp" "$out/kube-apiserver"
mv "$out/etcd.tmp" "$out/etcd"
log "done: $("$out/kube-apiserver" --version 2>&1 | head -n1), etcd $etcd_version"
echo "$out"
