"""The stock handlers: the same noop, echo, sleep and fail as the Go worker's
built-in ones (internal/handlers), so a Python pool can be tried, tested and
measured end to end before any team code exists. The runner
(``python3 -m taskerworker run``) registers them unless told not to; a team
handler of the same name replaces one.

- ``noop``: returns nothing.
- ``echo``: returns its payload.
- ``sleep``: ``{"ms": N}`` (or a bare number) sleeps N milliseconds and returns
  ``{"slept_ms": N}``; for trying out slow handlers, timeouts and drains.
- ``fail``: raises :class:`StockFailure` with ``message``; retryable unless
  ``"retryable": false``; with ``"fail_attempts": N`` only the first N
  attempts fail and later ones return ``{"succeeded_on_attempt": A}``.
"""

from __future__ import annotations

import time

from .handlers import HandlerRegistry, PermanentError

NAMES = ("noop", "echo", "sleep", "fail")


class StockFailure(Exception):
    """What the fail handler raises (its error_type in the step's result)."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


def noop(event):
    return None


def echo(event):
    return event.get("payload")


def sleep(event):
    payload = event.get("payload")
    ms = payload.get("ms", 0) if isinstance(payload, dict) else payload
    if ms is None:
        ms = 0
    if isinstance(ms, bool) or not isinstance(ms, (int, float)):
        raise PermanentError(f'sleep payload {payload!r}: want {{"ms": N}} or a number')
    if ms < 0:
        raise PermanentError(f"sleep payload ms={ms}: want >= 0")
    time.sleep(ms / 1000)
    return {"slept_ms": ms}


def fail(event):
    payload = event.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise PermanentError(f"fail payload {payload!r}: want an object")
    attempts = payload.get("fail_attempts", 0)
    attempt = event.get("attempt", 1)
    if isinstance(attempts, int) and attempts > 0 and attempt > attempts:
        return {"succeeded_on_attempt": attempt}
    raise StockFailure(payload.get("message", "step failed on purpose"), payload.get("retryable", True) is not False)


def register(registry: HandlerRegistry) -> HandlerRegistry:
    """Add the stock handlers to registry and return it."""
    for name, fn in (("noop", noop), ("echo", echo), ("sleep", sleep), ("fail", fail)):
        registry.register(name, fn)
    return registry
