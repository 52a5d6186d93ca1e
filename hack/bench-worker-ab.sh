#!/usr/bin/env bash
# The worker runtime of two commits, interleaved on the same machine, so
# that a change's cost is measured against its base in the same conditions:
#
#   hack/bench-worker-ab.sh BASE_REV [STEPS] [LATENCY_STEPS] [ROUNDS]
#   hack/bench-worker-ab.sh main 200000 5000 3
#
# Each round runs BenchmarkEndToEnd (with its pgbench baseline) and
# BenchmarkNotifyLatency for BASE_REV (exported with git archive, so the
# repository is not touched) and then for the working tree, each in a fresh
# test binary process with its own throwaway PostgreSQL server (pgtest
# default: non-durable). Prints the medians of both and their ratio.
set -euo pipefail
base=${1:?usage: $0 BASE_REV [STEPS] [LATENCY_STEPS] [ROUNDS]}; steps=${2:-200000}; latency_steps=${3:-5000}; rounds=${4:-3}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/base"
git archive "$base" | tar -x -C "$tmp/base"
(cd "$tmp/base" && go test -c -o "$tmp/base.test" ./internal/worker/)
go test -c -o "$tmp/head.test" ./internal/worker/
out="$tmp/out.txt"
run() { # side dir bench benchtime
  (cd "$2/internal/worker" && "$tmp/$1.test" -test.run='^$' -test.bench="^Benchmark$3\$" -test.benchtime="$4" -test.timeout=30m) 2>&1 |
    tee -a /dev/stderr | sed "s/^Benchmark/side=$1 Benchmark/" >>"$out"
}
for _ in $(seq "$rounds"); do
  for side in base head; do
    dir=$PWD; [ "$side" = base ] && dir="$tmp/base"
    run "$side" "$dir" EndToEnd "${steps}x"
    run "$side" "$dir" NotifyLatency "${latency_steps}x"
  done
done
python3 - "$out" <<'PY'
import re, statistics, sys, collections
vals = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.match(r'side=(\w+) Benchmark(\w+)-\d+\s+(\d+)\s+\d+ ns/op\s+(.*)', line)
    if not m or int(m[3]) == 1:
        continue
    for v, unit in re.findall(r'([\d.]+) (\S+)', m[4]):
        vals[(m[1], m[2], unit)].append(float(v))
print("| figure | base (median) | head (median) | head / base | runs |")
print("|---|---|---|---|---|")
for b, u in (("EndToEnd", "steps/s"), ("EndToEnd", "pgbench_tps"), ("EndToEnd", "steps/pgbench_tx"),
             ("NotifyLatency", "p50_ms"), ("NotifyLatency", "p99_ms"), ("NotifyLatency", "floor_p99_ms")):
    xb, xh = vals.get(("base", b, u), []), vals.get(("head", b, u), [])
    if xb and xh:
        mb, mh = statistics.median(xb), statistics.median(xh)
        print(f"| {b} {u} | {mb:.2f} | {mh:.2f} | {mh/mb:.2f} | {len(xh)} |")
PY
