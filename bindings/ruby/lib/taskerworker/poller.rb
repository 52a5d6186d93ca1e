# frozen_string_literal: true

require "json"
require "logger"

module TaskerWorker
  # A thread that polls a started Worker and runs each event's handler.
  #
  # As upstream: sleep idle_sleep (10 ms) when a poll finds nothing; call
  # check_starvation every starvation_check_interval (100) polls and
  # cleanup_timeouts every cleanup_interval (1000) polls; run handlers one at
  # a time on the polling thread. When complete answers "retry later" the same
  # result is sent again every retry_sleep until it is accepted or the worker
  # stops: a result is never dropped. delay (seconds) sleeps before each
  # handler, to simulate a slow poller.
  #
  # stop finishes the event in hand (its result is delivered) and joins.
  class Poller
    DEFAULT_IDLE_SLEEP = 0.010
    DEFAULT_STARVATION_CHECK_INTERVAL = 100
    DEFAULT_CLEANUP_INTERVAL = 1000
    DEFAULT_RETRY_SLEEP = 0.010

    # complete refusals meaning the result was malformed: replace it with a
    # serialisation failure rather than lose the step.
    MALFORMED = [Status::ERR_INVALID_JSON, Status::ERR_INVALID_UTF8, Status::ERR_INVALID_RESULT].freeze
    # The worker is gone or going: end the loop.
    WORKER_GONE = [Status::ERR_STOPPED, Status::ERR_NOT_STARTED].freeze

    attr_reader :worker, :registry, :polls, :processed, :completed, :retries, :fallbacks,
                :starvation_checks, :cleanups, :timed_out_cleanups, :starving, :error
    attr_accessor :idle_sleep, :starvation_check_interval, :cleanup_interval, :retry_sleep, :delay, :logger

    def initialize(worker, registry, idle_sleep: DEFAULT_IDLE_SLEEP,
                   starvation_check_interval: DEFAULT_STARVATION_CHECK_INTERVAL,
                   cleanup_interval: DEFAULT_CLEANUP_INTERVAL, retry_sleep: DEFAULT_RETRY_SLEEP, delay: 0,
                   name: "taskerworker-poller", logger: nil, on_starvation: nil, on_error: nil)
      @worker = worker
      @registry = registry
      @idle_sleep = idle_sleep
      @starvation_check_interval = starvation_check_interval
      @cleanup_interval = cleanup_interval
      @retry_sleep = retry_sleep
      @delay = delay
      @name = name
      @logger = logger || Logger.new($stderr, level: Logger::WARN, progname: "taskerworker")
      @on_starvation = on_starvation
      @on_error = on_error
      @stop = false
      @thread = nil
      @polls = @processed = @completed = @retries = @fallbacks = 0
      @starvation_checks = @cleanups = @timed_out_cleanups = 0
      @starving = []
      @error = nil
    end

    def start
      raise "poller already started" if @thread

      @thread = Thread.new { run }
      @thread.name = @name if @thread.respond_to?(:name=)
      @thread.report_on_exception = false
      self
    end

    # Ask the loop to end after the event in hand, and wait for it.
    def stop(timeout = nil)
      @stop = true
      @thread&.join(timeout) unless Thread.current == @thread
      nil
    end

    def stopping?
      @stop
    end

    def running?
      !@thread.nil? && @thread.alive?
    end

    # Wait for the thread to end by itself (e.g. the worker stopped).
    def join(timeout = nil)
      @thread&.join(timeout)
    end

    # The polling loop (runs on the calling thread; start runs it on a new one).
    def run
      until @stop
        sleep(@idle_sleep) unless poll_once
      end
    rescue Error => e
      if WORKER_GONE.include?(e.code)
        @logger.info("worker stopped; poller exits: #{e.detail}")
      else
        @error = e
        @logger.error("poller stopped by an error: #{e.message}")
      end
    rescue Exception => e # rubocop:disable Lint/RescueException -- keep the reason for whoever joins us
      @error = e
      @logger.error("poller crashed: #{e.class}: #{e.message}")
      raise
    end

    # One iteration: poll, run and complete at most one event, and do the
    # periodic checks. Returns whether an event was processed.
    def poll_once
      event = @worker.poll
      @polls += 1
      process(event) if event
      check_starvation if @starvation_check_interval.to_i.positive? && (@polls % @starvation_check_interval).zero?
      cleanup if @cleanup_interval.to_i.positive? && (@polls % @cleanup_interval).zero?
      !event.nil?
    end

    def process(event)
      sleep(@delay) if @delay&.positive?
      payload = @registry.execute_json(event)
      @processed += 1
      deliver(event, payload)
    end

    # Complete event with payload, retrying "retry later" until accepted or
    # the worker stops. Returns whether the result was delivered.
    def deliver(event, payload)
      event_id = event["event_id"].to_s
      replaced = false
      loop do
        begin
          if @worker.complete_json(event_id, payload)
            @completed += 1
            return true
          end
        rescue Error => e
          if MALFORMED.include?(e.code) && !replaced
            replaced = true
            @fallbacks += 1
            @logger.error("result for event #{event_id} refused (#{e.message}); completing with #{RESULT_SERIALIZATION_ERROR}")
            payload = Results.encode(Results.failure(event["step_uuid"].to_s, "result refused by the worker: #{e.detail}",
                                                     RESULT_SERIALIZATION_ERROR, false, elapsed_of(payload)))
            next
          end
          if WORKER_GONE.include?(e.code)
            @logger.warn("worker stopped before event #{event_id} was completed; the step will be redelivered")
            raise
          end
          # Already completed, timed out (an ffi_timeout failure was delivered
          # and the step will be retried), unknown, busy: settled elsewhere.
          @logger.warn("complete(#{event_id}) refused: #{e.message}")
          @on_error&.call(event, e)
          return false
        end
        @retries += 1
        sleep(@retry_sleep)
      end
    end

    private

    def check_starvation
      @starvation_checks += 1
      list = @worker.check_starvation
      return if list.nil? || list.empty?

      @starving = list
      @logger.warn("#{list.size} pending FFI events are starving (oldest #{list.map { |s| s['age_ms'].to_i }.max} ms)")
      @on_starvation&.call(list)
    end

    def cleanup
      @cleanups += 1
      n = @worker.cleanup_timeouts
      return unless n.positive?

      @timed_out_cleanups += n
      @logger.warn("#{n} pending FFI events timed out into ffi_timeout failures")
    end

    def elapsed_of(payload)
      v = JSON.parse(payload).dig("metadata", "execution_time_ms")
      v.is_a?(Integer) ? v : 0
    rescue StandardError
      0
    end
  end
end
