# frozen_string_literal: true

# Shared helpers for the binding tests.
#
# Environment (set by bindings/bindings_test.go; set them by hand to run the
# suite alone):
#   DATABASE_URL               a PostgreSQL database the suite may use
#   TASKERWORKER_LIB           libtaskerworker.so
#   TASKER_WORKER_BIN          tasker-worker, to enqueue steps and read stats
#   TASKERWORKER_TEST_HELPER   the Go test binary; `HELPER steps QUEUE` prints
#                              the queue's steps as JSON (attempts, last_error)
#
# Every test case uses its own queue namespace, so cases sharing the database
# never see each other's steps.

require "minitest/autorun"
require "json"
require "net/http"
require "open3"
require "socket"
require "securerandom"
require "taskerworker"

module Support
  DATABASE_URL = ENV["DATABASE_URL"]
  WORKER_BIN = ENV["TASKER_WORKER_BIN"]
  HELPER = ENV["TASKERWORKER_TEST_HELPER"]
  INTEGRATION = [DATABASE_URL, WORKER_BIN, HELPER].all? { |v| v && !v.empty? }

  module_function

  def new_queue(prefix = "rb")
    "#{prefix}_#{SecureRandom.hex(6)}"
  end

  # worker.toml for a test: loopback metrics on a free port (or listen), short polls.
  def config(queue, ffi: {}, queue_opts: {}, handler: {}, drain_ms: 5000, listen: "127.0.0.1:0")
    q = { "namespaces" => [queue], "poll_interval_ms" => 20, "batch_size" => 50, "visibility_timeout_ms" => 30_000 }
      .merge(queue_opts)
    f = { "completion_timeout_ms" => 30_000, "starvation_warning_threshold_ms" => 10_000 }.merge(ffi)
    h = { "max_concurrent_handlers" => 100 }.merge(handler)
    kv = ->(t) { t.map { |k, v| "#{k} = #{JSON.generate(v)}" } }
    [
      "[worker]", 'worker_id = "rb-test"',
      "[worker.mpsc_channels.handler_dispatch]", *kv.call(h),
      "[worker.mpsc_channels.ffi_dispatch]", *kv.call(f),
      "[worker.queue]", *kv.call(q),
      "[worker.drain]", "timeout_ms = #{drain_ms}",
      "[worker.http]", "listen_address = \"#{listen}\"", ""
    ].join("\n")
  end

  # A TCP port free right now on 127.0.0.1, for a worker whose endpoints a test reads.
  def free_port
    s = TCPServer.new("127.0.0.1", 0)
    s.addr[1]
  ensure
    s&.close
  end

  # [status, body] of a GET; a 5xx is an answer here, not an exception.
  def http_get(url)
    r = Net::HTTP.get_response(URI(url))
    [r.code.to_i, r.body.to_s]
  end

  # The value of an unlabelled sample on a /metrics page.
  def metric(page, name)
    line = page.lines.find { |l| l.start_with?("#{name} ") }
    raise Minitest::Assertion, "metric #{name} not on the page" unless line

    line.split.last.to_f
  end

  def run!(*args, stdin: nil)
    out, err, st = Open3.capture3({ "DATABASE_URL" => DATABASE_URL }, *args, stdin_data: stdin.to_s)
    raise "#{args.join(' ')} failed (#{st.exitstatus}):\n#{out}#{err}" unless st.success?

    out
  end

  def enqueue(queue, handler, count = 1, payload: nil, max_attempts: nil)
    args = [WORKER_BIN, "enqueue", "--queue", queue, "--handler", handler, "--count", count.to_s]
    args += ["--payload", JSON.generate(payload)] unless payload.nil?
    args += ["--max-attempts", max_attempts.to_s] if max_attempts
    out = run!(*args)
    raise "unexpected enqueue output: #{out}" unless out.include?("enqueued #{count} steps")
  end

  # `tasker-worker stats --json` for one queue: "Ready", "Scheduled", "Claimed", "Expired", "Completed", "Dead".
  def stats(queue)
    JSON.parse(run!(WORKER_BIN, "stats", "--json")).find { |s| s["Queue"] == queue } ||
      { "Queue" => queue, "Ready" => 0, "Scheduled" => 0, "Claimed" => 0, "Expired" => 0, "Completed" => 0, "Dead" => 0 }
  end

  # Every step of the queue with state, attempts, result and last_error (via the Go test helper).
  def steps(queue)
    JSON.parse(run!(HELPER, "steps", queue))
  end

  def wait_for(what, timeout: 20, interval: 0.05)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      v = yield
      return v if v
      raise Minitest::Assertion, "timed out after #{timeout}s waiting for #{what}" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep interval
    end
  end

  def poll_one(worker, timeout: 20)
    wait_for("an event to poll", timeout: timeout, interval: 0.01) { worker.poll }
  end

  # Stop a worker a failed test may have left running (one per process). The
  # 1 ms drain cannot settle what is still in flight (it is redelivered
  # later), which the stop reports as a DrainError: fine for a cleanup.
  def ensure_stopped
    TaskerWorker::Worker.new.stop(1)
  rescue TaskerWorker::NotStartedError, TaskerWorker::DrainError
    nil
  end

  def success_result(step_uuid, result = nil)
    { "step_uuid" => step_uuid, "success" => true, "result" => result, "status" => "completed",
      "metadata" => { "execution_time_ms" => 0, "retryable" => false } }
  end
end

# A test with its own queue namespace; any worker left running is stopped.
class WorkerTest < Minitest::Test
  def setup
    skip "needs DATABASE_URL, TASKER_WORKER_BIN and TASKERWORKER_TEST_HELPER" unless Support::INTEGRATION
    @queue = Support.new_queue
    @worker = TaskerWorker::Worker.new
  end

  def teardown
    Support.ensure_stopped if Support::INTEGRATION
  end

  def start(**kw)
    @worker.start(Support.config(@queue, **kw))
  end

  def quiet_logger
    Logger.new(File::NULL)
  end
end
