"""The handler registry and result building, without the library."""

import json
import math
import time
import unittest

from taskerworker import (HANDLER_NOT_FOUND, RESULT_SERIALIZATION_ERROR, HandlerRegistry, PermanentError,
                          RetryableError, encode_result)

STEP = "00000000-0000-4000-8000-000000000001"


def event(handler, payload=None):
    return {"event_id": "1.1", "step_uuid": STEP, "task_uuid": STEP, "handler": handler,
            "payload": payload if payload is not None else {}, "attempt": 1}


class BadInput(Exception):
    retryable = False
    error_code = "E_BAD_INPUT"


class Custom(Exception):
    error_type = "payment_declined"


class Unserialisable:
    pass


class RegistryTest(unittest.TestCase):
    def setUp(self):
        self.r = HandlerRegistry()

    def test_decorator_registers_and_success_result_has_wire_format(self):
        @self.r.handler("double")
        def double(ev):
            return {"n": ev["payload"]["n"] * 2}

        self.assertIs(double(event("double", {"n": 1})).__class__, dict)  # the decorator returns the function
        self.assertIn("double", self.r)
        self.assertEqual(self.r.names(), ["double"])
        res = self.r.execute(event("double", {"n": 21}))
        self.assertEqual(set(res), {"step_uuid", "success", "result", "status", "metadata"})
        self.assertEqual(res["step_uuid"], STEP)
        self.assertIs(res["success"], True)
        self.assertEqual(res["status"], "completed")
        self.assertEqual(res["result"], {"n": 42})
        md = res["metadata"]
        self.assertIs(md["retryable"], False)
        self.assertIsInstance(md["execution_time_ms"], int)
        self.assertRegex(md["completed_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")

    def test_execution_time_is_measured(self):
        self.r.register("slow", lambda ev: time.sleep(0.03))
        res = self.r.execute(event("slow"))
        self.assertGreaterEqual(res["metadata"]["execution_time_ms"], 30)
        self.assertLess(res["metadata"]["execution_time_ms"], 5000)

    def _failure(self, res):
        self.assertEqual(set(res), {"step_uuid", "success", "result", "status", "metadata", "error"})
        self.assertIs(res["success"], False)
        self.assertEqual(res["status"], "failed")
        self.assertIsNone(res["result"])
        # metadata mirrors the error block
        self.assertEqual(res["metadata"]["retryable"], res["error"]["retryable"])
        self.assertEqual(res["metadata"]["error_type"], res["error"]["error_type"])
        return res["error"]

    def test_exception_is_a_retryable_failure_with_class_name_and_backtrace(self):
        def boom(ev):
            raise ValueError("downstream said no")

        self.r.register("boom", boom)
        err = self._failure(self.r.execute(event("boom")))
        self.assertEqual(err["error_type"], "ValueError")
        self.assertEqual(err["message"], "downstream said no")
        self.assertIs(err["retryable"], True)
        self.assertTrue(any("raise ValueError" in line for line in err["backtrace"]), err["backtrace"])
        self.assertTrue(all("\n" not in line for line in err["backtrace"]))

    def test_permanent_error_is_not_retryable(self):
        def bad(ev):
            raise PermanentError("invalid card number")

        self.r.register("bad", bad)
        err = self._failure(self.r.execute(event("bad")))
        self.assertEqual(err["error_type"], "PermanentError")
        self.assertIs(err["retryable"], False)

    def test_retryable_attribute_and_error_type_override(self):
        def bad_input(ev):
            raise BadInput("field x missing")

        def custom(ev):
            raise Custom("declined")

        def explicit(ev):
            raise RetryableError("try again")

        self.r.register("bad_input", bad_input)
        self.r.register("custom", custom)
        self.r.register("explicit", explicit)
        err = self._failure(self.r.execute(event("bad_input")))
        self.assertEqual((err["error_type"], err["retryable"], err["error_code"]), ("BadInput", False, "E_BAD_INPUT"))
        err = self._failure(self.r.execute(event("custom")))
        self.assertEqual((err["error_type"], err["retryable"]), ("payment_declined", True))
        err = self._failure(self.r.execute(event("explicit")))
        self.assertEqual((err["error_type"], err["retryable"]), ("RetryableError", True))

    def test_odd_exceptions_still_become_results(self):
        class BadStr(Exception):
            def __str__(self):
                raise RuntimeError("no")

        def surrogate(ev):
            raise ValueError("bad \ud800 text")

        def bad_str(ev):
            raise BadStr()

        self.r.register("surrogate", surrogate)
        self.r.register("bad_str", bad_str)
        res = json.loads(self.r.execute_json(event("surrogate")))
        self.assertEqual((res["error"]["error_type"], res["error"]["retryable"]), ("ValueError", True))
        self.assertIn("bad \\ud800 text", res["error"]["message"])
        res = json.loads(self.r.execute_json(event("bad_str")))
        self.assertEqual((res["error"]["error_type"], res["error"]["retryable"]), ("BadStr", True))

    def test_unknown_handler_is_handler_not_found(self):
        err = self._failure(self.r.execute(event("nobody")))
        self.assertEqual(err["error_type"], HANDLER_NOT_FOUND)
        self.assertEqual(err["message"], "Handler not found: nobody")
        self.assertIs(err["retryable"], False)

    def test_unserialisable_results_fall_back_to_a_permanent_failure(self):
        cyclic = []
        cyclic.append(cyclic)
        for name, value in [("set", {1, 2}), ("object", Unserialisable()), ("nan", math.nan), ("inf", {"x": math.inf}),
                            ("cycle", cyclic), ("bytes", b"\x00"), ("surrogate", "\ud800"), ("tuple_key", {(1, 2): 3})]:
            with self.subTest(name):
                self.r.register(name, lambda ev, v=value: v)
                raw = self.r.execute_json(event(name))
                res = json.loads(raw)  # always valid JSON
                err = self._failure(res)
                self.assertEqual(err["error_type"], RESULT_SERIALIZATION_ERROR)
                self.assertIs(err["retryable"], False)
                self.assertEqual(res["step_uuid"], STEP)
                raw.decode("utf-8")  # and valid UTF-8

    def test_serialisable_results_encode_compactly(self):
        self.r.register("ok", lambda ev: {"text": "héllo ✓", "n": [1, 2.5, None, True]})
        raw = self.r.execute_json(event("ok"))
        self.assertEqual(json.loads(raw)["result"], {"text": "héllo ✓", "n": [1, 2.5, None, True]})
        self.assertIn("héllo ✓".encode(), raw)

    def test_encode_result_keeps_execution_time_in_fallback(self):
        res = {"step_uuid": STEP, "success": True, "result": {1}, "status": "completed",
               "metadata": {"execution_time_ms": 17, "retryable": False}}
        out = json.loads(encode_result(res))
        self.assertEqual(out["error"]["error_type"], RESULT_SERIALIZATION_ERROR)
        self.assertEqual(out["metadata"]["execution_time_ms"], 17)

    def test_register_refuses_nonsense(self):
        with self.assertRaises(ValueError):
            self.r.register("", lambda ev: None)
        with self.assertRaises(TypeError):
            self.r.register("x", 42)


if __name__ == "__main__":
    unittest.main()
