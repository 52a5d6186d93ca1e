# frozen_string_literal: true

require_relative "test_helper"

# The batched calls (taskerworker_poll_batch, taskerworker_complete_batch)
# against the real library and queue: the Worker methods, their misuse
# matrix, and the batching Poller.
module BatchCalls
  S = TaskerWorker::Status
  N = TaskerWorker::Native
  C = :taskerworker_complete_batch

  def out_ptr
    FFI::MemoryPointer.new(:pointer)
  end

  # [code, last_error, string *out received (freed)] of a raw batched call.
  def raw_out(name, *args)
    out = out_ptr
    code = N.public_send(name, *args, out)
    [code, N.last_error, N.take(out.read_pointer)]
  end

  # Assert a whole-call refusal: the code, a message with the fragments, no
  # string out.
  def assert_refused(want, got, *fragments)
    code, msg, out = got
    assert_equal want, code, "want #{S.name_of(want)}, got #{code}: #{msg}"
    assert_kind_of String, msg
    fragments.each { |f| assert_includes msg, f }
    assert_nil out, "a refused call returns no string"
    msg
  end

  # n events, collected with poll_batch (the worker feeds the channel
  # asynchronously, so one call may return fewer).
  def poll_events(n, max: 64)
    got = []
    Support.wait_for("#{n} events polled", interval: 0.01) do
      got.concat(@worker.poll_batch([max, n - got.size].min))
      got.size >= n
    end
    assert_equal n, got.size
    got
  end

  def good(event, value = nil)
    JSON.generate(Support.success_result(event["step_uuid"], value))
  end

  def pending_count
    @worker.metrics["pending_count"]
  end
end

class BatchCallsTest < WorkerTest
  include BatchCalls

  def test_poll_batch_and_complete_batch
    start(queue_opts: { "batch_size" => 100 })
    assert_equal [], @worker.poll_batch(10)
    assert_nil @worker.poll_batch_json(10)
    Support.enqueue(@queue, "rb_batch", 30, payload: { "n" => 1 })
    Support.wait_for("30 claimed") { Support.stats(@queue)["Claimed"] == 30 }
    raw = Support.wait_for("a batch", interval: 0.01) { @worker.poll_batch_json(7) }
    assert_equal Encoding::UTF_8, raw.encoding
    first = JSON.parse(raw)
    assert_kind_of Array, first
    assert_includes 1..7, first.size
    events = first + poll_events(30 - first.size, max: 4096)
    events.each do |ev|
      assert_equal %w[attempt event_id handler payload step_uuid task_uuid], (ev.keys - %w[correlation_id timeout_ms]).sort
      assert_equal ["rb_batch", { "n" => 1 }, 1], ev.values_at("handler", "payload", "attempt")
    end
    assert_equal 30, events.map { |e| e["event_id"] }.uniq.size
    assert_equal 30, events.map { |e| e["step_uuid"] }.uniq.size
    assert_equal 30, pending_count
    assert_equal [], @worker.poll_batch(4096), "nothing left to poll"

    # Results as JSON strings or as Hashes, in an Array or a Hash.
    half = events.each_slice(15).to_a
    assert_equal [true] * 15, @worker.complete_batch(half[0].map { |e| [e["event_id"], good(e, e["event_id"])] })
    assert_equal [true] * 15,
                 @worker.complete_batch(half[1].to_h { |e| [e["event_id"], Support.success_result(e["step_uuid"], e["event_id"])] })
    assert_equal [], @worker.complete_batch([]), "nothing to complete is no call"
    assert_equal 0, pending_count
    @worker.stop
    assert_equal [30, 0, 0, 0], Support.stats(@queue).values_at("Completed", "Ready", "Claimed", "Dead")
    by_step = events.to_h { |e| [e["step_uuid"], e["event_id"]] }
    Support.steps(@queue).each do |s|
      assert_equal ["completed", 1, by_step[s["step_uuid"]]], [s["state"], s["attempts"], s["result"]["result"]]
    end
  end

  def test_partial_outcomes_per_item
    start(queue_opts: { "batch_size" => 100 })
    Support.enqueue(@queue, "rb_partial", 5)
    a, b, c, d, e = poll_events(5)
    other_step = JSON.generate(Support.success_result("00000000-0000-4000-8000-000000000000"))

    # Raw: completed, unknown id, step mismatch, one invalid element among
    # valid ones; only the first is completed.
    ids = [a["event_id"], "999999.1", b["event_id"], c["event_id"]].join("\n")
    code, msg, out = raw_out(C, ids, "[#{good(a)},#{good(a)},#{other_step},[]]")
    assert_equal S::PARTIAL, code, msg
    assert_includes msg, "3 of 4"
    outcomes = JSON.parse(out)
    assert_equal [S::OK, S::ERR_UNKNOWN_EVENT, S::ERR_STEP_MISMATCH, S::ERR_INVALID_JSON], outcomes.map { |o| o["code"] }
    assert_equal({ "code" => 0 }, outcomes[0])
    assert_includes outcomes[1]["error"], "999999.1"
    assert_includes outcomes[2]["error"], b["step_uuid"]
    assert_includes outcomes[3]["error"], "results_json[3]"
    assert_equal 4, pending_count # b, c, d, e

    # Through Worker: already completed, done, inconsistent result, done.
    got = @worker.complete_batch([[a["event_id"], good(a)], [b["event_id"], good(b)],
                                  [c["event_id"], '{"success":true}'], [d["event_id"], good(d)]])
    assert_equal [TaskerWorker::AlreadyCompletedError, TrueClass, TaskerWorker::InvalidResultError, TrueClass], got.map(&:class)
    assert_equal [S::ERR_ALREADY_COMPLETED, S::ERR_INVALID_RESULT], [got[0].code, got[2].code]
    assert_includes got[0].detail, "already completed"
    assert_equal "taskerworker_complete_batch", got[2].function
    assert_equal 2, pending_count # c, e

    # A result that is not UTF-8 is refused alone.
    bad_utf8 = good(c, "x").sub('"x"', "\"\xc3\x28\"".b).b
    got = @worker.complete_batch([[c["event_id"], bad_utf8], [e["event_id"], good(e, "e")]])
    assert_equal [TaskerWorker::InvalidUTF8Error, TrueClass], got.map(&:class)
    assert_equal [true], @worker.complete_batch([[c["event_id"], good(c, "c")]])
    assert_equal 0, pending_count
    @worker.stop
    assert_equal [5, 0, 0], Support.stats(@queue).values_at("Completed", "Claimed", "Dead")
  end

  def test_whole_call_refusals_complete_nothing
    start(queue_opts: { "batch_size" => 100 })
    Support.enqueue(@queue, "rb_refused", 2)
    a, b = poll_events(2)
    ids = "#{a['event_id']}\n#{b['event_id']}"
    both = "[#{good(a)},#{good(b)}]"

    # max out of range: the message gives the range.
    [0, -1, 4097].each do |max|
      assert_refused S::ERR_INVALID_ARGUMENT, raw_out(:taskerworker_poll_batch, max), "1..4096"
      e = assert_raises(TaskerWorker::InvalidArgumentError) { @worker.poll_batch(max) }
      assert_equal S::ERR_INVALID_ARGUMENT, e.code
      assert_includes e.message, "1..4096"
    end
    assert_raises(TypeError) { @worker.poll_batch(nil) }
    # NULL pointers
    code, msg = [N.taskerworker_poll_batch(1, nil), N.last_error]
    assert_equal S::ERR_NULL_ARGUMENT, code
    assert_includes msg, "events_json is NULL"
    assert_refused S::ERR_NULL_ARGUMENT, raw_out(C, nil, both), "event_ids is NULL"
    assert_refused S::ERR_NULL_ARGUMENT, raw_out(C, ids, nil), "results_json is NULL"
    assert_equal S::ERR_NULL_ARGUMENT, N.public_send(C, ids, both, nil)
    assert_includes N.last_error, "outcomes_json is NULL"
    assert_raises(ArgumentError) { @worker.complete_batch(nil) }
    assert_raises(ArgumentError) { @worker.complete_batch([[nil, good(a)]]) }
    assert_raises(ArgumentError) { @worker.complete_batch([[a["event_id"], nil]]) }
    assert_raises(ArgumentError) { @worker.complete_batch([["#{a['event_id']}\n#{b['event_id']}", good(a)]]) }
    # results not a JSON array (or not a whole one)
    ["", "{}", good(a), "null", "[#{good(a)}", "[#{good(a)},]", "#{both} []", "[#{good(a)} #{good(b)}]"].each do |bad|
      assert_refused S::ERR_INVALID_JSON, raw_out(C, ids, bad), "results_json", "nothing was completed"
    end
    # An element that is not a complete JSON value spoils the array: Worker raises.
    assert_raises(TaskerWorker::InvalidJSONError) do
      @worker.complete_batch([[a["event_id"], good(a)], [b["event_id"], "{oops"]])
    end
    # ids and results of different counts
    assert_refused S::ERR_INVALID_ARGUMENT, raw_out(C, ids, "[#{good(a)}]"), "2 ids", "1 results", "nothing was completed"
    assert_refused S::ERR_INVALID_ARGUMENT, raw_out(C, a["event_id"], both), "1 ids", "2 results"
    # more ids than a batch may carry
    assert_refused S::ERR_INVALID_ARGUMENT, raw_out(C, (["1.1"] * 4097).join("\n"), "[]"), "4096"
    # invalid UTF-8 ids
    assert_refused S::ERR_INVALID_UTF8, raw_out(C, "\xff\xfe\n#{b['event_id']}".b, both), "event_ids"
    e = assert_raises(TaskerWorker::InvalidUTF8Error) { @worker.complete_batch([["\xff".b, good(a)], [b["event_id"], good(b)]]) }
    assert_equal "taskerworker_complete_batch", e.function

    # Nothing was completed: both are still pending and complete now, once.
    assert_equal 2, pending_count
    assert_equal [true, true], @worker.complete_batch([[a["event_id"], good(a, "a")], [b["event_id"], good(b, "b")]])
    again = @worker.complete_batch([[a["event_id"], good(a)], [b["event_id"], good(b)]])
    assert_equal [S::ERR_ALREADY_COMPLETED] * 2, again.map(&:code)
    @worker.stop
    assert_equal [2, 0, 0], Support.stats(@queue).values_at("Completed", "Claimed", "Dead")
    assert_equal %w[a b].sort, Support.steps(@queue).map { |s| s["result"]["result"] }.sort
  end

  def test_before_start_and_after_stop
    2.times do |round|
      # Arguments are checked first, then whether a worker runs.
      assert_refused S::ERR_INVALID_ARGUMENT, raw_out(:taskerworker_poll_batch, 0), "1..4096"
      assert_refused S::ERR_NOT_STARTED, raw_out(:taskerworker_poll_batch, 1), "taskerworker_start"
      assert_refused S::ERR_NOT_STARTED, raw_out(C, "1.1", '[{"step_uuid":"x","success":true}]'), "taskerworker_start"
      assert_refused S::ERR_INVALID_ARGUMENT, raw_out(C, "1.1\n2.1", "[]"), "nothing was completed"
      assert_raises(TaskerWorker::NotStartedError) { @worker.poll_batch(64) }
      assert_raises(TaskerWorker::NotStartedError) { @worker.poll_batch_json(1) }
      e = assert_raises(TaskerWorker::NotStartedError) { @worker.complete_batch([["1.1", Support.success_result("x")]]) }
      assert_includes e.message, "taskerworker_start"
      next unless round.zero?

      start
      assert_equal [], @worker.poll_batch(1)
      @worker.stop
    end
  end
end

class BatchPollerTest < WorkerTest
  include BatchCalls

  def counting_registry(seen, lock, sleep_for: 0)
    registry = TaskerWorker::HandlerRegistry.new
    registry.handler("rb_batch") do |event|
      sleep(sleep_for) if sleep_for.positive?
      lock.synchronize { seen << [event["step_uuid"], event["event_id"], Thread.current.object_id] }
      { "n" => event["payload"]["n"] }
    end
    registry
  end

  def run_pollers(count, steps, **opts)
    lock = Mutex.new
    seen = []
    registry = counting_registry(seen, lock, sleep_for: opts.delete(:sleep_for) || 0)
    start(queue_opts: { "batch_size" => 500, "poll_interval_ms" => 5 })
    Support.enqueue(@queue, "rb_batch", steps, payload: { "n" => 3 })
    pollers = Array.new(count) do |i|
      TaskerWorker::Poller.new(@worker, registry, idle_sleep: 0.001, name: "batch-#{i}", logger: quiet_logger, **opts).start
    end
    begin
      Support.wait_for("#{steps} steps completed", timeout: 60, interval: 0.1) { Support.stats(@queue)["Completed"] == steps }
    ensure
      pollers.each(&:stop)
    end
    @worker.stop
    assert_equal [nil] * count, pollers.map(&:error)
    assert_equal steps, seen.size, "each event handled once"
    assert_equal steps, seen.map(&:first).uniq.size, "each step handled once"
    assert_equal steps, seen.map { |s| s[1] }.uniq.size, "each event polled once"
    assert_equal [steps, steps], [pollers.sum(&:processed), pollers.sum(&:completed)]
    assert_equal [0, 0], [pollers.sum(&:fallbacks), pollers.sum(&:retries)]
    assert_equal [steps, 0, 0, 0, 0], Support.stats(@queue).values_at("Completed", "Ready", "Claimed", "Expired", "Dead")
    assert_equal [["completed", 1, { "n" => 3 }]], Support.steps(@queue).map { |s| [s["state"], s["attempts"], s["result"]["result"]] }.uniq
    [pollers, seen]
  end

  def test_batched_poller_processes_every_step_once
    steps = 3000
    (poller,), = run_pollers(1, steps)
    assert_equal 64, poller.batch_size
    assert_operator poller.largest_batch, :>, 1, "a fast handler gets batches"
    assert_operator poller.largest_batch, :<=, 64
    assert_operator poller.batch_completes, :>, 0
    # Events that came in batches took one poll call per batch.
    assert_operator poller.polls, :<, steps, "fewer poll calls than events"
  end

  def test_several_batched_pollers_share_the_work
    pollers, seen = run_pollers(4, 3000, batch_size: 32)
    assert_operator pollers.map(&:largest_batch).max, :>, 1
    assert_operator pollers.map(&:largest_batch).max, :<=, 32
    assert_operator seen.map(&:last).uniq.size, :>, 1, "the work was shared between threads"
  end

  def test_slow_handler_gets_batches_of_one
    pollers, = run_pollers(1, 12, sleep_for: 0.02)
    poller = pollers.first
    assert_equal [1, 0], [poller.largest_batch, poller.batch_completes]
    assert_operator poller.handler_time, :>=, 0.02
    assert_equal 1, poller.next_batch_size
    assert_operator poller.polls, :>=, 12
  end

  def test_batch_size_one_is_the_unbatched_loop
    pollers, = run_pollers(2, 300, batch_size: 1)
    pollers.each do |p|
      assert_equal [1, 0, 1], [p.largest_batch, p.batch_completes, p.next_batch_size]
    end
    assert_operator pollers.sum(&:polls), :>=, 300
  end

  # deliver_batch against the real library: per-item refusals get their
  # per-event handling and the others complete in the same call.
  def test_per_item_refusals_in_a_batch
    start(queue_opts: { "batch_size" => 100 })
    Support.enqueue(@queue, "rb_items", 4)
    done, malformed, ok, gone = poll_events(4)
    assert @worker.complete_json(done["event_id"], good(done)) # completed elsewhere already
    refusals = []
    on_error = ->(ev, err) { refusals << [ev["event_id"], err.class] }
    poller = TaskerWorker::Poller.new(@worker, TaskerWorker::HandlerRegistry.new, logger: quiet_logger, on_error: on_error)
    n = poller.deliver_batch([[done, good(done)], [malformed, '{"success":true}'], [ok, good(ok, "ok")]])
    assert_equal 2, n
    assert_equal [2, 1, 2, 0], [poller.completed, poller.fallbacks, poller.batch_completes, poller.retries]
    assert_equal [[done["event_id"], TaskerWorker::AlreadyCompletedError]], refusals

    # A call refused as a whole (here an id that is not UTF-8) is delivered
    # one event at a time: the good result is not lost.
    bogus = { "event_id" => "\xff".b, "step_uuid" => gone["step_uuid"] }
    assert_equal 1, poller.deliver_batch([[bogus, good(gone)], [gone, good(gone, "gone")]])
    assert_equal 3, poller.completed
    assert_equal [bogus["event_id"], TaskerWorker::InvalidUTF8Error], refusals.last
    assert_equal 0, pending_count
    @worker.stop
    by = Support.steps(@queue).to_h { |s| [s["step_uuid"], s] }
    bad = by[malformed["step_uuid"]]
    assert_equal ["dead", TaskerWorker::RESULT_SERIALIZATION_ERROR, false],
                 [bad["state"], *bad["last_error"]["error"].values_at("error_type", "retryable")]
    assert_equal %w[completed ok], [by[ok["step_uuid"]]["state"], by[ok["step_uuid"]]["result"]["result"]]
    assert_equal %w[completed gone], [by[gone["step_uuid"]]["state"], by[gone["step_uuid"]]["result"]["result"]]
  end

  def test_stopped_worker_ends_a_batched_poller
    registry = TaskerWorker::HandlerRegistry.new
    registry.handler("rb_batch") { |_| { "ok" => true } }
    start(queue_opts: { "batch_size" => 100 })
    Support.enqueue(@queue, "rb_batch", 50)
    poller = TaskerWorker::Poller.new(@worker, registry, idle_sleep: 0.001, logger: quiet_logger).start
    Support.wait_for("50 completed") { Support.stats(@queue)["Completed"] == 50 }
    @worker.stop
    assert poller.join(10), "the poller ends by itself when the worker stops"
    refute poller.running?
    assert_nil poller.error
    assert_equal [50, 50], [poller.processed, poller.completed]
  end
end
