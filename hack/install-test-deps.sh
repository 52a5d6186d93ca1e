#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, if they are missing.
# Idempotent and silent when everything is already present; `make test-deps`
# (and so `make test`) runs it. Installing needs root; otherwise it names the
# missing packages and fails.
set -euo pipefail

# One entry per Debian package: "package" or "package:file". With a file, the
# package counts as present when that file exists (so a server installed some
# other way is accepted too); without one, dpkg is asked. Add new test
# dependencies here.
DEPS=(
  # Server binaries for internal/pgtest's throwaway servers.
  "postgresql-15:/usr/lib/postgresql/15/bin/postgres"
  # go test -race needs cgo, so a C compiler and libc headers.
  "gcc:/usr/bin/gcc"
  "libc6-dev:/usr/include/stdio.h"
  # Ruby bindings (bindings/ruby) and their minitest suite, run from the gem
  # (gem build and gem install come with Debian's ruby).
  "ruby:/usr/bin/ruby"
  "ruby-ffi"
)
# Python 3 for the Python bindings is not installed from Debian when a
# python3 on $PATH can make virtualenvs with pip (the suite runs from the
# wheel installed into one); otherwise Debian's python3 with its venv module.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  DEPS+=("python3:/usr/bin/python3" "python3-venv")
fi

present() {
  local pkg=${1%%:*} file=
  [[ $1 == *:* ]] && file=${1#*:}
  if [[ -n $file ]]; then
    [[ -e $file ]]
  else
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'
  fi
}

missing=()
for dep in "${DEPS[@]}"; do
  present "$dep" || missing+=("${dep%%:*}")
done

if ((${#missing[@]} > 0)); then
  if ((EUID != 0)); then
    echo "install-test-deps: missing Debian packages: ${missing[*]}" >&2
    echo "install-test-deps: install them as root: apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "install-test-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null

  # Debian's postgresql package creates and starts a "main" cluster on port
  # 5432. The tests start their own servers on free ports, so stop it.
  if [[ " ${missing[*]} " == *" postgresql-15 "* ]] && command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
  fi

  for dep in "${DEPS[@]}"; do
    present "$dep" || { echo "install-test-deps: still missing after apt-get install: $dep" >&2; exit 1; }
  done
fi

# As root, internal/pgtest runs the server as the "postgres" user (PostgreSQL
# refuses to run as root). The Debian package creates it; make sure it exists
# when the binaries came from elsewhere.
if ((EUID == 0)) && ! id -u postgres >/dev/null 2>&1; then
  echo "install-test-deps: creating system user postgres"
  useradd --system --user-group --no-create-home --home-dir /var/lib/postgresql \
    --shell /bin/bash --comment "PostgreSQL administrator" postgres
fi
