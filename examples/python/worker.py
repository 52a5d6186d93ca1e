#!/usr/bin/env python3
"""A Tasker worker whose step handlers are written in Python.

The worker itself (queue, metrics on :9090, FFI dispatch channel) runs inside
this process from libtaskerworker.so; this script registers two handlers and
polls for steps until SIGINT/SIGTERM, then drains.

    make build                                   # bin/libtaskerworker.so, bin/tasker-worker
    export DATABASE_URL=postgres://...           # the queue
    python3 examples/python/worker.py
    bin/tasker-worker enqueue --queue python --handler greet --payload '{"name":"Ada"}'

Environment: DATABASE_URL (required); TASKER_CONFIG_PATH (a worker.toml; by
default the built-in one below: queue "python", metrics on 127.0.0.1:9090);
TASKERWORKER_LIB (the library; by default the one inside the installed wheel,
else bin/ of this checkout);
POLLERS (polling threads, default 2); BATCH_SIZE (most events per poll,
default 64; the poller sizes each poll by the handlers' speed, and 1 turns
batching off).
"""

import logging
import os
import signal
import sys
import threading

try:
    import taskerworker
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bindings", "python"))
    import taskerworker

from taskerworker import HandlerRegistry, PermanentError, Poller, Worker

log = logging.getLogger("example")

CONFIG = """
[worker.queue]
namespaces = ["python"]
poll_interval_ms = 100
[worker.mpsc_channels.ffi_dispatch]
completion_timeout_ms = 30000
starvation_warning_threshold_ms = 5000
[worker.drain]
timeout_ms = 10000
[worker.http]
listen_address = "127.0.0.1:9090"
"""

registry = HandlerRegistry()


@registry.handler("greet")
def greet(event):
    """{"name": "Ada"} -> {"greeting": "Hello, Ada!"}; no name is bad input (not retried)."""
    name = (event.get("payload") or {}).get("name")
    if not name:
        raise PermanentError("payload.name is required")
    log.info("greet step %s (attempt %s)", event["step_uuid"], event["attempt"])
    return {"greeting": f"Hello, {name}!"}


@registry.handler("sum")
def total(event):
    """{"numbers": [1, 2, 3]} -> {"sum": 6}. Non-numbers are bad input; a
    "fail_first_attempt": true payload raises a retryable error once."""
    payload = event.get("payload") or {}
    if payload.get("fail_first_attempt") and event["attempt"] == 1:
        raise ConnectionError("simulated outage: retried by the queue")
    numbers = payload.get("numbers", [])
    if not all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers):
        raise PermanentError(f"payload.numbers must be numbers, got {numbers!r}")
    return {"sum": sum(numbers), "count": len(numbers)}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dsn = os.environ.get("DATABASE_URL")
    if not dsn:
        print("set DATABASE_URL to the queue's PostgreSQL URL (e.g. from hack/local-postgres.sh start)", file=sys.stderr)
        return 2
    config = os.environ.get("TASKER_CONFIG_PATH") or CONFIG

    worker = Worker()
    log.info("libtaskerworker %s from %s; handlers: %s", worker.version, worker.lib.path, ", ".join(registry.names()))
    worker.start(config, dsn)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    batch_size = int(os.environ.get("BATCH_SIZE", "64"))
    pollers = [Poller(worker, registry, name=f"poller-{i}", batch_size=batch_size).start()
               for i in range(int(os.environ.get("POLLERS", "2")))]
    log.info("polling with %d threads; Ctrl-C to drain and stop", len(pollers))
    while not stop.wait(10):
        m = worker.metrics()
        done = sum(p.completed for p in pollers)
        batches = sum(p.batches for p in pollers)
        log.info("completed %d in %d batches; pending %d (oldest %s ms)%s", done, batches, m["pending_count"],
                 m["oldest_pending_age_ms"], " STARVING" if m["starvation_detected"] else "")

    log.info("stopping: finishing the steps in hand, returning the rest to the queue")
    for p in pollers:
        p.stop()
    worker.stop()
    log.info("stopped after %d steps", sum(p.completed for p in pollers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
