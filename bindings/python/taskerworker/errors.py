"""Status codes of taskerworker.h and the exceptions that carry them."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """The status codes of taskerworker.h. Non-negative codes are successes."""

    OK = 0
    NO_EVENT = 1
    RETRY_LATER = 2
    PARTIAL = 3
    ERR_NULL_ARGUMENT = -1
    ERR_INVALID_UTF8 = -2
    ERR_INVALID_JSON = -3
    ERR_NOT_STARTED = -4
    ERR_ALREADY_STARTED = -5
    ERR_CONFIG = -6
    ERR_DATABASE = -7
    ERR_UNKNOWN_EVENT = -8
    ERR_ALREADY_COMPLETED = -9
    ERR_TIMED_OUT = -10
    ERR_STEP_MISMATCH = -11
    ERR_INVALID_RESULT = -12
    ERR_BUSY = -13
    ERR_STOPPED = -14
    ERR_DRAIN = -15
    ERR_INVALID_ARGUMENT = -16
    ERR_INTERNAL = -99


class TaskerWorkerError(Exception):
    """A negative status code from libtaskerworker, with the library's message.

    ``code`` is the raw code (compare with :class:`Status` or the class
    constants below); ``message`` is what taskerworker_last_error() said.
    ``TaskerWorkerError(code, message)`` returns the subclass for the code.
    """

    OK = Status.OK
    NO_EVENT = Status.NO_EVENT
    RETRY_LATER = Status.RETRY_LATER
    PARTIAL = Status.PARTIAL
    NULL_ARGUMENT = Status.ERR_NULL_ARGUMENT
    INVALID_UTF8 = Status.ERR_INVALID_UTF8
    INVALID_JSON = Status.ERR_INVALID_JSON
    NOT_STARTED = Status.ERR_NOT_STARTED
    ALREADY_STARTED = Status.ERR_ALREADY_STARTED
    CONFIG = Status.ERR_CONFIG
    DATABASE = Status.ERR_DATABASE
    UNKNOWN_EVENT = Status.ERR_UNKNOWN_EVENT
    ALREADY_COMPLETED = Status.ERR_ALREADY_COMPLETED
    TIMED_OUT = Status.ERR_TIMED_OUT
    STEP_MISMATCH = Status.ERR_STEP_MISMATCH
    INVALID_RESULT = Status.ERR_INVALID_RESULT
    BUSY = Status.ERR_BUSY
    STOPPED = Status.ERR_STOPPED
    DRAIN = Status.ERR_DRAIN
    INVALID_ARGUMENT = Status.ERR_INVALID_ARGUMENT
    INTERNAL = Status.ERR_INTERNAL

    def __new__(cls, code: int, message: str | None = None, *args, **kwargs):
        if cls is TaskerWorkerError:
            cls = _BY_CODE.get(int(code), TaskerWorkerError)
        return super().__new__(cls)

    def __init__(self, code: int, message: str | None = None, function: str | None = None):
        self.code = int(code)
        try:
            self.status: Status | None = Status(self.code)
        except ValueError:
            self.status = None
        self.message = message or (self.status.name if self.status else f"status {self.code}")
        self.function = function
        name = self.status.name if self.status else str(self.code)
        where = f"{function}: " if function else ""
        super().__init__(f"{where}{self.message} ({name} {self.code})")

    def __reduce__(self):  # keep pickling (multiprocessing) working
        return (TaskerWorkerError, (self.code, self.message, self.function))


class NullArgumentError(TaskerWorkerError):
    """A required pointer was NULL (None)."""


class InvalidUTF8Error(TaskerWorkerError):
    """A string argument was not UTF-8."""


class InvalidJSONError(TaskerWorkerError):
    """The result was not valid JSON in the result format."""


class NotStartedError(TaskerWorkerError):
    """No worker is running: call start first."""


class AlreadyStartedError(TaskerWorkerError):
    """A worker is already running in this process."""


class ConfigError(TaskerWorkerError):
    """The configuration was refused; the message names the key."""


class DatabaseError(TaskerWorkerError):
    """The queue database could not be reached or migrated."""


class UnknownEventError(TaskerWorkerError):
    """complete: no such event id."""


class AlreadyCompletedError(TaskerWorkerError):
    """complete: the event was completed before."""


class TimedOutError(TaskerWorkerError):
    """complete: the event already became an ffi_timeout failure."""


class StepMismatchError(TaskerWorkerError):
    """complete: the result's step_uuid is not the event's step."""


class InvalidResultError(TaskerWorkerError):
    """complete: the result JSON is well-formed but inconsistent."""


class BusyError(TaskerWorkerError):
    """complete: another completion of this event is in progress."""


class StoppedError(TaskerWorkerError):
    """The worker is stopping; the step goes back to the queue."""


class DrainError(TaskerWorkerError):
    """stop: the drain left work behind (it will be redelivered)."""


class InvalidArgumentError(TaskerWorkerError):
    """A number argument is out of range (a batch size outside 1..4096); the message gives the range."""


class InternalError(TaskerWorkerError):
    """A bug in the library; the message says what happened."""


_BY_CODE = {
    Status.ERR_NULL_ARGUMENT: NullArgumentError,
    Status.ERR_INVALID_UTF8: InvalidUTF8Error,
    Status.ERR_INVALID_JSON: InvalidJSONError,
    Status.ERR_NOT_STARTED: NotStartedError,
    Status.ERR_ALREADY_STARTED: AlreadyStartedError,
    Status.ERR_CONFIG: ConfigError,
    Status.ERR_DATABASE: DatabaseError,
    Status.ERR_UNKNOWN_EVENT: UnknownEventError,
    Status.ERR_ALREADY_COMPLETED: AlreadyCompletedError,
    Status.ERR_TIMED_OUT: TimedOutError,
    Status.ERR_STEP_MISMATCH: StepMismatchError,
    Status.ERR_INVALID_RESULT: InvalidResultError,
    Status.ERR_BUSY: BusyError,
    Status.ERR_STOPPED: StoppedError,
    Status.ERR_DRAIN: DrainError,
    Status.ERR_INVALID_ARGUMENT: InvalidArgumentError,
    Status.ERR_INTERNAL: InternalError,
}


class LibraryNotFoundError(OSError):
    """libtaskerworker.so could not be found or loaded; the message lists where it looked."""
