"""taskerworker: run Python step handlers inside a Tasker worker.

The worker itself (PostgreSQL queue, metrics server, FFI dispatch channel) is
libtaskerworker.so, loaded with ctypes; this package is a thin wrapper of its
C ABI (taskerworker.h) plus a handler registry and a polling thread.

    from taskerworker import Worker, HandlerRegistry, Poller

    registry = HandlerRegistry()

    @registry.handler("greet")
    def greet(event):
        return {"hello": event["payload"].get("name", "world")}

    worker = Worker().start("worker.toml")       # DATABASE_URL from the environment
    poller = Poller(worker, registry).start()
    ...
    poller.stop()
    worker.stop()
"""

from ._lib import ENV_LIB, Library, load_library
from .errors import (
    AlreadyCompletedError,
    AlreadyStartedError,
    BusyError,
    ConfigError,
    DatabaseError,
    DrainError,
    InternalError,
    InvalidArgumentError,
    InvalidJSONError,
    InvalidResultError,
    InvalidUTF8Error,
    LibraryNotFoundError,
    NotStartedError,
    NullArgumentError,
    Status,
    StepMismatchError,
    StoppedError,
    TaskerWorkerError,
    TimedOutError,
    UnknownEventError,
)
from .handlers import (
    HANDLER_NOT_FOUND,
    RESULT_SERIALIZATION_ERROR,
    HandlerRegistry,
    PermanentError,
    RetryableError,
    default_registry,
    encode_result,
    exception_result,
    failure_result,
    handler,
    success_result,
)
from .poller import Poller
from .worker import Worker, version

__version__ = "0.1.0"

# A library logs through "taskerworker.*" and leaves configuring output to the
# application (the examples call logging.basicConfig).
import logging as _logging

_logging.getLogger("taskerworker").addHandler(_logging.NullHandler())

__all__ = [
    "ENV_LIB", "Library", "load_library", "Worker", "version", "Poller",
    "HandlerRegistry", "default_registry", "handler", "PermanentError", "RetryableError", "success_result", "failure_result",
    "exception_result", "encode_result", "HANDLER_NOT_FOUND", "RESULT_SERIALIZATION_ERROR",
    "Status", "TaskerWorkerError", "LibraryNotFoundError", "NullArgumentError", "InvalidUTF8Error",
    "InvalidJSONError", "NotStartedError", "AlreadyStartedError", "ConfigError", "DatabaseError",
    "UnknownEventError", "AlreadyCompletedError", "TimedOutError", "StepMismatchError",
    "InvalidResultError", "BusyError", "StoppedError", "DrainError", "InvalidArgumentError", "InternalError",
]
