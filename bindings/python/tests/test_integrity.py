"""What the worker guarantees a Python poller: a dead poller is noticed (not
ready, starving), its events count as in flight, and a polled event the worker
is stopped on keeps its attempt."""

import threading
import unittest

from taskerworker import HandlerRegistry, Poller

import support
from support import WorkerTestCase


class DeadPollerTest(WorkerTestCase):
    def test_dead_poller_makes_the_worker_not_ready_and_starving(self):
        port = support.free_port()
        base = f"http://127.0.0.1:{port}"
        w = self.start(ffi={"starvation_warning_threshold_ms": 300, "completion_timeout_ms": 60000},
                       handler={"max_concurrent_handlers": 10}, listen=f"127.0.0.1:{port}")
        support.enqueue(self.queue, "py_work", 12)
        # A poller thread takes one event and dies without completing it.
        polled = []
        t = threading.Thread(target=lambda: polled.append(support.poll_one(w)))
        t.start()
        t.join(30)
        self.assertEqual(len(polled), 1)
        # Its events are in flight (polled or waiting), bounded by load
        # shedding at 80 % of 10.
        page = support.wait_for("8 events in flight", lambda: (lambda p: p if support.metric(p, "tasker_dispatch_in_flight") == 8
                                                               else None)(support.http_get(base + "/metrics")[1]))
        self.assertEqual(support.metric(page, "tasker_ffi_pending_events"), 1)
        self.assertEqual(support.metric(page, "tasker_ffi_unpolled_events"), 7)
        # Nobody polls any more: not ready, and starving.
        status, body = support.wait_for("readyz 503", lambda: (lambda r: r if r[0] == 503 else None)(
            support.http_get(base + "/readyz")))
        self.assertIn("FFI pollers stalled: no poll for", body)
        self.assertIn("while 7 events wait", body)
        self.assertEqual(support.http_get(base + "/healthz")[0], 200)
        m = w.metrics()
        self.assertTrue(m["poller_stalled"])
        self.assertTrue(m["starvation_detected"])
        self.assertEqual(m["unpolled_count"], 7)
        self.assertGreater(m["oldest_unpolled_age_ms"], 300)
        self.assertGreater(support.metric(support.http_get(base + "/metrics")[1], "tasker_ffi_oldest_unpolled_age_ms"), 300)
        # A new poller works everything off; the worker is ready again.
        registry = HandlerRegistry()
        registry.register("py_work", lambda event: {"ok": True})
        self.assertTrue(w.complete(polled[0]["event_id"], {"step_uuid": polled[0]["step_uuid"], "success": True,
                                                           "result": None, "status": "completed",
                                                           "metadata": {"execution_time_ms": 0, "retryable": False}}))
        poller = Poller(w, registry, idle_sleep=0.005).start()
        support.wait_for("12 completed", lambda: support.stats(self.queue)["Completed"] == 12, timeout=30)
        self.assertEqual(support.wait_for("readyz 200", lambda: support.http_get(base + "/readyz")[0] == 200), True)
        poller.stop()
        w.stop()
        self.assertIsNone(poller.error)


class StopKeepsTheAttemptTest(WorkerTestCase):
    def test_polled_then_stopped_step_dead_letters_after_max_attempts(self):
        support.enqueue(self.queue, "py_hang", 1, max_attempts=3)
        for attempt in (1, 2, 3):
            w = self.start()
            ev = support.poll_one(w, timeout=30)  # ... and never complete it
            self.assertEqual(ev["attempt"], attempt)
            w.stop(2000)  # three quarters wait for the poller, a quarter settles
            (s,) = support.steps(self.queue)
            self.assertEqual((s["state"], s["attempts"]), ("dead" if attempt == 3 else "ready", attempt), s)
            err = s["last_error"]["error"]
            self.assertEqual((err["error_type"], err["retryable"]), ("ffi_abandoned", True))
        self.assertIn("did not complete it before the worker stopped", err["message"])


if __name__ == "__main__":
    unittest.main()
