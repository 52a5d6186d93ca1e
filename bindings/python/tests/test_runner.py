"""The runner (python3 -m taskerworker), as the worker image runs it: handler
files from a directory, the stock handlers, worker.toml from
$TASKER_CONFIG_PATH, a drain on SIGTERM, and a quick exit when every poller
thread has died. Also the stock handlers themselves."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

from taskerworker import HandlerRegistry, stock

import support


def event(handler, payload=None, attempt=1):
    return {"event_id": "e1", "step_uuid": "s1", "handler": handler, "payload": payload, "attempt": attempt}


class StockHandlersTest(unittest.TestCase):
    def setUp(self):
        self.registry = stock.register(HandlerRegistry())

    def run_handler(self, *args, **kw):
        return self.registry.execute(event(*args, **kw))

    def test_noop_echo_sleep(self):
        self.assertEqual(self.registry.names(), ["echo", "fail", "noop", "sleep"])
        self.assertIsNone(self.run_handler("noop")["result"])
        self.assertEqual(self.run_handler("echo", {"a": [1]})["result"], {"a": [1]})
        self.assertEqual(self.run_handler("sleep", {"ms": 5})["result"], {"slept_ms": 5})
        self.assertEqual(self.run_handler("sleep", 5)["result"], {"slept_ms": 5})
        for bad in ({"ms": -1}, {"ms": "x"}, "x"):
            r = self.run_handler("sleep", bad)
            self.assertFalse(r["success"], bad)
            self.assertFalse(r["error"]["retryable"], bad)

    def test_fail(self):
        r = self.run_handler("fail", {"message": "boom"})
        self.assertEqual((r["success"], r["error"]["error_type"], r["error"]["message"], r["error"]["retryable"]),
                         (False, "StockFailure", "boom", True))
        self.assertFalse(self.run_handler("fail", {"retryable": False})["error"]["retryable"])
        self.assertFalse(self.run_handler("fail", {"fail_attempts": 2}, attempt=2)["success"])
        self.assertEqual(self.run_handler("fail", {"fail_attempts": 2}, attempt=3)["result"], {"succeeded_on_attempt": 3})


class RunnerTest(support.WorkerTestCase):
    prefix = "pyrun"

    def setUp(self):
        super().setUp()
        self.dir = Path(tempfile.mkdtemp(prefix="handlers-"))
        self.addCleanup(shutil.rmtree, self.dir)
        self.port = support.free_port()
        self.conf = self.dir / "worker.toml"
        self.conf.write_text(support.config(self.queue, listen=f"127.0.0.1:{self.port}"))

    def write(self, name, text):
        (self.dir / name).write_text(textwrap.dedent(text))

    def start_runner(self, *args):
        """The runner as a child process; its output is kept for assertions."""
        env = dict(os.environ, TASKER_CONFIG_PATH=str(self.conf))
        self.log = open(self.dir / "runner.log", "w+")
        self.addCleanup(self.log.close)
        p = subprocess.Popen([sys.executable, "-m", "taskerworker", *args], env=env, stdout=self.log,
                             stderr=subprocess.STDOUT, cwd=self.dir)
        self.addCleanup(lambda: p.poll() is None and p.kill())
        return p

    def wait_ready(self):
        """Waits for the runner's /readyz to answer 200: it has applied the queue
        schema and its pollers poll, so steps enqueued now find their tables."""
        def ready():
            try:
                return support.http_get(f"http://127.0.0.1:{self.port}/readyz")[0] == 200
            except OSError:  # not listening yet
                return False
        support.wait_for("the runner to be ready", ready, timeout=60, interval=0.1)

    def output(self):
        self.log.flush()
        return (self.dir / "runner.log").read_text()

    def test_runs_handler_files_and_stock_handlers_then_drains_on_sigterm(self):
        self.write("_features.py", """\
            def mean(xs):
                return sum(xs) / len(xs)
            """)
        self.write("scoring.py", """\
            from taskerworker import PermanentError, handler
            from _features import mean  # a module beside the handler file

            @handler("score")
            def score(event):
                features = event["payload"].get("features")
                if not features:
                    raise PermanentError("payload.features is required")
                return {"score": mean(features)}

            @handler("echo")  # replaces the stock echo
            def echo(event):
                return {"echoed": event["payload"]}
            """)
        self.write("notes.txt", "not a handler file")
        p = self.start_runner("run", str(self.dir), "--pollers", "2")
        self.wait_ready()
        support.enqueue(self.queue, "score", 3, payload={"features": [1, 2, 3]})
        support.enqueue(self.queue, "score", 1, payload={})
        support.enqueue(self.queue, "echo", 1, payload={"a": 1})
        support.enqueue(self.queue, "fail", 2, payload={"fail_attempts": 1})
        support.enqueue(self.queue, "sleep", 2, payload={"ms": 50})
        support.wait_for("8 completed, 1 dead",
                         lambda: (lambda s: s["Completed"] == 8 and s["Dead"] == 1)(support.stats(self.queue)), timeout=60)
        self.assertEqual(support.http_get(f"http://127.0.0.1:{self.port}/readyz")[0], 200)
        by_handler = {}
        for s in support.steps(self.queue):
            by_handler.setdefault(s["handler"], []).append(s)
        self.assertEqual([s["result"]["result"] for s in by_handler["score"] if s["state"] == "completed"],
                         [{"score": 2.0}] * 3)
        dead = [s for s in by_handler["score"] if s["state"] == "dead"]
        self.assertEqual(len(dead), 1)
        self.assertEqual(dead[0]["last_error"]["error"]["error_type"], "PermanentError")
        self.assertEqual(by_handler["echo"][0]["result"]["result"], {"echoed": {"a": 1}})
        self.assertEqual([(s["attempts"], s["result"]["result"]) for s in by_handler["fail"]],
                         [(2, {"succeeded_on_attempt": 2})] * 2)
        p.send_signal(signal.SIGTERM)
        self.assertEqual(p.wait(30), 0, self.output())
        out = self.output()
        self.assertIn(f"handler files: {self.dir / 'scoring.py'};", out)
        self.assertIn("handlers: echo, fail, noop, score, sleep", out)
        self.assertIn("stopped after", out)

    def test_info_and_the_console_script(self):
        self.write("scoring.py", """\
            from taskerworker import handler
            handler("score")(lambda event: None)
            """)
        script = shutil.which("taskerworker", path=os.path.dirname(sys.executable))
        self.assertIsNotNone(script, "the wheel installs a taskerworker script beside python")
        out = subprocess.run([script, "info", "--no-stock-handlers", str(self.dir)], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        self.assertIn("handlers: score\n", out)
        self.assertIn(f"library: {os.path.dirname(stock.__file__)}/libtaskerworker.so\n", out)

    def test_a_broken_handler_file_stops_the_start(self):
        self.write("broken.py", "raise RuntimeError('cannot import this')\n")
        p = self.start_runner("run", str(self.dir))
        self.assertNotEqual(p.wait(60), 0)
        self.assertIn("RuntimeError: cannot import this", self.output())

    def test_exits_when_every_poller_died_and_the_step_is_not_lost(self):
        self.write("deadly.py", """\
            from taskerworker import handler

            @handler("deadly")
            def deadly(event):
                raise SystemExit("a handler that ends its thread")
            """)
        p = self.start_runner("run", str(self.dir), "--pollers", "1")
        self.wait_ready()
        support.enqueue(self.queue, "deadly", 1, max_attempts=3)
        self.assertEqual(p.wait(60), 1, self.output())
        self.assertIn("every poller thread has stopped", self.output())
        # The stop gave the polled step back: retried later, not lost.
        (step,) = support.steps(self.queue)
        self.assertIn(step["state"], ("ready", "scheduled"))
        self.assertEqual(step["last_error"]["error"]["error_type"], "ffi_abandoned", json.dumps(step))


if __name__ == "__main__":
    unittest.main()
