"""The polling loop that runs handlers, as upstream Tasker's Python/Ruby pollers do."""

from __future__ import annotations

import json
import logging
import threading
import time

from .errors import Status, TaskerWorkerError
from .handlers import RESULT_SERIALIZATION_ERROR, HandlerRegistry, encode_result, failure_result

log = logging.getLogger("taskerworker.poller")

DEFAULT_IDLE_SLEEP = 0.010          # seconds to sleep when a poll found nothing
DEFAULT_STARVATION_CHECK_INTERVAL = 100  # polls between check_starvation calls
DEFAULT_CLEANUP_INTERVAL = 1000     # polls between cleanup_timeouts calls
DEFAULT_RETRY_SLEEP = 0.010         # seconds between complete() retries when told "retry later"

# complete() refusals that mean this result was malformed: replace it with a
# serialisation failure rather than lose the step.
_MALFORMED = (Status.ERR_INVALID_JSON, Status.ERR_INVALID_UTF8, Status.ERR_INVALID_RESULT)
# The worker is gone or going: stop the loop.
_WORKER_GONE = (Status.ERR_STOPPED, Status.ERR_NOT_STARTED)


class Poller:
    """A thread that polls a started Worker and runs each event's handler.

    As upstream: sleep ``idle_sleep`` (10 ms) when a poll finds nothing; call
    check_starvation every ``starvation_check_interval`` (100) polls and
    cleanup_timeouts every ``cleanup_interval`` (1000) polls; run handlers one
    at a time on the polling thread. When complete() answers "retry later" the
    same result is sent again every ``retry_sleep`` until it is accepted or the
    worker stops: a result is never dropped. ``delay`` (seconds) sleeps before
    each handler, to simulate a slow poller.

    ``stop()`` finishes the event in hand (its result is delivered) and joins.
    """

    def __init__(self, worker, registry: HandlerRegistry, *, idle_sleep: float = DEFAULT_IDLE_SLEEP,
                 starvation_check_interval: int = DEFAULT_STARVATION_CHECK_INTERVAL,
                 cleanup_interval: int = DEFAULT_CLEANUP_INTERVAL, retry_sleep: float = DEFAULT_RETRY_SLEEP,
                 delay: float = 0.0, name: str = "taskerworker-poller", on_starvation=None, on_error=None):
        self.worker = worker
        self.registry = registry
        self.idle_sleep = idle_sleep
        self.starvation_check_interval = starvation_check_interval
        self.cleanup_interval = cleanup_interval
        self.retry_sleep = retry_sleep
        self.delay = delay
        self.name = name
        self.on_starvation = on_starvation
        self.on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Counters (read them freely; written only by the polling thread).
        self.polls = 0
        self.processed = 0
        self.completed = 0
        self.retries = 0
        self.fallbacks = 0
        self.starvation_checks = 0
        self.cleanups = 0
        self.timed_out_cleanups = 0
        self.starving: list = []   # the last non-empty check_starvation answer
        self.error: BaseException | None = None  # what ended the loop, if not stop()

    # -- thread control ----------------------------------------------------

    def start(self) -> "Poller":
        if self._thread is not None:
            raise RuntimeError("poller already started")
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to end after the event in hand, and wait for it."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> "Poller":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the loop ----------------------------------------------------------

    def run(self) -> None:
        """The polling loop (runs on the calling thread; start() runs it on a new one)."""
        try:
            while not self._stop.is_set():
                if not self.poll_once():
                    self._stop.wait(self.idle_sleep)
        except TaskerWorkerError as e:
            if e.code in _WORKER_GONE:
                log.info("worker stopped; poller exits: %s", e.message)
            else:
                self.error = e
                log.error("poller stopped by an error: %s", e)
        except BaseException as e:  # keep the reason for whoever joins us
            self.error = e
            log.exception("poller crashed")
            raise

    def poll_once(self) -> bool:
        """One iteration: poll, run and complete at most one event, and do the
        periodic checks. Returns whether an event was processed."""
        event = self.worker.poll()
        self.polls += 1
        if event is not None:
            self.process(event)
        if self.starvation_check_interval and self.polls % self.starvation_check_interval == 0:
            self._check_starvation()
        if self.cleanup_interval and self.polls % self.cleanup_interval == 0:
            self._cleanup()
        return event is not None

    def process(self, event: dict) -> None:
        if self.delay:
            time.sleep(self.delay)
        payload = self.registry.execute_json(event)
        self.processed += 1
        self.deliver(event, payload)

    def deliver(self, event: dict, payload: bytes) -> bool:
        """Complete event with payload, retrying "retry later" until accepted or
        the worker stops. Returns whether the result was delivered."""
        event_id = event.get("event_id", "")
        replaced = False
        while True:
            try:
                if self.worker.complete_json(event_id, payload):
                    self.completed += 1
                    return True
            except TaskerWorkerError as e:
                if e.code in _MALFORMED and not replaced:
                    # The library refused what the handler produced (too big,
                    # inconsistent): fail the step explicitly instead.
                    replaced = True
                    self.fallbacks += 1
                    log.error("result for event %s refused (%s); completing with %s", event_id, e,
                              RESULT_SERIALIZATION_ERROR)
                    payload = encode_result(failure_result(
                        event.get("step_uuid", ""), f"result refused by the worker: {e.message}",
                        RESULT_SERIALIZATION_ERROR, False, _elapsed_of(payload)))
                    continue
                if e.code in _WORKER_GONE:
                    log.warning("worker stopped before event %s was completed; the step will be redelivered", event_id)
                    raise
                # Already completed, timed out (an ffi_timeout failure was
                # delivered and the step will be retried), unknown, busy: the
                # outcome is settled elsewhere; nothing to retry.
                log.warning("complete(%s) refused: %s", event_id, e)
                if self.on_error:
                    self.on_error(event, e)
                return False
            self.retries += 1
            time.sleep(self.retry_sleep)

    def _check_starvation(self) -> None:
        self.starvation_checks += 1
        starving = self.worker.check_starvation()
        if starving:
            self.starving = starving
            log.warning("%d pending FFI events are starving (oldest %s ms)", len(starving),
                        max(s.get("age_ms", 0) for s in starving))
            if self.on_starvation:
                self.on_starvation(starving)

    def _cleanup(self) -> None:
        self.cleanups += 1
        n = self.worker.cleanup_timeouts()
        if n:
            self.timed_out_cleanups += n
            log.warning("%d pending FFI events timed out into ffi_timeout failures", n)


def _elapsed_of(payload: bytes) -> int:
    try:
        v = json.loads(payload)["metadata"]["execution_time_ms"]
        return v if isinstance(v, int) and not isinstance(v, bool) else 0
    except Exception:  # noqa: BLE001
        return 0
