# frozen_string_literal: true

require "logger"
require "optparse"
require "taskerworker"
require "taskerworker/stock"

module TaskerWorker
  # `taskerworker`: a worker whose handlers are plain Ruby files.
  #
  #   taskerworker run [PATH ...] [--pollers N] [--batch-size N] [--no-stock-handlers]
  #   taskerworker info [PATH ...]
  #
  # This is what the worker image (tasker-ruby-worker) runs, so that a team's
  # image, or a ConfigMap mounted into the stock one, only adds handler files.
  # PATHs are handler files or directories of them (every *.rb directly
  # inside, in name order). Without PATHs: $TASKER_HANDLERS (paths separated
  # by ":"), else /app/handlers when it exists. A file registers its handlers
  # with TaskerWorker.handler:
  #
  #   TaskerWorker.handler("score") do |event|
  #     features = event["payload"]["features"]
  #     raise TaskerWorker::PermanentError, "no features" if features.empty?
  #
  #     { "score" => features.sum.fdiv(features.size) }
  #   end
  #
  # The stock handlers (noop, echo, sleep, fail: TaskerWorker::Stock) are
  # registered first; a file's handler of the same name replaces one.
  #
  # run starts the worker inside this process (worker.toml from
  # $TASKER_CONFIG_PATH, which the operator mounts; the queue from
  # $DATABASE_URL) and polls it with --pollers threads ($POLLERS, default 2).
  # SIGTERM or SIGINT drains: the pollers finish the events in hand, the
  # worker gives the rest back to the queue, and the process exits 0. If every
  # poller thread dies, the process exits 1 at once so the container restarts
  # sooner than the worker's /livez would make it.
  #
  # info loads the handler files and the library, prints what it found and
  # exits: a check for an image or a ConfigMap.
  module Runner
    DEFAULT_HANDLERS_DIR = "/app/handlers"
    # How often run logs a progress line, in seconds.
    REPORT_INTERVAL = 30

    module_function

    # The handler files the paths name, in order. An explicit path that does
    # not exist is an error; the default directory may be absent.
    def handler_files(paths)
      explicit = !paths.empty?
      if paths.empty?
        paths = ENV.fetch("TASKER_HANDLERS", "").split(":").reject(&:empty?)
        explicit = !paths.empty?
        paths = [DEFAULT_HANDLERS_DIR] if paths.empty? && File.directory?(DEFAULT_HANDLERS_DIR)
      end
      paths.flat_map do |p|
        if File.directory?(p)
          Dir.children(p).select { |f| f.end_with?(".rb") && !f.start_with?(".", "_") }.sort.map { |f| File.join(p, f) }
        elsif File.file?(p)
          [p]
        elsif explicit
          raise ArgumentError, "handler path #{p} does not exist"
        else
          []
        end
      end
    end

    # The runner's registry: the stock handlers (unless turned off), then
    # whatever the handler files register. Each file is required (once), with
    # its directory on the load path so that it can require the files beside it.
    def build_registry(paths, stock: true)
      Stock.register(TaskerWorker.default_registry) if stock
      files = handler_files(paths)
      files.each do |f|
        dir = File.expand_path(File.dirname(f))
        $LOAD_PATH.unshift(dir) unless $LOAD_PATH.include?(dir)
        require File.expand_path(f)
      end
      [TaskerWorker.default_registry, files]
    end

    def env_int(name, default)
      v = ENV.fetch(name, "")
      v.empty? ? default : Integer(v, 10)
    rescue ArgumentError
      raise OptionParser::InvalidArgument, "$#{name}=#{v.inspect}: want a whole number"
    end

    def parse(argv)
      opts = { pollers: env_int("POLLERS", 2), batch_size: env_int("BATCH_SIZE", 64), stock: true }
      parser = OptionParser.new do |o|
        o.banner = "usage: taskerworker run|info [PATH ...] [options]\n" \
                   "Run a Tasker worker whose step handlers are Ruby files (default PATH: $TASKER_HANDLERS, " \
                   "else #{DEFAULT_HANDLERS_DIR})."
        o.on("--pollers N", Integer, "polling threads (default: $POLLERS, else 2)") { |n| opts[:pollers] = n }
        o.on("--batch-size N", Integer, "most events one poll takes, 1..4096; 1 turns batching off " \
                                        "(default: $BATCH_SIZE, else 64)") { |n| opts[:batch_size] = n }
        o.on("--no-stock-handlers", "do not register the stock handlers noop, echo, sleep and fail") do
          opts[:stock] = false
        end
      end
      rest = parser.parse(argv)
      command = rest.shift
      raise OptionParser::InvalidArgument, "want a command: run or info\n#{parser}" unless %w[run info].include?(command)
      raise OptionParser::InvalidArgument, "--pollers #{opts[:pollers]}: want 1 or more" if opts[:pollers] < 1
      unless (1..4096).cover?(opts[:batch_size])
        raise OptionParser::InvalidArgument, "--batch-size #{opts[:batch_size]}: want 1..4096"
      end

      [command, rest, opts]
    end

    def main(argv)
      command, paths, opts = parse(argv)
      log = Logger.new($stderr, progname: "taskerworker.runner")
      registry, files = build_registry(paths, stock: opts[:stock])
      worker = Worker.new
      if command == "info"
        puts "library: #{worker.native.path}"
        puts "library version: #{worker.version}"
        puts "handler files: #{files.empty? ? '(none)' : files.join(', ')}"
        puts "handlers: #{registry.size.zero? ? '(none)' : registry.names.join(', ')}"
        return 0
      end
      if registry.size.zero?
        log.error("no handlers: give handler files, or drop --no-stock-handlers")
        return 2
      end
      run(worker, registry, opts[:pollers], opts[:batch_size], files, log)
    rescue OptionParser::ParseError, ArgumentError => e
      warn "taskerworker: #{e.message}"
      2
    end

    def run(worker, registry, pollers, batch_size, files, log)
      log.info("libtaskerworker #{worker.version} from #{worker.native.path}; handler files: " \
               "#{files.empty? ? '(none)' : files.join(', ')}; handlers: #{registry.names.join(', ')}")
      worker.start # worker.toml from $TASKER_CONFIG_PATH, the queue from $DATABASE_URL

      stop = Queue.new
      %w[TERM INT].each { |sig| Signal.trap(sig) { stop << sig } }
      threads = Array.new(pollers) do |i|
        Poller.new(worker, registry, name: "poller-#{i}", logger: log, batch_size: batch_size).start
      end
      log.info("polling with #{threads.size} threads")

      code = 0
      reported = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      while stop.empty?
        sleep 0.2
        if threads.none?(&:running?)
          errors = threads.filter_map { |p| p.error && "#{p.error.class}: #{p.error.message}" }
          log.error("every poller thread has stopped (#{errors.empty? ? 'no error recorded' : errors.join('; ')}): " \
                    "exiting so that the container restarts")
          code = 1
          break
        end
        next if Process.clock_gettime(Process::CLOCK_MONOTONIC) - reported < REPORT_INTERVAL

        reported = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        m = worker.metrics
        log.info("completed #{threads.sum(&:completed)} steps; #{m['pending_count']} events polled and pending " \
                 "(oldest #{m['oldest_pending_age_ms']} ms), #{m['unpolled_count']} waiting to be polled")
      end

      log.info("draining: finishing the events in hand, giving the rest back to the queue")
      threads.each do |p|
        p.stop
      rescue Exception # rubocop:disable Lint/RescueException -- joining a crashed poller re-raises its crash, logged already
        nil
      end
      begin
        worker.stop
      rescue DrainError => e
        log.warn("drain incomplete (#{e.message}): the unsettled steps are redelivered when their claims expire")
      rescue Error => e
        log.error("stop failed: #{e.message}")
        code = 1 if code.zero?
      end
      log.info("stopped after #{threads.sum(&:completed)} steps")
      code
    end
  end
end
