# frozen_string_literal: true

require_relative "test_helper"

# What the worker guarantees a Ruby poller: a dead poller is noticed (not
# ready, starving), its events count as in flight, and a polled event the
# worker is stopped on keeps its attempt.
class DeadPollerTest < WorkerTest
  def test_dead_poller_makes_the_worker_not_ready_and_starving
    port = Support.free_port
    base = "http://127.0.0.1:#{port}"
    start(ffi: { "starvation_warning_threshold_ms" => 300, "completion_timeout_ms" => 60_000 },
          handler: { "max_concurrent_handlers" => 10 }, listen: "127.0.0.1:#{port}")
    Support.enqueue(@queue, "rb_work", 12)
    # A poller thread takes one event and dies without completing it.
    polled = Thread.new { Support.poll_one(@worker) }.value
    # Its events are in flight (polled or waiting), bounded by load shedding
    # at 80 % of 10.
    page = Support.wait_for("8 events in flight") do
      p = Support.http_get("#{base}/metrics")[1]
      p if Support.metric(p, "tasker_dispatch_in_flight") == 8
    end
    assert_equal [1, 7], [Support.metric(page, "tasker_ffi_pending_events"), Support.metric(page, "tasker_ffi_unpolled_events")]
    # Nobody polls any more: not ready, and starving.
    _, body = Support.wait_for("readyz 503") do
      r = Support.http_get("#{base}/readyz")
      r if r[0] == 503
    end
    assert_includes body, "FFI pollers stalled: no poll for"
    assert_includes body, "while 7 events wait"
    assert_equal 200, Support.http_get("#{base}/healthz")[0]
    m = @worker.metrics
    assert_equal [true, true, 7], m.values_at("poller_stalled", "starvation_detected", "unpolled_count")
    assert_operator m["oldest_unpolled_age_ms"], :>, 300
    # A new poller works everything off; the worker is ready again.
    assert @worker.complete(polled["event_id"], Support.success_result(polled["step_uuid"]))
    registry = TaskerWorker::HandlerRegistry.new
    registry.handler("rb_work") { |_| { "ok" => true } }
    poller = TaskerWorker::Poller.new(@worker, registry, idle_sleep: 0.005).start
    Support.wait_for("12 completed", timeout: 30) { Support.stats(@queue)["Completed"] == 12 }
    Support.wait_for("readyz 200") { Support.http_get("#{base}/readyz")[0] == 200 }
    poller.stop
    @worker.stop
    assert_nil poller.error
  end
end

class StopKeepsTheAttemptTest < WorkerTest
  def test_polled_then_stopped_step_dead_letters_after_max_attempts
    Support.enqueue(@queue, "rb_hang", 1, max_attempts: 3)
    err = nil
    (1..3).each do |attempt|
      start
      ev = Support.poll_one(@worker, timeout: 30) # ... and never complete it
      assert_equal attempt, ev["attempt"]
      @worker.stop(2000) # three quarters wait for the poller, a quarter settles
      s, = Support.steps(@queue)
      assert_equal [attempt == 3 ? "dead" : "ready", attempt], s.values_at("state", "attempts"), s.inspect
      err = s["last_error"]["error"]
      assert_equal ["ffi_abandoned", true], err.values_at("error_type", "retryable")
    end
    assert_includes err["message"], "did not complete it before the worker stopped"
  end
end
