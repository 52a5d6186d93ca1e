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
_PARTIAL = Status.PARTIAL

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
        self._poll_batch = l.taskerworker_poll_batch
        self._complete_batch = l.taskerworker_complete_batch
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
        return self._polled(self._poll(ctypes.byref(out)), out, "taskerworker_poll")

    def _polled(self, code: int, out: ctypes.c_void_p, function: str) -> bytes | None:
        """The bytes a poll call left in out (freed here), None for NO_EVENT,
        or the call's error."""
        if code == _OK:
            ptr = out.value
            try:
                return _string_at(ptr)
            finally:
                self._free(ptr)
        if code == _NO_EVENT:
            return None
        raise self.lib.error(code, function)

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

    # -- batches -----------------------------------------------------------
    #
    # One ctypes call moves many events, which amortises the crossing. Every
    # event of a batch is pending from the poll on, exactly as if polled
    # alone: poll no more than can be run before the starvation threshold.

    def poll_batch_json(self, max: int) -> bytes | None:
        """Up to ``max`` (1..4096) step events, oldest first, as the raw JSON
        array bytes; None when there is none. Out-of-range ``max`` raises
        InvalidArgumentError naming the range."""
        out = self._out()
        return self._polled(self._poll_batch(max, ctypes.byref(out)), out, "taskerworker_poll_batch")

    def poll_batch(self, max: int) -> list[dict]:
        """Up to ``max`` (1..4096) step events (dicts as poll() gives them),
        oldest first; an empty list when there is nothing to do right now."""
        raw = self.poll_batch_json(max)
        if raw is None:
            return []
        try:
            return _scan(raw.decode("utf-8"), 0)[0]
        except (StopIteration, ValueError):
            return _loads(raw)  # not expected: let json report what is wrong

    def complete_batch(self, items) -> list:
        """Complete several polled events in one call. ``items`` is a sequence
        of (event_id, result_json) pairs, the result already serialised (bytes
        or str, as complete_json takes it; HandlerRegistry.execute_json gives
        them).

        Returns one outcome per item, in order: True (completed), False (the
        completion channel was full: the event stays pending, send it again
        later) or the TaskerWorkerError the library answered for that item
        (unknown, already completed, invalid result...: not completed).
        Raises when the call as a whole was refused (nothing was completed),
        e.g. StoppedError, NotStartedError, or more than 4096 items."""
        if not items:  # nothing to send, nothing to ask the library
            return []
        ids, results = zip(*items)
        try:
            joined = "\n".join(ids).encode("utf-8", "surrogateescape")
        except TypeError:  # bytes (or None) among the ids
            joined = b"\n".join(to_c(i, "event_id") for i in ids)
        try:
            array = b"[" + b",".join(results) + b"]"
        except TypeError:  # str results
            array = b"[" + b",".join(to_c(r, "result_json") for r in results) + b"]"
        if joined.count(b"\n") != len(ids) - 1:
            # The library would see another number of ids than of results.
            raise ValueError("an event id contains a newline")
        return self.complete_batch_json(joined, array)

    def complete_batch_json(self, event_ids, results_json) -> list:
        """complete_batch() with the arguments as the C ABI takes them: the
        event ids joined by newlines and the results as one JSON array (str
        or bytes, sent as is). Returns one outcome per id, as complete_batch."""
        ids = to_c(event_ids, "event_ids")
        out = self._out()
        code = self._complete_batch(ids, to_c(results_json, "results_json"), ctypes.byref(out))
        if code == _OK:
            return [True] * _count_ids(ids)
        if code != _PARTIAL:
            raise self.lib.error(code, "taskerworker_complete_batch")
        return [True if o["code"] == _OK else False if o["code"] == _RETRY_LATER
                else TaskerWorkerError(o["code"], o.get("error"), "taskerworker_complete_batch")
                for o in _loads(self.lib.take(out))]

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


def _count_ids(ids: bytes) -> int:
    """How many ids the library reads in newline-joined ids: one trailing
    newline is ignored and an empty string holds none."""
    if ids.endswith(b"\n"):
        ids = ids[:-1]
    return ids.count(b"\n") + 1 if ids else 0


def version(library: Library | str | os.PathLike | None = None) -> str:
    """The library version (loads the library if needed)."""
    lib = library if isinstance(library, Library) else load_library(library)
    return lib.version()
