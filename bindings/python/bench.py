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
import ctypes
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from taskerworker import HandlerRegistry, Poller, Worker  # noqa: E402


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


# The result of a no-op handler, around the step_uuid (the raw paths' floor).
RAW_RESULT = (b'{"step_uuid":"%s","success":true,"result":null,"status":"completed",'
              b'"metadata":{"execution_time_ms":0,"retryable":false}}')


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200000, help="round trips to time (both paths together)")
    ap.add_argument("--chunk", type=int, default=1000, help="round trips per path before switching")
    ap.add_argument("--batch", type=int, default=0,
                    help="measure the batched paths with batches of up to N events (0: one event per call)")
    ap.add_argument("--source", choices=("db", "memory"), default="db",
                    help="db: a worker on a PostgreSQL backlog; memory: the in-memory source of a library "
                         "built with -tags ffibench (no database)")
    ap.add_argument("--queue", default=f"bench_{os.getpid()}", help="queue namespace (fresh by default)")
    ap.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    ap.add_argument("--worker-bin", default=os.environ.get("TASKER_WORKER_BIN", "bin/tasker-worker"),
                    help="tasker-worker binary used to enqueue the backlog")
    ap.add_argument("--no-enqueue", action="store_true", help="the queue already holds --count noop steps")
    ap.add_argument("--buffer", type=int, default=100000, help="dispatch/completion buffer (events preloaded)")
    ap.add_argument("--paths", default="binding,raw", help="comma list of paths to measure: binding, raw")
    ap.add_argument("--lib", default=None, help="libtaskerworker.so (default: $TASKERWORKER_LIB or bin/)")
    args = ap.parse_args()
    if args.source == "db" and not args.database_url:
        ap.error("set DATABASE_URL or pass --database-url (or use --source memory)")
    if not 0 <= args.batch <= 4096:
        ap.error("--batch: want 0..4096")
    paths = [p for p in args.paths.split(",") if p]

    registry = HandlerRegistry()

    @registry.handler("noop")
    def noop(event):
        return None

    worker = Worker(args.lib)
    lib = worker.lib
    if args.source == "memory":
        if not hasattr(lib, "taskerworker_bench_start"):
            raise SystemExit(f"--source memory: {lib.path} has no taskerworker_bench_start; build it with "
                             "`go build -tags ffibench -buildmode=c-shared ...` and point --lib/TASKERWORKER_LIB at it")
        lib.check(lib.taskerworker_bench_start(args.count), "taskerworker_bench_start")
        print(f"memory source: {args.count} noop events", flush=True)
    else:
        if not args.no_enqueue:
            t = time.perf_counter()
            enqueue(args.worker_bin, args.queue, args.count, args.database_url)
            print(f"enqueued {args.count} noop steps into {args.queue} in {time.perf_counter() - t:.1f}s", flush=True)
        worker.start(config(args.queue, args.buffer), args.database_url)
    try:
        if args.source == "db":
            # Let the intake fill the dispatch channel before timing anything.
            target = min(args.count, args.buffer)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and claimed(args.worker_bin, args.queue, args.database_url) < target:
                time.sleep(0.2)
            print(f"backlog: {claimed(args.worker_bin, args.queue, args.database_url)} steps claimed into the "
                  "dispatch channel", flush=True)

        # One sample per call sequence timed: a round trip, or with --batch a
        # whole batch divided by its events (the time per event).
        samples: dict[str, list[float]] = {p: [] for p in paths}
        timed = {p: 0 for p in paths}     # ns spent in timed calls
        events = {p: 0 for p in paths}
        empty = {p: 0 for p in paths}
        poll, poll_json, complete_json = worker.poll, worker.poll_json, worker.complete_json
        poll_batch_json, complete_batch_json = worker.poll_batch_json, worker.complete_batch_json
        execute_json = registry.execute_json
        clock = time.perf_counter_ns
        # The batched binding path is the Poller itself: each poll_once is
        # poll_batch -> execute_json per event -> complete_batch.
        poller = Poller(worker, registry, batch_size=max(args.batch, 1))
        done = 0
        wall = time.perf_counter()

        def record(path: str, t0: int, t1: int, n: int) -> None:
            samples[path].append((t1 - t0) / n)
            timed[path] += t1 - t0
            events[path] += n

        def run_binding(n: int) -> int:
            got = 0
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
                record("binding", t0, t1, 1)
                got += 1
            return got

        def run_raw(n: int) -> int:
            got = 0
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
                ok = complete_json(event_id, RAW_RESULT % raw[j:j + 36])
                t1 = clock()
                if not ok:
                    raise SystemExit("complete said retry later: completion buffer too small for the benchmark")
                record("raw", t0, t1, 1)
                got += 1
            return got

        def run_binding_batch(n: int) -> int:
            got = 0
            while got < n:
                before = poller.processed
                t0 = clock()
                poller.poll_once()
                t1 = clock()
                k = poller.processed - before
                if not k:
                    empty["binding"] += 1
                    time.sleep(0.0005)
                    continue
                record("binding", t0, t1, k)
                got += k
            if poller.retries or poller.fallbacks or poller.completed != poller.processed:
                raise SystemExit(f"poller: {poller.completed} of {poller.processed} completed, {poller.retries} "
                                 f"retries, {poller.fallbacks} fallbacks: the benchmark needs every event accepted")
            return got

        def run_raw_batch(n: int) -> int:
            got = 0
            while got < n:
                t0 = clock()
                raw = poll_batch_json(min(args.batch, n - got))
                if raw is None:
                    empty["raw"] += 1
                    time.sleep(0.0005)
                    continue
                # [{"event_id":"<id>","step_uuid":"<uuid>",...},...]: both fields lead each object.
                ids, results = [], []
                for ev in raw.split(b'{"event_id":"')[1:]:
                    i = ev.index(b'"')
                    ids.append(ev[:i])
                    j = ev.index(b'"step_uuid":"', i) + 13
                    results.append(RAW_RESULT % ev[j:j + 36])
                outcomes = complete_batch_json(b"\n".join(ids), b"[" + b",".join(results) + b"]")
                t1 = clock()
                if outcomes.count(True) != len(outcomes):
                    raise SystemExit(f"complete_batch did not complete every event: {outcomes}")
                record("raw", t0, t1, len(ids))
                got += len(ids)
            return got

        runners = ({"binding": run_binding_batch, "raw": run_raw_batch} if args.batch
                   else {"binding": run_binding, "raw": run_raw})
        while done < args.count:
            for p in paths:
                if done >= args.count:
                    break
                done += runners[p](min(args.chunk, args.count - done))
        wall = time.perf_counter() - wall
    finally:
        if args.source == "memory":
            delivered = ctypes.c_longlong(0)
            lib.check(lib.taskerworker_bench_stop(ctypes.byref(delivered)), "taskerworker_bench_stop")
        else:
            worker.stop()
    if args.source == "memory" and delivered.value != args.count:
        raise SystemExit(f"FAIL: the memory source received {delivered.value} completions for {args.count} events")

    print(f"{done} round trips in {wall:.2f}s wall ({done / wall:,.0f}/s including waits for the queue to refill)")
    # bindings/bench_test.go reads every RESULT field but path as a number:
    # source is named only when it is not the database.
    source = f" source={args.source}" if args.source != "db" else ""
    for p in paths:
        s = sorted(samples[p])
        if not s:
            continue
        mean = timed[p] / events[p] / 1000
        extra = f" batches={len(s)}" if args.batch else ""
        print(f"RESULT path={p} n={events[p]} p50_us={pct(s, 50):.2f} p90_us={pct(s, 90):.2f} p99_us={pct(s, 99):.2f} "
              f"mean_us={mean:.2f} events_per_s={1e6 / mean:.0f} empty_polls={empty[p]} batch={max(args.batch, 1)}"
              f"{extra}{source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
