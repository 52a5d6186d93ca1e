#!/usr/bin/env bash
# Measures a benchmark against its baseline in the same run, interleaved, so
# drift on a noisy machine hits both alike, and prints medians and ratios.
#
#   hack/bench-ratio.sh PKG CANDIDATE BASELINE [ROUNDS] [BENCHTIME]
#   hack/bench-ratio.sh ./internal/dispatch Dispatch BarePipeline 10 300000x
#
# CANDIDATE and BASELINE are benchmark names without the "Benchmark" prefix;
# their sub-benchmarks are matched by name. The ratio is baseline ns/op divided
# by candidate ns/op: the candidate's throughput as a fraction of the baseline's.
set -euo pipefail
pkg=${1:?package}; cand=${2:?candidate}; base=${3:?baseline}; rounds=${4:-10}; benchtime=${5:-1s}
bin=$(mktemp -d)/bench.test
trap 'rm -rf "$(dirname "$bin")"' EXIT
go test -c -o "$bin" "$pkg"
out=$(mktemp)
dir=$(go list -f '{{.Dir}}' "$pkg")
for _ in $(seq "$rounds"); do
  (cd "$dir" && "$bin" -test.run='^$' -test.bench="^Benchmark(${cand}|${base})\$" -test.benchtime="$benchtime" -test.benchmem) >>"$out"
done
python3 - "$out" "$cand" "$base" <<'PY'
import re, statistics, sys, collections
path, cand, base = sys.argv[1:]
ns, allocs = collections.defaultdict(list), collections.defaultdict(list)
for line in open(path):
    m = re.match(r'Benchmark(\w+)(/\S+?)?(-\d+)?\s+\d+\s+([\d.]+) ns/op.*?(\d+) allocs/op', line)
    if m:
        ns[(m[1], m[2] or '')].append(float(m[4])); allocs[(m[1], m[2] or '')].append(int(m[5]))
subs = sorted({k[1] for k in ns if k[0] == cand}, key=lambda s: [int(x) if x.isdigit() else x for x in re.split(r'(\d+)', s)])
print(f"| case | {cand} ns/op | {base} ns/op | ratio ({cand} throughput / {base}) | allocs/op {cand} / {base} | rounds |")
print("|---|---|---|---|---|---|")
for s in subs:
    c, b = statistics.median(ns[(cand, s)]), statistics.median(ns[(base, s)])
    print(f"| {s.lstrip('/') or '-'} | {c:.0f} | {b:.0f} | {b/c:.2f} | {allocs[(cand, s)][0]} / {allocs[(base, s)][0]} | {len(ns[(cand, s)])} |")
PY
rm -f "$out"
