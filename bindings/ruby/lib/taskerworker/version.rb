# frozen_string_literal: true

module TaskerWorker
  # The gem's version (the library reports its own: TaskerWorker.library_version).
  VERSION = "0.1.0"
end
