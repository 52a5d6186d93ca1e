"""The Worker: one running Tasker worker inside this process, driven through the C ABI."""

from __future__ import annotations

import ctypes
import json
import os
import threading

from ._lib import Library, load_library, to_c
from .errors import Status, TaskerWorkerError

_OK = Status.OK
_NO_EVENT = Status.NO_EVENT
_RETRY_LATER = Status.RETRY_LATER

from .handlers import _encode as _dumps  # compact, strict JSON (no NaN)
_loads = json.loads
# The library's own JSON needs no whitespace stripping or trailing-data check:
# scanning it directly is the cheapest decode in the polling hot path.
_scan = json.JSONDecoder().scan_once
_string_at = ctypes.string_at


class Worker:
    """A Tasker worker running inside this process (the library runs the queue,
    the metrics server and the FFI dispatch channel); Python threads poll it for
    step events and complete them.

    The library runs one worker per process at a time: start, use, stop, and
    only then start again. All methods are safe to call from many threads.
    Failures raise :class:`TaskerWorkerError` subclasses carrying the header's
    code and the library's message.
    """

    def __init__(self, library: Library | str | os.PathLike | None = None):
        self.lib = library if isinstance(library, Library) else load_library(library)
        self._started = False
        l = self.lib
        self._poll = l.taskerworker_poll
        self._complete = l.taskerworker_complete
        self._free = l.taskerworker_free
        self._local = threading.local()

    # -- lifecycle ---------------------------------------------------------

    def start(self, config: str | bytes | os.PathLike | None = None, database_url: str | bytes | None = None) -> "Worker":
        """Start the worker. ``config`` is worker.toml text or a path to one
        (None: $TASKER_CONFIG_PATH or the defaults); ``database_url`` is the
        queue's PostgreSQL URL (None: $DATABASE_URL)."""
        code = self.lib.taskerworker_start(to_c(config, "config"), to_c(database_url, "database_url"))
        self.lib.check(code, "taskerworker_start")
        self._started = True
        return self

    def stop(self, timeout_ms: int = 0) -> None:
        """Stop claiming, return unpolled steps to the queue, wait for pending
        events to be completed (timeout_ms <= 0: the configured drain timeout)
        and flush results."""
        code = self.lib.taskerworker_stop(int(timeout_ms))
        self._started = False
        self.lib.check(code, "taskerworker_stop")

    @property
    def started(self) -> bool:
        """Whether this object started a worker it has not stopped yet."""
        return self._started

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            try:
                self.stop()
            except TaskerWorkerError:
                if exc[0] is None:
                    raise

    # -- events ------------------------------------------------------------

    def _out(self) -> ctypes.c_void_p:
        out = getattr(self._local, "out", None)
        if out is None:
            out = self._local.out = ctypes.c_void_p()
        return out

    def poll_json(self) -> bytes | None:
        """The next step event as raw JSON bytes, or None when there is none."""
        out = self._out()
        code = self._poll(ctypes.byref(out))
        if code == _OK:
            ptr = out.value
            try:
                return _string_at(ptr)
            finally:
                self._free(ptr)
        if code == _NO_EVENT:
            return None
        raise self.lib.error(code, "taskerworker_poll")

    def poll(self) -> dict | None:
        """Take the next step event without blocking: a dict with event_id,
        step_uuid, task_uuid, correlation_id, handler, payload, attempt,
        timeout_ms; or None when there is nothing to do right now."""
        raw = self.poll_json()
        if raw is None:
            return None
        try:
            return _scan(raw.decode("utf-8"), 0)[0]
        except (StopIteration, ValueError):
            return _loads(raw)  # not expected: let json report what is wrong

    def complete(self, event_id: str, result: dict) -> bool:
        """Complete a polled event with a result dict in the wire format.

        True: done. False: the completion channel is full; the event stays
        pending, call again later. A result that cannot be serialised raises
        TypeError/ValueError before anything is sent."""
        return self.complete_json(event_id, _dumps(result).encode("utf-8"))

    def complete_json(self, event_id, result_json) -> bool:
        """complete() with the result already serialised (str or bytes, sent as is)."""
        code = self._complete(to_c(event_id, "event_id"), to_c(result_json, "result_json"))
        if code == _OK:
            return True
        if code == _RETRY_LATER:
            return False
        raise self.lib.error(code, "taskerworker_complete")

    # -- observation -------------------------------------------------------

    def _json_out(self, fn, name):
        out = ctypes.c_void_p()
        code = fn(ctypes.byref(out))
        if code < 0:
            raise self.lib.error(code, name)
        return _loads(self.lib.take(out) or "null")

    def metrics(self) -> dict:
        """FFI channel metrics: pending_count, oldest_pending_age_ms,
        newest_pending_age_ms, oldest_event_id, starvation_detected,
        starving_event_count."""
        return self._json_out(self.lib.taskerworker_metrics, "taskerworker_metrics")

    def check_starvation(self) -> list:
        """Log a warning per pending event older than the starvation threshold
        and return them as [{event_id, step_uuid, age_ms}]."""
        return self._json_out(self.lib.taskerworker_check_starvation, "taskerworker_check_starvation") or []

    def cleanup_timeouts(self) -> int:
        """Turn pending events older than the completion timeout into
        ffi_timeout failures now; return how many."""
        n = ctypes.c_int(0)
        code = self.lib.taskerworker_cleanup_timeouts(ctypes.byref(n))
        self.lib.check(code, "taskerworker_cleanup_timeouts")
        return n.value

    @property
    def version(self) -> str:
        """The library version."""
        return self.lib.version()


def version(library: Library | str | os.PathLike | None = None) -> str:
    """The library version (loads the library if needed)."""
    lib = library if isinstance(library, Library) else load_library(library)
    return lib.version()
