# frozen_string_literal: true

require_relative "test_helper"
require "fileutils"
require "rbconfig"
require "tmpdir"
require "taskerworker/stock"

# The stock handlers, called through a registry as a poller would.
class StockHandlersTest < Minitest::Test
  def setup
    @registry = TaskerWorker::Stock.register(TaskerWorker::HandlerRegistry.new)
  end

  def run_handler(handler, payload = nil, attempt: 1)
    @registry.execute({ "event_id" => "e1", "step_uuid" => "s1", "handler" => handler, "payload" => payload,
                        "attempt" => attempt })
  end

  def test_noop_echo_sleep
    assert_equal %w[echo fail noop sleep], @registry.names
    assert_nil run_handler("noop")["result"]
    assert_equal({ "a" => [1] }, run_handler("echo", { "a" => [1] })["result"])
    assert_equal({ "slept_ms" => 5 }, run_handler("sleep", { "ms" => 5 })["result"])
    assert_equal({ "slept_ms" => 5 }, run_handler("sleep", 5)["result"])
    [{ "ms" => -1 }, { "ms" => "x" }, "x"].each do |bad|
      r = run_handler("sleep", bad)
      refute r["success"], bad.inspect
      refute r["error"]["retryable"], bad.inspect
    end
  end

  def test_fail
    r = run_handler("fail", { "message" => "boom" })
    assert_equal [false, "TaskerWorker::Stock::Failure", "boom", true],
                 [r["success"], r["error"]["error_type"], r["error"]["message"], r["error"]["retryable"]]
    refute run_handler("fail", { "retryable" => false })["error"]["retryable"]
    refute run_handler("fail", { "fail_attempts" => 2 }, attempt: 2)["success"]
    assert_equal({ "succeeded_on_attempt" => 3 }, run_handler("fail", { "fail_attempts" => 2 }, attempt: 3)["result"])
  end
end

# The runner (the gem's taskerworker executable), as the worker image runs it:
# handler files from a directory, the stock handlers, worker.toml from
# $TASKER_CONFIG_PATH, a drain on SIGTERM, and a quick exit when every poller
# thread has died.
class RunnerTest < WorkerTest
  def setup
    super
    @dir = Dir.mktmpdir("handlers-")
    @port = Support.free_port
    @conf = File.join(@dir, "worker.toml")
    File.write(@conf, Support.config(@queue, listen: "127.0.0.1:#{@port}"))
    @log = File.join(@dir, "runner.log")
    @pid = nil
  end

  def teardown
    if @pid
      begin
        Process.kill("KILL", @pid)
        Process.wait(@pid)
      rescue Errno::ESRCH, Errno::ECHILD
        nil
      end
    end
    FileUtils.rm_rf(@dir)
    super
  end

  # The installed gem's executable (not the checkout's exe/).
  def executable
    Gem.bin_path("taskerworker", "taskerworker")
  end

  def write(name, text)
    File.write(File.join(@dir, name), text)
  end

  def start_runner(*args)
    @pid = Process.spawn({ "TASKER_CONFIG_PATH" => @conf }, RbConfig.ruby, executable, *args,
                         out: @log, err: %i[child out], chdir: @dir)
  end

  # The exit status of the runner, waiting at most timeout seconds.
  def wait_runner(timeout)
    status = Support.wait_for("the runner to exit", timeout: timeout, interval: 0.1) do
      _, st = Process.wait2(@pid, Process::WNOHANG)
      st
    end
    @pid = nil
    status.exitstatus
  end

  # Waits for the runner's /readyz to answer 200: it has applied the queue
  # schema and its pollers poll, so steps enqueued now find their tables.
  def wait_ready
    Support.wait_for("the runner to be ready", timeout: 60, interval: 0.1) do
      Support.http_get("http://127.0.0.1:#{@port}/readyz").first == 200
    rescue SystemCallError # not listening yet
      false
    end
  end

  def output
    File.read(@log)
  end

  def test_runs_handler_files_and_stock_handlers_then_drains_on_sigterm
    write("_features.rb", "module Features\n  def self.mean(xs) = xs.sum.fdiv(xs.size)\nend\n")
    write("scoring.rb", <<~RUBY)
      require "_features" # a file beside the handler file

      TaskerWorker.handler("score") do |event|
        features = event["payload"]["features"]
        raise TaskerWorker::PermanentError, "payload.features is required" if features.nil? || features.empty?

        { "score" => Features.mean(features) }
      end

      # Replaces the stock echo.
      TaskerWorker.handler("echo") { |event| { "echoed" => event["payload"] } }
    RUBY
    write("notes.txt", "not a handler file")
    start_runner("run", @dir, "--pollers", "2")
    wait_ready
    Support.enqueue(@queue, "score", 3, payload: { "features" => [1, 2, 3] })
    Support.enqueue(@queue, "score", 1, payload: {})
    Support.enqueue(@queue, "echo", 1, payload: { "a" => 1 })
    Support.enqueue(@queue, "fail", 2, payload: { "fail_attempts" => 1 })
    Support.enqueue(@queue, "sleep", 2, payload: { "ms" => 50 })
    Support.wait_for("8 completed, 1 dead", timeout: 60) do
      s = Support.stats(@queue)
      s["Completed"] == 8 && s["Dead"] == 1
    end
    assert_equal 200, Support.http_get("http://127.0.0.1:#{@port}/readyz").first
    by_handler = Support.steps(@queue).group_by { |s| s["handler"] }
    assert_equal [{ "score" => 2.0 }] * 3,
                 by_handler["score"].select { |s| s["state"] == "completed" }.map { |s| s["result"]["result"] }
    dead = by_handler["score"].select { |s| s["state"] == "dead" }
    assert_equal ["TaskerWorker::PermanentError"], dead.map { |s| s["last_error"]["error"]["error_type"] }
    assert_equal({ "echoed" => { "a" => 1 } }, by_handler["echo"].first["result"]["result"])
    assert_equal [[2, { "succeeded_on_attempt" => 2 }]] * 2,
                 by_handler["fail"].map { |s| [s["attempts"], s["result"]["result"]] }
    Process.kill("TERM", @pid)
    assert_equal 0, wait_runner(30), output
    assert_includes output, "handler files: #{File.join(@dir, 'scoring.rb')};"
    assert_includes output, "handlers: echo, fail, noop, score, sleep"
    assert_includes output, "stopped after"
  end

  def test_info
    write("scoring.rb", "TaskerWorker.handler(\"score\") { nil }\n")
    out, st = Open3.capture2e(RbConfig.ruby, executable, "info", "--no-stock-handlers", @dir)
    assert st.success?, out
    assert_includes out, "handlers: score\n"
    assert_includes out, "library: #{Gem.loaded_specs['taskerworker'].full_gem_path}/lib/libtaskerworker.so\n"
  end

  def test_a_broken_handler_file_stops_the_start
    write("broken.rb", "raise 'cannot load this'\n")
    start_runner("run", @dir)
    refute_equal 0, wait_runner(60)
    assert_includes output, "cannot load this"
  end

  def test_exits_when_every_poller_died_and_the_step_is_not_lost
    write("deadly.rb", "TaskerWorker.handler(\"deadly\") { raise Interrupt, \"a handler that ends its thread\" }\n")
    start_runner("run", @dir, "--pollers", "1")
    wait_ready
    Support.enqueue(@queue, "deadly", 1, max_attempts: 3)
    assert_equal 1, wait_runner(60), output
    assert_includes output, "every poller thread has stopped"
    # The stop gave the polled step back: retried later, not lost.
    step, = Support.steps(@queue)
    assert_includes %w[ready scheduled], step["state"]
    assert_equal "ffi_abandoned", step["last_error"]["error"]["error_type"], step.inspect
  end
end
