# frozen_string_literal: true

require "json"

module TaskerWorker
  # A Tasker worker running inside this process (the library runs the queue,
  # the metrics server and the FFI dispatch channel); Ruby threads poll it for
  # step events and complete them.
  #
  # The library runs one worker per process at a time: start, use, stop, and
  # only then start again. All methods are safe to call from many threads.
  # Failures raise TaskerWorker::Error subclasses carrying the header's code
  # and the library's message.
  class Worker
    attr_reader :native

    def initialize(library: nil)
      @native = Native.load(library)
      @started = false
    end

    # Start the worker. config is worker.toml text or a path to one (nil:
    # $TASKER_CONFIG_PATH or the defaults); database_url is the queue's
    # PostgreSQL URL (nil: $DATABASE_URL).
    def start(config = nil, database_url = nil)
      config = config.to_path if config.respond_to?(:to_path)
      code = @native.taskerworker_start(cstr(config), cstr(database_url))
      @native.check(code, "taskerworker_start")
      @started = true
      self
    end

    # Stop claiming, return unpolled steps to the queue, wait for pending
    # events to be completed (timeout_ms <= 0: the configured drain timeout)
    # and flush results.
    def stop(timeout_ms = 0)
      code = @native.taskerworker_stop(Integer(timeout_ms))
      @started = false
      @native.check(code, "taskerworker_stop")
      nil
    end

    def started?
      @started
    end

    # The next step event as raw JSON, or nil when there is none.
    def poll_json
      out = FFI::MemoryPointer.new(:pointer)
      code = @native.taskerworker_poll(out)
      return @native.take(out.read_pointer) if code == Status::OK
      return nil if code == Status::NO_EVENT

      raise @native.error(code, "taskerworker_poll")
    end

    # Take the next step event without blocking: a Hash with "event_id",
    # "step_uuid", "task_uuid", "correlation_id", "handler", "payload",
    # "attempt", "timeout_ms"; or nil when there is nothing to do right now.
    def poll
      raw = poll_json
      raw && JSON.parse(raw)
    end

    # Complete a polled event with a result Hash in the wire format. true:
    # done; false: the completion channel is full, the event stays pending,
    # call again later. A result that cannot be serialised raises before
    # anything is sent.
    def complete(event_id, result)
      complete_json(event_id, JSON.generate(result))
    end

    # complete with the result already serialised (sent as is; nil is NULL).
    def complete_json(event_id, result_json)
      code = @native.taskerworker_complete(cstr(event_id), cstr(result_json))
      return true if code == Status::OK
      return false if code == Status::RETRY_LATER

      raise @native.error(code, "taskerworker_complete")
    end

    # FFI channel metrics: "pending_count", "oldest_pending_age_ms",
    # "newest_pending_age_ms", "oldest_event_id", "starvation_detected",
    # "starving_event_count".
    def metrics
      json_out(:taskerworker_metrics)
    end

    # Log a warning per pending event older than the starvation threshold and
    # return them as [{"event_id", "step_uuid", "age_ms"}].
    def check_starvation
      json_out(:taskerworker_check_starvation) || []
    end

    # Turn pending events older than the completion timeout into ffi_timeout
    # failures now; returns how many.
    def cleanup_timeouts
      n = FFI::MemoryPointer.new(:int)
      @native.check(@native.taskerworker_cleanup_timeouts(n), "taskerworker_cleanup_timeouts")
      n.read_int
    end

    # The library version.
    def version
      @native.version
    end

    private

    def json_out(fn)
      out = FFI::MemoryPointer.new(:pointer)
      code = @native.public_send(fn, out)
      raise @native.error(code, fn.to_s) if code.negative?

      raw = @native.take(out.read_pointer)
      raw && JSON.parse(raw)
    end

    # A value for a char* parameter: nil stays NULL; a String's bytes pass
    # untouched; anything else is converted with to_s.
    def cstr(value)
      return nil if value.nil?
      return value if value.is_a?(String)

      value.to_s
    end
  end

  # The library version (loads the library if needed).
  def self.library_version(library: nil)
    Native.load(library).version
  end
end
