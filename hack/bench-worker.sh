#!/usr/bin/env bash
# Worker runtime benchmarks behind docs/benchmarks.md, "Worker runtime
# (PostgreSQL queue)":
#
#   hack/bench-worker.sh [STEPS] [LATENCY_STEPS] [RUNS]
#   hack/bench-worker.sh 200000 5000 3          # what `make bench` runs
#
# For each durability setting of the throwaway PostgreSQL server (the pgtest
# default: fsync, synchronous_commit and full_page_writes off; then
# PGTEST_DURABLE=1: PostgreSQL's defaults), it runs RUNS times, each in a
# fresh test binary process with its own server:
#   - BenchmarkEndToEnd with STEPS steps; pgbench (-i -s 10, then
#     -c 4 -j 2 -T 10 -N) runs first against the same server in the same
#     process, so the ratio compares like with like;
#   - BenchmarkNotifyLatency with LATENCY_STEPS steps at 500 steps/s;
#   - BenchmarkWorkerRSS with STEPS steps through the real tasker-worker binary.
# Raw `go test` output goes to stderr; stdout gets a table of the medians.
set -euo pipefail
steps=${1:-200000}; latency_steps=${2:-5000}; runs=${3:-3}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/worker.test" ./internal/worker/
out="$tmp/out.txt"
run() { # durable bench benchtime
  (cd internal/worker && PGTEST_DURABLE=$1 "$tmp/worker.test" -test.run='^$' -test.bench="^Benchmark$2\$" \
    -test.benchtime="$3" -test.timeout=30m) 2>&1 | tee -a /dev/stderr | sed "s/^Benchmark/durable=$1 Benchmark/" >>"$out"
}
for durable in 0 1; do
  for _ in $(seq "$runs"); do
    run "$durable" EndToEnd "${steps}x"
    run "$durable" NotifyLatency "${latency_steps}x"
    run "$durable" WorkerRSS "${steps}x"
  done
done
python3 - "$out" <<'PY'
import re, statistics, sys, collections
vals = collections.defaultdict(list)
for line in open(sys.argv[1]):
    m = re.match(r'durable=(\d) Benchmark(\w+)-\d+\s+(\d+)\s+\d+ ns/op\s+(.*)', line)
    if not m or int(m[3]) == 1:
        continue  # the framework's N=1 warm-up run
    for v, unit in re.findall(r'([\d.]+) (\S+)', m[4]):
        vals[(m[1], m[2], unit)].append(float(v))
def med(d, b, u):
    xs = vals.get((d, b, u))
    return (statistics.median(xs), len(xs)) if xs else (float('nan'), 0)
print("| durability | figure | median | runs |")
print("|---|---|---|---|")
rows = [("EndToEnd", "steps/s"), ("EndToEnd", "pgbench_tps"), ("EndToEnd", "steps/pgbench_tx"),
        ("EndToEnd", "pg_cpu_us/step"), ("EndToEnd", "go_cpu_us/step"), ("EndToEnd", "drain_lag_ms"),
        ("NotifyLatency", "p50_ms"), ("NotifyLatency", "p95_ms"), ("NotifyLatency", "p99_ms"),
        ("NotifyLatency", "floor_p50_ms"), ("NotifyLatency", "floor_p95_ms"), ("NotifyLatency", "floor_p99_ms"),
        ("WorkerRSS", "rss_idle_MiB"), ("WorkerRSS", "rss_peak_MiB"), ("WorkerRSS", "steps/s")]
for d, name in (("0", "fsync=off, synchronous_commit=off"), ("1", "PostgreSQL defaults (PGTEST_DURABLE=1)")):
    for b, u in rows:
        v, n = med(d, b, u)
        if n:
            print(f"| {name} | {b} {u} | {v:.0f} | {n} |" if v >= 100 else f"| {name} | {b} {u} | {v:.2f} | {n} |")
PY
