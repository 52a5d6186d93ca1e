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
  # Batching: a poll takes up to batch_size (64) events in one call and their
  # results go back in one complete_batch call, which saves two FFI calls per
  # event for fast handlers. Every polled event is pending (its starvation
  # clock runs) until it is completed, so each poll is sized by the recent
  # handler time to take about batch_budget (1 ms) of work: a 10 us handler
  # gets batches of 64, a handler slower than the budget gets batches of 1,
  # which is exactly the unbatched loop (poll, run, complete), so no event
  # waits long behind others. The first poll, before any handler was timed,
  # takes one event. batch_size 1 turns batching off. A poll call counts one
  # for the periodic checks however many events it returned.
  #
  # stop finishes the events in hand (their results are delivered) and joins.
  class Poller
    DEFAULT_IDLE_SLEEP = 0.010
    DEFAULT_STARVATION_CHECK_INTERVAL = 100
    DEFAULT_CLEANUP_INTERVAL = 1000
    DEFAULT_RETRY_SLEEP = 0.010
    DEFAULT_BATCH_SIZE = 64
    DEFAULT_BATCH_BUDGET = 0.001
    # Weight of a faster handler run in the handler-time estimate; a slower
    # run replaces the estimate at once, so batches shrink as soon as the
    # handler slows down and grow back gradually.
    HANDLER_TIME_DECAY = 0.25

    # complete refusals meaning the result was malformed: replace it with a
    # serialisation failure rather than lose the step.
    MALFORMED = [Status::ERR_INVALID_JSON, Status::ERR_INVALID_UTF8, Status::ERR_INVALID_RESULT].freeze
    # The worker is gone or going: end the loop.
    WORKER_GONE = [Status::ERR_STOPPED, Status::ERR_NOT_STARTED].freeze

    # Counters (read them from any thread; only the polling thread writes):
    # polls (poll calls, batched or not), processed (handler runs), completed
    # (results accepted), retries ("retry later" answers, per event),
    # fallbacks (results replaced by result_serialization_error),
    # batch_completes (complete_batch calls), largest_batch (the most events
    # one poll returned), handler_time (the recent seconds per event, nil
    # before the first).
    attr_reader :worker, :registry, :polls, :processed, :completed, :retries, :fallbacks,
                :starvation_checks, :cleanups, :timed_out_cleanups, :starving, :error,
                :batch_size, :batch_budget, :batch_completes, :largest_batch, :handler_time
    attr_accessor :idle_sleep, :starvation_check_interval, :cleanup_interval, :retry_sleep, :delay, :logger

    def initialize(worker, registry, idle_sleep: DEFAULT_IDLE_SLEEP,
                   starvation_check_interval: DEFAULT_STARVATION_CHECK_INTERVAL,
                   cleanup_interval: DEFAULT_CLEANUP_INTERVAL, retry_sleep: DEFAULT_RETRY_SLEEP, delay: 0,
                   batch_size: DEFAULT_BATCH_SIZE, batch_budget: DEFAULT_BATCH_BUDGET,
                   name: "taskerworker-poller", logger: nil, on_starvation: nil, on_error: nil)
      @worker = worker
      @registry = registry
      self.batch_size = batch_size
      self.batch_budget = batch_budget
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
      @batch_completes = @largest_batch = 0
      @handler_time = nil
    end

    # The most events one poll may take: 1..Worker::MAX_BATCH (1: no batching).
    def batch_size=(value)
      n = Integer(value)
      raise ArgumentError, "batch_size must be 1..#{Worker::MAX_BATCH}, got #{n}" unless n.between?(1, Worker::MAX_BATCH)

      @batch_size = n
    end

    # Seconds of handler work one batch should take (> 0).
    def batch_budget=(value)
      f = Float(value)
      raise ArgumentError, "batch_budget must be > 0 seconds, got #{f}" unless f.positive?

      @batch_budget = f
    end

    # How many events the next poll asks for: as many as fit in batch_budget
    # at the recent handler time, 1..batch_size; 1 until a handler was timed.
    def next_batch_size
      return 1 if @batch_size == 1 || @handler_time.nil?
      return @batch_size unless @handler_time.positive?

      (@batch_budget / @handler_time).floor.clamp(1, @batch_size)
    end

    def start
      raise "poller already started" if @thread

      @thread = Thread.new { run }
      @thread.name = @name if @thread.respond_to?(:name=)
      @thread.report_on_exception = false
      self
    end

    # Ask the loop to end after the events in hand (a polled batch is always
    # run and completed: its events are pending until then), and wait for it.
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

    # One iteration: poll (one call, for up to next_batch_size events), run
    # and complete what it returned, and do the periodic checks. Returns
    # whether an event was processed.
    def poll_once
      n = next_batch_size
      events = n == 1 ? [@worker.poll].compact : @worker.poll_batch(n)
      @polls += 1
      @largest_batch = events.size if events.size > @largest_batch
      if events.size == 1
        process(events.first)
      elsif events.size > 1
        process_batch(events)
      end
      check_starvation if @starvation_check_interval.to_i.positive? && (@polls % @starvation_check_interval).zero?
      cleanup if @cleanup_interval.to_i.positive? && (@polls % @cleanup_interval).zero?
      !events.empty?
    end

    def process(event)
      deliver(event, run_handler(event))
    end

    # Run every handler of a batch in order, then complete them all at once.
    def process_batch(events)
      deliver_batch(events.map { |event| [event, run_handler(event)] })
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
            payload = fallback(event, payload, e)
            next
          end
          if WORKER_GONE.include?(e.code)
            @logger.warn("worker stopped before event #{event_id} was completed; the step will be redelivered")
            raise
          end
          refused(event, e)
          return false
        end
        @retries += 1
        sleep(@retry_sleep)
      end
    end

    # Complete a batch of [event, payload] pairs with complete_batch calls.
    # Per event, as deliver does: "retry later" is sent again every
    # retry_sleep until accepted (a result is never dropped), a malformed
    # result is replaced once by a result_serialization_error failure, any
    # other refusal goes to on_error, and a stopped worker ends the loop. If
    # the call as a whole is refused (nothing was completed), the events are
    # delivered one by one so each gets that per-event handling. Returns how
    # many were completed.
    def deliver_batch(pairs)
      return (deliver(*pairs.first) ? 1 : 0) if pairs.size == 1

      done = 0
      pending = pairs.map { |event, payload| [event, payload, false] } # false: not replaced yet
      until pending.empty?
        outcomes = begin
          @batch_completes += 1
          @worker.complete_batch(pending.map { |event, payload, _| [event["event_id"].to_s, payload] })
        rescue Error => e
          if WORKER_GONE.include?(e.code)
            @logger.warn("worker stopped before #{pending.size} events were completed; their steps will be redelivered")
            raise
          end
          @logger.warn("complete_batch of #{pending.size} events refused as a whole (#{e.message}); completing them one by one")
          return done + pending.count { |event, payload, _| deliver(event, payload) }
        end

        again = []
        later = false
        gone = nil
        pending.zip(outcomes) do |(event, payload, replaced), outcome|
          case outcome
          when true
            @completed += 1
            done += 1
          when false
            @retries += 1
            later = true
            again << [event, payload, replaced]
          else
            if MALFORMED.include?(outcome.code) && !replaced
              again << [event, fallback(event, payload, outcome), true]
            elsif WORKER_GONE.include?(outcome.code)
              gone ||= outcome
            else
              refused(event, outcome)
            end
          end
        end
        if gone
          @logger.warn("worker stopped before every event of the batch was completed; the rest will be redelivered")
          raise gone
        end
        pending = again
        # Replacement results go straight back; "retry later" waits first.
        sleep(@retry_sleep) if later
      end
      done
    end

    private

    # Run the event's handler (after delay) and return its result JSON,
    # timing the whole run for the batch sizing.
    def run_handler(event)
      t = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      sleep(@delay) if @delay&.positive?
      payload = @registry.execute_json(event)
      observe(Process.clock_gettime(Process::CLOCK_MONOTONIC) - t)
      @processed += 1
      payload
    end

    def observe(seconds)
      @handler_time = if @handler_time.nil? || seconds >= @handler_time
                        seconds
                      else
                        @handler_time + ((seconds - @handler_time) * HANDLER_TIME_DECAY)
                      end
    end

    # The result_serialization_error failure that replaces a refused result.
    def fallback(event, payload, error)
      @fallbacks += 1
      @logger.error("result for event #{event['event_id']} refused (#{error.message}); completing with #{RESULT_SERIALIZATION_ERROR}")
      Results.encode(Results.failure(event["step_uuid"].to_s, "result refused by the worker: #{error.detail}",
                                     RESULT_SERIALIZATION_ERROR, false, elapsed_of(payload)))
    end

    # Already completed, timed out (an ffi_timeout failure was delivered and
    # the step will be retried), unknown, busy: settled elsewhere.
    def refused(event, error)
      @logger.warn("complete(#{event['event_id']}) refused: #{error.message}")
      @on_error&.call(event, error)
    end

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
