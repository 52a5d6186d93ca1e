#!/usr/bin/env ruby
# frozen_string_literal: true

# A Tasker worker whose step handlers are written in Ruby.
#
# The worker itself (queue, metrics on :9091, FFI dispatch channel) runs inside
# this process from libtaskerworker.so; this script registers two handlers and
# polls for steps until SIGINT/SIGTERM, then drains.
#
#   make build                                   # bin/libtaskerworker.so, bin/tasker-worker
#   export DATABASE_URL=postgres://...           # the queue
#   ruby examples/ruby/worker.rb
#   bin/tasker-worker enqueue --queue ruby --handler greet --payload '{"name":"Matz"}'
#
# Environment: DATABASE_URL (required); TASKER_CONFIG_PATH (a worker.toml; by
# default the built-in one below: queue "ruby", metrics on 127.0.0.1:9091);
# TASKERWORKER_LIB (the library; by default the one inside the installed gem,
# else bin/ of this checkout);
# POLLERS (polling threads, default 2); BATCH_SIZE (the most events one poll
# takes, default 64; 1 turns batching off: fast handlers get batches, slow ones
# are polled one at a time either way).

require "logger"
begin
  require "taskerworker" # the installed gem
rescue LoadError # running from a checkout without installing it
  $LOAD_PATH.unshift(File.expand_path("../../bindings/ruby/lib", __dir__))
  require "taskerworker"
end

LOG = Logger.new($stdout, progname: "example")

CONFIG = <<~TOML
  [worker.queue]
  namespaces = ["ruby"]
  poll_interval_ms = 100
  [worker.mpsc_channels.handler_dispatch]
  max_concurrent_handlers = 200  # steps in flight at once: room for the pollers' batches
  [worker.mpsc_channels.ffi_dispatch]
  completion_timeout_ms = 30000
  starvation_warning_threshold_ms = 5000
  [worker.drain]
  timeout_ms = 10000
  [worker.http]
  listen_address = "127.0.0.1:9091"
TOML

registry = TaskerWorker::HandlerRegistry.new

# {"name": "Matz"} -> {"greeting": "Hello, Matz!"}; no name is bad input (not retried).
registry.handler("greet") do |event|
  name = (event["payload"] || {})["name"]
  raise TaskerWorker::PermanentError, "payload.name is required" if name.nil? || name.empty?

  LOG.info("greet step #{event['step_uuid']} (attempt #{event['attempt']})")
  { "greeting" => "Hello, #{name}!" }
end

# {"numbers": [1, 2, 3]} -> {"sum": 6}. Non-numbers are bad input; a
# "fail_first_attempt": true payload raises a retryable error once.
registry.handler("sum") do |event|
  payload = event["payload"] || {}
  raise IOError, "simulated outage: retried by the queue" if payload["fail_first_attempt"] && event["attempt"] == 1

  numbers = payload.fetch("numbers", [])
  raise TaskerWorker::PermanentError, "payload.numbers must be numbers, got #{numbers.inspect}" unless numbers.all?(Numeric)

  { "sum" => numbers.sum, "count" => numbers.size }
end

dsn = ENV["DATABASE_URL"]
if dsn.nil? || dsn.empty?
  warn "set DATABASE_URL to the queue's PostgreSQL URL (e.g. from hack/local-postgres.sh start)"
  exit 2
end
config = ENV["TASKER_CONFIG_PATH"] || CONFIG

worker = TaskerWorker::Worker.new
LOG.info("libtaskerworker #{worker.version} from #{worker.native.path}; handlers: #{registry.names.join(', ')}")
worker.start(config, dsn)

stop = Queue.new
%w[INT TERM].each { |sig| Signal.trap(sig) { stop << sig } }

batch_size = Integer(ENV.fetch("BATCH_SIZE", "64"))
pollers = Array.new(Integer(ENV.fetch("POLLERS", "2"))) do |i|
  TaskerWorker::Poller.new(worker, registry, name: "poller-#{i}", logger: LOG, batch_size: batch_size).start
end
LOG.info("polling with #{pollers.size} threads; Ctrl-C to drain and stop")
ticks = 0
while stop.empty?
  sleep 0.2
  next unless ((ticks += 1) % 50).zero? # every 10 s

  m = worker.metrics
  LOG.info("completed #{pollers.sum(&:completed)} in #{pollers.sum(&:polls)} polls (largest batch #{pollers.map(&:largest_batch).max}); " \
           "pending #{m['pending_count']} (oldest #{m['oldest_pending_age_ms'].inspect} ms)" \
           "#{m['starvation_detected'] ? ' STARVING' : ''}")
end

LOG.info("stopping: finishing the steps in hand, returning the rest to the queue")
pollers.each(&:stop)
worker.stop
LOG.info("stopped after #{pollers.sum(&:completed)} steps")
