#!/usr/bin/env python3
"""Poll + complete round trips from one Python thread through libtaskerworker.so.

Starts a worker on a deep backlog (preloaded with `tasker-worker enqueue
--count`), waits until the dispatch channel is full, then runs --count round
trips with a no-op handler and prints the p50/p90/p99 round-trip time and
events/s. Only the poll + handler + complete calls are timed: a poll that
finds the dispatch channel empty (the queue refilling it) is not a round trip
and is neither timed nor counted.

Two paths are measured, on the same worker, alternating in chunks so drift
hits both alike:
  binding  Worker.poll() -> HandlerRegistry.execute_json() -> Worker.complete_json(),
           exactly what Poller does per event (JSON decode of the event, the
           handler, the result with metadata encoded to JSON)
  raw      poll_json() -> step_uuid sliced from the event -> preformatted
           result bytes -> complete_json(): the floor of ctypes + the C ABI

    DATABASE_URL=postgres://... TASKER_WORKER_BIN=bin/tasker-worker \\
      python3 bindings/python/bench.py --count 200000

Output ends with one machine-readable line per path:
    RESULT path=binding n=... p50_us=... p90_us=... p99_us=... mean_us=... events_per_s=...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from taskerworker import HandlerRegistry, Worker  # noqa: E402


def enqueue(bin_path: str, queue: str, n: int, dsn: str) -> None:
    env = dict(os.environ, DATABASE_URL=dsn)
    subprocess.run([bin_path, "migrate"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run([bin_path, "enqueue", "--queue", queue, "--handler", "noop", "--count", str(n)],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def claimed(bin_path: str, queue: str, dsn: str) -> int:
    out = subprocess.run([bin_path, "stats", "--json"], check=True, capture_output=True, text=True,
                         env=dict(os.environ, DATABASE_URL=dsn)).stdout
    for s in json.loads(out):
        if s.get("Queue") == queue:
            return int(s.get("Claimed", 0))
    return 0


def config(queue: str, buffer: int) -> str:
    return f"""
[worker.mpsc_channels.handler_dispatch]
completion_buffer_size = {buffer}
max_concurrent_handlers = {min(buffer, 100000)}
[worker.mpsc_channels.ffi_dispatch]
dispatch_buffer_size = {buffer}
completion_timeout_ms = 600000
starvation_warning_threshold_ms = 300000
[worker.load_shedding]
warning_threshold_percent = 100
refuse_threshold_percent = 100
[worker.queue]
namespaces = ["{queue}"]
batch_size = 10000
poll_interval_ms = 10
visibility_timeout_ms = 600000
[worker.drain]
timeout_ms = 30000
[worker.http]
listen_address = "127.0.0.1:0"
"""


def pct(sorted_ns: list[int], p: float) -> float:
    if not sorted_ns:
        return float("nan")
    i = min(len(sorted_ns) - 1, max(0, int(round(p / 100 * (len(sorted_ns) - 1)))))
    return sorted_ns[i] / 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200000, help="round trips to time (both paths together)")
    ap.add_argument("--chunk", type=int, default=1000, help="round trips per path before switching")
    ap.add_argument("--queue", default=f"bench_{os.getpid()}", help="queue namespace (fresh by default)")
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    ap.add_argument("--worker-bin", default=os.environ.get("TASKER_WORKER_BIN", "bin/tasker-worker"),
                    help="tasker-worker binary used to enqueue the backlog")
    ap.add_argument("--no-enqueue", action="store_true", help="the queue already holds --count noop steps")
    ap.add_argument("--buffer", type=int, default=100000, help="dispatch/completion buffer (events preloaded)")
    ap.add_argument("--paths", default="binding,raw", help="comma list of paths to measure: binding, raw")
    ap.add_argument("--lib", default=None, help="libtaskerworker.so (default: $TASKERWORKER_LIB or bin/)")
    args = ap.parse_args()
    if not args.database_url:
        ap.error("set DATABASE_URL or pass --database-url")
    paths = [p for p in args.paths.split(",") if p]

    if not args.no_enqueue:
        t = time.perf_counter()
        enqueue(args.worker_bin, args.queue, args.count, args.database_url)
        print(f"enqueued {args.count} noop steps into {args.queue} in {time.perf_counter() - t:.1f}s", flush=True)

    registry = HandlerRegistry()

    @registry.handler("noop")
    def noop(event):
        return None

    worker = Worker(args.lib)
    worker.start(config(args.queue, args.buffer), args.database_url)
    try:
        # Let the intake fill the dispatch channel before timing anything.
        target = min(args.count, args.buffer)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and claimed(args.worker_bin, args.queue, args.database_url) < target:
            time.sleep(0.2)
        print(f"backlog: {claimed(args.worker_bin, args.queue, args.database_url)} steps claimed into the dispatch channel",
              flush=True)

        samples: dict[str, list[int]] = {p: [] for p in paths}
        empty = {p: 0 for p in paths}
        poll, poll_json, complete_json = worker.poll, worker.poll_json, worker.complete_json
        execute_json = registry.execute_json
        clock = time.perf_counter_ns
        done = 0
        wall = time.perf_counter()

        def run_binding(n: int) -> int:
            got, out = 0, samples["binding"]
            while got < n:
                t0 = clock()
                ev = poll()
                if ev is None:
                    empty["binding"] += 1
                    time.sleep(0.0005)
                    continue
                ok = complete_json(ev["event_id"], execute_json(ev))
                t1 = clock()
                if not ok:
                    raise SystemExit("complete said retry later: completion buffer too small for the benchmark")
                out.append(t1 - t0)
                got += 1
            return got

        def run_raw(n: int) -> int:
            got, out = 0, samples["raw"]
            while got < n:
                t0 = clock()
                raw = poll_json()
                if raw is None:
                    empty["raw"] += 1
                    time.sleep(0.0005)
                    continue
                # {"event_id":"<id>","step_uuid":"<uuid>",...}: both fields lead the object.
                i = raw.index(b'"', 13)
                event_id = raw[13:i]
                j = raw.index(b'"step_uuid":"', i) + 13
                step = raw[j:j + 36]
                ok = complete_json(event_id, b'{"step_uuid":"' + step +
                                   b'","success":true,"result":null,"status":"completed","metadata":{"execution_time_ms":0,"retryable":false}}')
                t1 = clock()
                if not ok:
                    raise SystemExit("complete said retry later: completion buffer too small for the benchmark")
                out.append(t1 - t0)
                got += 1
            return got

        runners = {"binding": run_binding, "raw": run_raw}
        while done < args.count:
            for p in paths:
                if done >= args.count:
                    break
                done += runners[p](min(args.chunk, args.count - done))
        wall = time.perf_counter() - wall
    finally:
        worker.stop()

    print(f"{done} round trips in {wall:.2f}s wall ({done / wall:,.0f}/s including waits for the queue to refill)")
    for p in paths:
        s = sorted(samples[p])
        if not s:
            continue
        mean = statistics.fmean(s) / 1000
        print(f"RESULT path={p} n={len(s)} p50_us={pct(s, 50):.2f} p90_us={pct(s, 90):.2f} p99_us={pct(s, 99):.2f} "
              f"mean_us={mean:.2f} events_per_s={1e6 / mean:.0f} empty_polls={empty[p]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
