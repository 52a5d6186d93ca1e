# frozen_string_literal: true

require "json"

module TaskerWorker
  HANDLER_NOT_FOUND = "handler_not_found"
  RESULT_SERIALIZATION_ERROR = "result_serialization_error"

  # Results in the wire format of UPSTREAM-NOTES ("Result wire format").
  module Results
    # A result value nested deeper than this is refused (also catches cycles).
    MAX_DEPTH = 100

    module_function

    def completed_at
      Time.now.utc.strftime("%Y-%m-%dT%H:%M:%S.%6NZ")
    end

    def success(step_uuid, result = nil, execution_time_ms = 0, **metadata)
      md = { "execution_time_ms" => Integer(execution_time_ms), "retryable" => false, "completed_at" => completed_at }
      md.merge!(stringify(metadata))
      { "step_uuid" => step_uuid, "success" => true, "result" => result, "status" => "completed", "metadata" => md }
    end

    # A failure: metadata.retryable mirrors error.retryable, and the error type
    # is both in the error block and in metadata.
    def failure(step_uuid, message, error_type, retryable, execution_time_ms = 0, backtrace: nil, error_code: nil,
                status: "failed", **metadata)
      retryable = retryable ? true : false
      md = { "execution_time_ms" => Integer(execution_time_ms), "retryable" => retryable,
             "completed_at" => completed_at, "error_type" => error_type }
      err = { "message" => message.to_s, "error_type" => error_type, "retryable" => retryable }
      if error_code
        md["error_code"] = err["error_code"] = error_code.to_s
      end
      err["backtrace"] = backtrace.map(&:to_s) if backtrace && !backtrace.empty?
      md.merge!(stringify(metadata))
      { "step_uuid" => step_uuid, "success" => false, "result" => nil, "status" => status, "metadata" => md,
        "error" => err }
    end

    # The failure for an exception a handler raised: retryable unless it is a
    # PermanentError or its #retryable? says false; error_type is the
    # exception's class name (or its #error_type); backtrace is its backtrace.
    def from_exception(step_uuid, error, execution_time_ms = 0)
      retryable = begin
        error.respond_to?(:retryable?) ? error.retryable? : true
      rescue StandardError
        true
      end
      error_type = scrub((error.respond_to?(:error_type) && error.error_type) || error.class.name || "Exception")
      message = begin
        scrub(error.message)
      rescue StandardError
        "#{error.class} with a failing #message"
      end
      message = error_type if message.empty?
      code = error.respond_to?(:error_code) ? error.error_code : nil
      failure(step_uuid, message, error_type, retryable, execution_time_ms,
              backtrace: (error.backtrace || []).map { |l| scrub(l) }, error_code: code && scrub(code))
    end

    # Serialise a result to the UTF-8 JSON complete takes. If it cannot be
    # serialised faithfully (an arbitrary object, NaN, a cycle, a string that
    # is not valid UTF-8...), return a non-retryable result_serialization_error
    # failure for the step instead: the step is never lost and nothing crashes.
    def encode(result, step_uuid = nil)
      check_plain!(result, 0)
      JSON.generate(result)
    rescue StandardError, SystemStackError => e
      sid = step_uuid || (result.is_a?(Hash) ? result["step_uuid"] : nil)
      elapsed = result.is_a?(Hash) && result["metadata"].is_a?(Hash) ? result["metadata"]["execution_time_ms"] : 0
      elapsed = 0 unless elapsed.is_a?(Integer)
      JSON.generate(failure(sid.to_s, "handler result is not JSON-serialisable: #{e.class}: #{scrub(e.message)}",
                            RESULT_SERIALIZATION_ERROR, false, elapsed))
    end

    # Only values with a faithful JSON form pass: nil, booleans, Integers,
    # finite Floats, valid strings, Symbols, Arrays and Hashes of them, and
    # objects that define their own to_json. Anything else would be silently
    # turned into its to_s by the json library.
    def check_plain!(value, depth)
      raise JSON::NestingError, "nesting deeper than #{MAX_DEPTH} (a cycle?)" if depth > MAX_DEPTH

      case value
      when nil, true, false, Integer, Symbol then nil
      when Float
        raise JSON::GeneratorError, "#{value} is not valid JSON" unless value.finite?
      when String
        utf8 = value.encoding == Encoding::UTF_8 || value.encoding == Encoding::US_ASCII ? value : value.encode(Encoding::UTF_8)
        raise JSON::GeneratorError, "string is not valid UTF-8" unless utf8.valid_encoding?
      when Array
        value.each { |v| check_plain!(v, depth + 1) }
      when Hash
        value.each do |k, v|
          unless k.is_a?(String) || k.is_a?(Symbol) || k.is_a?(Integer)
            raise JSON::GeneratorError, "hash key #{k.inspect} is not a String, Symbol or Integer"
          end

          check_plain!(k, depth + 1) if k.is_a?(String)
          check_plain!(v, depth + 1)
        end
      else
        to_json = begin
          value.method(:to_json)
        rescue NameError
          nil
        end
        generic = to_json.nil? || [Object, Kernel].include?(to_json.owner) ||
                  to_json.owner.name.to_s.end_with?("GeneratorMethods::Object")
        raise JSON::GeneratorError, "#{value.class} has no JSON form" if generic
      end
    end

    def stringify(hash)
      hash.each_with_object({}) { |(k, v), out| out[k.to_s] = v }
    end

    # text as valid UTF-8 (invalid bytes become "?").
    def scrub(text)
      s = text.to_s
      s = s.encode(Encoding::UTF_8, invalid: :replace, undef: :replace, replace: "?") unless s.encoding == Encoding::UTF_8 || s.encoding == Encoding::US_ASCII || s.encoding == Encoding::BINARY
      s.dup.force_encoding(Encoding::UTF_8).scrub("?")
    end
  end

  # Maps handler names (the "handler" field of a step event) to blocks.
  #
  #   registry = TaskerWorker::HandlerRegistry.new
  #   registry.handler("resize_image") { |event| { "width" => event["payload"]["width"] } }
  class HandlerRegistry
    def initialize
      @handlers = {}
      @lock = Mutex.new
    end

    # Register a block (or any callable) as handler name; returns it.
    def handler(name, callable = nil, &block)
      fn = callable || block
      raise ArgumentError, "handler name must be a non-empty String" unless name.is_a?(String) && !name.empty?
      raise ArgumentError, "handler #{name.inspect} needs a block or a callable" unless fn.respond_to?(:call)

      @lock.synchronize { @handlers[name] = fn }
      fn
    end
    alias register handler

    def [](name)
      @handlers[name]
    end

    def include?(name)
      @handlers.key?(name)
    end

    def names
      @handlers.keys.sort
    end

    def size
      @handlers.size
    end

    # Run the event's handler; returns its result Hash. A handler's exception
    # becomes a failure result; an unknown handler a non-retryable
    # handler_not_found failure.
    def execute(event)
      step_uuid = event["step_uuid"].to_s
      name = event["handler"].to_s
      fn = @handlers[name]
      return Results.failure(step_uuid, "Handler not found: #{name}", HANDLER_NOT_FOUND, false, 0) unless fn

      start = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      begin
        value = fn.call(event)
      rescue StandardError, ScriptError, SystemStackError, NoMemoryError => e
        return Results.from_exception(step_uuid, e, elapsed_ms(start))
      end
      Results.success(step_uuid, value, elapsed_ms(start))
    end

    # execute then Results.encode: the JSON to complete the event with.
    def execute_json(event)
      Results.encode(execute(event), event["step_uuid"].to_s)
    end

    private

    def elapsed_ms(start)
      ((Process.clock_gettime(Process::CLOCK_MONOTONIC) - start) * 1000).to_i
    end
  end
end

module TaskerWorker
  @default_registry = HandlerRegistry.new

  class << self
    # The registry that handler files fill in for the runner (`taskerworker
    # run`, what the worker images run): a file only calls
    # TaskerWorker.handler("name") { |event| ... }.
    attr_reader :default_registry

    # Register a block (or any callable) as handler name in default_registry.
    def handler(name, callable = nil, &block)
      @default_registry.handler(name, callable, &block)
    end
  end
end
