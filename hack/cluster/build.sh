#!/usr/bin/env bash
# Builds the binaries of a real single-node cluster from Go modules (nothing
# can be downloaded here): kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, a matching kubectl, and etcd. The
# result is cached outside the repository and its directory printed on stdout:
#
#   bin=$(hack/cluster/build.sh)
#
# Same approach as hack/build-envtest.sh: the small wrapper module of
# hack/k8s-wrapper.sh requires k8s.io/kubernetes and replaces every k8s.io
# staging module with its published v0.x release; one tiny main per component.
# The version is stamped at link time, or kubectl cannot parse it. The same
# build flags as envtest's build, so a warm Go build cache (for example after
# `make envtest`) is reused.
# Cold: 7 to 12 minutes on 2 cores (kube-controller-manager and kube-apiserver
# take most of it); an existing result is reused at once.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-1.37.2}
staging=v0.${K8S_VERSION#1.}
cache=${WORKERPOOL_CACHE:-$HOME/.cache/workerpool-operator}
out=$cache/cluster/k8s-$K8S_VERSION
work=$cache/cluster/src-$K8S_VERSION
components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd)
log() { echo "cluster-build: $*" >&2; }
# shellcheck source-path=SCRIPTDIR
# shellcheck source=../k8s-wrapper.sh
. "$(dirname "${BASH_SOURCE[0]}")/../k8s-wrapper.sh"

missing=()
for c in "${components[@]}"; do [ -x "$out/$c" ] || missing+=("$c"); done
if [ ${#missing[@]} -eq 0 ]; then
  echo "$out"
  exit 0
fi
log "building ${missing[*]} into $out"
start=$SECONDS

mkdir -p "$work" "$out"
k8s_wrapper_gomod clusterbuild "$work" "$work/go.mod.new"
# Keep go.sum and the resolved go.mod when the inputs did not change.
if ! cmp -s "$work/go.mod.new" "$work/go.mod.in" 2>/dev/null; then
  cp "$work/go.mod.new" "$work/go.mod"
  cp "$work/go.mod.new" "$work/go.mod.in"
  rm -f "$work/go.sum"
fi
rm -f "$work/go.mod.new"

# One tiny main per component, as in kubernetes' own cmd/<component>.
k8s_main() { # dir import-path constructor [extra imports]
  mkdir -p "$work/cmd/$1"
  cat >"$work/cmd/$1/main.go" <<GO
package main

import (
	"context"
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"$2"
)

var _ = context.Background

func main() { os.Exit(cli.Run(app.$3)) }
GO
}
k8s_main kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver/app 'NewAPIServerCommand()'
k8s_main kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager/app 'NewControllerManagerCommand()'
k8s_main kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler/app 'NewSchedulerCommand()'
k8s_main kubelet k8s.io/kubernetes/cmd/kubelet/app 'NewKubeletCommand(context.Background())'
k8s_main kube-proxy k8s.io/kubernetes/cmd/kube-proxy/app 'NewProxyCommand()'
mkdir -p "$work/cmd/kubectl" "$work/cmd/etcd"
cat >"$work/cmd/kubectl/main.go" <<'GO'
package main

import (
	"os"

	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	logs.GlogSetter(cmd.GetLogVerbosity(os.Args)) // nolint:errcheck
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}
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
if [ ! -s go.sum ]; then
  log "resolving modules for kubernetes v$K8S_VERSION (staging $staging), etcd $etcd_version"
  GOFLAGS=-mod=mod go mod tidy >&2
fi

# Stamp the version, or clients cannot parse it.
ldflags=$(k8s_version_ldflags)
i=0
for c in "${missing[@]}"; do
  i=$((i + 1))
  t=$SECONDS
  log "[$i/${#missing[@]}] building $c ..."
  if [ "$c" = etcd ]; then flags="-s -w"; else flags="-s -w $ldflags"; fi
  CGO_ENABLED=0 go build -trimpath -ldflags "$flags" -o "$out/$c.tmp" "./cmd/$c"
  mv "$out/$c.tmp" "$out/$c"
  log "[$i/${#missing[@]}] $c done in $((SECONDS - t))s"
done
log "done in $((SECONDS - start))s: $("$out/kube-apiserver" --version 2>&1 | head -n1), etcd $etcd_version"
echo "$out"
