# frozen_string_literal: true

require_relative "test_helper"

# The Poller's loop against a fake worker (no library): intervals, idle sleep,
# retry-later handling, fallbacks and stopping.
class PollerTest < Minitest::Test
  S = TaskerWorker::Status
  STEP = "00000000-0000-4000-8000-00000000000"

  # Serves events from a list; records calls; complete answers from a script.
  class FakeWorker
    attr_reader :completed, :attempts, :polls, :starvation_checks, :cleanups, :batch_polls, :batch_calls
    attr_accessor :gone, :batch_refusal

    def initialize(events: [], answers: [])
      @events = events.dup
      @answers = answers.dup # true/false or an exception, consumed in order, then true
      @completed = []
      @attempts = 0
      @polls = 0
      @starvation_checks = []
      @cleanups = []
      @batch_polls = [] # max of each poll_batch call
      @batch_calls = [] # event ids of each complete_batch call
      @lock = Mutex.new
      @gone = false
    end

    def poll
      @lock.synchronize do
        @polls += 1
        raise TaskerWorker::Error.for(S::ERR_STOPPED, "stopping") if @gone

        @events.shift
      end
    end

    def push(*events)
      @lock.synchronize { @events.concat(events) }
    end

    # The batched calls, as Worker has them: one poll call however many
    # events it returns; per-item outcomes from the same script.
    def poll_batch(max)
      @lock.synchronize do
        @polls += 1
        @batch_polls << max
        raise TaskerWorker::Error.for(S::ERR_STOPPED, "stopping") if @gone

        @events.shift(max)
      end
    end

    def complete_batch(items)
      @lock.synchronize { @batch_calls << items.map(&:first) }
      if @batch_refusal # a refusal of the whole call, once
        refusal = @batch_refusal
        @batch_refusal = nil
        raise refusal
      end
      items.map do |event_id, payload|
        complete_json(event_id, payload)
      rescue TaskerWorker::Error => e
        e
      end
    end

    def complete_json(event_id, payload)
      answer = @lock.synchronize do
        @attempts += 1
        @answers.empty? ? true : @answers.shift
      end
      raise answer if answer.is_a?(Exception)

      @completed << [event_id, JSON.parse(payload)] if answer
      answer
    end

    def check_starvation
      @starvation_checks << @polls
      [{ "event_id" => "x", "step_uuid" => "y", "age_ms" => 12 }]
    end

    def cleanup_timeouts
      @cleanups << @polls
      0
    end
  end

  def ev(i, handler = "echo")
    { "event_id" => "#{i}.1", "step_uuid" => "#{STEP}#{i}", "handler" => handler, "payload" => { "i" => i } }
  end

  def registry
    r = TaskerWorker::HandlerRegistry.new
    r.handler("echo") { |e| e["payload"] }
    r.handler("bad") { |_| Object.new }
    r
  end

  def fast_and_slow_registry
    r = registry
    r.handler("slow") do |e|
      sleep 0.003
      e["payload"]
    end
    r
  end

  def poller(worker, **kw)
    TaskerWorker::Poller.new(worker, registry, logger: Logger.new(File::NULL), **kw)
  end

  def test_defaults_follow_upstream
    p = poller(FakeWorker.new)
    assert_equal [0.010, 100, 1000, 0], [p.idle_sleep, p.starvation_check_interval, p.cleanup_interval, p.delay]
  end

  def test_periodic_checks
    w = FakeWorker.new
    p = poller(w, idle_sleep: 0)
    2000.times { p.poll_once }
    assert_equal (100..2000).step(100).to_a, w.starvation_checks
    assert_equal [1000, 2000], w.cleanups
    assert_equal [{ "event_id" => "x", "step_uuid" => "y", "age_ms" => 12 }], p.starving
  end

  def test_intervals_are_configurable
    w = FakeWorker.new
    p = poller(w, starvation_check_interval: 3, cleanup_interval: 5)
    15.times { p.poll_once }
    assert_equal [3, 6, 9, 12, 15], w.starvation_checks
    assert_equal [5, 10, 15], w.cleanups
  end

  def test_idle_sleep
    w = FakeWorker.new
    p = poller(w, idle_sleep: 0.05).start
    sleep 0.3
    p.stop
    refute p.running?
    assert_operator w.polls, :<=, 10
    assert_operator w.polls, :>=, 3
  end

  def test_handlers_run_one_at_a_time_and_each_completes
    active = 0
    peak = 0
    lock = Mutex.new
    r = TaskerWorker::HandlerRegistry.new
    r.handler("echo") do |e|
      lock.synchronize { peak = [peak, active += 1].max }
      sleep 0.001
      lock.synchronize { active -= 1 }
      e["payload"]
    end
    w = FakeWorker.new(events: (0...50).map { |i| ev(i) })
    p = TaskerWorker::Poller.new(w, r, idle_sleep: 0.001, logger: Logger.new(File::NULL)).start
    Support.wait_for("50 completed", timeout: 10, interval: 0.01) { w.completed.size == 50 }
    p.stop
    assert_equal (0...50).map { |i| "#{i}.1" }, w.completed.map(&:first)
    assert_equal 1, peak
    assert_equal 50, p.processed
  end

  def test_retry_later_is_retried_until_accepted
    w = FakeWorker.new(events: [ev(1)], answers: [false, false, false, true])
    p = poller(w, retry_sleep: 0.001)
    p.poll_once
    assert_equal [4, 3, 1], [w.attempts, p.retries, w.completed.size]
    assert_equal({ "i" => 1 }, w.completed[0][1]["result"])
  end

  def test_retry_continues_after_stop_is_requested
    w = FakeWorker.new(events: [ev(1)], answers: [false] * 20)
    p = poller(w, retry_sleep: 0.005, idle_sleep: 0.001).start
    # Stop once the event is in hand and being retried, however slow the machine.
    deadline = Time.now + 10
    Thread.pass until w.attempts >= 2 || Time.now > deadline
    p.stop
    assert_equal [1, 21], [w.completed.size, w.attempts]
  end

  def test_worker_gone_ends_retries_and_loop
    w = FakeWorker.new(events: [ev(1)], answers: [false, TaskerWorker::Error.for(S::ERR_STOPPED, "stopping")])
    p = poller(w, retry_sleep: 0.001, idle_sleep: 0.001).start
    p.join(5)
    refute p.running?
    assert_equal 2, w.attempts
    assert_nil p.error
    assert_empty w.completed
  end

  def test_loop_ends_when_worker_stops
    w = FakeWorker.new
    p = poller(w, idle_sleep: 0.001).start
    w.gone = true
    p.join(5)
    refute p.running?
    assert_nil p.error
  end

  def test_refused_result_is_replaced_by_serialization_failure
    w = FakeWorker.new(events: [ev(1)], answers: [TaskerWorker::Error.for(S::ERR_INVALID_JSON, "too big")])
    p = poller(w)
    p.poll_once
    assert_equal 1, p.fallbacks
    _, res = w.completed.first
    assert_equal [TaskerWorker::RESULT_SERIALIZATION_ERROR, false], [res["error"]["error_type"], res["error"]["retryable"]]
    assert_equal "#{STEP}1", res["step_uuid"]
  end

  def test_unserialisable_and_missing_handlers_complete_as_failures
    w = FakeWorker.new(events: [ev(1, "bad"), ev(2, "nobody")])
    p = poller(w)
    2.times { p.poll_once }
    assert_equal [TaskerWorker::RESULT_SERIALIZATION_ERROR, "handler_not_found"],
                 w.completed.map { |_, r| r["error"]["error_type"] }
  end

  def test_settled_elsewhere_is_not_retried
    seen = []
    w = FakeWorker.new(events: [ev(1)], answers: [TaskerWorker::Error.for(S::ERR_TIMED_OUT, "timed out")])
    p = TaskerWorker::Poller.new(w, registry, logger: Logger.new(File::NULL), on_error: ->(e, err) { seen << [e["event_id"], err.code] })
    p.poll_once
    assert_equal 1, w.attempts
    assert_equal [["1.1", S::ERR_TIMED_OUT]], seen
  end

  def test_delay_sleeps_before_each_handler
    w = FakeWorker.new(events: [ev(1), ev(2)])
    p = poller(w, delay: 0.05)
    t = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    2.times { p.poll_once }
    assert_operator Process.clock_gettime(Process::CLOCK_MONOTONIC) - t, :>=, 0.1
    assert_equal 2, w.completed.size
  end

  # --- batching (the same fake; the real library is in batch_test.rb) ---

  def drain(poller, worker, total, limit: 10_000)
    limit.times do
      break if worker.completed.size >= total

      poller.poll_once
    end
    assert_equal total, worker.completed.size
  end

  def test_batch_defaults_and_validation
    p = poller(FakeWorker.new)
    assert_equal [64, 0.001, 1, nil], [p.batch_size, p.batch_budget, p.next_batch_size, p.handler_time]
    [0, 4097, -1, "x", nil].each { |bad| assert_raises(ArgumentError, TypeError) { poller(FakeWorker.new, batch_size: bad) } }
    [0, -0.1, "x"].each { |bad| assert_raises(ArgumentError) { poller(FakeWorker.new, batch_budget: bad) } }
    p.batch_size = 4096
    assert_equal 4096, p.batch_size
  end

  def test_fast_handler_batches_grow_to_batch_size
    w = FakeWorker.new(events: (0...300).map { |i| ev(i) })
    p = poller(w, batch_budget: 1.0) # a generous budget: full batches even on a loaded machine
    drain(p, w, 300)
    assert_equal (0...300).map { |i| "#{i}.1" }, w.completed.map(&:first), "in order, each once"
    assert_equal [300, 300, 0], [p.processed, p.completed, p.retries]
    # The first poll (no handler timed yet) takes one event; then full batches.
    assert_equal 1, w.polls - w.batch_polls.size
    assert_equal 64, w.batch_polls.max
    assert_equal w.polls, p.polls
    assert_equal [64, 64], [p.largest_batch, w.batch_calls.map(&:size).max]
    assert_equal w.batch_calls.size, p.batch_completes
  end

  def test_slow_handler_shrinks_batches_then_fast_ones_grow_them
    events = (0...100).map { |i| ev(i) } + (100...110).map { |i| ev(i, "slow") }
    w = FakeWorker.new(events: events)
    p = TaskerWorker::Poller.new(w, fast_and_slow_registry, logger: Logger.new(File::NULL))
    drain(p, w, 110)
    assert_operator p.handler_time, :>=, 0.003
    assert_equal 1, p.next_batch_size
    polls_before = w.batch_polls.size
    # Once a slow run was seen, polls take one event (poll, not poll_batch)
    # until faster runs bring the estimate back under the budget.
    w.push(*(110...200).map { |i| ev(i) })
    p.poll_once
    assert_equal polls_before, w.batch_polls.size, "the poll after a slow handler is a single poll"
    drain(p, w, 200)
    assert_operator w.batch_polls.last, :>, 1, "fast handlers grow the batches back"
    assert_equal (0...200).map { |i| "#{i}.1" }, w.completed.map(&:first)
  end

  def test_batch_size_one_never_batches
    w = FakeWorker.new(events: (0...100).map { |i| ev(i) })
    p = poller(w, batch_size: 1)
    drain(p, w, 100)
    assert_equal [[], [], 100, 1], [w.batch_polls, w.batch_calls, w.polls, p.largest_batch]
  end

  def test_batch_outcomes_are_handled_per_item
    seen = []
    w = FakeWorker.new(answers: [false, true, TaskerWorker::Error.for(S::ERR_INVALID_JSON, "too big"),
                                 TaskerWorker::Error.for(S::ERR_TIMED_OUT, "timed out"), # round 1: events 1..4
                                 false, true]) # round 2: 1 again, 3's replacement; round 3: 1 accepted
    on_error = ->(e, err) { seen << [e["event_id"], err.code] }
    p = TaskerWorker::Poller.new(w, registry, retry_sleep: 0.001, logger: Logger.new(File::NULL), on_error: on_error)
    pairs = (1..4).map { |i| [ev(i), TaskerWorker::Results.encode(TaskerWorker::Results.success("#{STEP}#{i}", i))] }
    assert_equal 3, p.deliver_batch(pairs)
    assert_equal [%w[1.1 2.1 3.1 4.1], %w[1.1 3.1], %w[1.1]], w.batch_calls
    assert_equal %w[2.1 3.1 1.1], w.completed.map(&:first)
    replaced = w.completed[1][1]
    assert_equal [TaskerWorker::RESULT_SERIALIZATION_ERROR, "#{STEP}3"], [replaced["error"]["error_type"], replaced["step_uuid"]]
    assert_equal [3, 2, 1, 3], [p.completed, p.retries, p.fallbacks, p.batch_completes]
    assert_equal [["4.1", S::ERR_TIMED_OUT]], seen
  end

  def test_worker_gone_in_a_batch_ends_it_after_counting
    w = FakeWorker.new(answers: [true, TaskerWorker::Error.for(S::ERR_STOPPED, "stopping"), false])
    p = poller(w, retry_sleep: 0.001)
    e = assert_raises(TaskerWorker::StoppedError) { p.deliver_batch((1..3).map { |i| [ev(i), "{}"] }) }
    assert_equal S::ERR_STOPPED, e.code
    assert_equal [1, 1, 1], [p.completed, p.retries, w.batch_calls.size], "the retry-later one is not resent to a stopped worker"
  end

  def test_whole_call_refusal_delivers_one_by_one
    w = FakeWorker.new(answers: [TaskerWorker::Error.for(S::ERR_INVALID_JSON, "bad"), true, true])
    w.batch_refusal = TaskerWorker::Error.for(S::ERR_INVALID_JSON, "results_json: too big; nothing was completed")
    p = poller(w)
    assert_equal 3, p.deliver_batch((1..3).map { |i| [ev(i), "{}"] })
    assert_equal [[%w[1.1 2.1 3.1]], %w[1.1 2.1 3.1]], [w.batch_calls, w.completed.map(&:first)]
    assert_equal [3, 1], [p.completed, p.fallbacks]
    w.batch_refusal = TaskerWorker::Error.for(S::ERR_NOT_STARTED, "not started")
    assert_raises(TaskerWorker::NotStartedError) { p.deliver_batch((4..5).map { |i| [ev(i), "{}"] }) }
    assert_equal 3, p.completed
  end

  def test_periodic_checks_count_poll_calls_not_events
    w = FakeWorker.new(events: (0...1000).map { |i| ev(i) })
    p = poller(w, starvation_check_interval: 3, cleanup_interval: 7, batch_budget: 1.0)
    drain(p, w, 1000)
    assert_operator p.polls, :<, 100
    assert_equal (3..p.polls).step(3).to_a, w.starvation_checks
    assert_equal (7..p.polls).step(7).to_a, w.cleanups
  end
end
