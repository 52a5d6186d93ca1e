# frozen_string_literal: true

require_relative "lib/taskerworker/version"

# `make packages` (hack/packages/build.sh) builds the platform gem from a copy
# of this directory with libtaskerworker.so in lib/ and the project's version
# in version.rb; a gem built here without the library is the plain Ruby one,
# which finds the library through $TASKERWORKER_LIB.
lib_inside = File.exist?(File.join(__dir__, "lib", "libtaskerworker.so"))

Gem::Specification.new do |s|
  s.name        = "taskerworker"
  s.version     = TaskerWorker::VERSION
  s.summary     = "Ruby step handlers for a Tasker worker, through the C ABI of libtaskerworker.so"
  s.description = <<~DESC
    A thin ruby-ffi wrapper of libtaskerworker.so (taskerworker.h): start a Tasker worker inside the
    Ruby process, poll it for step events, run handlers registered with blocks, and complete the events
    with results in Tasker's wire format. Includes a polling thread that behaves like upstream Tasker's,
    and a runner (`taskerworker run`) for workers whose handlers are plain Ruby files.
  DESC
  s.authors     = ["workerpool-operator authors"]
  s.license     = "Apache-2.0"
  s.files       = Dir["lib/**/*.rb"] + Dir["exe/*"] + ["taskerworker.gemspec", "README.md"] +
                  Dir["LICENSE"] + (lib_inside ? ["lib/libtaskerworker.so"] : [])
  # The library is a native shared object for this machine's architecture.
  s.platform    = Gem::Platform.local if lib_inside
  s.bindir      = "exe"
  s.executables = ["taskerworker"]
  s.require_paths = ["lib"]
  s.required_ruby_version = ">= 2.7"
  s.add_runtime_dependency "ffi", ">= 1.15"
  s.add_development_dependency "minitest", ">= 5.0"
end
