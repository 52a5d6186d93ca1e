#!/usr/bin/env bash
# Builds the project's container images without Docker, as image tarballs that
# `ctr images import` (hack/cluster/import.sh) and `docker load` read:
#
#   bin/images/workerpool-operator.tar  workerpool-operator:$VERSION and :dev  (/manager)
#   bin/images/tasker-worker.tar        tasker-worker:$VERSION and :dev        (/tasker-worker run)
#   bin/images/pause.tar                localhost/pause:$VERSION and :dev      (containerd's sandbox_image)
#
# Each is one layer: a static (CGO_ENABLED=0) binary plus the few files of a
# distroless "static" base (/etc/passwd and /etc/group with nonroot 65532,
# CA certificates, /tmp), platform linux/amd64, user 65532:65532. crane
# appends the layer to an empty base, pushes it to an in-memory registry on
# loopback, sets platform, entrypoint and user, and writes the tarball.
#
#   VERSION=v0.1.0 hack/cluster/images.sh [operator|worker|pause]...
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
VERSION=${VERSION:-dev}
# An image tag allows [A-Za-z0-9_.-], at most 128 characters.
tag=$(printf '%s' "$VERSION" | tr -c 'A-Za-z0-9_.-' '-' | cut -c1-128)
out=${IMAGES_DIR:-$root/bin/images}
GO=${GO:-go}
log() { echo "images: $*" >&2; }
module=github.com/seed-a17b38e7/workerpool-operator
ldflags="-s -w -X $module/pkg/taskerworker.Version=$VERSION"
want=("$@")
[ ${#want[@]} -gt 0 ] || want=(operator worker pause)

mkdir -p "$out"
tmp=$(mktemp -d)
registry_pid=
cleanup() {
  [ -z "$registry_pid" ] || kill "$registry_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# crane from hack/cluster/tools, built once here so the registry starts at once.
$GO build -modfile="$root/hack/cluster/tools/go.mod" -o "$tmp/crane" github.com/google/go-containerregistry/cmd/crane
crane() { "$tmp/crane" "$@"; }
"$tmp/crane" registry serve --address 127.0.0.1:0 2>"$tmp/registry.log" &
registry_pid=$!
port=
for _ in $(seq 100); do
  port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$tmp/registry.log")
  [ -n "$port" ] && break
  kill -0 "$registry_pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$port" ] || { log "crane registry did not start:"; cat "$tmp/registry.log" >&2; exit 1; }
reg=127.0.0.1:$port
log "in-memory registry on $reg"

# image NAME BINARY PACKAGE [crane mutate flags...]
image() {
  local name=$1 bin=$2 pkg=$3
  shift 3
  local rootfs=$tmp/$bin-rootfs
  mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$tmp/$bin-home/home/nonroot"
  log "building $pkg (static)"
  CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $GO build -trimpath -ldflags "$ldflags" -o "$rootfs/$bin" "$pkg"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  fi
  chmod 0755 "$rootfs/$bin"
  chmod 1777 "$rootfs/tmp"
  # One reproducible layer: fixed owners and times, sorted names; the home
  # directory belongs to nonroot.
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$rootfs" -cf "$tmp/$bin-layer.tar" .
  tar --sort=name --mtime=@0 --owner=65532 --group=65532 --numeric-owner -C "$tmp/$bin-home" -rf "$tmp/$bin-layer.tar" home/nonroot
  crane append --oci-empty-base -f "$tmp/$bin-layer.tar" -t "$reg/$bin:base" >/dev/null 2>"$tmp/crane.log" ||
    { cat "$tmp/crane.log" >&2; exit 1; }
  local ref=$name:$tag
  crane mutate "$reg/$bin:base" --set-platform linux/amd64 --user 65532:65532 --workdir / \
    -l org.opencontainers.image.version="$VERSION" \
    -l org.opencontainers.image.source=https://github.com/seed-a17b38e7/workerpool-operator \
    "$@" -t "$ref" -o "$tmp/$bin.tar" >/dev/null 2>"$tmp/crane.log" || { cat "$tmp/crane.log" >&2; exit 1; }
  # crane writes one tag; add :dev beside $VERSION in the archive's manifest.
  if [ "$tag" != dev ]; then
    mkdir "$tmp/$bin-archive"
    tar -C "$tmp/$bin-archive" -xf "$tmp/$bin.tar"
    sed -i "s#\"RepoTags\":\[\"$ref\"\]#\"RepoTags\":[\"$ref\",\"$name:dev\"]#" "$tmp/$bin-archive/manifest.json"
    grep -q "\"$name:dev\"" "$tmp/$bin-archive/manifest.json" || { log "could not add $name:dev to $bin.tar"; exit 1; }
    (cd "$tmp/$bin-archive" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$tmp/$bin.tar" -- *)
  fi
  mv "$tmp/$bin.tar" "$out/$(basename "$name").tar"
  echo "$ref ($name:dev) -> ${out#"$root"/}/$(basename "$name").tar"
}

for w in "${want[@]}"; do
  case $w in
  operator) image workerpool-operator manager ./cmd/manager --entrypoint /manager --exposed-ports 8081/tcp,8443/tcp ;;
  worker) image tasker-worker tasker-worker ./cmd/tasker-worker --entrypoint /tasker-worker --cmd run --exposed-ports 9090/tcp ;;
  pause) image localhost/pause pause ./hack/cluster/pause --entrypoint /pause ;;
  *) log "unknown image $w (want operator, worker or pause)"; exit 2 ;;
  esac
done
