"""The misuse matrix of taskerworker.h against the real library: every misuse
returns its documented code with a readable message, the process survives, and
no step is lost."""

import ctypes
import os
import tempfile
import threading
import time
import unittest

import taskerworker
from taskerworker import (AlreadyCompletedError, AlreadyStartedError, ConfigError, DatabaseError, InvalidJSONError,
                          InvalidResultError, InvalidUTF8Error, NotStartedError, NullArgumentError, Status,
                          StepMismatchError, TaskerWorkerError, UnknownEventError)

import support
from support import WorkerTestCase

S = Status


class RawMixin:
    """Raw C calls (bypassing the Worker wrapper) and their messages."""

    def raw(self, name, *args):
        lib = self.worker.lib
        code = getattr(lib, name)(*args)
        return code, lib.last_error()

    def assertCode(self, want, got, *fragments):
        code, msg = got
        self.assertEqual(code, want, f"want {Status(want).name}, got {code}: {msg}")
        if want < 0 or want == S.RETRY_LATER:
            self.assertIsInstance(msg, str)
            self.assertTrue(msg.strip(), "a negative code must come with a message")
            for f in fragments:
                self.assertIn(f, msg)
        else:
            self.assertIsNone(msg, "a successful call leaves no error message")
        return msg

    def all_queries_answer(self, want):
        out = ctypes.c_void_p()
        n = ctypes.c_int()
        self.assertCode(want, self.raw("taskerworker_poll", ctypes.byref(out)))
        self.assertCode(want, self.raw("taskerworker_metrics", ctypes.byref(out)))
        self.assertCode(want, self.raw("taskerworker_check_starvation", ctypes.byref(out)))
        self.assertCode(want, self.raw("taskerworker_cleanup_timeouts", ctypes.byref(n)))
        self.assertCode(want, self.raw("taskerworker_complete", b"1.1", b'{"step_uuid":"x","success":true}'))


class NotRunningTest(RawMixin, WorkerTestCase):
    def test_version_needs_no_worker(self):
        v = self.worker.version
        self.assertIsInstance(v, str)
        self.assertTrue(v)
        self.assertEqual(taskerworker.version(), v)

    def test_calls_before_start_return_not_started(self):
        msg = self.assertCode(S.ERR_NOT_STARTED, self.raw("taskerworker_poll", ctypes.byref(ctypes.c_void_p())))
        self.assertIn("taskerworker_start", msg)
        self.all_queries_answer(S.ERR_NOT_STARTED)
        self.assertCode(S.ERR_NOT_STARTED, self.raw("taskerworker_stop", 0))
        w = self.worker
        for call in (w.poll, w.metrics, w.check_starvation, w.cleanup_timeouts, w.stop,
                     lambda: w.complete("1.1", {"step_uuid": "x", "success": True})):
            with self.assertRaises(NotStartedError) as cm:
                call()
            self.assertEqual(cm.exception.code, TaskerWorkerError.NOT_STARTED)
            self.assertIn("taskerworker_start", str(cm.exception))

    def test_null_pointers_return_null_argument(self):
        self.check_null_pointers()

    def check_null_pointers(self):
        self.assertCode(S.ERR_NULL_ARGUMENT, self.raw("taskerworker_poll", None), "event_json is NULL")
        self.assertCode(S.ERR_NULL_ARGUMENT, self.raw("taskerworker_metrics", None), "metrics_json is NULL")
        self.assertCode(S.ERR_NULL_ARGUMENT, self.raw("taskerworker_check_starvation", None), "starving_json is NULL")
        self.assertCode(S.ERR_NULL_ARGUMENT, self.raw("taskerworker_cleanup_timeouts", None), "count is NULL")
        self.assertCode(S.ERR_NULL_ARGUMENT, self.raw("taskerworker_complete", None, b"{}"), "event_id is NULL")
        self.assertCode(S.ERR_NULL_ARGUMENT, self.raw("taskerworker_complete", b"1.1", None), "result_json is NULL")
        self.assertCode(S.ERR_NULL_ARGUMENT, self.raw("taskerworker_complete", None, None))
        self.worker.lib.taskerworker_free(None)  # ignored
        with self.assertRaises(NullArgumentError):
            self.worker.complete_json(None, b"{}")

    def test_last_error_is_per_thread(self):
        out = ctypes.c_void_p()
        lib = self.worker.lib
        self.assertEqual(lib.taskerworker_poll(ctypes.byref(out)), S.ERR_NOT_STARTED)
        other = {}

        # (The message belongs to the OS thread and is only meaningful right
        # after a failure: a reused OS thread may still hold an old one.)
        def elsewhere():
            other["code"] = lib.taskerworker_poll(None)
            other["after"] = lib.last_error()

        t = threading.Thread(target=elsewhere)
        t.start()
        t.join()
        self.assertEqual(other["code"], S.ERR_NULL_ARGUMENT)
        self.assertIn("NULL", other["after"])
        self.assertIn("taskerworker_start", lib.last_error())  # ours is untouched


class LifecycleTest(RawMixin, WorkerTestCase):
    def test_start_twice_then_calls_after_stop(self):
        cfg = support.config(self.queue).encode()
        self.assertCode(S.OK, self.raw("taskerworker_start", cfg, None))
        msg = self.assertCode(S.ERR_ALREADY_STARTED, self.raw("taskerworker_start", cfg, None), "already running")
        self.assertIn("taskerworker_stop", msg)
        with self.assertRaises(AlreadyStartedError):
            self.worker.start(support.config(self.queue))
        self.assertCode(S.OK, self.raw("taskerworker_metrics", ctypes.byref(ctypes.c_void_p())))
        self.assertCode(S.OK, self.raw("taskerworker_stop", 0))
        self.all_queries_answer(S.ERR_NOT_STARTED)
        self.assertCode(S.ERR_NOT_STARTED, self.raw("taskerworker_stop", 0))
        # ... and the process can start a worker again.
        self.worker.start(support.config(self.queue))
        self.assertEqual(self.worker.metrics()["pending_count"], 0)
        self.worker.stop()

    def test_null_pointers_while_running(self):
        self.start()
        NotRunningTest.check_null_pointers(self)
        self.worker.stop()

    def test_refused_configs_name_the_problem(self):
        w = self.worker
        with self.assertRaises(ConfigError) as cm:
            w.start(support.config(self.queue) + "\n[worker.queue.extra]\nbogus = 1\n")
        self.assertEqual(cm.exception.code, S.ERR_CONFIG)
        with self.assertRaises(ConfigError) as cm:
            w.start(support.config(self.queue).replace("batch_size = 50", "batch_size = 0"))
        self.assertIn("worker.queue.batch_size", cm.exception.message)
        with self.assertRaises(ConfigError) as cm:
            w.start("[worker\nthis is not toml =")
        with self.assertRaises(DatabaseError) as cm:
            w.start(support.config(self.queue), "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2")
        self.assertEqual(cm.exception.code, S.ERR_DATABASE)
        with self.assertRaises(InvalidUTF8Error):
            w.start(b"[worker]\nworker_id = \"\xff\"\n")
        with self.assertRaises(InvalidUTF8Error):
            w.start(support.config(self.queue), b"postgres://\xff")
        # None of these left a half-started worker behind.
        self.assertCode(S.ERR_NOT_STARTED, self.raw("taskerworker_stop", 0))

    def test_missing_config_path_says_so(self):
        with self.assertRaises(ConfigError) as cm:
            self.worker.start("/nonexistent/worker.toml")
        self.assertIn("no such file", cm.exception.message)

    def test_stop_timeout_bounds_the_drain(self):
        # The configured drain is long; stop(timeout_ms) must bound it. The
        # event held by a poller that never completes goes back to the queue.
        w = self.start(drain_ms=60000)
        support.enqueue(self.queue, "py_held", payload={})
        support.poll_one(w)
        started = time.monotonic()
        try:
            w.stop(300)
        except TaskerWorkerError as e:  # the drain left the held event behind: reported, not lost
            self.assertEqual(e.code, S.ERR_DRAIN)
        self.assertLess(time.monotonic() - started, 20)
        self.assertCode(S.ERR_NOT_STARTED, self.raw("taskerworker_stop", 0))

    def test_start_from_a_config_file(self):
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(support.config(self.queue))
        self.addCleanup(os.unlink, f.name)
        import pathlib
        self.worker.start(pathlib.Path(f.name))
        self.worker.stop()
        self.worker.start(f.name)
        self.worker.stop()


class CompleteMisuseTest(RawMixin, WorkerTestCase):
    def test_every_refusal_keeps_the_event_pending(self):
        w = self.start()
        support.enqueue(self.queue, "py_misuse", payload={"n": 1})
        ev = support.poll_one(w)
        eid, step = ev["event_id"].encode(), ev["step_uuid"]
        good = ('{"step_uuid":"%s","success":true,"result":{"ok":1},"status":"completed",'
                '"metadata":{"execution_time_ms":1,"retryable":false}}' % step).encode()
        C = "taskerworker_complete"

        # invalid UTF-8, in either argument
        self.assertCode(S.ERR_INVALID_UTF8, self.raw(C, b"\xff\xfe", good), "event_id")
        self.assertCode(S.ERR_INVALID_UTF8, self.raw(C, eid, good.replace(b'"ok"', b'"\xc3\x28"')), "UTF-8")
        # invalid JSON, or JSON that is not a result
        # (JSON null decodes as an empty result: refused as INVALID_RESULT for
        # its missing step_uuid; either refusal keeps the event pending.)
        self.assertIn(self.raw(C, eid, b"null")[0], (S.ERR_INVALID_JSON, S.ERR_INVALID_RESULT))
        for bad in (b"", b"{not json", b"[]", b'"text"', good + b" {}", good[:-1],
                    good.replace(b'"result"', b'"resutl"')):
            with self.subTest(bad=bad):
                self.assertCode(S.ERR_INVALID_JSON, self.raw(C, eid, bad), "result_json")
        with self.assertRaises(InvalidJSONError):
            w.complete_json(ev["event_id"], "{oops")
        # well-formed but inconsistent
        for bad in (b'{"success":true}',
                    ('{"step_uuid":"%s","success":true,"error":{"message":"x","retryable":true}}' % step).encode(),
                    ('{"step_uuid":"%s","success":false,"status":"completed"}' % step).encode()):
            with self.subTest(bad=bad):
                self.assertCode(S.ERR_INVALID_RESULT, self.raw(C, eid, bad), "result")
        with self.assertRaises(InvalidResultError):
            w.complete(ev["event_id"], {"success": True})
        # a result for another step
        other = good.replace(step.encode(), b"00000000-0000-4000-8000-000000000000")
        self.assertCode(S.ERR_STEP_MISMATCH, self.raw(C, eid, other), step)
        with self.assertRaises(StepMismatchError):
            w.complete_json(ev["event_id"], other)
        # an id nobody polled
        self.assertCode(S.ERR_UNKNOWN_EVENT, self.raw(C, b"999999.1", good), "999999.1")
        with self.assertRaises(UnknownEventError):
            w.complete_json("no-such-event", good)
        # a result that cannot be serialised never reaches the library
        with self.assertRaises(TypeError):
            w.complete(ev["event_id"], {"step_uuid": step, "success": True, "result": {1, 2}})

        # Through all of that the event stayed pending; now it completes once.
        m = w.metrics()
        self.assertEqual((m["pending_count"], m["oldest_event_id"]), (1, ev["event_id"]))
        self.assertCode(S.OK, self.raw(C, eid, good))
        msg = self.assertCode(S.ERR_ALREADY_COMPLETED, self.raw(C, eid, good), ev["event_id"])
        self.assertIn("already completed", msg)
        with self.assertRaises(AlreadyCompletedError):
            w.complete_json(ev["event_id"], good)
        self.assertEqual(w.metrics()["pending_count"], 0)
        w.stop()
        st = support.stats(self.queue)
        self.assertEqual((st["Completed"], st["Claimed"], st["Ready"], st["Dead"]), (1, 0, 0, 0))
        (s,) = support.steps(self.queue)
        self.assertEqual((s["state"], s["attempts"], s["result"]["result"]), ("completed", 1, {"ok": 1}))

    def test_worker_methods_return_plain_python(self):
        w = self.start()
        m = w.metrics()
        self.assertEqual(set(m) >= {"pending_count", "oldest_pending_age_ms", "newest_pending_age_ms",
                                    "starvation_detected", "starving_event_count"}, True, m)
        self.assertEqual(w.check_starvation(), [])
        self.assertEqual(w.cleanup_timeouts(), 0)
        self.assertIsNone(w.poll())
        w.stop()


if __name__ == "__main__":
    unittest.main()
