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
    # The most events one poll_batch may take and one complete_batch may carry.
    MAX_BATCH = 4096

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

    # Up to max (1..MAX_BATCH) step events in one call, as the raw JSON
    # array (oldest first), or nil when there is none. Every event is pending
    # until completed, as if polled alone. An out-of-range max raises
    # InvalidArgumentError (the library checks the range).
    def poll_batch_json(max)
      code, raw = call_with_out(:taskerworker_poll_batch, Integer(max))
      code == Status::OK ? raw : nil
    end

    # Up to max step events without blocking: an Array of event Hashes as poll
    # gives them, oldest first; empty when there is nothing to do right now.
    def poll_batch(max)
      raw = poll_batch_json(max)
      raw ? JSON.parse(raw) : []
    end

    # Complete several polled events in one call. items: [event_id, result]
    # pairs (an Array, or a Hash of event_id => result); a String result is
    # sent as is (JSON), anything else is serialised with JSON.generate first.
    #
    # Returns one outcome per item, in order: true (completed), false (the
    # completion channel is full: the event stays pending, send that one
    # again later) or the TaskerWorker::Error the library refused that one
    # with (e.g. UnknownEventError, InvalidResultError). A refusal of the call
    # as a whole (nothing was completed: not started, stopped, a batch too
    # large...) raises instead.
    def complete_batch(items)
      raise ArgumentError, "items must be [event_id, result] pairs, got nil" if items.nil?

      ids, results, count = batch_arguments(items)
      return [] if count.zero?

      code, raw = call_with_out(:taskerworker_complete_batch, ids, results)
      return Array.new(count, true) if code == Status::OK
      return outcomes(raw, count) if code == Status::PARTIAL

      raise Error.for(Status::ERR_INTERNAL, "unexpected status #{code}", "taskerworker_complete_batch")
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

    # Call fn(*args, out) where out receives a library string. Returns
    # [code, string or nil]; raises for a negative code. Whatever out holds
    # is freed, whatever the code (the header says NULL on failure, but a
    # string must never leak), and only after last_error was read, so the
    # message is the failing call's.
    def call_with_out(fn, *args)
      out = FFI::MemoryPointer.new(:pointer) # zeroed: NULL unless the library writes it
      code = @native.public_send(fn, *args, out)
      error = @native.error(code, fn.to_s) if code.negative?
      raw = @native.take(out.read_pointer)
      raise error if error

      [code, raw]
    end

    # The '\n'-joined ids and the JSON array of results for complete_batch,
    # built as bytes so ids and results are passed untouched even when they
    # are not valid UTF-8: the library judges them (an id that is not UTF-8
    # refuses the whole call, a result only its own item).
    def batch_arguments(items)
      ids = String.new # binary
      results = "[".b
      count = 0
      items.each do |event_id, result|
        raise ArgumentError, "item #{count}: event_id is nil" if event_id.nil?
        raise ArgumentError, "item #{count}: result is nil" if result.nil?

        id = cstr(event_id).b
        # A newline would split the id in two and misalign ids and results.
        raise ArgumentError, "item #{count}: event_id #{id.inspect} contains a newline" if id.include?("\n")

        unless count.zero?
          ids << "\n"
          results << ","
        end
        ids << id
        results << (result.is_a?(String) ? result : JSON.generate(result)).b
        count += 1
      end
      [ids, results << "]", count]
    end

    # The per-item outcomes of a PARTIAL complete_batch.
    def outcomes(raw, count)
      list = raw && JSON.parse(raw)
      unless list.is_a?(Array) && list.size == count
        raise Error.for(Status::ERR_INTERNAL, "PARTIAL with #{list.inspect} as outcomes of #{count} items",
                        "taskerworker_complete_batch")
      end

      list.map do |o|
        case o["code"]
        when Status::OK then true
        when Status::RETRY_LATER then false
        else Error.for(o["code"], o["error"], "taskerworker_complete_batch")
        end
      end
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
