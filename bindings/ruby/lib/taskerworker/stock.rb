# frozen_string_literal: true

module TaskerWorker
  # The stock handlers: the same noop, echo, sleep and fail as the Go worker's
  # built-in ones (internal/handlers), so a Ruby pool can be tried, tested and
  # measured end to end before any team code exists. The runner (`taskerworker
  # run`) registers them unless told not to; a team handler of the same name
  # replaces one.
  #
  # - noop: returns nothing.
  # - echo: returns its payload.
  # - sleep: {"ms": N} (or a bare number) sleeps N milliseconds and returns
  #   {"slept_ms": N}; for trying out slow handlers, timeouts and drains.
  # - fail: raises Stock::Failure with "message"; retryable unless
  #   "retryable": false; with "fail_attempts": N only the first N attempts
  #   fail and later ones return {"succeeded_on_attempt": A}.
  module Stock
    NAMES = %w[noop echo sleep fail].freeze

    # What the fail handler raises (its error_type in the step's result).
    class Failure < StandardError
      def initialize(message, retryable)
        super(message)
        @retryable = retryable
      end

      def retryable?
        @retryable
      end
    end

    module_function

    def noop(_event)
      nil
    end

    def echo(event)
      event["payload"]
    end

    def sleep_ms(event)
      payload = event["payload"]
      ms = payload.is_a?(Hash) ? payload.fetch("ms", 0) : payload
      ms = 0 if ms.nil?
      raise PermanentError, %(sleep payload #{payload.inspect}: want {"ms": N} or a number) unless ms.is_a?(Numeric)
      raise PermanentError, "sleep payload ms=#{ms}: want >= 0" if ms.negative?

      sleep(ms / 1000.0)
      { "slept_ms" => ms }
    end

    def fail_step(event)
      payload = event["payload"] || {}
      raise PermanentError, "fail payload #{payload.inspect}: want an object" unless payload.is_a?(Hash)

      attempts = payload.fetch("fail_attempts", 0)
      attempt = event.fetch("attempt", 1)
      return { "succeeded_on_attempt" => attempt } if attempts.is_a?(Integer) && attempts.positive? && attempt > attempts

      raise Failure.new(payload.fetch("message", "step failed on purpose"), payload["retryable"] != false)
    end

    # Add the stock handlers to registry and return it.
    def register(registry)
      registry.handler("noop") { |e| noop(e) }
      registry.handler("echo") { |e| echo(e) }
      registry.handler("sleep") { |e| sleep_ms(e) }
      registry.handler("fail") { |e| fail_step(e) }
      registry
    end
  end
end
