# The Go wrapper module that builds Kubernetes components from Go modules,
# shared by hack/build-envtest.sh and hack/cluster/build.sh. Sourced, not run;
# the caller sets K8S_VERSION and defines log().
#
# The wrapper requires k8s.io/kubernetes and replaces every k8s.io staging
# module (the "./staging" replace block of kubernetes' own go.mod) with its
# published v0.x release; it also requires go.etcd.io/etcd/server/v3 at the
# version kubernetes requires, for etcd's etcdmain.
# shellcheck shell=bash

# k8s_wrapper_gomod MODULE WORKDIR FILE writes to FILE the wrapper's go.mod,
# naming the module MODULE, after fetching k8s.io/kubernetes@v$K8S_VERSION's
# go.mod from WORKDIR. Sets etcd_version to the etcd version it requires.
# Exits the script if kubernetes' go.mod cannot be fetched.
k8s_wrapper_gomod() {
  local module=$1 work=$2 file=$3 staging=v0.${K8S_VERSION#1.} kmod
  kmod=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  [ -s "$kmod" ] || { log "could not fetch k8s.io/kubernetes@v$K8S_VERSION's go.mod"; exit 1; }
  etcd_version=$(sed -n 's#^[[:space:]]*go.etcd.io/etcd/server/v3 \(v[^ ]*\).*#\1#p' "$kmod" | head -n1)

  {
    echo "module $module"
    echo
    echo "go $(sed -n 's/^go //p' "$kmod")"
    echo
    echo "require ("
    echo "	k8s.io/kubernetes v$K8S_VERSION"
    echo "	go.etcd.io/etcd/server/v3 $etcd_version"
    echo ")"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 '"$staging"'#p' "$kmod"
    echo ")"
  } >"$file"
}

# k8s_version_ldflags prints the -X flags that stamp v$K8S_VERSION (and the
# build time) into the binaries, or clients cannot parse their version.
k8s_version_ldflags() {
  local now minor pkg ldflags=""
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$now"
  done
  echo "$ldflags"
}
