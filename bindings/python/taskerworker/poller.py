"""The polling loop that runs handlers, as upstream Tasker's Python/Ruby pollers do."""

from __future__ import annotations

import json
import logging
import threading
import time

from .errors import Status, TaskerWorkerError
from .handlers import RESULT_SERIALIZATION_ERROR, HandlerRegistry, encode_result, failure_result

log = logging.getLogger("taskerworker.poller")
_clock = time.perf_counter

DEFAULT_IDLE_SLEEP = 0.010          # seconds to sleep when a poll found nothing
DEFAULT_STARVATION_CHECK_INTERVAL = 100  # polls between check_starvation calls
DEFAULT_CLEANUP_INTERVAL = 1000     # polls between cleanup_timeouts calls
DEFAULT_RETRY_SLEEP = 0.010         # seconds between complete() retries when told "retry later"
DEFAULT_BATCH_SIZE = 64             # most events one poll takes
DEFAULT_BATCH_BUDGET = 0.001        # seconds of handler time one batch should take at most
MAX_BATCH_SIZE = 4096               # the library's limit per batched call
# How fast the per-event time estimate follows a batch that ran slower (half
# way: one slow batch is enough to shrink the next poll, one pause of the
# interpreter in a fast batch is not) and one that ran faster (a quarter of
# the way: about a dozen batches to grow back from one event to 64).
_SLOWER_WEIGHT = 0.5
_FASTER_WEIGHT = 0.25

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

    Batching: one poll takes up to ``batch_size`` (64) events and their
    results go back in one complete_batch call, which amortises the cost of
    crossing into the library. Every polled event is pending (its starvation
    clock runs) until completed, so each poll is sized by the recent handler
    time per event to take about ``batch_budget`` (1 ms) of handler time at
    most: fast handlers get full batches, a handler slower than the budget
    gets batches of one and behaves exactly as an unbatched poller (the first
    poll takes one event, before anything is known). ``batch_size=1`` is the
    unbatched loop. A poll counts one for the periodic checks, whatever it
    returned.

    ``stop()`` finishes the events in hand (their results are delivered) and joins.
    """

    def __init__(self, worker, registry: HandlerRegistry, *, idle_sleep: float = DEFAULT_IDLE_SLEEP,
                 starvation_check_interval: int = DEFAULT_STARVATION_CHECK_INTERVAL,
                 cleanup_interval: int = DEFAULT_CLEANUP_INTERVAL, retry_sleep: float = DEFAULT_RETRY_SLEEP,
                 batch_size: int = DEFAULT_BATCH_SIZE, batch_budget: float = DEFAULT_BATCH_BUDGET,
                 delay: float = 0.0, name: str = "taskerworker-poller", on_starvation=None, on_error=None):
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size is {batch_size}; want 1..{MAX_BATCH_SIZE}")
        if not batch_budget > 0:
            raise ValueError(f"batch_budget is {batch_budget}; want a positive number of seconds")
        self.worker = worker
        self.registry = registry
        self.idle_sleep = idle_sleep
        self.starvation_check_interval = starvation_check_interval
        self.cleanup_interval = cleanup_interval
        self.retry_sleep = retry_sleep
        self.batch_size = batch_size
        self.batch_budget = batch_budget
        self.delay = delay
        self.name = name
        self.on_starvation = on_starvation
        self.on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Counters (read them freely; written only by the polling thread).
        self.polls = 0
        self.batches = 0     # polls that returned events: processed / batches is the mean batch
        self.processed = 0
        self.completed = 0
        self.retries = 0
        self.fallbacks = 0
        self.starvation_checks = 0
        self.cleanups = 0
        self.timed_out_cleanups = 0
        self.starving: list = []   # the last non-empty check_starvation answer
        self.error: BaseException | None = None  # what ended the loop, if not stop()
        # Recent handler seconds per event; starting at the budget makes the
        # first poll take one event.
        self._per_event = batch_budget

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

    def batch_limit(self) -> int:
        """How many events the next poll may take: as many as fit in
        batch_budget at the recent handler time per event, 1..batch_size."""
        per_event = self._per_event
        if per_event * self.batch_size <= self.batch_budget:
            return self.batch_size
        return max(1, int(self.batch_budget / per_event))

    def poll_once(self) -> bool:
        """One iteration: poll, run and complete the events of one poll (at
        most batch_limit()), and do the periodic checks. Returns whether an
        event was processed."""
        limit = self.batch_limit()
        if limit == 1:  # the unbatched calls: cheaper for one event
            event = self.worker.poll()
            self.polls += 1
            if event is not None:
                self.batches += 1
                start = _clock()
                payload = self._run(event)
                self._learn(_clock() - start, 1)
                self.deliver(event, payload)
            got = event is not None
        else:
            events = self.worker.poll_batch(limit)
            self.polls += 1
            if events:
                self.batches += 1
                start = _clock()
                if self.delay:
                    payloads = [self._run(e) for e in events]
                else:
                    payloads = list(map(self.registry.execute_json, events))
                    self.processed += len(events)
                self._learn(_clock() - start, len(events))
                self.deliver_batch(events, payloads)
            got = bool(events)
        if self.starvation_check_interval and self.polls % self.starvation_check_interval == 0:
            self._check_starvation()
        if self.cleanup_interval and self.polls % self.cleanup_interval == 0:
            self._cleanup()
        return got

    def process(self, event: dict) -> None:
        """Run one event's handler and deliver its result."""
        self.deliver(event, self._run(event))

    def _run(self, event: dict) -> bytes:
        if self.delay:
            time.sleep(self.delay)
        payload = self.registry.execute_json(event)
        self.processed += 1
        return payload

    def _learn(self, elapsed: float, n: int) -> None:
        """Fold a batch's handler seconds per event into the estimate. A
        handler slower than the budget keeps the estimate above half the
        budget, which means batches of one."""
        t = elapsed / n
        self._per_event += (t - self._per_event) * (_SLOWER_WEIGHT if t > self._per_event else _FASTER_WEIGHT)

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
                    replaced = True
                    payload = self._fallback(event, payload, e)
                    continue
                if e.code in _WORKER_GONE:
                    log.warning("worker stopped before event %s was completed; the step will be redelivered", event_id)
                    raise
                self._refused(event, e)
                return False
            self.retries += 1
            time.sleep(self.retry_sleep)

    def deliver_batch(self, events: list, payloads: list) -> None:
        """Complete events with payloads (pairwise) in one complete_batch call,
        handling each item as deliver() would: "retry later" items are sent
        again every retry_sleep until accepted or the worker stops, a refused
        malformed result is replaced by a serialisation failure, other
        refusals go to on_error. Nothing is dropped."""
        ids = [e.get("event_id", "") for e in events]
        todo = range(len(events))   # indices still to send
        replaced = set()
        while True:
            try:
                outcomes = self.worker.complete_batch([(ids[i], payloads[i]) for i in todo])
            except TaskerWorkerError as e:
                if e.code in _WORKER_GONE:
                    log.warning("worker stopped before %d events were completed; their steps will be redelivered",
                                len(todo))
                    raise
                # The batch as a whole was refused (say, too large together)
                # and nothing was completed: each result on its own has its
                # own outcome.
                log.warning("complete_batch of %d events refused (%s); completing them one at a time", len(todo), e)
                for i in todo:
                    self.deliver(events[i], payloads[i])
                return
            if outcomes.count(True) == len(outcomes):  # the usual case
                self.completed += len(outcomes)
                return
            later, again, gone = [], [], None
            for i, outcome in zip(todo, outcomes):
                if outcome is True:
                    self.completed += 1
                elif outcome is False:
                    later.append(i)
                elif outcome.code in _MALFORMED and i not in replaced:
                    replaced.add(i)
                    payloads[i] = self._fallback(events[i], payloads[i], outcome)
                    again.append(i)
                elif outcome.code in _WORKER_GONE:
                    gone = outcome
                else:
                    self._refused(events[i], outcome)
            if gone is not None:
                log.warning("worker stopped before %d events were completed; their steps will be redelivered",
                            len(later) + len(again) + 1)
                raise gone
            if later:
                self.retries += len(later)
                time.sleep(self.retry_sleep)
            elif not again:
                return
            todo = sorted(later + again)

    def _fallback(self, event: dict, payload: bytes, e: TaskerWorkerError) -> bytes:
        """The library refused what the handler produced (too big,
        inconsistent): the result that fails the step explicitly instead."""
        self.fallbacks += 1
        log.error("result for event %s refused (%s); completing with %s", event.get("event_id", ""), e,
                  RESULT_SERIALIZATION_ERROR)
        return encode_result(failure_result(
            event.get("step_uuid", ""), f"result refused by the worker: {e.message}",
            RESULT_SERIALIZATION_ERROR, False, _elapsed_of(payload)))

    def _refused(self, event: dict, e: TaskerWorkerError) -> None:
        # Already completed, timed out (an ffi_timeout failure was delivered
        # and the step will be retried), unknown, busy: the outcome is settled
        # elsewhere; nothing to retry.
        log.warning("complete(%s) refused: %s", event.get("event_id", ""), e)
        if self.on_error:
            self.on_error(event, e)

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
