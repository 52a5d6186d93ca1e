"""Shared helpers for the binding tests.

Environment (set by bindings/bindings_test.go; set them by hand to run the
suite alone):
  DATABASE_URL               a PostgreSQL database the suite may use
  TASKERWORKER_LIB           libtaskerworker.so
  TASKER_WORKER_BIN          tasker-worker, to enqueue steps and read stats
  TASKERWORKER_TEST_HELPER   the Go test binary; `HELPER steps QUEUE` prints
                             the queue's steps as JSON (attempts, last_error)

Every test case uses its own queue namespace, so cases sharing the database
never see each other's steps.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import unittest
import urllib.error
import urllib.request
import uuid

import taskerworker
from taskerworker import DrainError, NotStartedError

DATABASE_URL = os.environ.get("DATABASE_URL")
WORKER_BIN = os.environ.get("TASKER_WORKER_BIN")
HELPER = os.environ.get("TASKERWORKER_TEST_HELPER")

INTEGRATION = bool(DATABASE_URL and WORKER_BIN and HELPER)
needs_database = unittest.skipUnless(
    INTEGRATION, "needs DATABASE_URL, TASKER_WORKER_BIN and TASKERWORKER_TEST_HELPER (run through `go test ./bindings/`)")


def new_queue(prefix: str = "py") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def config(queue: str, *, ffi: dict | None = None, queue_opts: dict | None = None, handler: dict | None = None,
           drain_ms: int = 5000, listen: str = "127.0.0.1:0") -> str:
    """worker.toml for a test: loopback metrics on a free port (or ``listen``), short polls."""
    q = {"namespaces": [queue], "poll_interval_ms": 20, "batch_size": 50, "visibility_timeout_ms": 30000}
    q.update(queue_opts or {})
    f = {"completion_timeout_ms": 30000, "starvation_warning_threshold_ms": 10000}
    f.update(ffi or {})
    h = {"max_concurrent_handlers": 100}
    h.update(handler or {})
    return "\n".join([
        "[worker]", 'worker_id = "py-test"',
        "[worker.mpsc_channels.handler_dispatch]", *_kv(h),
        "[worker.mpsc_channels.ffi_dispatch]", *_kv(f),
        "[worker.queue]", *_kv(q),
        "[worker.drain]", f"timeout_ms = {drain_ms}",
        "[worker.http]", f'listen_address = "{listen}"', "",
    ])


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1, for a worker whose endpoints a test reads."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a GET; a 5xx is an answer here, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(page: str, name: str) -> float:
    """The value of an unlabelled sample on a /metrics page."""
    for line in page.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"metric {name} not on the page")


def _kv(d: dict) -> list[str]:
    return [f"{k} = {json.dumps(v)}" for k, v in d.items()]


def _run(*args: str) -> str:
    env = dict(os.environ, DATABASE_URL=DATABASE_URL)
    p = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return p.stdout


def enqueue(queue: str, handler: str, count: int = 1, payload=None, max_attempts: int | None = None) -> None:
    args = [WORKER_BIN, "enqueue", "--queue", queue, "--handler", handler, "--count", str(count)]
    if payload is not None:
        args += ["--payload", json.dumps(payload)]
    if max_attempts is not None:
        args += ["--max-attempts", str(max_attempts)]
    out = _run(*args)
    assert f"enqueued {count} steps" in out, out


def enqueue_lines(steps: list[dict]) -> None:
    """Enqueue steps given as `enqueue --file` JSON lines (queue, handler, payload, max_attempts...)."""
    p = subprocess.run([WORKER_BIN, "enqueue", "--file", "-"], input="\n".join(json.dumps(s) for s in steps),
                       env=dict(os.environ, DATABASE_URL=DATABASE_URL), capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise AssertionError(f"enqueue --file failed:\n{p.stdout}{p.stderr}")


def stats(queue: str) -> dict:
    """`tasker-worker stats --json` for one queue: Ready, Scheduled, Claimed, Expired, Completed, Dead."""
    for s in json.loads(_run(WORKER_BIN, "stats", "--json")):
        if s["Queue"] == queue:
            return s
    return {"Queue": queue, "Ready": 0, "Scheduled": 0, "Claimed": 0, "Expired": 0, "Completed": 0, "Dead": 0}


def steps(queue: str) -> list[dict]:
    """Every step of the queue with state, attempts, result and last_error (via the Go test helper)."""
    return json.loads(_run(HELPER, "steps", queue))


def wait_for(what: str, cond, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def poll_one(worker, timeout: float = 20.0) -> dict:
    """Poll until an event arrives."""
    return wait_for("an event to poll", worker.poll, timeout, 0.01)


def ensure_stopped() -> None:
    """Stop a worker a failed test may have left running (one per process).
    The 1 ms drain cannot settle what is still in flight (it is redelivered
    later), which the stop reports as a DrainError: fine for a cleanup."""
    try:
        taskerworker.Worker().stop(1)
    except (NotStartedError, DrainError):
        pass


class WorkerTestCase(unittest.TestCase):
    """A test with its own queue namespace; any worker left running is stopped."""

    prefix = "py"

    def setUp(self):
        if not INTEGRATION:
            self.skipTest("needs DATABASE_URL, TASKER_WORKER_BIN and TASKERWORKER_TEST_HELPER")
        self.queue = new_queue(self.prefix)
        self.worker = taskerworker.Worker()
        self.addCleanup(ensure_stopped)

    def start(self, **kw) -> "taskerworker.Worker":
        self.worker.start(config(self.queue, **kw))
        return self.worker
