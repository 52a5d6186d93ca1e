"""``python3 -m taskerworker``: a worker whose handlers are plain Python files.

    python3 -m taskerworker run [PATH ...] [--pollers N] [--batch-size N] [--no-stock-handlers]
    python3 -m taskerworker info [PATH ...]

This is what the worker image (tasker-python-worker) runs, so that a team's
image, or a ConfigMap mounted into the stock one, only adds handler files.
PATHs are handler files or directories of them (every ``*.py`` directly
inside, in name order). Without PATHs: ``$TASKER_HANDLERS`` (paths separated
by ``:``), else ``/app/handlers`` when it exists. A file registers its
handlers with the decorator :func:`taskerworker.handler`::

    from taskerworker import PermanentError, handler

    @handler("score")
    def score(event):
        features = event["payload"]["features"]
        if not features:
            raise PermanentError("no features")
        return {"score": sum(features) / len(features)}

The stock handlers (noop, echo, sleep, fail: :mod:`taskerworker.stock`) are
registered first; a file's handler of the same name replaces one.

``run`` starts the worker inside this process (worker.toml from
``$TASKER_CONFIG_PATH``, which the operator mounts; the queue from
``$DATABASE_URL``) and polls it with ``--pollers`` threads (``$POLLERS``,
default 2). SIGTERM or SIGINT drains: the pollers finish the events in hand,
the worker gives the rest back to the queue, and the process exits 0. If every
poller thread dies, the process exits 1 at once so the container restarts
sooner than the worker's ``/livez`` would make it.

``info`` loads the handler files and the library, prints what it found and
exits: a check for an image or a ConfigMap.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from . import stock
from .errors import DrainError, TaskerWorkerError
from .handlers import HandlerRegistry, default_registry
from .poller import MAX_BATCH_SIZE, Poller
from .worker import Worker

log = logging.getLogger("taskerworker.runner")

DEFAULT_HANDLERS_DIR = "/app/handlers"
# How often run logs a progress line.
REPORT_INTERVAL = 30.0


def handler_files(paths: list[str]) -> list[Path]:
    """The handler files the paths name, in order. An explicit path that does
    not exist is an error; the default directory may be absent."""
    explicit = bool(paths)
    if not paths:
        env = os.environ.get("TASKER_HANDLERS", "")
        paths = [p for p in env.split(":") if p] if env else []
        explicit = bool(paths)
        if not paths and os.path.isdir(DEFAULT_HANDLERS_DIR):
            paths = [DEFAULT_HANDLERS_DIR]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(f for f in sorted(p.glob("*.py")) if not f.name.startswith((".", "_")))
        elif p.is_file():
            files.append(p)
        elif explicit:
            raise FileNotFoundError(f"handler path {p} does not exist")
    return files


def load_handler_files(files: list[Path]) -> None:
    """Import each file as a module named after it, with its directory on
    sys.path so that it can import the modules beside it. A module already
    imported (a file another one imported first) is not run again."""
    for f in files:
        d = str(f.parent.resolve())
        if d not in sys.path:
            sys.path.insert(0, d)
        name = f.stem
        if name in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(name, f)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load handler file {f}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise


def build_registry(paths: list[str], stock_handlers: bool = True) -> tuple[HandlerRegistry, list[Path]]:
    """The runner's registry: the stock handlers (unless turned off), then
    whatever the handler files register."""
    if stock_handlers:
        stock.register(default_registry)
    files = handler_files(paths)
    load_handler_files(files)
    return default_registry, files


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "")
    try:
        return int(v) if v else default
    except ValueError:
        raise SystemExit(f"${name}={v!r}: want a whole number") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python3 -m taskerworker",
                                description="Run a Tasker worker whose step handlers are Python files.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the worker until SIGTERM/SIGINT, then drain")
    info = sub.add_parser("info", help="load the handler files and the library, print them, exit")
    for s in (run, info):
        s.add_argument("paths", nargs="*", metavar="PATH",
                       help=f"handler files or directories (default: $TASKER_HANDLERS, else {DEFAULT_HANDLERS_DIR})")
        s.add_argument("--no-stock-handlers", action="store_true",
                       help="do not register the stock handlers noop, echo, sleep and fail")
    run.add_argument("--pollers", type=int, default=_env_int("POLLERS", 2),
                     help="polling threads (default: $POLLERS, else 2)")
    run.add_argument("--batch-size", type=int, default=_env_int("BATCH_SIZE", 64),
                     help=f"most events one poll takes, 1..{MAX_BATCH_SIZE}; 1 turns batching off "
                          "(default: $BATCH_SIZE, else 64)")
    args = p.parse_args(argv)
    if args.command == "run":
        if args.pollers < 1:
            p.error(f"--pollers {args.pollers}: want 1 or more")
        if not 1 <= args.batch_size <= MAX_BATCH_SIZE:
            p.error(f"--batch-size {args.batch_size}: want 1..{MAX_BATCH_SIZE}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=os.environ.get("TASKER_PYTHON_LOG_LEVEL", "INFO").upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    registry, files = build_registry(args.paths, not args.no_stock_handlers)
    worker = Worker()
    if args.command == "info":
        print(f"library: {worker.lib.path}")
        print(f"library version: {worker.version}")
        print(f"handler files: {', '.join(map(str, files)) or '(none)'}")
        print(f"handlers: {', '.join(registry.names()) or '(none)'}")
        return 0
    if not len(registry):
        log.error("no handlers: give handler files, or drop --no-stock-handlers")
        return 2
    return run(worker, registry, args.pollers, args.batch_size, files)


def run(worker: Worker, registry: HandlerRegistry, pollers: int, batch_size: int, files: list[Path]) -> int:
    log.info("libtaskerworker %s from %s; handler files: %s; handlers: %s", worker.version, worker.lib.path,
             ", ".join(map(str, files)) or "(none)", ", ".join(registry.names()))
    worker.start()  # worker.toml from $TASKER_CONFIG_PATH, the queue from $DATABASE_URL

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threads = [Poller(worker, registry, name=f"poller-{i}", batch_size=batch_size).start() for i in range(pollers)]
    log.info("polling with %d threads", len(threads))

    code = 0
    reported = time.monotonic()
    while not stop.wait(1.0):
        if not any(p.running for p in threads):
            errors = "; ".join(f"{p.name}: {p.error!r}" for p in threads if p.error is not None)
            log.error("every poller thread has stopped (%s): exiting so that the container restarts",
                      errors or "no error recorded")
            code = 1
            break
        if time.monotonic() - reported >= REPORT_INTERVAL:
            reported = time.monotonic()
            m = worker.metrics()
            log.info("completed %d steps; %d events polled and pending (oldest %s ms), %d waiting to be polled",
                     sum(p.completed for p in threads), m.get("pending_count", 0), m.get("oldest_pending_age_ms", 0),
                     m.get("unpolled_count", 0))

    log.info("draining: finishing the events in hand, giving the rest back to the queue")
    for p in threads:
        p.stop()
    try:
        worker.stop()
    except DrainError as e:
        log.warning("drain incomplete (%s): the unsettled steps are redelivered when their claims expire", e)
    except TaskerWorkerError as e:
        log.error("stop failed: %s", e)
        code = code or 1
    log.info("stopped after %d steps", sum(p.completed for p in threads))
    return code
