# frozen_string_literal: true

require "ffi"

module TaskerWorker
  ENV_LIB = "TASKERWORKER_LIB"
  LIB_NAME = "libtaskerworker.so"

  # The raw C ABI (taskerworker.h), attached with ruby-ffi. Strings go in as
  # :string (nil is NULL; the bytes are passed untouched, so callers can send
  # any bytes); strings come back as :pointer (never :string) and are read and
  # released with taskerworker_free by Native.take, the only allowed way.
  #
  # Calls that can wait (start, stop, complete, complete_batch) release the
  # GVL (blocking: true) so other Ruby threads keep running meanwhile; so does
  # poll_batch, which does not wait but may encode thousands of events.
  module Native
    extend FFI::Library

    # name => [params, return, options], exactly as taskerworker.h declares them.
    SIGNATURES = {
      taskerworker_start: [%i[string string], :int, { blocking: true }],
      taskerworker_stop: [%i[int], :int, { blocking: true }],
      taskerworker_poll: [%i[pointer], :int, {}],
      taskerworker_complete: [%i[string string], :int, { blocking: true }],
      taskerworker_poll_batch: [%i[int pointer], :int, { blocking: true }],
      taskerworker_complete_batch: [%i[string string pointer], :int, { blocking: true }],
      taskerworker_metrics: [%i[pointer], :int, {}],
      taskerworker_check_starvation: [%i[pointer], :int, {}],
      taskerworker_cleanup_timeouts: [%i[pointer], :int, {}],
      taskerworker_last_error: [[], :pointer, {}],
      taskerworker_version: [[], :pointer, {}],
      taskerworker_free: [%i[pointer], :void, {}]
    }.freeze

    @lock = Mutex.new
    @path = nil

    class << self
      attr_reader :path

      # Where load looks, in order: the path argument, $TASKERWORKER_LIB, the
      # gem's lib/ directory, bin/ of every parent directory of this file (the
      # repository checkout) and of the current directory, then the system's
      # library path (plain soname).
      def candidates(path = nil)
        return [path.to_s] if path
        return [ENV[ENV_LIB]] if ENV[ENV_LIB] && !ENV[ENV_LIB].empty?

        out = [File.expand_path("../#{LIB_NAME}", __dir__)]
        [__dir__, Dir.pwd].each do |base|
          dir = File.expand_path(base)
          loop do
            out << File.join(dir, "bin", LIB_NAME)
            parent = File.dirname(dir)
            break if parent == dir

            dir = parent
          end
        end
        out.uniq << LIB_NAME
      end

      # Load libtaskerworker.so once per process (a process holds one Go
      # runtime): a later call naming a different file raises.
      def load(path = nil)
        @lock.synchronize do
          if @path
            if path && File.realpath(path.to_s) != File.realpath(@path)
              raise LibraryNotFoundError, "libtaskerworker is already loaded from #{@path}; cannot also load #{path}"
            end

            return self
          end
          tried = []
          candidates(path).each do |cand|
            if cand.include?("/") && !File.exist?(cand)
              tried << "#{cand} (missing)"
              next
            end
            begin
              ffi_lib cand
            rescue LoadError => e
              tried << "#{cand}: #{e.message}"
              next
            end
            SIGNATURES.each do |name, (params, ret, opts)|
              attach_function name, params, ret, **opts
            end
            @path = cand
            return self
          end
          raise LibraryNotFoundError,
                "libtaskerworker.so not found; build it with `make lib` and/or set #{ENV_LIB} to its path. " \
                "Tried:\n  #{tried.join("\n  ")}"
        end
      end

      def loaded?
        !@path.nil?
      end

      # Read a library-owned NUL-terminated UTF-8 string and free it; NULL gives nil.
      def take(ptr)
        return nil if ptr.nil? || ptr.null?

        begin
          ptr.read_string.force_encoding(Encoding::UTF_8)
        ensure
          taskerworker_free(ptr)
        end
      end

      # The calling thread's last error message (nil if its last call succeeded).
      def last_error
        take(taskerworker_last_error)
      end

      def version
        take(taskerworker_version) || ""
      end

      # The exception for a negative code, with the calling thread's message.
      # Call it on the thread that made the failing call, right after it.
      def error(code, function)
        Error.for(code, last_error, function)
      end

      # Raise for a negative code; return non-negative codes.
      def check(code, function)
        raise error(code, function) if code.negative?

        code
      end
    end
  end
end
