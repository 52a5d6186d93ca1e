"""The batched calls (taskerworker_poll_batch, taskerworker_complete_batch)
against the real library and queue: the happy path, the misuse matrix (every
refusal has its documented code and message, and no event is lost), and the
batching Poller end to end."""

import ctypes
import json
import threading
import time
import unittest

from taskerworker import (AlreadyCompletedError, HandlerRegistry, InvalidArgumentError, InvalidJSONError,
                          InvalidResultError, InvalidUTF8Error, NotStartedError, NullArgumentError, Poller, Status,
                          StepMismatchError, TaskerWorkerError, UnknownEventError, encode_result, success_result)

import support
from support import WorkerTestCase
from test_abi import RawMixin

S = Status
PB = "taskerworker_poll_batch"
CB = "taskerworker_complete_batch"
OTHER_STEP = "00000000-0000-4000-8000-000000000000"


def result(event, value=None, step_uuid=None) -> bytes:
    return encode_result(success_result(step_uuid or event["step_uuid"], value if value is not None else
                                        {"done": event["event_id"]}))


class BatchTestCase(RawMixin, WorkerTestCase):
    def setUp(self):
        super().setUp()
        self.out = ctypes.c_void_p()

    def claimed(self, n, **kw):
        """A started worker with n steps enqueued and all n in its dispatch channel."""
        w = self.start(**kw)
        support.enqueue(self.queue, "py_batch", n, {"n": 1})
        support.wait_for(f"{n} steps claimed", lambda: support.stats(self.queue)["Claimed"] == n)
        return w

    def poll_n(self, n, max=None):
        """Poll batches until n events arrived; the events, and the size of each batch."""
        events, sizes = [], []
        deadline = time.monotonic() + 20
        while len(events) < n:
            got = self.worker.poll_batch(max or n - len(events))
            if got:
                sizes.append(len(got))
                events.extend(got)
            elif time.monotonic() > deadline:
                self.fail(f"timed out with {len(events)} of {n} events polled")
            else:
                time.sleep(0.01)
        return events, sizes

    def raw_complete(self, ids: bytes, results: bytes):
        """A raw complete_batch: (code, last error, outcomes JSON)."""
        self.out.value = None
        code, msg = self.raw(CB, ids, results, ctypes.byref(self.out))
        return code, msg, self.worker.lib.take(self.out)

    def assertAllDone(self, n):
        """Every one of the n steps completed exactly once, with the result meant for it."""
        self.worker.stop()
        st = support.stats(self.queue)
        self.assertEqual((st["Completed"], st["Claimed"], st["Ready"], st["Dead"]), (n, 0, 0, 0))
        for s in support.steps(self.queue):
            self.assertEqual((s["state"], s["attempts"]), ("completed", 1), s)


class PollBatchTest(BatchTestCase):
    def test_poll_batch_and_complete_batch(self):
        w = self.claimed(10)
        events, sizes = self.poll_n(10, max=4)
        self.assertTrue(all(1 <= k <= 4 for k in sizes), sizes)
        self.assertEqual(len({e["event_id"] for e in events}), 10)
        self.assertEqual([int(e["event_id"].split(".")[0]) for e in events],
                         sorted(int(e["event_id"].split(".")[0]) for e in events), "oldest first")
        for e in events:
            self.assertEqual({"event_id", "step_uuid", "task_uuid", "handler", "payload", "attempt"} - set(e), set())
            self.assertEqual((e["handler"], e["payload"], e["attempt"]), ("py_batch", {"n": 1}, 1))
        self.assertEqual(w.poll_batch(4096), [])
        self.assertIsNone(w.poll_batch_json(1))
        self.assertEqual(w.metrics()["pending_count"], 10)
        # str or bytes ids, bytes or str results
        items = [(e["event_id"] if i % 2 else e["event_id"].encode(), result(e) if i % 3 else result(e).decode())
                 for i, e in enumerate(events)]
        self.assertEqual(w.complete_batch(items), [True] * 10)
        self.assertEqual(w.metrics()["pending_count"], 0)
        self.assertEqual(w.complete_batch([]), [])
        self.assertAllDone(10)
        self.assertEqual({s["step_uuid"]: s["result"]["result"] for s in support.steps(self.queue)},
                         {e["step_uuid"]: {"done": e["event_id"]} for e in events})

    def test_poll_batch_json_is_the_array_of_poll_events(self):
        w = self.claimed(3)
        raw = support.wait_for("a batch", lambda: w.poll_batch_json(3))
        self.assertTrue(raw.startswith(b'[{"event_id":') and raw.endswith(b"}]"), raw)
        ids = "\n".join(e["event_id"] for e in json.loads(raw))
        results = b"[" + b",".join(result(e) for e in json.loads(raw)) + b"]"
        self.assertEqual(w.complete_batch_json(ids, results), [True] * len(ids.split("\n")))
        self.assertEqual(w.complete_batch_json(ids + "\n", results)[0].code, S.ERR_ALREADY_COMPLETED,
                         "one trailing newline is ignored")

    def test_max_out_of_range_names_the_range(self):
        for started in (False, True):
            if started:
                self.start()
            for bad in (0, 4097, -1):
                with self.subTest(started=started, max=bad):
                    self.assertCode(S.ERR_INVALID_ARGUMENT, self.raw(PB, bad, ctypes.byref(self.out)), "1..4096",
                                    str(bad))
                    self.assertIsNone(self.out.value)
                    with self.assertRaises(InvalidArgumentError) as cm:
                        self.worker.poll_batch(bad)
                    self.assertEqual(cm.exception.code, TaskerWorkerError.INVALID_ARGUMENT)
                    self.assertIn("1..4096", str(cm.exception))
        self.assertCode(S.NO_EVENT, self.raw(PB, 1, ctypes.byref(self.out)))
        self.assertCode(S.NO_EVENT, self.raw(PB, 4096, ctypes.byref(self.out)))
        self.worker.stop()

    def test_null_pointers(self):
        for started in (False, True):
            if started:
                self.start()
            with self.subTest(started=started):
                self.assertCode(S.ERR_NULL_ARGUMENT, self.raw(PB, 1, None), "events_json is NULL")
                self.assertCode(S.ERR_NULL_ARGUMENT, self.raw(CB, None, b"[]", ctypes.byref(self.out)),
                                "event_ids is NULL")
                self.assertCode(S.ERR_NULL_ARGUMENT, self.raw(CB, b"1.1", None, ctypes.byref(self.out)),
                                "results_json is NULL")
                self.assertCode(S.ERR_NULL_ARGUMENT, self.raw(CB, b"1.1", b"[{}]", None), "outcomes_json is NULL")
                with self.assertRaises(NullArgumentError):
                    self.worker.complete_batch_json(None, b"[]")
                with self.assertRaises(NullArgumentError):
                    self.worker.complete_batch_json("1.1", None)
        self.worker.stop()

    def test_before_start_and_after_stop(self):
        w = self.worker
        for when in ("before start", "after stop"):
            if when == "after stop":
                self.start()
                w.stop()
            with self.subTest(when=when):
                self.assertCode(S.ERR_NOT_STARTED, self.raw(PB, 8, ctypes.byref(self.out)), "taskerworker_start")
                code, msg, outcomes = self.raw_complete(b"1.1", b'[{"step_uuid":"x","success":true}]')
                self.assertEqual((code, outcomes), (S.ERR_NOT_STARTED, None))
                self.assertIn("taskerworker_start", msg)
                with self.assertRaises(NotStartedError):
                    w.poll_batch(8)
                with self.assertRaises(NotStartedError):
                    w.poll_batch_json(8)
                with self.assertRaises(NotStartedError):
                    w.complete_batch([("1.1", b'{"step_uuid":"x","success":true}')])
                self.assertEqual(w.complete_batch([]), [], "nothing to send is not a call")


class CompleteBatchMisuseTest(BatchTestCase):
    def test_whole_call_refusals_complete_nothing(self):
        w = self.claimed(2)
        (a, b), _ = self.poll_n(2)
        ids = f"{a['event_id']}\n{b['event_id']}".encode()
        good = b"[" + result(a) + b"," + result(b) + b"]"
        cases = [
            (S.ERR_INVALID_JSON, ids, b"", "results_json"),
            (S.ERR_INVALID_JSON, ids, b"{}", "JSON array"),
            (S.ERR_INVALID_JSON, ids, result(a), "JSON array"),
            (S.ERR_INVALID_JSON, ids, good[:-1], "results_json"),
            (S.ERR_INVALID_JSON, ids, good + b" []", "results_json"),
            (S.ERR_INVALID_ARGUMENT, ids, b"[" + result(a) + b"]", "2 ids but results_json holds 1"),
            (S.ERR_INVALID_ARGUMENT, a["event_id"].encode(), good, "1 ids but results_json holds 2"),
            (S.ERR_INVALID_ARGUMENT, b"", good, "0 ids"),
            (S.ERR_INVALID_ARGUMENT, b"\n".join([a["event_id"].encode()] * 4097),
             b"[" + b",".join([result(a)] * 4097) + b"]", "4096"),
            (S.ERR_INVALID_UTF8, a["event_id"].encode() + b"\n\xff\xfe", good, "event_ids"),
        ]
        for want, i, r, fragment in cases:
            with self.subTest(ids=i[:40], results=r[:60]):
                code, msg, outcomes = self.raw_complete(i, r)
                self.assertCode(want, (code, msg), fragment)
                self.assertIsNone(outcomes, "a whole-call refusal has no outcomes")
                if want != S.ERR_INVALID_UTF8:
                    self.assertIn("nothing was completed", msg)
        self.assertEqual(w.metrics()["pending_count"], 2)
        # The wrapper raises for a whole-call refusal.
        with self.assertRaises(InvalidArgumentError):
            w.complete_batch_json(ids, b"[" + result(a) + b"]")
        with self.assertRaises(InvalidJSONError):
            w.complete_batch_json(ids, b"{}")
        with self.assertRaises(InvalidUTF8Error):
            w.complete_batch([(b"\xff", result(a))])
        with self.assertRaises(ValueError):  # the library would read two ids
            w.complete_batch([(a["event_id"] + "\n" + b["event_id"], result(a))])
        # Nothing was completed: both events still complete, once.
        self.assertEqual(w.metrics()["pending_count"], 2)
        self.assertEqual(self.raw_complete(ids, good), (S.OK, None, None))
        self.assertAllDone(2)

    def test_partial_gives_per_item_outcomes(self):
        w = self.claimed(7)
        ev, _ = self.poll_n(7)
        self.assertTrue(w.complete_json(ev[0]["event_id"], result(ev[0])))
        items = [
            (ev[0]["event_id"], result(ev[0])),                           # already completed
            ("999999.1", result(ev[1])),                                  # unknown event
            (ev[1]["event_id"], result(ev[1], step_uuid=OTHER_STEP)),     # step mismatch
            (ev[2]["event_id"], b'{"success":true}'),                     # well-formed, inconsistent
            (ev[3]["event_id"], b'{"step_uuid" 1}'),                      # not JSON (but balanced)
            (ev[4]["event_id"], result(ev[4])),                           # fine
            ("", result(ev[5])),                                          # empty id
            (ev[6]["event_id"], result(ev[6]).replace(b'"done"', b'"\xc3\x28"')),  # not UTF-8
        ]
        ids = "\n".join(i for i, _ in items).encode()
        results = b"[" + b",".join(r for _, r in items) + b"]"
        code, msg, outcomes = self.raw_complete(ids, results)
        self.assertEqual(code, S.PARTIAL, msg)
        self.assertIn("7 of 8 events were not completed", msg)
        got = json.loads(outcomes)
        self.assertEqual([o["code"] for o in got], [S.ERR_ALREADY_COMPLETED, S.ERR_UNKNOWN_EVENT, S.ERR_STEP_MISMATCH,
                                                    S.ERR_INVALID_RESULT, S.ERR_INVALID_JSON, S.OK,
                                                    S.ERR_UNKNOWN_EVENT, S.ERR_INVALID_UTF8])
        self.assertEqual(set(got[5]), {"code"}, "a completed item has no error")
        for o, fragment in zip(got, (ev[0]["event_id"], "999999.1", OTHER_STEP, "step_uuid", "results_json[4]", None,
                                     "event_ids[6] is empty", "UTF-8")):
            if fragment:
                self.assertIn(fragment, o["error"])
        self.assertEqual(w.metrics()["pending_count"], 5)

        # The same through the wrapper: outcomes are True/False/the error.
        out = w.complete_batch([items[0], items[1], items[2], items[3], (ev[5]["event_id"], result(ev[5]))])
        self.assertEqual([type(o) for o in out], [AlreadyCompletedError, UnknownEventError, StepMismatchError,
                                                  InvalidResultError, bool])
        self.assertIs(out[4], True)
        self.assertEqual(out[2].function, CB)
        self.assertIn(OTHER_STEP, out[2].message)
        # Every refused event is still pending and completes once.
        self.assertEqual(w.metrics()["pending_count"], 4)
        rest = ev[1:4] + ev[6:]
        self.assertEqual(w.complete_batch([(e["event_id"], result(e)) for e in rest]), [True] * 4)
        self.assertEqual(w.complete_batch([(ev[1]["event_id"], result(ev[1]))])[0].code, S.ERR_ALREADY_COMPLETED)
        self.assertAllDone(7)


class BatchingPollerTest(WorkerTestCase):
    def run_pollers(self, n_steps, threads, registry, **poller_kw):
        w = self.start(queue_opts={"batch_size": 200})
        support.enqueue(self.queue, "py_fast", n_steps, {"n": 7})
        # (load shedding in the test config keeps the intake below 100 events)
        support.wait_for("a backlog in the dispatch channel",
                         lambda: support.stats(self.queue)["Claimed"] >= min(n_steps, 50))
        pollers = [Poller(w, registry, idle_sleep=0.001, name=f"batcher-{i}", **poller_kw).start()
                   for i in range(threads)]
        try:
            support.wait_for(f"{n_steps} steps completed",
                             lambda: support.stats(self.queue)["Completed"] == n_steps, timeout=60, interval=0.1)
        finally:
            for p in pollers:
                p.stop()
        w.stop()
        self.assertEqual([p.error for p in pollers], [None] * threads)
        st = support.stats(self.queue)
        self.assertEqual((st["Completed"], st["Ready"], st["Claimed"], st["Dead"]), (n_steps, 0, 0, 0))
        self.assertEqual({(s["state"], s["attempts"], repr(s["result"]["result"])) for s in support.steps(self.queue)},
                         {("completed", 1, repr({"n": 7}))})
        self.assertEqual(sum(p.processed for p in pollers), n_steps)
        self.assertEqual(sum(p.completed for p in pollers), n_steps)
        self.assertEqual(sum(p.retries + p.fallbacks for p in pollers), 0)
        return pollers

    def test_one_batching_poller_completes_every_step_once(self):
        seen, pending = [], []
        registry = HandlerRegistry()

        @registry.handler("py_fast")
        def fast(event):
            seen.append(event["step_uuid"])
            pending.append(self.worker.metrics()["pending_count"])
            return event["payload"]

        (p,) = self.run_pollers(1000, 1, registry)
        self.assertEqual(len(seen), 1000)
        self.assertEqual(len(set(seen)), 1000, "each step handled once")
        self.assertGreater(max(pending), 1, "events were polled in batches")
        self.assertLess(p.batches, p.processed)

    def test_several_batching_pollers_share_the_work(self):
        lock = threading.Lock()
        seen = []
        registry = HandlerRegistry()

        @registry.handler("py_fast")
        def fast(event):
            with lock:
                seen.append((event["step_uuid"], threading.current_thread().name))
            return event["payload"]

        pollers = self.run_pollers(2000, 4, registry)
        self.assertEqual(len(seen), 2000)
        self.assertEqual(len({s for s, _ in seen}), 2000, "each step handled once")
        self.assertGreater(len({t for _, t in seen}), 1, "the work was shared between threads")
        self.assertLess(sum(p.batches for p in pollers), 2000, "events were polled in batches")

    def test_a_slow_handler_gets_batches_of_one(self):
        pending = []
        registry = HandlerRegistry()

        @registry.handler("py_fast")
        def slow(event):
            pending.append(self.worker.metrics()["pending_count"])
            time.sleep(0.02)
            return event["payload"]

        (p,) = self.run_pollers(15, 1, registry)
        self.assertEqual(pending, [1] * 15, "no polled event waits behind another")
        self.assertEqual((p.batches, p.processed), (15, 15))

    def test_batch_size_1_polls_one_event_at_a_time(self):
        pending = []
        registry = HandlerRegistry()

        @registry.handler("py_fast")
        def fast(event):
            pending.append(self.worker.metrics()["pending_count"])
            return event["payload"]

        (p,) = self.run_pollers(300, 1, registry, batch_size=1)
        self.assertEqual(pending, [1] * 300)
        self.assertEqual((p.batches, p.processed, p.completed), (300, 300, 300))


if __name__ == "__main__":
    unittest.main()
