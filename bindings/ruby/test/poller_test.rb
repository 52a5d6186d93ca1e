# frozen_string_literal: true

require_relative "test_helper"

# The Poller's loop against a fake worker (no library): intervals, idle sleep,
# retry-later handling, fallbacks and stopping.
class PollerTest < Minitest::Test
  S = TaskerWorker::Status
  STEP = "00000000-0000-4000-8000-00000000000"

  # Serves events from a list; records calls; complete answers from a script.
  class FakeWorker
    attr_reader :completed, :attempts, :polls, :starvation_checks, :cleanups
    attr_accessor :gone

    def initialize(events: [], answers: [])
      @events = events.dup
      @answers = answers.dup # true/false or an exception, consumed in order, then true
      @completed = []
      @attempts = 0
      @polls = 0
      @starvation_checks = []
      @cleanups = []
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
    sleep 0.02
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
end
