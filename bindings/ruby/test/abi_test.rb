# frozen_string_literal: true

require_relative "test_helper"
require "tempfile"
require "pathname"

# The misuse matrix of taskerworker.h against the real library: every misuse
# returns its documented code with a readable message, the process survives,
# and no step is lost.
module RawCalls
  S = TaskerWorker::Status
  N = TaskerWorker::Native

  # [code, message] of a raw C call.
  def raw(name, *args)
    code = N.public_send(name, *args)
    [code, N.last_error]
  end

  def assert_code(want, got, *fragments)
    code, msg = got
    assert_equal want, code, "want #{S.name_of(want)}, got #{code}: #{msg}"
    if want.negative?
      assert_kind_of String, msg
      refute_empty msg.strip, "a negative code must come with a message"
      assert_equal Encoding::UTF_8, msg.encoding
      fragments.each { |f| assert_includes msg, f }
    else
      assert_nil msg, "a successful call leaves no error message"
    end
    msg
  end

  def out_ptr
    FFI::MemoryPointer.new(:pointer)
  end

  def all_queries_answer(want)
    assert_code want, raw(:taskerworker_poll, out_ptr)
    assert_code want, raw(:taskerworker_metrics, out_ptr)
    assert_code want, raw(:taskerworker_check_starvation, out_ptr)
    assert_code want, raw(:taskerworker_cleanup_timeouts, FFI::MemoryPointer.new(:int))
    assert_code want, raw(:taskerworker_complete, "1.1", '{"step_uuid":"x","success":true}')
  end

  def check_null_pointers
    assert_code S::ERR_NULL_ARGUMENT, raw(:taskerworker_poll, nil), "event_json is NULL"
    assert_code S::ERR_NULL_ARGUMENT, raw(:taskerworker_metrics, nil), "metrics_json is NULL"
    assert_code S::ERR_NULL_ARGUMENT, raw(:taskerworker_check_starvation, nil), "starving_json is NULL"
    assert_code S::ERR_NULL_ARGUMENT, raw(:taskerworker_cleanup_timeouts, nil), "count is NULL"
    assert_code S::ERR_NULL_ARGUMENT, raw(:taskerworker_complete, nil, "{}"), "event_id is NULL"
    assert_code S::ERR_NULL_ARGUMENT, raw(:taskerworker_complete, "1.1", nil), "result_json is NULL"
    assert_code S::ERR_NULL_ARGUMENT, raw(:taskerworker_complete, nil, nil)
    N.taskerworker_free(nil) # ignored
    assert_raises(TaskerWorker::NullArgumentError) { @worker.complete_json(nil, "{}") }
  end
end

class NotRunningTest < WorkerTest
  include RawCalls

  def test_version_needs_no_worker
    v = @worker.version
    refute_empty v
    assert_equal v, TaskerWorker.library_version
  end

  def test_calls_before_start_return_not_started
    msg = assert_code S::ERR_NOT_STARTED, raw(:taskerworker_poll, out_ptr)
    assert_includes msg, "taskerworker_start"
    all_queries_answer(S::ERR_NOT_STARTED)
    assert_code S::ERR_NOT_STARTED, raw(:taskerworker_stop, 0)
    calls = [-> { @worker.poll }, -> { @worker.metrics }, -> { @worker.check_starvation },
             -> { @worker.cleanup_timeouts }, -> { @worker.stop },
             -> { @worker.complete("1.1", Support.success_result("x")) }]
    calls.each do |call|
      e = assert_raises(TaskerWorker::NotStartedError) { call.call }
      assert_equal S::ERR_NOT_STARTED, e.code
      assert_includes e.message, "taskerworker_start"
    end
  end

  def test_null_pointers_return_null_argument
    check_null_pointers
  end

  # (A new Ruby Thread may run on a cached native thread that failed a call
  # before, so "nothing failed here yet" cannot be asserted: the message
  # belongs to the OS thread and is only meaningful right after a failure.)
  def test_last_error_is_per_thread
    assert_equal S::ERR_NOT_STARTED, N.taskerworker_poll(out_ptr)
    other = {}
    Thread.new do
      other[:code] = N.taskerworker_poll(nil)
      other[:msg] = N.last_error
    end.join
    assert_equal S::ERR_NULL_ARGUMENT, other[:code]
    assert_includes other[:msg], "NULL"
    assert_includes N.last_error, "taskerworker_start" # ours is untouched
  end
end

class LifecycleTest < WorkerTest
  include RawCalls

  def test_start_twice_then_calls_after_stop
    cfg = Support.config(@queue)
    assert_code S::OK, raw(:taskerworker_start, cfg, nil)
    msg = assert_code S::ERR_ALREADY_STARTED, raw(:taskerworker_start, cfg, nil), "already running"
    assert_includes msg, "taskerworker_stop"
    assert_raises(TaskerWorker::AlreadyStartedError) { @worker.start(cfg) }
    assert_code S::OK, raw(:taskerworker_metrics, out_ptr)
    assert_code S::OK, raw(:taskerworker_stop, 0)
    all_queries_answer(S::ERR_NOT_STARTED)
    assert_code S::ERR_NOT_STARTED, raw(:taskerworker_stop, 0)
    # ... and the process can start a worker again.
    @worker.start(cfg)
    assert_equal 0, @worker.metrics["pending_count"]
    @worker.stop
  end

  def test_null_pointers_while_running
    start
    check_null_pointers
    @worker.stop
  end

  def test_refused_configs_name_the_problem
    e = assert_raises(TaskerWorker::ConfigError) { @worker.start("#{Support.config(@queue)}\n[worker.queue.extra]\nbogus = 1\n") }
    assert_equal S::ERR_CONFIG, e.code
    e = assert_raises(TaskerWorker::ConfigError) { @worker.start(Support.config(@queue).sub("batch_size = 50", "batch_size = 0")) }
    assert_includes e.message, "worker.queue.batch_size"
    assert_raises(TaskerWorker::ConfigError) { @worker.start("[worker\nthis is not toml =") }
    e = assert_raises(TaskerWorker::DatabaseError) do
      @worker.start(Support.config(@queue), "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2")
    end
    assert_equal S::ERR_DATABASE, e.code
    assert_raises(TaskerWorker::InvalidUTF8Error) { @worker.start("[worker]\nworker_id = \"\xff\"\n".b) }
    assert_raises(TaskerWorker::InvalidUTF8Error) { @worker.start(Support.config(@queue), "postgres://\xff".b) }
    # None of these left a half-started worker behind.
    assert_code S::ERR_NOT_STARTED, raw(:taskerworker_stop, 0)
  end

  def test_start_from_a_config_file
    f = Tempfile.new(["worker", ".toml"])
    f.write(Support.config(@queue))
    f.close
    @worker.start(Pathname.new(f.path))
    @worker.stop
    @worker.start(f.path)
    @worker.stop
  ensure
    f&.unlink
  end
end

class CompleteMisuseTest < WorkerTest
  include RawCalls

  def test_every_refusal_keeps_the_event_pending
    start
    Support.enqueue(@queue, "rb_misuse", payload: { "n" => 1 })
    ev = Support.poll_one(@worker)
    eid = ev["event_id"]
    step = ev["step_uuid"]
    good = %({"step_uuid":"#{step}","success":true,"result":{"ok":1},"status":"completed",) +
           %("metadata":{"execution_time_ms":1,"retryable":false}})
    c = :taskerworker_complete

    # invalid UTF-8, in either argument
    assert_code S::ERR_INVALID_UTF8, raw(c, "\xff\xfe".b, good), "event_id"
    assert_code S::ERR_INVALID_UTF8, raw(c, eid, good.sub('"ok"', "\"\xc3\x28\"".b).b), "UTF-8"
    # JSON null decodes as an empty result: refused for its missing step_uuid.
    assert_includes [S::ERR_INVALID_JSON, S::ERR_INVALID_RESULT], raw(c, eid, "null").first
    # invalid JSON, or JSON that is not a result
    ["", "{not json", "[]", '"text"', "#{good} {}", good[0..-2], good.sub('"result"', '"resutl"')].each do |bad|
      assert_code S::ERR_INVALID_JSON, raw(c, eid, bad), "result_json"
    end
    assert_raises(TaskerWorker::InvalidJSONError) { @worker.complete_json(eid, "{oops") }
    # well-formed but inconsistent
    ['{"success":true}',
     %({"step_uuid":"#{step}","success":true,"error":{"message":"x","retryable":true}}),
     %({"step_uuid":"#{step}","success":false,"status":"completed"})].each do |bad|
      assert_code S::ERR_INVALID_RESULT, raw(c, eid, bad), "result"
    end
    assert_raises(TaskerWorker::InvalidResultError) { @worker.complete(eid, { "success" => true }) }
    # a result for another step
    other = good.sub(step, "00000000-0000-4000-8000-000000000000")
    assert_code S::ERR_STEP_MISMATCH, raw(c, eid, other), step
    assert_raises(TaskerWorker::StepMismatchError) { @worker.complete_json(eid, other) }
    # an id nobody polled
    assert_code S::ERR_UNKNOWN_EVENT, raw(c, "999999.1", good), "999999.1"
    assert_raises(TaskerWorker::UnknownEventError) { @worker.complete_json("no-such-event", good) }
    # a result that cannot be serialised never reaches the library
    assert_raises(JSON::GeneratorError) { @worker.complete(eid, Support.success_result(step, Float::NAN)) }

    # Through all of that the event stayed pending; now it completes once.
    m = @worker.metrics
    assert_equal [1, eid], [m["pending_count"], m["oldest_event_id"]]
    assert_code S::OK, raw(c, eid, good)
    msg = assert_code S::ERR_ALREADY_COMPLETED, raw(c, eid, good), eid
    assert_includes msg, "already completed"
    assert_raises(TaskerWorker::AlreadyCompletedError) { @worker.complete_json(eid, good) }
    assert_equal 0, @worker.metrics["pending_count"]
    @worker.stop
    st = Support.stats(@queue)
    assert_equal [1, 0, 0, 0], st.values_at("Completed", "Claimed", "Ready", "Dead")
    s, = Support.steps(@queue)
    assert_equal ["completed", 1, { "ok" => 1 }], [s["state"], s["attempts"], s["result"]["result"]]
  end

  def test_worker_methods_return_plain_ruby
    start
    m = @worker.metrics
    %w[pending_count oldest_pending_age_ms newest_pending_age_ms starvation_detected starving_event_count].each do |k|
      assert m.key?(k), "metrics lack #{k}: #{m}"
    end
    assert_equal [], @worker.check_starvation
    assert_equal 0, @worker.cleanup_timeouts
    assert_nil @worker.poll
    @worker.stop
  end
end
