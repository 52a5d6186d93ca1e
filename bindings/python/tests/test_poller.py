"""The Poller's loop against a fake worker (no library): intervals, idle sleep,
retry-later handling, fallbacks and stopping."""

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


def ev(i, handler="echo"):
    return {"event_id": f"{i}.1", "step_uuid": f"{STEP}{i}", "handler": handler, "payload": {"i": i}}


def registry():
    r = HandlerRegistry()
    r.register("echo", lambda e: e["payload"])
    r.register("bad", lambda e: {1, 2})
    return r


class PollerTest(unittest.TestCase):
    def test_periodic_checks_follow_upstream_defaults(self):
        w = FakeWorker()
        p = Poller(w, registry(), idle_sleep=0)
        self.assertEqual((p.idle_sleep, p.starvation_check_interval, p.cleanup_interval), (0, 100, 1000))
        for _ in range(2000):
            p.poll_once()
        self.assertEqual(w.starvation_checks, list(range(100, 2001, 100)))
        self.assertEqual(w.cleanups, [1000, 2000])
        self.assertEqual(p.starving, [{"event_id": "x", "step_uuid": "y", "age_ms": 12}])

    def test_defaults(self):
        p = Poller(FakeWorker(), registry())
        self.assertEqual((p.idle_sleep, p.starvation_check_interval, p.cleanup_interval, p.delay), (0.010, 100, 1000, 0.0))

    def test_intervals_are_configurable(self):
        w = FakeWorker()
        p = Poller(w, registry(), starvation_check_interval=3, cleanup_interval=5)
        for _ in range(15):
            p.poll_once()
        self.assertEqual(w.starvation_checks, [3, 6, 9, 12, 15])
        self.assertEqual(w.cleanups, [5, 10, 15])

    def test_idle_sleep_when_nothing_to_do(self):
        w = FakeWorker()
        p = Poller(w, registry(), idle_sleep=0.05).start()
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
        w = FakeWorker(events=[ev(i) for i in range(50)])
        p = Poller(w, r, idle_sleep=0.001).start()
        deadline = time.monotonic() + 10
        while len(w.completed) < 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        p.stop()
        self.assertEqual([c[0] for c in w.completed], [f"{i}.1" for i in range(50)])
        self.assertEqual(peak[0], 1)
        self.assertEqual(p.processed, 50)

    def test_retry_later_is_retried_until_accepted(self):
        w = FakeWorker(events=[ev(1)], complete_answers=[False, False, False, True])
        p = Poller(w, registry(), retry_sleep=0.001)
        p.poll_once()
        self.assertEqual(w.attempts, 4)
        self.assertEqual(p.retries, 3)
        self.assertEqual(len(w.completed), 1)
        self.assertEqual(w.completed[0][1]["result"], {"i": 1})

    def test_retry_continues_after_stop_is_requested(self):
        # A stop request must not drop the result in hand.
        w = FakeWorker(events=[ev(1)], complete_answers=[False] * 20)
        p = Poller(w, registry(), retry_sleep=0.005, idle_sleep=0.001).start()
        time.sleep(0.02)
        p.stop()
        self.assertEqual(len(w.completed), 1)
        self.assertEqual(w.attempts, 21)

    def test_worker_gone_ends_retries_and_loop(self):
        w = FakeWorker(events=[ev(1)], complete_answers=[False, TaskerWorkerError(Status.ERR_STOPPED, "stopping")])
        p = Poller(w, registry(), retry_sleep=0.001, idle_sleep=0.001).start()
        p._thread.join(5)  # ends by itself: the worker said it is stopping
        self.assertFalse(p.running)
        self.assertEqual(w.attempts, 2)
        self.assertIsNone(p.error)  # a stopping worker is a normal end
        self.assertEqual(w.completed, [])

    def test_loop_ends_when_worker_stops(self):
        w = FakeWorker()
        p = Poller(w, registry(), idle_sleep=0.001).start()
        w.gone = True
        p._thread.join(5)
        self.assertFalse(p.running)
        self.assertIsNone(p.error)

    def test_refused_result_is_replaced_by_serialization_failure(self):
        w = FakeWorker(events=[ev(1)],
                       complete_answers=[TaskerWorkerError(Status.ERR_INVALID_JSON, "too big")])
        p = Poller(w, registry())
        p.poll_once()
        self.assertEqual(p.fallbacks, 1)
        (eid, res), = w.completed
        self.assertEqual(res["error"]["error_type"], RESULT_SERIALIZATION_ERROR)
        self.assertIs(res["error"]["retryable"], False)
        self.assertEqual(res["step_uuid"], f"{STEP}1")

    def test_unserialisable_handler_result_completes_as_failure(self):
        w = FakeWorker(events=[ev(1, "bad"), ev(2, "nobody")])
        p = Poller(w, registry())
        p.poll_once()
        p.poll_once()
        (_, bad), (_, missing) = w.completed
        self.assertEqual(bad["error"]["error_type"], RESULT_SERIALIZATION_ERROR)
        self.assertEqual(missing["error"]["error_type"], "handler_not_found")

    def test_settled_elsewhere_is_not_retried(self):
        seen = []
        w = FakeWorker(events=[ev(1)], complete_answers=[TaskerWorkerError(Status.ERR_TIMED_OUT, "timed out")])
        p = Poller(w, registry(), on_error=lambda e, err: seen.append((e["event_id"], err.code)))
        p.poll_once()
        self.assertEqual(w.attempts, 1)
        self.assertEqual(seen, [("1.1", Status.ERR_TIMED_OUT)])

    def test_delay_sleeps_before_each_handler(self):
        w = FakeWorker(events=[ev(1), ev(2)])
        p = Poller(w, registry(), delay=0.05)
        t = time.monotonic()
        p.poll_once()
        p.poll_once()
        self.assertGreaterEqual(time.monotonic() - t, 0.1)
        self.assertEqual(len(w.completed), 2)


if __name__ == "__main__":
    unittest.main()
