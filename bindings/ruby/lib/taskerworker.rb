# frozen_string_literal: true

# taskerworker: run Ruby step handlers inside a Tasker worker.
#
# The worker itself (PostgreSQL queue, metrics server, FFI dispatch channel) is
# libtaskerworker.so, attached with ruby-ffi; this gem is a thin wrapper of its
# C ABI (taskerworker.h) plus a handler registry and a polling thread.
#
#   require "taskerworker"
#
#   registry = TaskerWorker::HandlerRegistry.new
#   registry.handler("greet") { |event| { "hello" => event["payload"].fetch("name", "world") } }
#
#   worker = TaskerWorker::Worker.new.start("worker.toml")  # DATABASE_URL from the environment
#   poller = TaskerWorker::Poller.new(worker, registry).start
#   ...
#   poller.stop
#   worker.stop
require_relative "taskerworker/version"
require_relative "taskerworker/errors"
require_relative "taskerworker/native"
require_relative "taskerworker/handlers"
require_relative "taskerworker/worker"
require_relative "taskerworker/poller"
