#!/usr/bin/env bash
# Builds the project's container images without Docker, as image tarballs that
# `ctr images import` (hack/cluster/import.sh) and `docker load` read:
#
#   bin/images/workerpool-operator.tar   workerpool-operator:$VERSION and :dev   (/manager)
#   bin/images/tasker-worker.tar         tasker-worker:$VERSION and :dev         (/tasker-worker run)
#   bin/images/pause.tar                 localhost/pause:$VERSION and :dev       (containerd's sandbox_image)
#   bin/images/tasker-python-worker.tar  tasker-python-worker:$VERSION and :dev  (python3 -m taskerworker run)
#   bin/images/tasker-ruby-worker.tar    tasker-ruby-worker:$VERSION and :dev    (taskerworker run)
#
# The first three are one layer each: a static (CGO_ENABLED=0) binary plus the
# few files of a distroless "static" base (/etc/passwd and /etc/group with
# nonroot 65532, CA certificates, /tmp), platform linux/amd64, user
# 65532:65532.
#
# The foreign-handler images are two layers. The first is a Debian root
# filesystem with python3, or ruby and ruby-ffi, and what they depend on and
# nothing else: mmdebstrap extracts the packages (no shell, no package
# manager), docs and locales are dropped, the standard library is
# byte-compiled, and /var/lib/dpkg/status.d lists the packages for image
# scanners. It is cached in ~/.cache/workerpool-operator/images (rebuilt when
# its package list or recipe changes), so only the first build downloads from
# Debian. The second holds the package from bin/packages (make packages),
# installed as a user would (pip install --target / gem install, each run with
# the image's own interpreter where it matters), and an empty /app/handlers
# for a team's handler files. Building them needs root (mmdebstrap, chroot).
#
# crane appends the layers to an empty base, pushes the result to an in-memory
# registry on loopback, sets platform, entrypoint, environment and user, and
# writes the tarball.
#
#   VERSION=v0.1.0 hack/cluster/images.sh [operator|worker|pause|python|ruby]...
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
[ ${#want[@]} -gt 0 ] || want=(operator worker pause python ruby)
packages=${PACKAGES_DIR:-$root/bin/packages}
cache=${WORKERPOOL_CACHE:-$HOME/.cache/workerpool-operator}/images

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

# publish NAME FILE LAYER... -- [crane mutate flags...]: the image NAME from
# the layer tarballs, written to $out/FILE.tar tagged $tag and dev.
publish() {
  local name=$1 file=$2
  shift 2
  local layers=()
  while [ "$1" != -- ]; do
    layers+=(-f "$1")
    shift
  done
  shift
  crane append --oci-empty-base "${layers[@]}" -t "$reg/$file:base" >/dev/null 2>"$tmp/crane.log" ||
    { cat "$tmp/crane.log" >&2; exit 1; }
  local ref=$name:$tag
  crane mutate "$reg/$file:base" --set-platform linux/amd64 --user 65532:65532 \
    -l org.opencontainers.image.version="$VERSION" \
    -l org.opencontainers.image.source=https://github.com/seed-a17b38e7/workerpool-operator \
    "$@" -t "$ref" -o "$tmp/$file.tar" >/dev/null 2>"$tmp/crane.log" || { cat "$tmp/crane.log" >&2; exit 1; }
  # crane writes one tag; add :dev beside $VERSION in the archive's manifest.
  if [ "$tag" != dev ]; then
    mkdir "$tmp/$file-archive"
    tar -C "$tmp/$file-archive" -xf "$tmp/$file.tar"
    sed -i "s#\"RepoTags\":\[\"$ref\"\]#\"RepoTags\":[\"$ref\",\"$name:dev\"]#" "$tmp/$file-archive/manifest.json"
    grep -q "\"$name:dev\"" "$tmp/$file-archive/manifest.json" || { log "could not add $name:dev to $file.tar"; exit 1; }
    (cd "$tmp/$file-archive" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$tmp/$file.tar" -- *)
  fi
  mv "$tmp/$file.tar" "$out/$file.tar"
  echo "$ref ($name:dev) -> ${out#"$root"/}/$file.tar"
}

# users ROOTFS: /etc/passwd and /etc/group with root and nonroot (65532, the
# user every image runs as), nonroot's home, a world-writable /tmp and the CA
# certificates of this machine.
users() {
  local rootfs=$1
  mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  if [ -r /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  fi
  chmod 1777 "$rootfs/tmp"
}

# layer ROOTFS TARBALL [PATH...]: one reproducible layer of ROOTFS (or of the
# PATHs in it): fixed owners and times, sorted names; home/nonroot, when
# present, belongs to nonroot.
layer() {
  local rootfs=$1 tarball=$2
  shift 2
  local paths=("$@")
  [ ${#paths[@]} -gt 0 ] || paths=(.)
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --exclude=./home/nonroot \
    -C "$rootfs" -cf "$tarball" "${paths[@]}"
  if [ -d "$rootfs/home/nonroot" ] && [ "${paths[*]}" = . ]; then
    tar --sort=name --mtime=@0 --owner=65532 --group=65532 --numeric-owner -C "$rootfs" -rf "$tarball" ./home/nonroot
  fi
}

# static_image NAME BINARY PACKAGE [crane mutate flags...]
static_image() {
  local name=$1 bin=$2 pkg=$3
  shift 3
  local rootfs=$tmp/$bin-rootfs
  mkdir -p "$rootfs"
  log "building $pkg (static)"
  CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $GO build -trimpath -ldflags "$ldflags" -o "$rootfs/$bin" "$pkg"
  chmod 0755 "$rootfs/$bin"
  users "$rootfs"
  layer "$rootfs" "$tmp/$bin-layer.tar"
  publish "$name" "$(basename "$name")" "$tmp/$bin-layer.tar" -- --workdir / "$@"
}

# The Debian release and archives of the foreign-handler images' base, and
# the recipe's version: changing any of them rebuilds the cached bases.
debian_suite=bookworm
debian_sources=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)
base_recipe=1
# What an image does not need: documentation, translations, the package
# manager that came in as a dependency (the package lists in status.d stay).
base_trim=(
  usr/share/doc usr/share/man usr/share/info usr/share/locale usr/share/lintian usr/share/bug usr/share/pixmaps
  usr/share/polkit-1 usr/share/menu usr/share/dpkg usr/lib/x86_64-linux-gnu/gconv var/cache/apt var/lib/apt
  var/log etc/cron.daily etc/logrotate.d etc/dpkg etc/apt usr/bin/dpkg usr/bin/dpkg-deb usr/bin/dpkg-divert
  usr/bin/dpkg-maintscript-helper usr/bin/dpkg-query usr/bin/dpkg-realpath usr/bin/dpkg-split
  usr/bin/dpkg-statoverride usr/bin/dpkg-trigger usr/bin/update-alternatives usr/sbin/start-stop-daemon
)
# Writes a distroless-style /var/lib/dpkg/status.d entry per extracted package
# (mmdebstrap's extract variant keeps no dpkg database), so that image
# scanners can tell what is inside.
status_hook='mkdir -p "$1/var/lib/dpkg/status.d" && for d in "$1"/var/cache/apt/archives/*.deb; do
  p=$(dpkg-deb -f "$d" Package) && { dpkg-deb -f "$d" Package Version Architecture Source Maintainer;
  echo "Status: install ok installed"; } >"$1/var/lib/dpkg/status.d/$p"; done'

# debian_base NAME FINISH PACKAGE...: a root filesystem of the Debian
# packages and their dependencies, trimmed, made ready by the function FINISH
# (run with the root filesystem's path), with users; cached as
# $cache/NAME-KEY/{rootfs,layer.tar}, KEY hashing everything that shapes it.
# Sets base to that directory.
debian_base() {
  local name=$1 finish=$2
  shift 2
  local key
  key=$(printf '%s\n' "$base_recipe" "$debian_suite" "${debian_sources[@]}" "$@" "${base_trim[@]}" "$(declare -f "$finish")" |
    sha256sum | cut -c1-16)
  base=$cache/$name-$key
  if [ -s "$base/layer.tar" ]; then
    log "$name: Debian base from the cache (${base#"$HOME"/})"
    return
  fi
  [ "$(id -u)" = 0 ] || { log "the $name image needs root (mmdebstrap, chroot)"; exit 1; }
  if ! command -v mmdebstrap >/dev/null; then
    log "installing mmdebstrap from Debian"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >&2
  fi
  log "$name: building the Debian $debian_suite base ($*) with mmdebstrap; cached afterwards"
  rm -rf "$base.tmp"
  mkdir -p "$base.tmp"
  local packages_csv
  packages_csv=$(IFS=,; echo "$*")
  mmdebstrap --quiet --variant=extract --include="$packages_csv" --format=directory \
    --extract-hook="$status_hook" "$debian_suite" "$base.tmp/rootfs" "${debian_sources[@]}" >&2
  local rootfs=$base.tmp/rootfs
  (cd "$rootfs" && rm -rf "${base_trim[@]}")
  ldconfig -r "$rootfs"
  users "$rootfs"
  "$finish" "$rootfs"
  layer "$rootfs" "$base.tmp/layer.tar"
  # Older bases of this name go: the cache keeps one.
  local old
  for old in "$cache/$name"-*; do
    [ "$old" = "$base.tmp" ] || rm -rf "$old"
  done
  mv "$base.tmp" "$base"
}

# Debian installs byte-compile the standard library (py3compile); a read-only
# root filesystem could not keep what each start would compile again.
python_finish() {
  chroot "$1" /usr/bin/python3 -m compileall -q -j1 "/usr/lib/python3.$(python_minor "$1")" >/dev/null
}

# python_minor ROOTFS: the minor version of the image's python3.
python_minor() {
  chroot "$1" /usr/bin/python3 -c 'import sys; print(sys.version_info[1])'
}

ruby_finish() { :; }

# one FILE_PATTERN: the one file matching it (a package from make packages).
one() {
  local m=()
  mapfile -t m < <(compgen -G "$1" || true)
  [ ${#m[@]} = 1 ] || { log "want one $1 (run make packages), found ${#m[@]}"; exit 1; }
  echo "${m[0]}"
}

# A pip for installing the wheel into the image, in a virtualenv of this
# machine's python3 (the image has no pip).
pip_venv() {
  if [ ! -x "$cache/pip-venv/bin/pip" ]; then
    rm -rf "$cache/pip-venv"
    python3 -m venv "$cache/pip-venv" >&2
  fi
  echo "$cache/pip-venv/bin/pip"
}

python_image() {
  local wheel
  wheel=$(one "$packages/taskerworker-*.whl")
  debian_base tasker-python-worker python_finish python3
  local rootfs=$tmp/python-rootfs
  cp -a "$base/rootfs" "$rootfs"
  local site
  site=/usr/local/lib/python3.$(python_minor "$rootfs")/dist-packages
  log "tasker-python-worker: installing $(basename "$wheel")"
  "$(pip_venv)" install --quiet --no-index --no-deps --no-compile --disable-pip-version-check \
    --target "$rootfs$site" "$wheel" >&2
  # pip writes console scripts for this machine's python; the image runs
  # python3 -m taskerworker.
  rm -rf "$rootfs$site/bin"
  chroot "$rootfs" /usr/bin/python3 -m compileall -q -j1 "$site/taskerworker" >/dev/null
  mkdir -p "$rootfs/app/handlers"
  # The package loads its own library inside the image.
  chroot "$rootfs" /usr/bin/python3 -m taskerworker info >&2
  layer "$rootfs" "$tmp/python-app.tar" ./usr/local ./app
  publish tasker-python-worker tasker-python-worker "$base/layer.tar" "$tmp/python-app.tar" -- \
    --workdir /app --entrypoint python3,-m,taskerworker --cmd run --exposed-ports 9090/tcp \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1
}

ruby_image() {
  local gem
  gem=$(one "$packages/taskerworker-*.gem")
  debian_base tasker-ruby-worker ruby_finish ruby ruby-ffi
  local rootfs=$tmp/ruby-rootfs
  cp -a "$base/rootfs" "$rootfs"
  log "tasker-ruby-worker: installing $(basename "$gem")"
  cp "$gem" "$rootfs/tmp/"
  mkdir -p "$rootfs/usr/local/bin"
  local gems
  gems=$(chroot "$rootfs" /usr/bin/ruby -e 'print Gem.default_dir')
  # The image's own gem installs it (ffi is Debian's ruby-ffi), so the
  # executable's #! line names the image's ruby.
  HOME=/tmp chroot "$rootfs" /usr/bin/ruby /usr/bin/gem install --local --no-document \
    --bindir /usr/local/bin "/tmp/$(basename "$gem")" >&2
  rm -f "$rootfs/tmp/$(basename "$gem")" "$rootfs$gems"/cache/*.gem # the installed copy only `gem pristine` reads
  mkdir -p "$rootfs/app/handlers"
  HOME=/tmp chroot "$rootfs" /usr/local/bin/taskerworker info >&2
  layer "$rootfs" "$tmp/ruby-app.tar" ".$gems" ./usr/local ./app
  publish tasker-ruby-worker tasker-ruby-worker "$base/layer.tar" "$tmp/ruby-app.tar" -- \
    --workdir /app --entrypoint taskerworker --cmd run --exposed-ports 9090/tcp \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env HOME=/home/nonroot
}

for w in "${want[@]}"; do
  case $w in
  operator) static_image workerpool-operator manager ./cmd/manager --entrypoint /manager --exposed-ports 8081/tcp,8443/tcp ;;
  worker) static_image tasker-worker tasker-worker ./cmd/tasker-worker --entrypoint /tasker-worker --cmd run --exposed-ports 9090/tcp ;;
  pause) static_image localhost/pause pause ./hack/cluster/pause --entrypoint /pause ;;
  python) python_image ;;
  ruby) ruby_image ;;
  *) log "unknown image $w (want operator, worker, pause, python or ruby)"; exit 2 ;;
  esac
done
