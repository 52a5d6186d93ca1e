#!/usr/bin/env bash
# Builds the packages foreign handlers install, each with libtaskerworker.so
# inside, so that neither needs $TASKERWORKER_LIB nor this repository:
#
#   bin/packages/taskerworker-<pep440>-py3-none-manylinux_2_N_x86_64.whl   (bindings/python)
#   bin/packages/taskerworker-<gem version>-x86_64-linux.gem               (bindings/ruby)
#
# Their versions come from VERSION (hack/packages/version.sh). The library is
# built stripped (-s -w) for the packages unless LIB names one. What
# `make packages` runs; installing them needs no network:
#   pip install --no-index bin/packages/taskerworker-*.whl
#   gem install --local bin/packages/taskerworker-*.gem      (ffi: Debian's ruby-ffi, or any ffi gem)
#
#   VERSION=v0.1.0 OUT=bin/packages [LIB=bin/libtaskerworker.so] hack/packages/build.sh [python|ruby]...
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
VERSION=${VERSION:-dev}
out=${OUT:-$root/bin/packages}
GO=${GO:-go}
want=("$@")
[ ${#want[@]} -gt 0 ] || want=(python ruby)
log() { echo "packages: $*" >&2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
lib=${LIB:-}
if [ -z "$lib" ]; then
  lib=$tmp/libtaskerworker.so
  log "building libtaskerworker.so (stripped)"
  $GO build -buildmode=c-shared -trimpath \
    -ldflags "-s -w -X github.com/seed-a17b38e7/workerpool-operator/pkg/taskerworker.Version=$VERSION" \
    -o "$lib" ./cmd/libtaskerworker
fi
[ -s "$lib" ] || { log "$lib: no such library"; exit 1; }
mkdir -p "$out"

for w in "${want[@]}"; do
  case $w in
  python)
    v=$(bash hack/packages/version.sh python "$VERSION")
    rm -f "$out"/taskerworker-*.whl
    python3 hack/packages/build_wheel.py --version "$v" --lib "$lib" --out "$out"
    ;;
  ruby)
    v=$(bash hack/packages/version.sh ruby "$VERSION")
    rm -f "$out"/taskerworker-*.gem
    stage=$tmp/gem
    mkdir -p "$stage"
    cp -R bindings/ruby/lib bindings/ruby/exe bindings/ruby/README.md bindings/ruby/taskerworker.gemspec LICENSE "$stage/"
    install -m 0755 "$lib" "$stage/lib/libtaskerworker.so"
    sed -i "s/^  VERSION = \".*\"\$/  VERSION = \"$v\"/" "$stage/lib/taskerworker/version.rb"
    grep -q "VERSION = \"$v\"" "$stage/lib/taskerworker/version.rb" || { log "could not set the version in version.rb"; exit 1; }
    # gem build stamps files with SOURCE_DATE_EPOCH: the same sources give the same gem.
    (cd "$stage" && SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800} gem build --silent taskerworker.gemspec >&2)
    gem=$(ls "$stage"/taskerworker-*.gem)
    mv "$gem" "$out/"
    echo "$out/$(basename "$gem")"
    ;;
  *) log "unknown package $w (want python or ruby)"; exit 2 ;;
  esac
done
