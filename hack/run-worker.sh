#!/usr/bin/env bash
# The worker runtime, end to end on this machine: a local PostgreSQL queue, a
# stream of steps (fast, slow, failing and retried), one tasker-worker
# processing them while the queue is shown live, then a SIGTERM drain.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${BIN:-bin}
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Starting a local PostgreSQL for the queue (loopback only)"
DATABASE_URL=$(bash hack/local-postgres.sh start)
export DATABASE_URL
echo "DATABASE_URL=$DATABASE_URL"

say "Applying the queue schema"
"$bin/tasker-worker" migrate

queue="demo-$(date +%s)"
say "Enqueueing steps into queue $queue"
"$bin/tasker-worker" enqueue --queue "$queue" --handler noop --count 2000
"$bin/tasker-worker" enqueue --queue "$queue" --handler sleep --payload '{"ms":400}' --count 40
"$bin/tasker-worker" enqueue --queue "$queue" --handler fail --payload '{"fail_attempts":1}' --count 20
"$bin/tasker-worker" enqueue --queue "$queue" --handler fail --payload '{"retryable":false,"message":"bad input"}' --count 5

cfg=$(mktemp)
trap 'rm -f "$cfg"' EXIT
cat >"$cfg" <<TOML
[worker.mpsc_channels.handler_dispatch]
max_concurrent_handlers = 32
[worker.queue]
namespaces = ["$queue"]
batch_size = 100
[worker.http]
listen_address = "127.0.0.1:19090"
TOML

say "Running tasker-worker (metrics on http://127.0.0.1:19090/metrics; log in $bin/worker.log)"
TASKER_CONFIG_PATH=$cfg POD_NAME=local-worker "$bin/tasker-worker" run >"$bin/worker.log" 2>&1 &
pid=$!
deadline=$((SECONDS + 120))
while :; do
  sleep 1
  clear 2>/dev/null || true
  "$bin/tasker-worker" stats | grep -E "QUEUE|$queue"
  curl -fsS http://127.0.0.1:19090/metrics 2>/dev/null | grep -E '^tasker_(dispatch_in_flight|channel_completion_saturation|steps_completed_total)' || true
  line=$("$bin/tasker-worker" stats | grep "$queue" || true)
  read -r _ ready scheduled claimed _ <<<"$line"
  if [ "${ready:-1}" = 0 ] && [ "${scheduled:-1}" = 0 ] && [ "${claimed:-1}" = 0 ]; then break; fi
  [ $SECONDS -lt $deadline ] || { echo "queue not drained within 120 s" >&2; break; }
done

say "Queue drained; sending SIGTERM (the worker drains and exits 0)"
kill -TERM "$pid"
wait "$pid" && echo "tasker-worker exited 0"
grep -h '"drained"' "$bin/worker.log" | tail -n1
say "Done. The PostgreSQL server keeps running: 'bash hack/local-postgres.sh stop' stops it."
