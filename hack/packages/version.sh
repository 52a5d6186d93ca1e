#!/usr/bin/env bash
# Prints the version of the Python wheel (PEP 440) or of the Ruby gem
# (RubyGems) for the project's VERSION, which the Makefile takes from
# `git describe --tags --always --dirty`:
#
#   hack/packages/version.sh python|ruby [VERSION]      # VERSION defaults to $VERSION
#
#   VERSION                   python                     ruby
#   v0.2.0                    0.2.0                      0.2.0
#   v0.2.0-5-gabc1234         0.2.1.dev5+gabc1234        0.2.1.pre.5.gabc1234
#   abc1234 (no tag yet)      0.1.0.devN+gabc1234        0.1.0.pre.N.gabc1234
#   ...-dirty                 local label .dirty         .dirty appended
#   anything else (dev)       0.1.0.dev0+dev             0.1.0.pre.0.dev
#
# A build after a tag is a pre-release of the next patch version, so it sorts
# after the tag and before the next release (as setuptools-scm does). Before
# the first tag, the base is the chart's appVersion (the operator's version)
# and N is the number of commits, so later builds sort after earlier ones.
set -euo pipefail
flavour=${1:?usage: $0 python|ruby [VERSION]}
version=${2:-${VERSION:-}}
root=$(cd "$(dirname "$0")/../.." && pwd)

dirty=
if [[ $version == *-dirty ]]; then
  dirty=1
  version=${version%-dirty}
fi
base= commits= sha= other=
if [[ $version =~ ^v?([0-9]+)\.([0-9]+)\.([0-9]+)$ ]]; then
  base=$version
  base=${base#v}
elif [[ $version =~ ^v?([0-9]+)\.([0-9]+)\.([0-9]+)-([0-9]+)-g([0-9a-f]+)$ ]]; then
  base=${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.$((BASH_REMATCH[3] + 1))
  commits=${BASH_REMATCH[4]} sha=${BASH_REMATCH[5]}
else
  base=$(sed -n 's/^appVersion: *"\{0,1\}\([0-9][0-9.]*\)"\{0,1\}.*/\1/p' "$root/charts/workerpool-operator/Chart.yaml")
  [ -n "$base" ] || { echo "$0: no appVersion in charts/workerpool-operator/Chart.yaml" >&2; exit 1; }
  if [[ $version =~ ^[0-9a-f]{7,40}$ ]]; then
    sha=$version
    commits=$(git -C "$root" rev-list --count HEAD 2>/dev/null || echo 0)
  else
    commits=0
    # Only lower-case letters, digits and dots are valid in both schemes.
    other=$(printf '%s' "${version:-dev}" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9.' '.' | sed 's/\.\.*/./g; s/^\.//; s/\.$//')
  fi
fi

case $flavour in
python)
  out=$base
  [ -z "$commits" ] || out+=.dev$commits
  local_label=
  [ -z "$sha" ] || local_label=g$sha
  [ -z "$other" ] || local_label=$other
  [ -z "$dirty" ] || local_label=${local_label:+$local_label.}dirty
  [ -z "$local_label" ] || out+=+$local_label
  ;;
ruby)
  out=$base
  [ -z "$commits" ] || out+=.pre.$commits
  [ -z "$sha" ] || out+=.g$sha
  [ -z "$other" ] || out+=.$other
  [ -z "$dirty" ] || out+=.dirty
  ;;
*) echo "$0: unknown flavour $flavour (want python or ruby)" >&2; exit 2 ;;
esac
echo "$out"
