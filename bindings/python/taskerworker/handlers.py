"""Step handlers: a registry, and turning a handler's outcome into a result in
the wire format (UPSTREAM-NOTES "Result wire format")."""

from __future__ import annotations

import json
import time
import traceback
from typing import Any, Callable

# error_type values the worker core also uses (ARCHITECTURE.md "Failure results").
HANDLER_NOT_FOUND = "handler_not_found"
RESULT_SERIALIZATION_ERROR = "result_serialization_error"


def _not_serialisable(o):
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def _make_encoder():
    """A compact, strict (no NaN/Infinity) JSON encoder. CPython's C encoder is
    built once and reused (json.dumps builds one per call, which costs more
    than encoding a small result); without circular-reference markers a cycle
    ends in RecursionError, which callers treat like any unserialisable value."""
    std = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # not CPython
        return std
    try:
        chunks = make(None, _not_serialisable, json.encoder.encode_basestring, None, ":", ",", False, False, False)
    except TypeError:  # a CPython whose C encoder takes other arguments
        return std

    def encode(o):
        if isinstance(o, str):
            return json.encoder.encode_basestring(o)
        return "".join(chunks(o, 0))

    return encode


_encode = _make_encoder()
_quote = json.encoder.encode_basestring  # a str as a JSON string literal
_SUCCESS = ('{"step_uuid":%s,"success":true,"result":%s,"status":"completed",'
            '"metadata":{"execution_time_ms":%d,"retryable":false,"completed_at":"%s"}}')


class PermanentError(Exception):
    """Raise from a handler for a failure that must not be retried (bad input).

    Any exception with an attribute ``retryable = False`` behaves the same;
    ``error_type`` / ``error_code`` attributes, when set, override the error
    type (default: the exception's class name) and add an error code.
    """

    retryable = False


class RetryableError(Exception):
    """Raise from a handler for a failure worth retrying (the default for any exception)."""

    retryable = True


_second = (-1, "")  # (the last second formatted, its text): formatting is costly and seconds repeat


def completed_at() -> str:
    """Now, in the RFC 3339 form the worker expects for metadata.completed_at
    (UTC, microseconds, e.g. 2026-01-01T00:00:00.123456Z)."""
    global _second
    sec, us = divmod(time.time_ns() // 1000, 1_000_000)
    cached = _second  # one tuple, replaced atomically: threads never see a torn pair
    if cached[0] != sec:
        cached = _second = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
    return f"{cached[1]}.{us:06d}Z"


def success_result(step_uuid: str, result: Any = None, execution_time_ms: int = 0, **metadata) -> dict:
    """A successful result for step_uuid."""
    md = {"execution_time_ms": int(execution_time_ms), "retryable": False, "completed_at": completed_at()}
    md.update(metadata)
    return {"step_uuid": step_uuid, "success": True, "result": result, "status": "completed", "metadata": md}


def failure_result(step_uuid: str, message: str, error_type: str, retryable: bool, execution_time_ms: int = 0,
                   backtrace: list[str] | None = None, error_code: str | None = None, status: str = "failed",
                   **metadata) -> dict:
    """A failure result: metadata.retryable mirrors error.retryable, and the
    error type is both in the error block and in metadata."""
    retryable = bool(retryable)
    md = {"execution_time_ms": int(execution_time_ms), "retryable": retryable, "completed_at": completed_at(),
          "error_type": error_type}
    err = {"message": str(message), "error_type": error_type, "retryable": retryable}
    if error_code:
        md["error_code"] = err["error_code"] = str(error_code)
    if backtrace:
        err["backtrace"] = [str(line) for line in backtrace]
    md.update(metadata)
    return {"step_uuid": step_uuid, "success": False, "result": None, "status": status, "metadata": md, "error": err}


def exception_result(step_uuid: str, exc: BaseException, execution_time_ms: int = 0) -> dict:
    """The failure result for an exception a handler raised: retryable unless it
    is a PermanentError or says ``retryable = False``; error_type is the
    exception's class name (or its ``error_type`` attribute); the backtrace is
    the formatted traceback, one line per entry."""
    retryable = getattr(exc, "retryable", True)
    if callable(retryable):  # tolerate a retryable() method
        try:
            retryable = retryable()
        except Exception:
            retryable = True
    error_type = _text(getattr(exc, "error_type", None) or type(exc).__name__)
    message = _text(exc) or type(exc).__name__
    lines = []
    try:
        for chunk in traceback.format_exception(type(exc), exc, exc.__traceback__):
            lines.extend(_text(line) for line in chunk.rstrip("\n").split("\n") if line)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the step
        lines = []
    code = getattr(exc, "error_code", None)
    return failure_result(step_uuid, message, error_type, bool(retryable), execution_time_ms, backtrace=lines,
                          error_code=_text(code) if code else None)


def _text(value) -> str:
    """str(value) as text that always encodes to UTF-8 (lone surrogates are
    escaped; an object whose __str__ fails is shown by type)."""
    try:
        s = value if isinstance(value, str) else str(value)
    except Exception:  # noqa: BLE001
        s = f"<{type(value).__name__} with a failing __str__>"
    return s.encode("utf-8", "backslashreplace").decode("utf-8")


def encode_result(result: dict, step_uuid: str | None = None) -> bytes:
    """Serialise a result to the UTF-8 JSON complete() takes. If it cannot be
    serialised (a set, an object, NaN, a cycle, a lone surrogate...), return a
    non-retryable ``result_serialization_error`` failure for the step instead,
    so the step is never lost and the worker never crashes."""
    try:
        return _encode(result).encode("utf-8")
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        sid = step_uuid if step_uuid is not None else (result.get("step_uuid") if isinstance(result, dict) else None)
        md = result.get("metadata") if isinstance(result, dict) else None
        elapsed = md.get("execution_time_ms", 0) if isinstance(md, dict) else 0
        if not isinstance(elapsed, int) or isinstance(elapsed, bool):
            elapsed = 0
        fallback = failure_result(str(sid), f"handler result is not JSON-serialisable: {type(e).__name__}: {e}",
                                  RESULT_SERIALIZATION_ERROR, False, elapsed)
        return _encode(fallback).encode("utf-8")


Handler = Callable[[dict], Any]


class HandlerRegistry:
    """Maps handler names (the ``handler`` field of a step event) to functions.

    >>> registry = HandlerRegistry()
    >>> @registry.handler("resize_image")
    ... def resize(event):
    ...     return {"ok": True, "width": event["payload"]["width"]}
    """

    def __init__(self):
        self._handlers: dict[str, Handler] = {}

    def handler(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator registering ``fn(event) -> result payload`` under name."""
        def register(fn: Handler) -> Handler:
            self.register(name, fn)
            return fn
        return register

    def register(self, name: str, fn: Handler) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("handler name must be a non-empty string")
        if not callable(fn):
            raise TypeError(f"handler {name!r} is not callable")
        self._handlers[name] = fn

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, name: str) -> bool:
        return name in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)

    def execute(self, event: dict) -> dict:
        """Run the event's handler and return its result dict (never raises for
        a handler's failure: exceptions become failure results; an unknown
        handler becomes a non-retryable handler_not_found failure)."""
        step_uuid = event.get("step_uuid", "")
        name = event.get("handler", "")
        fn = self._handlers.get(name)
        if fn is None:
            return failure_result(step_uuid, f"Handler not found: {name}", HANDLER_NOT_FOUND, False, 0)
        start = time.perf_counter()
        try:
            value = fn(event)
        except Exception as e:  # noqa: BLE001 - every handler failure becomes a result
            return exception_result(step_uuid, e, _elapsed_ms(start))
        return success_result(step_uuid, value, _elapsed_ms(start))

    def execute_json(self, event: dict) -> bytes:
        """execute() then encode_result(): the bytes to complete the event with.

        A success is formatted straight into the wire format (the same bytes
        encode_result(success_result(...)) gives, without building the dicts);
        this is the polling hot path."""
        step_uuid = event.get("step_uuid", "")
        fn = self._handlers.get(event.get("handler", ""))
        if fn is None or not isinstance(step_uuid, str):
            return encode_result(self.execute(event), step_uuid)
        start = time.perf_counter()
        try:
            value = fn(event)
        except Exception as e:  # noqa: BLE001 - every handler failure becomes a result
            return encode_result(exception_result(step_uuid, e, _elapsed_ms(start)), step_uuid)
        elapsed = _elapsed_ms(start)
        try:
            return (_SUCCESS % (_quote(step_uuid), _encode(value), elapsed, completed_at())).encode("utf-8")
        except (TypeError, ValueError, OverflowError, RecursionError):
            return encode_result(success_result(step_uuid, value, elapsed), step_uuid)  # the fallback failure


def _elapsed_ms(start: float) -> int:
    return int((time.perf_counter() - start) * 1000)


# The registry that handler files fill in for the runner
# (``python3 -m taskerworker run``, what the worker images run): a file only
# decorates its functions with ``@taskerworker.handler("name")``.
default_registry = HandlerRegistry()


def handler(name: str) -> Callable[[Handler], Handler]:
    """Decorator registering ``fn(event) -> result payload`` under name in
    :data:`default_registry`."""
    return default_registry.handler(name)
