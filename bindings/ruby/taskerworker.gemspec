# frozen_string_literal: true

require_relative "lib/taskerworker/version"

Gem::Specification.new do |s|
  s.name        = "taskerworker"
  s.version     = TaskerWorker::VERSION
  s.summary     = "Ruby step handlers for a Tasker worker, through the C ABI of libtaskerworker.so"
  s.description = <<~DESC
    A thin ruby-ffi wrapper of libtaskerworker.so (taskerworker.h): start a Tasker worker inside the
    Ruby process, poll it for step events, run handlers registered with blocks, and complete the events
    with results in Tasker's wire format. Includes a polling thread that behaves like upstream Tasker's.
  DESC
  s.authors     = ["workerpool-operator authors"]
  s.license     = "Apache-2.0"
  s.files       = Dir["lib/**/*.rb"] + ["taskerworker.gemspec", "README.md"]
  s.require_paths = ["lib"]
  s.required_ruby_version = ">= 2.7"
  s.add_runtime_dependency "ffi", ">= 1.15"
  s.add_development_dependency "minitest", ">= 5.0"
end
