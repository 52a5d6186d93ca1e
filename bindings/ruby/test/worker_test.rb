# frozen_string_literal: true

require_relative "test_helper"

# End to end through the real library and queue: handlers, failures, many
# threads, starvation and FFI timeouts.
class HappyPathTest < WorkerTest
  def test_two_handlers_complete_every_step
    registry = TaskerWorker::HandlerRegistry.new
    registry.handler("rb_echo") { |event| event["payload"] }
    registry.handler("rb_add") { |event| { "sum" => event["payload"]["a"] + event["payload"]["b"], "attempt" => event["attempt"] } }
    start
    Support.enqueue(@queue, "rb_echo", 20, payload: { "greeting" => "hello ✓" })
    Support.enqueue(@queue, "rb_add", 20, payload: { "a" => 2, "b" => 40 })
    poller = TaskerWorker::Poller.new(@worker, registry, idle_sleep: 0.005).start
    Support.wait_for("40 steps completed") { Support.stats(@queue)["Completed"] == 40 }
    poller.stop
    @worker.stop
    assert_nil poller.error
    assert_equal [40, 40], [poller.processed, poller.completed]
    assert_equal [40, 0, 0, 0], Support.stats(@queue).values_at("Completed", "Ready", "Claimed", "Dead")
    results = Hash.new(0)
    Support.steps(@queue).each do |s|
      assert_equal %w[completed 1], [s["state"], s["attempts"].to_s], s.inspect
      results[s["result"]["result"]] += 1
    end
    assert_equal({ { "greeting" => "hello ✓" } => 20, { "sum" => 42, "attempt" => 1 } => 20 }, results)
  end
end

class HandlerFailuresTest < WorkerTest
  def test_failures_reach_the_queue_as_the_handler_meant
    registry = TaskerWorker::HandlerRegistry.new
    registry.handler("rb_flaky") do |event| # retryable: fails the first attempt only
      raise IOError, "downstream unavailable" if event["attempt"] == 1

      { "ok" => true }
    end
    registry.handler("rb_permanent") { |_| raise TaskerWorker::PermanentError, "card number invalid" }
    registry.handler("rb_unserialisable") { |_| { "when" => Object.new } }
    start
    %w[rb_flaky rb_permanent rb_unserialisable rb_missing].each do |h|
      Support.enqueue(@queue, h, 1, payload: { "h" => h }, max_attempts: 2)
    end
    poller = TaskerWorker::Poller.new(@worker, registry, idle_sleep: 0.005, logger: quiet_logger).start
    # flaky completes on its 2nd attempt (after the queue's ~1 s backoff); the
    # other three are dead after one attempt (not retryable).
    Support.wait_for("flaky completed, three dead", timeout: 30) do
      s = Support.stats(@queue)
      s["Completed"] == 1 && s["Dead"] == 3
    end
    poller.stop
    @worker.stop
    by = Support.steps(@queue).to_h { |s| [s["handler"], s] }
    flaky = by["rb_flaky"]
    assert_equal ["completed", 2, { "ok" => true }], [flaky["state"], flaky["attempts"], flaky["result"]["result"]]
    assert_equal ["IOError", true], flaky["last_error"]["error"].values_at("error_type", "retryable")
    [%w[rb_permanent TaskerWorker::PermanentError card\ number\ invalid],
     %w[rb_unserialisable result_serialization_error not\ JSON-serialisable],
     ["rb_missing", "handler_not_found", "Handler not found: rb_missing"]].each do |handler, error_type, fragment|
      s = by[handler]
      assert_equal ["dead", 1], [s["state"], s["attempts"]], s.inspect
      err = s["last_error"]["error"]
      assert_equal [error_type, false], [err["error_type"], err["retryable"]]
      assert_equal false, s["last_error"]["metadata"]["retryable"]
      assert_includes err["message"], fragment
    end
    assert(by["rb_permanent"]["last_error"]["error"]["backtrace"].any? { |l| l.include?("worker_test.rb") })
  end
end

class ConcurrencyTest < WorkerTest
  THREADS = 8
  STEPS = 500

  def test_many_threads_complete_each_step_exactly_once
    lock = Mutex.new
    seen = [] # [step_uuid, event_id, thread]
    registry = TaskerWorker::HandlerRegistry.new
    registry.handler("rb_count") do |event|
      lock.synchronize { seen << [event["step_uuid"], event["event_id"], Thread.current.object_id] }
      { "n" => event["payload"]["n"] }
    end
    start(queue_opts: { "batch_size" => 100 })
    Support.enqueue(@queue, "rb_count", STEPS, payload: { "n" => 7 })
    pollers = Array.new(THREADS) { |i| TaskerWorker::Poller.new(@worker, registry, idle_sleep: 0.001, name: "poller-#{i}").start }
    begin
      Support.wait_for("#{STEPS} steps completed", timeout: 45, interval: 0.2) { Support.stats(@queue)["Completed"] == STEPS }
    ensure
      pollers.each(&:stop)
    end
    @worker.stop
    assert_equal [nil] * THREADS, pollers.map(&:error)
    assert_equal STEPS, seen.size, "each event handled once"
    assert_equal STEPS, seen.map(&:first).uniq.size, "each step handled once"
    assert_equal STEPS, pollers.sum(&:completed)
    assert_operator seen.map(&:last).uniq.size, :>, 1, "the work was shared between threads"
    assert_equal [STEPS, 0, 0, 0], Support.stats(@queue).values_at("Completed", "Ready", "Claimed", "Dead")
    assert_equal [["completed", 1]], Support.steps(@queue).map { |s| [s["state"], s["attempts"]] }.uniq
  end

  def test_raw_threads_racing_on_the_same_events
    # Threads poll and complete directly; every completed event is then
    # completed again: exactly one success per event.
    start(queue_opts: { "batch_size" => 100 })
    n = 200
    Support.enqueue(@queue, "rb_race", n)
    lock = Mutex.new
    events = []
    outcomes = Hash.new(0)
    threads = Array.new(8) do
      Thread.new do
        loop do
          break if lock.synchronize { events.size >= n }

          ev = @worker.poll
          unless ev
            sleep 0.001
            next
          end
          2.times do
            key = begin
              @worker.complete(ev["event_id"], Support.success_result(ev["step_uuid"])) ? "ok" : "retry_later"
            rescue TaskerWorker::Error => e
              e.class.name
            end
            lock.synchronize { outcomes[key] += 1 }
          end
          lock.synchronize { events << ev["event_id"] }
        end
      end
    end
    threads.each { |t| t.join(45) }
    assert_equal n, events.uniq.size
    assert_equal({ "ok" => n, "TaskerWorker::AlreadyCompletedError" => n }, outcomes)
    Support.wait_for("all settled") { Support.stats(@queue)["Completed"] == n }
    @worker.stop
  end
end

class StarvationTest < WorkerTest
  def test_slow_poller_is_reported_starving
    registry = TaskerWorker::HandlerRegistry.new
    registry.handler("rb_slow") { |_| { "ok" => true } }
    start(ffi: { "starvation_warning_threshold_ms" => 200, "completion_timeout_ms" => 10_000 })
    Support.enqueue(@queue, "rb_slow", 3)
    # The poller holds each event 0.5 s before running its handler.
    poller = TaskerWorker::Poller.new(@worker, registry, delay: 0.5, idle_sleep: 0.005, starvation_check_interval: 1,
                                                         logger: quiet_logger).start
    # A polled event starving (events waiting unpolled behind the slow poller
    # also set starvation_detected, but are not counted here).
    m = Support.wait_for("a starving polled event", interval: 0.02) do
      mm = @worker.metrics
      mm if mm["starving_event_count"].positive?
    end
    assert m["starvation_detected"]
    assert_operator m["starving_event_count"], :>=, 1
    assert_equal 1, m["pending_count"]
    assert_operator m["oldest_pending_age_ms"], :>=, 200 # whole ms: 200.4 ms reads 200
    starving = @worker.check_starvation
    refute_empty starving
    assert_equal m["oldest_event_id"], starving[0]["event_id"]
    assert_operator starving[0]["age_ms"], :>=, 200
    assert_equal 36, starving[0]["step_uuid"].size
    Support.wait_for("slow steps completed") { Support.stats(@queue)["Completed"] == 3 }
    poller.stop
    m = @worker.metrics
    assert_equal [0, false, 0], m.values_at("pending_count", "starvation_detected", "starving_event_count")
    assert_equal [], @worker.check_starvation
    @worker.stop
  end

  def test_held_event_starves_then_completes
    start(ffi: { "starvation_warning_threshold_ms" => 200, "completion_timeout_ms" => 10_000 })
    Support.enqueue(@queue, "rb_hold", 1)
    ev = Support.poll_one(@worker)
    refute @worker.metrics["starvation_detected"]
    sleep 0.3
    m = @worker.metrics
    assert_equal [true, 1, ev["event_id"]], m.values_at("starvation_detected", "starving_event_count", "oldest_event_id")
    s, = @worker.check_starvation
    assert_equal ev.values_at("event_id", "step_uuid"), s.values_at("event_id", "step_uuid")
    assert @worker.complete(ev["event_id"], Support.success_result(ev["step_uuid"], 1))
    refute @worker.metrics["starvation_detected"]
    @worker.stop
  end
end

class TimeoutTest < WorkerTest
  def test_never_completed_events_become_ffi_timeouts_and_retry
    start(ffi: { "starvation_warning_threshold_ms" => 200, "completion_timeout_ms" => 500 })
    Support.enqueue(@queue, "rb_hang", 1, max_attempts: 2)
    first = Support.poll_one(@worker) # ... and never complete it
    assert_equal 1, first["attempt"]
    # The worker sweeps the timeout itself; the step is retried (attempt 2).
    second = Support.poll_one(@worker)
    assert_equal [first["step_uuid"], 2], second.values_at("step_uuid", "attempt")
    refute_equal first["event_id"], second["event_id"]
    s, = Support.steps(@queue)
    assert_equal ["claimed", 2], s.values_at("state", "attempts")
    assert_equal "ffi_timeout", s["last_error"]["error"]["error_type"]
    # Completing the timed-out event is refused: its failure was delivered.
    e = assert_raises(TaskerWorker::TimedOutError) { @worker.complete(first["event_id"], Support.success_result(first["step_uuid"])) }
    assert_includes e.detail, "timed out"
    assert_operator @worker.cleanup_timeouts, :>=, 0
    # The second attempt hangs too: out of attempts, the step is dead with
    # ffi_timeout as its last error.
    Support.wait_for("step dead") { Support.stats(@queue)["Dead"] == 1 }
    @worker.stop
    s, = Support.steps(@queue)
    assert_equal ["dead", 2], s.values_at("state", "attempts")
    err = s["last_error"]["error"]
    assert_equal ["ffi_timeout", true, "FFI handler timed out after 500ms"], err.values_at("error_type", "retryable", "message")
    assert_equal 500, s["last_error"]["metadata"]["execution_time_ms"]
  end
end

class DrainTest < WorkerTest
  def test_stop_waits_for_the_event_in_hand_and_returns_the_rest
    start(queue_opts: { "batch_size" => 10 })
    Support.enqueue(@queue, "rb_drain", 5)
    ev = Support.poll_one(@worker)
    Support.wait_for("all 5 claimed") { Support.stats(@queue)["Claimed"] == 5 }
    stopper = Thread.new { @worker.stop || "ok" }
    Support.wait_for("unpolled steps back in the queue") { Support.stats(@queue)["Ready"] == 4 }
    assert_raises(TaskerWorker::StoppedError) { @worker.poll } # draining: no new events
    assert @worker.complete(ev["event_id"], Support.success_result(ev["step_uuid"], "late"))
    assert_equal "ok", stopper.value
    assert_equal [1, 4, 0], Support.stats(@queue).values_at("Completed", "Ready", "Claimed")
  end
end
