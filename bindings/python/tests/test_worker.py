"""End to end through the real library and queue: handlers, failures, many
threads, starvation and FFI timeouts."""

import collections
import threading
import time
import unittest

from taskerworker import HandlerRegistry, PermanentError, Poller, StoppedError, TimedOutError

import support
from support import WorkerTestCase


class HappyPathTest(WorkerTestCase):
    def test_two_handlers_complete_every_step(self):
        registry = HandlerRegistry()

        @registry.handler("py_echo")
        def echo(event):
            return event["payload"]

        @registry.handler("py_add")
        def add(event):
            p = event["payload"]
            return {"sum": p["a"] + p["b"], "attempt": event["attempt"]}

        w = self.start()
        support.enqueue(self.queue, "py_echo", 20, {"greeting": "hello ✓"})
        support.enqueue(self.queue, "py_add", 20, {"a": 2, "b": 40})
        poller = Poller(w, registry, idle_sleep=0.005).start()
        support.wait_for("40 steps completed", lambda: support.stats(self.queue)["Completed"] == 40)
        poller.stop()
        w.stop()
        self.assertIsNone(poller.error)
        self.assertEqual((poller.processed, poller.completed), (40, 40))
        st = support.stats(self.queue)
        self.assertEqual((st["Completed"], st["Ready"], st["Claimed"], st["Dead"]), (40, 0, 0, 0))
        results = collections.Counter()
        for s in support.steps(self.queue):
            self.assertEqual((s["state"], s["attempts"]), ("completed", 1), s)
            results[repr(s["result"]["result"])] += 1
        self.assertEqual(results, {repr({"greeting": "hello ✓"}): 20, repr({"sum": 42, "attempt": 1}): 20})


class HandlerFailuresTest(WorkerTestCase):
    def test_failures_reach_the_queue_as_the_handler_meant(self):
        registry = HandlerRegistry()

        @registry.handler("py_flaky")
        def flaky(event):  # retryable: fails the first attempt only
            if event["attempt"] == 1:
                raise ConnectionError("downstream unavailable")
            return {"ok": True}

        @registry.handler("py_permanent")
        def permanent(event):
            raise PermanentError("card number invalid")

        @registry.handler("py_unserialisable")
        def unserialisable(event):
            return {"when": object()}

        w = self.start()
        for handler in ("py_flaky", "py_permanent", "py_unserialisable", "py_missing"):
            support.enqueue(self.queue, handler, 1, {"h": handler}, max_attempts=2)
        poller = Poller(w, registry, idle_sleep=0.005).start()
        # flaky completes on its 2nd attempt (after the queue's ~1 s backoff);
        # the other three are dead after one attempt (not retryable).
        support.wait_for("flaky completed, three dead", lambda: (lambda s: s["Completed"] == 1 and s["Dead"] == 3)(
            support.stats(self.queue)), timeout=30)
        poller.stop()
        w.stop()
        by = {s["handler"]: s for s in support.steps(self.queue)}
        flaky_s = by["py_flaky"]
        self.assertEqual((flaky_s["state"], flaky_s["attempts"], flaky_s["result"]["result"]), ("completed", 2, {"ok": True}))
        self.assertEqual(flaky_s["last_error"]["error"]["error_type"], "ConnectionError")
        self.assertIs(flaky_s["last_error"]["error"]["retryable"], True)
        for handler, error_type, fragment in (("py_permanent", "PermanentError", "card number invalid"),
                                              ("py_unserialisable", "result_serialization_error", "not JSON-serialisable"),
                                              ("py_missing", "handler_not_found", "Handler not found: py_missing")):
            s = by[handler]
            self.assertEqual((s["state"], s["attempts"]), ("dead", 1), s)
            err = s["last_error"]["error"]
            self.assertEqual(err["error_type"], error_type)
            self.assertIs(err["retryable"], False)
            self.assertIs(s["last_error"]["metadata"]["retryable"], False)
            self.assertIn(fragment, err["message"])
        self.assertTrue(any("raise PermanentError" in l for l in by["py_permanent"]["last_error"]["error"]["backtrace"]))


class ConcurrencyTest(WorkerTestCase):
    THREADS = 8
    STEPS = 500

    def test_many_threads_complete_each_step_exactly_once(self):
        lock = threading.Lock()
        seen = []  # (step_uuid, event_id, thread name)
        registry = HandlerRegistry()

        @registry.handler("py_count")
        def count(event):
            with lock:
                seen.append((event["step_uuid"], event["event_id"], threading.current_thread().name))
            return {"n": event["payload"]["n"]}

        w = self.start(queue_opts={"batch_size": 100})
        support.enqueue(self.queue, "py_count", self.STEPS, {"n": 7})
        pollers = [Poller(w, registry, idle_sleep=0.001, name=f"poller-{i}").start() for i in range(self.THREADS)]
        try:
            support.wait_for(f"{self.STEPS} steps completed",
                             lambda: support.stats(self.queue)["Completed"] == self.STEPS, timeout=45, interval=0.2)
        finally:
            for p in pollers:
                p.stop()
        w.stop()
        self.assertEqual([p.error for p in pollers], [None] * self.THREADS)
        self.assertEqual(len(seen), self.STEPS, "each event handled once")
        self.assertEqual(len({s for s, _, _ in seen}), self.STEPS, "each step handled once")
        self.assertEqual(sum(p.completed for p in pollers), self.STEPS)
        self.assertGreater(len({t for _, _, t in seen}), 1, "the work was shared between threads")
        st = support.stats(self.queue)
        self.assertEqual((st["Completed"], st["Ready"], st["Claimed"], st["Dead"]), (self.STEPS, 0, 0, 0))
        self.assertEqual({(s["state"], s["attempts"]) for s in support.steps(self.queue)}, {("completed", 1)})

    def test_raw_threads_racing_on_the_same_events(self):
        # Threads poll and complete directly; every completed event is then
        # completed again by another thread: exactly one success per event.
        w = self.start(queue_opts={"batch_size": 100})
        n = 200
        support.enqueue(self.queue, "py_race", n)
        lock = threading.Lock()
        events, outcomes = [], collections.Counter()

        def run():
            while True:
                with lock:
                    if len(events) >= n:
                        return
                ev = w.poll()
                if ev is None:
                    time.sleep(0.001)
                    continue
                res = {"step_uuid": ev["step_uuid"], "success": True, "result": None, "status": "completed",
                       "metadata": {"execution_time_ms": 0, "retryable": False}}
                for _ in range(2):
                    try:
                        ok = w.complete(ev["event_id"], res)
                        key = "ok" if ok else "retry_later"
                    except Exception as e:  # noqa: BLE001
                        key = type(e).__name__
                    with lock:
                        outcomes[key] += 1
                with lock:
                    events.append(ev["event_id"])

        threads = [threading.Thread(target=run) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(45)
        self.assertEqual(len(set(events)), n)
        self.assertEqual(outcomes, {"ok": n, "AlreadyCompletedError": n})
        support.wait_for("all settled", lambda: support.stats(self.queue)["Completed"] == n)
        w.stop()


class StarvationTest(WorkerTestCase):
    def test_slow_poller_is_reported_starving(self):
        registry = HandlerRegistry()
        registry.register("py_slow", lambda event: {"ok": True})
        w = self.start(ffi={"starvation_warning_threshold_ms": 200, "completion_timeout_ms": 10000})
        support.enqueue(self.queue, "py_slow", 3)
        # The poller holds each event 0.5 s before running its handler.
        poller = Poller(w, registry, delay=0.5, idle_sleep=0.005, starvation_check_interval=1).start()
        # A polled event starving (events waiting unpolled behind the slow
        # poller also set starvation_detected, but are not counted here).
        m = support.wait_for("a starving polled event",
                             lambda: (lambda m: m if m["starving_event_count"] else None)(w.metrics()),
                             timeout=20, interval=0.02)
        self.assertTrue(m["starvation_detected"])
        self.assertGreaterEqual(m["starving_event_count"], 1)
        self.assertEqual(m["pending_count"], 1)
        self.assertGreaterEqual(m["oldest_pending_age_ms"], 200)  # whole ms: 200.4 ms reads 200
        starving = w.check_starvation()
        self.assertGreaterEqual(len(starving), 1)
        self.assertEqual(starving[0]["event_id"], m["oldest_event_id"])
        self.assertGreaterEqual(starving[0]["age_ms"], 200)
        self.assertEqual(len(starving[0]["step_uuid"]), 36)
        support.wait_for("slow steps completed", lambda: support.stats(self.queue)["Completed"] == 3, timeout=20)
        poller.stop()
        m = w.metrics()
        self.assertEqual((m["pending_count"], m["starvation_detected"], m["starving_event_count"]), (0, False, 0))
        self.assertEqual(w.check_starvation(), [])
        w.stop()

    def test_held_event_starves_then_completes(self):
        w = self.start(ffi={"starvation_warning_threshold_ms": 200, "completion_timeout_ms": 10000})
        support.enqueue(self.queue, "py_hold", 1)
        ev = support.poll_one(w)
        self.assertFalse(w.metrics()["starvation_detected"])
        time.sleep(0.3)
        m = w.metrics()
        self.assertEqual((m["starvation_detected"], m["starving_event_count"], m["oldest_event_id"]),
                         (True, 1, ev["event_id"]))
        (s,) = w.check_starvation()
        self.assertEqual((s["event_id"], s["step_uuid"]), (ev["event_id"], ev["step_uuid"]))
        self.assertTrue(w.complete(ev["event_id"], {"step_uuid": ev["step_uuid"], "success": True, "result": 1,
                                                    "status": "completed", "metadata": {"execution_time_ms": 300,
                                                                                        "retryable": False}}))
        self.assertFalse(w.metrics()["starvation_detected"])
        w.stop()


class TimeoutTest(WorkerTestCase):
    def test_never_completed_events_become_ffi_timeouts_and_retry(self):
        w = self.start(ffi={"starvation_warning_threshold_ms": 200, "completion_timeout_ms": 500})
        support.enqueue(self.queue, "py_hang", 1, max_attempts=2)
        first = support.poll_one(w)  # ... and never complete it
        self.assertEqual(first["attempt"], 1)
        # The worker sweeps the timeout itself; the step is retried (attempt 2).
        second = support.poll_one(w, timeout=20)
        self.assertEqual((second["step_uuid"], second["attempt"]), (first["step_uuid"], 2))
        self.assertNotEqual(second["event_id"], first["event_id"])
        (s,) = support.steps(self.queue)
        self.assertEqual((s["state"], s["attempts"]), ("claimed", 2))
        self.assertEqual(s["last_error"]["error"]["error_type"], "ffi_timeout")
        # Completing the timed-out event is refused: its failure was delivered.
        res = {"step_uuid": first["step_uuid"], "success": True, "result": None, "status": "completed",
               "metadata": {"execution_time_ms": 0, "retryable": False}}
        with self.assertRaises(TimedOutError) as cm:
            w.complete(first["event_id"], res)
        self.assertIn("timed out", cm.exception.message)
        self.assertGreaterEqual(w.cleanup_timeouts(), 0)
        # The second attempt hangs too: out of attempts, the step is dead
        # with ffi_timeout as its last error.
        support.wait_for("step dead", lambda: support.stats(self.queue)["Dead"] == 1, timeout=20)
        w.stop()
        (s,) = support.steps(self.queue)
        self.assertEqual((s["state"], s["attempts"]), ("dead", 2))
        err = s["last_error"]["error"]
        self.assertEqual((err["error_type"], err["retryable"]), ("ffi_timeout", True))
        self.assertEqual(err["message"], "FFI handler timed out after 500ms")
        self.assertEqual(s["last_error"]["metadata"]["execution_time_ms"], 500)


class DrainTest(WorkerTestCase):
    def test_stop_waits_for_the_event_in_hand_and_returns_the_rest(self):
        w = self.start(queue_opts={"batch_size": 10})
        support.enqueue(self.queue, "py_drain", 5)
        ev = support.poll_one(w)
        support.wait_for("all 5 claimed", lambda: support.stats(self.queue)["Claimed"] == 5)
        stopped = []
        t = threading.Thread(target=lambda: stopped.append(w.stop() or "ok"))
        t.start()
        support.wait_for("unpolled steps back in the queue", lambda: support.stats(self.queue)["Ready"] == 4)
        with self.assertRaises(StoppedError):
            w.poll()  # draining: no new events
        self.assertTrue(w.complete(ev["event_id"], {"step_uuid": ev["step_uuid"], "success": True, "result": "late",
                                                    "status": "completed",
                                                    "metadata": {"execution_time_ms": 1, "retryable": False}}))
        t.join(20)
        self.assertEqual(stopped, ["ok"])
        st = support.stats(self.queue)
        self.assertEqual((st["Completed"], st["Ready"], st["Claimed"]), (1, 4, 0))


if __name__ == "__main__":
    unittest.main()
