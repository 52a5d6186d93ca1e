// Package config defines worker.toml, the file that configures one worker
// process.
//
// The operator renders a [Config] into the ConfigMap of a WorkerPool, and the
// worker (or libtaskerworker, started from a foreign runtime) parses it back.
// Both sides use this one type, so a key cannot drift between the writer and
// the reader. Upstream Tasker silently ignored a whole table it never read
// ([worker.mpsc_channels.ffi_dispatch]). For that reason parsing here is
// strict: an unknown key, a value of the wrong type or a value out of range
// is an error that names the dotted key and says what is accepted.
//
// Durations are integer milliseconds in the file (keys ending in _ms), to
// match the seed's keys. Methods such as [HandlerDispatch.HandlerTimeout]
// turn them into time.Duration so callers never multiply by hand.
//
// Secrets never live in the file: the queue's DSN comes from the environment
// variable named by [EnvDatabaseURL]. The file is mounted from a ConfigMap,
// and anyone who can read the WorkerPool's namespace can read a ConfigMap.
package config
