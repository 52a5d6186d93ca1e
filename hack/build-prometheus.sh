#!/usr/bin/env bash
# Builds promtool and the prometheus server at the release pinned in
# hack/tools/go.mod (github.com/prometheus/prometheus), from Go modules like
# the rest of the toolchain, into a cache outside the repository keyed by that
# version, and prints the directory holding them:
#
#   bin=$(hack/build-prometheus.sh)            # both
#   bin=$(hack/build-prometheus.sh promtool)   # only promtool (the rule tests)
#
# A binary already in the cache is reused at once. The server is the large
# build (its service discoveries, TSDB and web API); promtool shares most of
# it, so building both costs little more than the server alone. Only the
# server's HTTP API is needed here: its web UI assets are not embedded.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
GO=${GO:-go}
modfile=$root/hack/tools/go.mod
module=github.com/prometheus/prometheus
log() { echo "build-prometheus: $*" >&2; }

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(promtool prometheus)
for n in "${names[@]}"; do
  case $n in
  promtool | prometheus) ;;
  *) log "unknown binary $n (promtool or prometheus)"; exit 2 ;;
  esac
done

modversion=$($GO list -modfile="$modfile" -m -f '{{.Version}}' "$module")
out=${WORKERPOOL_CACHE:-$HOME/.cache/workerpool-operator}/prometheus/$modversion

missing=()
for n in "${names[@]}"; do
  [ -x "$out/$n" ] || missing+=("$n")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "$out"
  exit 0
fi

# The Go module v0.3MM.P is Prometheus release 3.MM.P; stamp that, so
# `promtool --version` and the server's /api/v1/status/buildinfo say it.
mp=${modversion#v0.}
release="${mp:0:1}.$((10#${mp:1:2})).${mp#*.}"
pkg=github.com/prometheus/common/version
ldflags="-s -w -X $pkg.Version=$release -X $pkg.Revision=$modversion -X $pkg.Branch=module -X $pkg.BuildUser=workerpool-operator"

mkdir -p "$out"
for n in "${missing[@]}"; do
  log "building $n $release ($module $modversion; the first build takes minutes)"
  start=$(date +%s)
  CGO_ENABLED=0 $GO build -modfile="$modfile" -trimpath -ldflags "$ldflags" -o "$out/$n.tmp" "$module/cmd/$n"
  mv "$out/$n.tmp" "$out/$n"
  log "built $n in $(($(date +%s) - start))s"
done
echo "$out"
