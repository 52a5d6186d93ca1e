#!/usr/bin/env bash
# The retention soak behind docs/benchmarks.md, "Retention soak":
#
#   hack/soak-retention.sh [STEPS] [RETENTION]
#   hack/soak-retention.sh 2000000        # retention on (the documented run)
#   hack/soak-retention.sh 2000000 0      # the same load without retention, for contrast
#
# Runs BenchmarkRetentionSoak (internal/worker/soak_bench_test.go) once, in a
# fresh test binary with its own throwaway PostgreSQL server, and prints its
# table: every 10 s the steps run, the throughput of that window, the live
# and dead rows of tasker_steps, the size of the table and its indexes, and
# the rows retention deleted so far. Not part of `make test` or `make bench`:
# 2 million steps take a few minutes.
set -euo pipefail
steps=${1:-2000000}; retention=${2:-1}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -o "$tmp/worker.test" ./internal/worker/
(cd internal/worker && SOAK_RETENTION=$retention "$tmp/worker.test" -test.run='^$' \
  -test.bench='^BenchmarkRetentionSoak$' -test.benchtime="${steps}x" -test.timeout=60m -test.v) 2>&1 |
  grep -vE '^\s*(logger|worker)\.go:' | grep -E '^\s*\||soak:|^BenchmarkRetentionSoak|^(ok|PASS|FAIL)'
