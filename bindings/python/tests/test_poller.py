"""The Poller's loop against a fake worker (no library): intervals, idle sleep,
retry-later handling, fallbacks and stopping; unbatched (batch_size=1, whose
fake has no batch methods, so the loop provably never batches) and batched,
plus the batch sizing and the per-item handling of complete_batch."""

import json
import threading
import time
import unittest

from taskerworker import HandlerRegistry, Poller, RESULT_SERIALIZATION_ERROR, TaskerWorkerError
from taskerworker.errors import Status

STEP = "00000000-0000-4000-8000-00000000000"


class FakeWorker:
    """Serves events from a list; records calls; complete() answers from a script."""

    def __init__(self, events=(), complete_answers=()):
        self.events = list(events)
        self.answers = list(complete_answers)  # True/False or an exception, consumed in order, then True
        self.completed = []                    # (event_id, result dict)
        self.attempts = 0
        self.polls = 0
        self.starvation_checks = []
        self.cleanups = []
        self.lock = threading.Lock()
        self.gone = False

    def poll(self):
        with self.lock:
            self.polls += 1
            if self.gone:
                raise TaskerWorkerError(Status.ERR_STOPPED, "stopping")
            return self.events.pop(0) if self.events else None

    def complete_json(self, event_id, payload):
        with self.lock:
            self.attempts += 1
            answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        if answer:
            self.completed.append((event_id, json.loads(payload)))
        return answer

    def check_starvation(self):
        self.starvation_checks.append(self.polls)
        return [{"event_id": "x", "step_uuid": "y", "age_ms": 12}]

    def cleanup_timeouts(self):
        self.cleanups.append(self.polls)
        return 0


class FakeBatchWorker(FakeWorker):
    """FakeWorker with the batch methods. complete_batch answers each item
    from the same script (an exception is that item's outcome, as the real
    complete_batch returns it); ``batch_refusals`` are raised by whole calls
    first. ``sizes`` records every poll's size (1 for poll())."""

    def __init__(self, events=(), complete_answers=(), batch_refusals=()):
        super().__init__(events, complete_answers)
        self.batch_refusals = list(batch_refusals)
        self.sizes = []
        self.batch_calls = []  # the event ids of each complete_batch call

    def poll(self):
        self.sizes.append(1)
        return super().poll()

    def poll_batch(self, max):
        with self.lock:
            self.polls += 1
            self.sizes.append(max)
            if self.gone:
                raise TaskerWorkerError(Status.ERR_STOPPED, "stopping")
            out, self.events = self.events[:max], self.events[max:]
            return out

    def complete_batch(self, items):
        if self.batch_refusals:
            raise self.batch_refusals.pop(0)
        self.batch_calls.append([event_id for event_id, _ in items])
        outcomes = []
        for event_id, payload in items:
            with self.lock:
                self.attempts += 1
                answer = self.answers.pop(0) if self.answers else True
            if answer is True:
                self.completed.append((event_id, json.loads(payload)))
            outcomes.append(answer)
        return outcomes


def ev(i, handler="echo"):
    return {"event_id": f"{i}.1", "step_uuid": f"{STEP}{i}", "handler": handler, "payload": {"i": i}}


def registry():
    r = HandlerRegistry()
    r.register("echo", lambda e: e["payload"])
    r.register("bad", lambda e: {1, 2})
    return r


class PollerTest(unittest.TestCase):
    """The loop as it always was: batch_size=1, one poll() and complete_json() per event."""

    BATCH_SIZE = 1
    Fake = FakeWorker

    def poller(self, w, r, **kw):
        return Poller(w, r, batch_size=self.BATCH_SIZE, **kw)

    def test_periodic_checks_follow_upstream_defaults(self):
        w = self.Fake()
        p = self.poller(w, registry(), idle_sleep=0)
        self.assertEqual((p.idle_sleep, p.starvation_check_interval, p.cleanup_interval), (0, 100, 1000))
        for _ in range(2000):
            p.poll_once()
        self.assertEqual(w.starvation_checks, list(range(100, 2001, 100)))
        self.assertEqual(w.cleanups, [1000, 2000])
        self.assertEqual(p.starving, [{"event_id": "x", "step_uuid": "y", "age_ms": 12}])

    def test_defaults(self):
        p = Poller(FakeWorker(), registry())
        self.assertEqual((p.idle_sleep, p.starvation_check_interval, p.cleanup_interval, p.delay), (0.010, 100, 1000, 0.0))
        self.assertEqual((p.batch_size, p.batch_budget), (64, 0.001))
        self.assertEqual(p.batch_limit(), 1, "nothing is known of the handlers yet: the first poll takes one event")

    def test_intervals_are_configurable(self):
        w = self.Fake()
        p = self.poller(w, registry(), starvation_check_interval=3, cleanup_interval=5)
        for _ in range(15):
            p.poll_once()
        self.assertEqual(w.starvation_checks, [3, 6, 9, 12, 15])
        self.assertEqual(w.cleanups, [5, 10, 15])

    def test_idle_sleep_when_nothing_to_do(self):
        w = self.Fake()
        p = self.poller(w, registry(), idle_sleep=0.05).start()
        time.sleep(0.3)
        p.stop()
        self.assertFalse(p.running)
        self.assertLessEqual(w.polls, 10, "idle poller must sleep between empty polls")
        self.assertGreaterEqual(w.polls, 3)

    def test_runs_handlers_one_at_a_time_and_completes_each(self):
        active, peak = [0], [0]
        lock = threading.Lock()

        def h(e):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.001)
            with lock:
                active[0] -= 1
            return e["payload"]

        r = HandlerRegistry()
        r.register("echo", h)
        w = self.Fake(events=[ev(i) for i in range(50)])
        p = self.poller(w, r, idle_sleep=0.001).start()
        deadline = time.monotonic() + 10
        while len(w.completed) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        p.stop()
        self.assertEqual([c[0] for c in w.completed], [f"{i}.1" for i in range(50)])
        self.assertEqual(peak[0], 1)
        self.assertEqual(p.processed, 50)

    def test_retry_later_is_retried_until_accepted(self):
        w = self.Fake(events=[ev(1)], complete_answers=[False, False, False, True])
        p = self.poller(w, registry(), retry_sleep=0.001)
        p.poll_once()
        self.assertEqual(w.attempts, 4)
        self.assertEqual(p.retries, 3)
        self.assertEqual(len(w.completed), 1)
        self.assertEqual(w.completed[0][1]["result"], {"i": 1})

    def test_retry_continues_after_stop_is_requested(self):
        # A stop request must not drop the result in hand.
        w = self.Fake(events=[ev(1)], complete_answers=[False] * 20)
        p = self.poller(w, registry(), retry_sleep=0.005, idle_sleep=0.001).start()
        time.sleep(0.02)
        p.stop()
        self.assertEqual(len(w.completed), 1)
        self.assertEqual(w.attempts, 21)

    def test_worker_gone_ends_retries_and_loop(self):
        w = self.Fake(events=[ev(1)], complete_answers=[False, TaskerWorkerError(Status.ERR_STOPPED, "stopping")])
        p = self.poller(w, registry(), retry_sleep=0.001, idle_sleep=0.001).start()
        p._thread.join(5)  # ends by itself: the worker said it is stopping
        self.assertFalse(p.running)
        self.assertEqual(w.attempts, 2)
        self.assertIsNone(p.error)  # a stopping worker is a normal end
        self.assertEqual(w.completed, [])

    def test_loop_ends_when_worker_stops(self):
        w = self.Fake()
        p = self.poller(w, registry(), idle_sleep=0.001).start()
        w.gone = True
        p._thread.join(5)
        self.assertFalse(p.running)
        self.assertIsNone(p.error)

    def test_refused_result_is_replaced_by_serialization_failure(self):
        w = self.Fake(events=[ev(1)],
                       complete_answers=[TaskerWorkerError(Status.ERR_INVALID_JSON, "too big")])
        p = self.poller(w, registry())
        p.poll_once()
        self.assertEqual(p.fallbacks, 1)
        (eid, res), = w.completed
        self.assertEqual(res["error"]["error_type"], RESULT_SERIALIZATION_ERROR)
        self.assertIs(res["error"]["retryable"], False)
        self.assertEqual(res["step_uuid"], f"{STEP}1")

    def test_unserialisable_handler_result_completes_as_failure(self):
        w = self.Fake(events=[ev(1, "bad"), ev(2, "nobody")])
        p = self.poller(w, registry())
        p.poll_once()
        p.poll_once()
        (_, bad), (_, missing) = w.completed
        self.assertEqual(bad["error"]["error_type"], RESULT_SERIALIZATION_ERROR)
        self.assertEqual(missing["error"]["error_type"], "handler_not_found")

    def test_settled_elsewhere_is_not_retried(self):
        seen = []
        w = self.Fake(events=[ev(1)], complete_answers=[TaskerWorkerError(Status.ERR_TIMED_OUT, "timed out")])
        p = self.poller(w, registry(), on_error=lambda e, err: seen.append((e["event_id"], err.code)))
        p.poll_once()
        self.assertEqual(w.attempts, 1)
        self.assertEqual(seen, [("1.1", Status.ERR_TIMED_OUT)])

    def test_delay_sleeps_before_each_handler(self):
        w = self.Fake(events=[ev(1), ev(2)])
        p = self.poller(w, registry(), delay=0.05)
        t = time.monotonic()
        p.poll_once()
        p.poll_once()
        self.assertGreaterEqual(time.monotonic() - t, 0.1)
        self.assertEqual(len(w.completed), 2)



class BatchedPollerTest(PollerTest):
    """Every test above again with batching on, plus the batch sizing and the
    per-item handling of complete_batch."""

    BATCH_SIZE = 64
    Fake = FakeBatchWorker

    def batch(self, w, n, **kw):
        """A poller and n events it ran, ready for deliver_batch."""
        events = [ev(i) for i in range(n)]
        p = self.poller(w, registry(), **kw)
        return p, events, [p.registry.execute_json(e) for e in events]

    def test_fast_handlers_grow_the_batches_to_batch_size(self):
        w = self.Fake(events=[ev(i) for i in range(3000)])
        p = self.poller(w, registry(), starvation_check_interval=10, cleanup_interval=50)
        while w.events:
            self.assertTrue(p.poll_once())
        self.assertEqual(w.sizes[0], 1, "the first poll takes one event")
        self.assertEqual(max(w.sizes), 64)
        self.assertLess(len(w.sizes), 3000 // 16, "a fast handler gets large batches")
        self.assertEqual([c[0] for c in w.completed], [f"{i}.1" for i in range(3000)], "each once, in order")
        self.assertEqual((p.processed, p.completed, p.retries, p.fallbacks), (3000, 3000, 0, 0))
        self.assertEqual((p.polls, p.batches), (len(w.sizes), len(w.sizes)))
        self.assertLess(p.batches, 100)
        # A poll counts one for the periodic checks, whatever its size.
        self.assertEqual(w.starvation_checks, list(range(10, p.polls + 1, 10)))
        self.assertEqual(w.cleanups, list(range(50, p.polls + 1, 50)))

    def test_a_handler_slower_than_the_budget_gets_batches_of_one(self):
        r = HandlerRegistry()
        r.register("echo", lambda e: time.sleep(0.002) or e["payload"])
        w = self.Fake(events=[ev(i) for i in range(20)])
        p = self.poller(w, r)
        while w.events:
            p.poll_once()
        self.assertEqual(w.sizes, [1] * 20)
        self.assertEqual(w.batch_calls, [], "one event at a time: complete_json, as unbatched")
        self.assertEqual((p.batches, p.processed, len(w.completed)), (20, 20, 20))

    def test_a_handler_turning_slow_shrinks_the_next_poll_at_once(self):
        slow = threading.Event()
        r = HandlerRegistry()
        r.register("echo", lambda e: (time.sleep(0.003) if slow.is_set() else None) or e["payload"])
        w = self.Fake(events=[ev(i) for i in range(2000)])
        p = self.poller(w, r)
        while w.sizes[-1:] != [64]:
            p.poll_once()
        slow.set()
        p.poll_once()  # a batch of slow events, sized for fast ones
        p.poll_once()
        p.poll_once()
        self.assertGreater(w.sizes[-3], 1)
        self.assertEqual(w.sizes[-2:], [1, 1])
        slow.clear()
        while w.sizes[-1:] != [64]:
            p.poll_once()
        self.assertEqual(len(w.completed), p.processed)

    def test_retry_later_items_are_resent_until_accepted(self):
        w = self.Fake(complete_answers=[True, False, True, False, True])
        p, events, payloads = self.batch(w, 3, retry_sleep=0.001)
        p.deliver_batch(events, payloads)
        self.assertEqual(w.batch_calls, [["0.1", "1.1", "2.1"], ["1.1"], ["1.1"]])
        self.assertEqual((p.completed, p.retries, p.fallbacks), (3, 2, 0))
        self.assertEqual(sorted(c[0] for c in w.completed), ["0.1", "1.1", "2.1"])
        self.assertEqual([c[1]["result"] for c in w.completed if c[0] == "1.1"], [{"i": 1}])

    def test_retry_later_items_are_resent_after_stop_is_requested(self):
        w = self.Fake(complete_answers=[False] * 5)
        p, events, payloads = self.batch(w, 2, retry_sleep=0.001)
        p.stop()
        p.deliver_batch(events, payloads)
        self.assertEqual(sorted(c[0] for c in w.completed), ["0.1", "1.1"])
        self.assertEqual(p.retries, 5)

    def test_a_refused_malformed_item_is_replaced_and_resent_at_once(self):
        w = self.Fake(complete_answers=[True, TaskerWorkerError(Status.ERR_INVALID_RESULT, "inconsistent"), True])
        p, events, payloads = self.batch(w, 3, retry_sleep=60)  # a sleep would hang the test
        p.deliver_batch(events, payloads)
        self.assertEqual(w.batch_calls, [["0.1", "1.1", "2.1"], ["1.1"]])
        self.assertEqual((p.completed, p.retries, p.fallbacks), (3, 0, 1))
        res = dict(w.completed)["1.1"]
        self.assertEqual((res["error"]["error_type"], res["error"]["retryable"], res["step_uuid"]),
                         (RESULT_SERIALIZATION_ERROR, False, f"{STEP}1"))
        self.assertIn("inconsistent", res["error"]["message"])

    def test_a_refused_fallback_is_not_replaced_again(self):
        seen = []
        bad = TaskerWorkerError(Status.ERR_INVALID_JSON, "too big")
        w = self.Fake(complete_answers=[bad, bad])
        p, events, payloads = self.batch(w, 1, on_error=lambda e, err: seen.append((e["event_id"], err.code)))
        p.deliver_batch(events, payloads)
        self.assertEqual((len(w.batch_calls), p.fallbacks, p.completed), (2, 1, 0))
        self.assertEqual(seen, [("0.1", Status.ERR_INVALID_JSON)])

    def test_settled_items_go_to_on_error_and_are_not_resent(self):
        seen = []
        w = self.Fake(complete_answers=[TaskerWorkerError(Status.ERR_TIMED_OUT, "timed out"), True,
                                        TaskerWorkerError(Status.ERR_ALREADY_COMPLETED, "twice")])
        p, events, payloads = self.batch(w, 3, on_error=lambda e, err: seen.append((e["event_id"], err.code)))
        p.deliver_batch(events, payloads)
        self.assertEqual(len(w.batch_calls), 1)
        self.assertEqual(seen, [("0.1", Status.ERR_TIMED_OUT), ("2.1", Status.ERR_ALREADY_COMPLETED)])
        self.assertEqual(p.completed, 1)

    def test_an_item_answered_stopped_ends_the_delivery(self):
        w = self.Fake(complete_answers=[True, TaskerWorkerError(Status.ERR_STOPPED, "stopping"), False])
        p, events, payloads = self.batch(w, 3, retry_sleep=0.001)
        with self.assertRaises(TaskerWorkerError) as cm:
            p.deliver_batch(events, payloads)
        self.assertEqual(cm.exception.code, Status.ERR_STOPPED)
        self.assertEqual((len(w.batch_calls), p.completed), (1, 1))

    def test_a_whole_call_refused_is_delivered_one_at_a_time(self):
        w = self.Fake(batch_refusals=[TaskerWorkerError(Status.ERR_INVALID_JSON, "results_json too large")])
        p, events, payloads = self.batch(w, 3)
        p.deliver_batch(events, payloads)
        self.assertEqual(w.batch_calls, [])
        self.assertEqual([c[0] for c in w.completed], ["0.1", "1.1", "2.1"])
        self.assertEqual((w.attempts, p.completed), (3, 3))

    def test_a_whole_call_answered_stopped_raises(self):
        w = self.Fake(batch_refusals=[TaskerWorkerError(Status.ERR_STOPPED, "stopping")])
        p, events, payloads = self.batch(w, 2)
        with self.assertRaises(TaskerWorkerError) as cm:
            p.deliver_batch(events, payloads)
        self.assertEqual((cm.exception.code, w.completed, p.completed), (Status.ERR_STOPPED, [], 0))

    def test_options_are_checked(self):
        for kw in ({"batch_size": 0}, {"batch_size": 4097}, {"batch_budget": 0}, {"batch_budget": -1}):
            with self.subTest(**kw), self.assertRaises(ValueError) as cm:
                Poller(self.Fake(), registry(), **kw)
            self.assertIn(next(iter(kw)), str(cm.exception))
        self.assertEqual(Poller(self.Fake(), registry(), batch_size=4096).batch_size, 4096)


if __name__ == "__main__":
    unittest.main()
