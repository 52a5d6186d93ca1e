# frozen_string_literal: true

require_relative "test_helper"

# The handler registry and result building, without the library.
class HandlersTest < Minitest::Test
  STEP = "00000000-0000-4000-8000-000000000001"

  class BadInput < StandardError
    def retryable?
      false
    end

    def error_code
      "E_BAD_INPUT"
    end
  end

  class Declined < StandardError
    def error_type
      "payment_declined"
    end
  end

  class WithJSON
    def to_json(*args)
      { "custom" => true }.to_json(*args)
    end
  end

  def setup
    @r = TaskerWorker::HandlerRegistry.new
  end

  def event(handler, payload = {})
    { "event_id" => "1.1", "step_uuid" => STEP, "task_uuid" => STEP, "handler" => handler, "payload" => payload,
      "attempt" => 1 }
  end

  def failure(res)
    assert_equal %w[error metadata result status step_uuid success], res.keys.sort
    assert_equal false, res["success"]
    assert_equal "failed", res["status"]
    assert_nil res["result"]
    assert_equal res["error"]["retryable"], res["metadata"]["retryable"]
    assert_equal res["error"]["error_type"], res["metadata"]["error_type"]
    res["error"]
  end

  def test_block_registration_and_success_wire_format
    blk = @r.handler("double") { |ev| { "n" => ev["payload"]["n"] * 2 } }
    assert_respond_to blk, :call
    assert @r.include?("double")
    assert_equal ["double"], @r.names
    res = @r.execute(event("double", { "n" => 21 }))
    assert_equal %w[metadata result status step_uuid success], res.keys.sort
    assert_equal STEP, res["step_uuid"]
    assert_equal true, res["success"]
    assert_equal "completed", res["status"]
    assert_equal({ "n" => 42 }, res["result"])
    assert_equal false, res["metadata"]["retryable"]
    assert_kind_of Integer, res["metadata"]["execution_time_ms"]
    assert_match(/\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\z/, res["metadata"]["completed_at"])
  end

  def test_callable_registration
    @r.register("lam", ->(ev) { ev["attempt"] })
    assert_equal 1, @r.execute(event("lam"))["result"]
  end

  def test_execution_time_is_measured
    @r.handler("slow") { |_| sleep 0.03 }
    ms = @r.execute(event("slow"))["metadata"]["execution_time_ms"]
    assert_operator ms, :>=, 30
    assert_operator ms, :<, 5000
  end

  def test_exception_is_retryable_failure_with_class_name_and_backtrace
    @r.handler("boom") { |_| raise ArgumentError, "downstream said no" }
    err = failure(@r.execute(event("boom")))
    assert_equal "ArgumentError", err["error_type"]
    assert_equal "downstream said no", err["message"]
    assert_equal true, err["retryable"]
    assert(err["backtrace"].any? { |l| l.include?("handlers_test.rb") }, err["backtrace"].inspect)
  end

  def test_permanent_error_and_retryable_predicate
    @r.handler("perm") { |_| raise TaskerWorker::PermanentError, "card invalid" }
    @r.handler("bad") { |_| raise BadInput, "field x missing" }
    @r.handler("declined") { |_| raise Declined, "declined" }
    @r.handler("retry") { |_| raise TaskerWorker::RetryableError, "again" }
    err = failure(@r.execute(event("perm")))
    assert_equal ["TaskerWorker::PermanentError", false], [err["error_type"], err["retryable"]]
    err = failure(@r.execute(event("bad")))
    assert_equal ["HandlersTest::BadInput", false, "E_BAD_INPUT"], [err["error_type"], err["retryable"], err["error_code"]]
    err = failure(@r.execute(event("declined")))
    assert_equal ["payment_declined", true], [err["error_type"], err["retryable"]]
    err = failure(@r.execute(event("retry")))
    assert_equal ["TaskerWorker::RetryableError", true], [err["error_type"], err["retryable"]]
  end

  def test_odd_exceptions_still_become_results
    bad_message = Class.new(StandardError) { def message = raise("no") }
    @r.handler("bad_utf8") { |_| raise ArgumentError, "bad \xff text".b }
    @r.handler("bad_message") { |_| raise bad_message }
    res = JSON.parse(@r.execute_json(event("bad_utf8")))
    assert_equal ["ArgumentError", true], res["error"].values_at("error_type", "retryable")
    assert_equal "bad ? text", res["error"]["message"]
    res = JSON.parse(@r.execute_json(event("bad_message")))
    assert_equal true, res["error"]["retryable"]
    assert_includes res["error"]["message"], "failing #message"
  end

  def test_unknown_handler_is_handler_not_found
    err = failure(@r.execute(event("nobody")))
    assert_equal ["handler_not_found", "Handler not found: nobody", false], [err["error_type"], err["message"], err["retryable"]]
  end

  def test_unserialisable_results_fall_back_to_a_permanent_failure
    cyclic = []
    cyclic << cyclic
    {
      "object" => Object.new, "nan" => Float::NAN, "inf" => { "x" => Float::INFINITY }, "cycle" => cyclic,
      "bad_utf8" => "\xff\xfe".dup.force_encoding(Encoding::UTF_8), "binary" => "\xff".b,
      "array_key" => { [1, 2] => 3 }, "time" => Time.now, "proc" => -> {}
    }.each do |name, value|
      @r.handler(name) { |_| value }
      raw = @r.execute_json(event(name))
      assert raw.valid_encoding?, name
      res = JSON.parse(raw)
      err = failure(res)
      assert_equal TaskerWorker::RESULT_SERIALIZATION_ERROR, err["error_type"], name
      assert_equal false, err["retryable"], name
      assert_equal STEP, res["step_uuid"], name
    end
  end

  def test_serialisable_results_survive
    @r.handler("ok") { |_| { "text" => "héllo ✓", sym: :yes, 1 => [1, 2.5, nil, true], "obj" => WithJSON.new } }
    res = JSON.parse(@r.execute_json(event("ok")))
    assert_equal({ "text" => "héllo ✓", "sym" => "yes", "1" => [1, 2.5, nil, true], "obj" => { "custom" => true } }, res["result"])
  end

  def test_encode_keeps_execution_time_in_fallback
    res = TaskerWorker::Results.success(STEP, Object.new, 17)
    out = JSON.parse(TaskerWorker::Results.encode(res))
    assert_equal TaskerWorker::RESULT_SERIALIZATION_ERROR, out["error"]["error_type"]
    assert_equal 17, out["metadata"]["execution_time_ms"]
  end

  def test_registration_refuses_nonsense
    assert_raises(ArgumentError) { @r.handler("") { nil } }
    assert_raises(ArgumentError) { @r.handler("x") }
  end
end
