# frozen_string_literal: true

module TaskerWorker
  # The status codes of taskerworker.h. Non-negative codes are successes.
  module Status
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

    # The constant's name for a code ("ERR_NOT_STARTED"), or nil.
    def self.name_of(code)
      constants.find { |c| const_get(c) == code }&.to_s
    end
  end

  # A negative status code from libtaskerworker with the library's message.
  # #code is the raw code (compare with Status::*); #message is what
  # taskerworker_last_error() said. TaskerWorker::Error.for(code, msg) picks the
  # subclass for the code.
  class Error < StandardError
    attr_reader :code, :function, :detail

    def self.for(code, detail, function = nil)
      (ERRORS_BY_CODE[code] || Error).new(code, detail, function)
    end

    def initialize(code, detail = nil, function = nil)
      @code = code
      @detail = detail || Status.name_of(code) || "status #{code}"
      @function = function
      where = function ? "#{function}: " : ""
      super("#{where}#{@detail} (#{Status.name_of(code) || code} #{code})")
    end
  end

  class NullArgumentError < Error; end     # a required pointer was NULL (nil)
  class InvalidUTF8Error < Error; end      # a string argument was not UTF-8
  class InvalidJSONError < Error; end      # the result was not valid JSON in the result format
  class NotStartedError < Error; end       # no worker running: call start first
  class AlreadyStartedError < Error; end   # a worker is already running in this process
  class ConfigError < Error; end           # the configuration was refused; the message names the key
  class DatabaseError < Error; end         # the queue database could not be reached or migrated
  class UnknownEventError < Error; end     # complete: no such event id
  class AlreadyCompletedError < Error; end # complete: completed before
  class TimedOutError < Error; end         # complete: the event already became an ffi_timeout failure
  class StepMismatchError < Error; end     # complete: result step_uuid is not the event's step
  class InvalidResultError < Error; end    # complete: well-formed but inconsistent result
  class BusyError < Error; end             # complete: another completion of this event is in progress
  class StoppedError < Error; end          # the worker is stopping; the step goes back to the queue
  class DrainError < Error; end            # stop: the drain left work behind (it will be redelivered)
  class InvalidArgumentError < Error; end  # a number argument is out of range; the message gives the range
  class InternalError < Error; end         # a bug in the library

  ERRORS_BY_CODE = {
    Status::ERR_NULL_ARGUMENT => NullArgumentError,
    Status::ERR_INVALID_UTF8 => InvalidUTF8Error,
    Status::ERR_INVALID_JSON => InvalidJSONError,
    Status::ERR_NOT_STARTED => NotStartedError,
    Status::ERR_ALREADY_STARTED => AlreadyStartedError,
    Status::ERR_CONFIG => ConfigError,
    Status::ERR_DATABASE => DatabaseError,
    Status::ERR_UNKNOWN_EVENT => UnknownEventError,
    Status::ERR_ALREADY_COMPLETED => AlreadyCompletedError,
    Status::ERR_TIMED_OUT => TimedOutError,
    Status::ERR_STEP_MISMATCH => StepMismatchError,
    Status::ERR_INVALID_RESULT => InvalidResultError,
    Status::ERR_BUSY => BusyError,
    Status::ERR_STOPPED => StoppedError,
    Status::ERR_DRAIN => DrainError,
    Status::ERR_INVALID_ARGUMENT => InvalidArgumentError,
    Status::ERR_INTERNAL => InternalError
  }.freeze

  # libtaskerworker.so could not be found or loaded.
  class LibraryNotFoundError < LoadError; end

  # Raise from a handler for a failure that must not be retried (bad input).
  # Any exception whose #retryable? returns false behaves the same.
  class PermanentError < StandardError
    def retryable?
      false
    end
  end

  # Raise from a handler for a failure worth retrying (the default for any exception).
  class RetryableError < StandardError
    def retryable?
      true
    end
  end
end
