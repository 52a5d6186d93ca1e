package config

import "time"

// Environment variables the worker reads next to the file. They are constants
// so that the operator, which sets them on the pod, and the worker, which
// reads them, cannot disagree on a name.
const (
	// EnvConfigPath names the variable that holds the path of worker.toml.
	// The operator mounts the ConfigMap and points this variable at it.
	EnvConfigPath = "TASKER_CONFIG_PATH"
	// EnvDatabaseURL names the variable that holds the queue's PostgreSQL
	// DSN. The DSN is a secret, so it comes from a Secret through the
	// environment and never from the file (a ConfigMap is not secret).
	EnvDatabaseURL = "DATABASE_URL"
	// EnvPodName names the variable, set through the downward API, that
	// holds the pod's name. It is the default worker_id, so that logs,
	// results and metrics name the pod an operator can find with kubectl.
	EnvPodName = "POD_NAME"
)

// Config is the whole worker.toml. It exists as one type so that the operator
// (which renders it) and the worker (which parses it) share a single
// definition of every key.
type Config struct {
	// Worker is the [worker] table, the only top-level key.
	Worker Worker `toml:"worker"`
}

// Worker is the [worker] table. Every setting lives under it, as in
// upstream Tasker's worker.toml, so that existing files keep their layout.
type Worker struct {
	// WorkerID identifies this worker in results, logs and metrics. It is
	// normally left empty in the rendered ConfigMap (one ConfigMap serves
	// every pod of a pool) and filled at start-up by [FromEnv] or
	// [Config.FillWorkerID] from POD_NAME or the hostname.
	WorkerID string `toml:"worker_id,omitempty"`
	// MPSCChannels sizes the in-process channels; see [MPSCChannels].
	MPSCChannels MPSCChannels `toml:"mpsc_channels"`
	// Queue says what to claim and how; see [Queue].
	Queue Queue `toml:"queue"`
	// LoadShedding says when to stop claiming; see [LoadShedding].
	LoadShedding LoadShedding `toml:"load_shedding"`
	// Drain says how to stop; see [Drain].
	Drain Drain `toml:"drain"`
	// HTTP says where to serve metrics and probes; see [HTTP].
	HTTP HTTP `toml:"http"`
}

// MPSCChannels is the [worker.mpsc_channels] table. It groups the two
// consumers of the dispatch channel, keeping upstream's key path so that
// upstream files port without changes.
type MPSCChannels struct {
	// HandlerDispatch configures the native consumer.
	HandlerDispatch HandlerDispatch `toml:"handler_dispatch"`
	// FFIDispatch configures the foreign consumer.
	FFIDispatch FFIDispatch `toml:"ffi_dispatch"`
}

// HandlerDispatch is [worker.mpsc_channels.handler_dispatch]. It sizes the
// native (Go) handler path, which needs bounds on buffering, concurrency and
// time so that a slow handler or a full completion channel cannot stall or
// exhaust the worker.
type HandlerDispatch struct {
	// DispatchBufferSize bounds the dispatch channel; a full buffer pushes
	// back on the queue poller instead of growing memory.
	DispatchBufferSize int `toml:"dispatch_buffer_size"`
	// CompletionBufferSize bounds the completion channel between handlers
	// and the completion processor.
	CompletionBufferSize int `toml:"completion_buffer_size"`
	// MaxConcurrentHandlers is the number of permits: handlers that may run
	// at once. Load shedding is computed against it.
	MaxConcurrentHandlers int `toml:"max_concurrent_handlers"`
	// HandlerTimeoutMS bounds one handler run; past it the handler's context
	// is cancelled and the step fails with handler_timeout (retryable).
	HandlerTimeoutMS int64 `toml:"handler_timeout_ms"`
	// CompletionSendTimeoutMS bounds how long a finished handler waits for
	// room in the completion channel, so a stuck processor cannot hold
	// handlers forever.
	CompletionSendTimeoutMS int64 `toml:"completion_send_timeout_ms"`
	// SaturationWarningThreshold is the completion-channel fill (0..1) at
	// which the worker reports Degraded / backpressure Warning.
	SaturationWarningThreshold float64 `toml:"saturation_warning_threshold"`
	// SaturationCriticalThreshold is the fill (0..1) at which the worker
	// reports Critical.
	SaturationCriticalThreshold float64 `toml:"saturation_critical_threshold"`
}

// HandlerTimeout returns handler_timeout_ms as a Duration, so that callers do
// not convert units by hand.
func (h HandlerDispatch) HandlerTimeout() time.Duration { return ms(h.HandlerTimeoutMS) }

// CompletionSendTimeout returns completion_send_timeout_ms as a Duration.
func (h HandlerDispatch) CompletionSendTimeout() time.Duration {
	return ms(h.CompletionSendTimeoutMS)
}

// CallbackStrategy says how the post-handler callback (domain events) runs
// after a foreign handler completes an event. It is a named type so that only
// the three strategies the dispatch core implements can be compared against,
// and so that Validate can reject anything else by name.
type CallbackStrategy string

// The callback strategies. Their spelling is upstream's, so upstream files
// parse unchanged.
const (
	// CallbackBlocking runs the callback on the completing thread and waits
	// for it without a limit; callback_timeout_ms is ignored.
	CallbackBlocking CallbackStrategy = "Blocking"
	// CallbackBlockingWithTimeout waits for the callback for at most
	// callback_timeout_ms, so a slow callback cannot hang a foreign thread.
	CallbackBlockingWithTimeout CallbackStrategy = "BlockingWithTimeout"
	// CallbackFireAndForget runs the callback in the background and returns
	// at once; callback_timeout_ms bounds the background run. It is the
	// default because it can never block a foreign thread.
	CallbackFireAndForget CallbackStrategy = "FireAndForget"
)

// Valid reports whether s is one of the three strategies, so that code
// outside Validate (the operator, the C ABI) can check a single value.
func (s CallbackStrategy) Valid() bool {
	switch s {
	case CallbackBlocking, CallbackBlockingWithTimeout, CallbackFireAndForget:
		return true
	}
	return false
}

// FFIDispatch is [worker.mpsc_channels.ffi_dispatch]: the channel foreign
// (Python, Ruby) handlers poll through the C ABI. Upstream never read this
// table; here every key is honoured.
type FFIDispatch struct {
	// Enabled says whether foreign handlers consume the dispatch channel.
	// When false the native HandlerDispatchService consumes it; the two are
	// exclusive, because a message must go to exactly one consumer.
	Enabled bool `toml:"enabled"`
	// DispatchBufferSize bounds the events waiting to be polled.
	DispatchBufferSize int `toml:"dispatch_buffer_size"`
	// CompletionTimeoutMS is how long a polled event may stay uncompleted
	// before it becomes an ffi_timeout failure (retryable).
	CompletionTimeoutMS int64 `toml:"completion_timeout_ms"`
	// StarvationWarningThresholdMS is the pending age past which an event
	// counts as starving. It must be below the completion timeout, or the
	// warning could never fire before the event times out.
	StarvationWarningThresholdMS int64 `toml:"starvation_warning_threshold_ms"`
	// CallbackTimeoutMS bounds the post-handler callback under
	// BlockingWithTimeout and FireAndForget.
	CallbackTimeoutMS int64 `toml:"callback_timeout_ms"`
	// CallbackStrategy is how the callback runs; see [CallbackStrategy].
	CallbackStrategy CallbackStrategy `toml:"callback_strategy"`
	// ServiceID names the channel in logs and result metadata.
	ServiceID string `toml:"service_id"`
}

// CompletionTimeout returns completion_timeout_ms as a Duration.
func (f FFIDispatch) CompletionTimeout() time.Duration { return ms(f.CompletionTimeoutMS) }

// StarvationWarningThreshold returns starvation_warning_threshold_ms as a
// Duration.
func (f FFIDispatch) StarvationWarningThreshold() time.Duration {
	return ms(f.StarvationWarningThresholdMS)
}

// CallbackTimeout returns callback_timeout_ms as a Duration.
func (f FFIDispatch) CallbackTimeout() time.Duration { return ms(f.CallbackTimeoutMS) }

// Queue is [worker.queue]: the PostgreSQL step queue the worker claims from.
// The DSN is not here; it comes from [EnvDatabaseURL].
type Queue struct {
	// Namespaces are the step queues this worker consumes.
	Namespaces []string `toml:"namespaces"`
	// VisibilityTimeoutMS is how long a claimed message stays invisible to
	// other workers; an unacknowledged message reappears after it, which is
	// what makes delivery at-least-once.
	VisibilityTimeoutMS int64 `toml:"visibility_timeout_ms"`
	// BatchSize is the most messages claimed per poll.
	BatchSize int `toml:"batch_size"`
	// PollIntervalMS is the wait between polls that found nothing.
	PollIntervalMS int64 `toml:"poll_interval_ms"`
	// MaxAttempts is how many attempts a step gets before a retryable
	// failure makes it dead (with its last error kept) instead of retried.
	MaxAttempts int `toml:"max_attempts"`
	// HeartbeatIntervalMS is how often the visibility of in-flight messages
	// is extended while their handlers run, so a long handler does not lose
	// its message to another worker. 0 means visibility_timeout_ms / 3.
	HeartbeatIntervalMS int64 `toml:"heartbeat_interval_ms"`
	// Retention deletes finished steps; see [Retention].
	Retention Retention `toml:"retention"`
}

// Retention is [worker.queue.retention]. Completed and dead steps would
// otherwise stay in the queue table for ever, and a table that only grows
// slows every claim and vacuum. Each worker runs retention every
// interval_ms; an advisory lock makes one of them delete at a time, in
// batches of batch_size rows so no statement holds locks for long.
type Retention struct {
	// Enabled turns retention on (the default). Turn it off only if
	// something else deletes finished steps.
	Enabled bool `toml:"enabled"`
	// CompletedAfterMS is how long a completed step is kept after it
	// completed.
	CompletedAfterMS int64 `toml:"completed_after_ms"`
	// DeadAfterMS is how long a dead step is kept after it died: long
	// enough for someone to look at it and requeue it.
	DeadAfterMS int64 `toml:"dead_after_ms"`
	// BatchSize is the most rows one DELETE removes.
	BatchSize int `toml:"batch_size"`
	// IntervalMS is the time between retention passes.
	IntervalMS int64 `toml:"interval_ms"`
}

// CompletedAfter returns completed_after_ms as a Duration.
func (r Retention) CompletedAfter() time.Duration { return ms(r.CompletedAfterMS) }

// DeadAfter returns dead_after_ms as a Duration.
func (r Retention) DeadAfter() time.Duration { return ms(r.DeadAfterMS) }

// Interval returns interval_ms as a Duration.
func (r Retention) Interval() time.Duration { return ms(r.IntervalMS) }

// VisibilityTimeout returns visibility_timeout_ms as a Duration.
func (q Queue) VisibilityTimeout() time.Duration { return ms(q.VisibilityTimeoutMS) }

// PollInterval returns poll_interval_ms as a Duration.
func (q Queue) PollInterval() time.Duration { return ms(q.PollIntervalMS) }

// HeartbeatInterval returns the effective heartbeat interval: the configured
// one, or a third of the visibility timeout when heartbeat_interval_ms is 0.
// It resolves the 0 default here so that every caller applies the same rule.
func (q Queue) HeartbeatInterval() time.Duration {
	if q.HeartbeatIntervalMS == 0 {
		return q.VisibilityTimeout() / 3
	}
	return ms(q.HeartbeatIntervalMS)
}

// LoadShedding is [worker.load_shedding]. It exists so that a saturated
// worker stops claiming new messages (they stay in the queue for a less busy
// worker) instead of taking work it cannot start.
type LoadShedding struct {
	// WarningThresholdPercent is the permit usage (in-use / max * 100) at
	// which the worker warns.
	WarningThresholdPercent int `toml:"warning_threshold_percent"`
	// RefuseThresholdPercent is the usage at or above which new claims are
	// refused.
	RefuseThresholdPercent int `toml:"refuse_threshold_percent"`
}

// Drain is [worker.drain]: what happens on SIGTERM, so that a rollout or a
// scale-down loses no work.
type Drain struct {
	// TimeoutMS is how long in-flight handlers may finish after the worker
	// stops claiming; what is still running then goes back to the queue.
	// The pod's termination grace period must be longer.
	TimeoutMS int64 `toml:"timeout_ms"`
}

// Timeout returns timeout_ms as a Duration.
func (d Drain) Timeout() time.Duration { return ms(d.TimeoutMS) }

// HTTP is [worker.http]: the address serving /metrics, /healthz and /readyz.
// It is configurable so that a worker embedded in another runtime can avoid a
// port clash; the operator scrapes the container port named "metrics".
type HTTP struct {
	// ListenAddress is a host:port for net.Listen, e.g. ":9090".
	ListenAddress string `toml:"listen_address"`
}

// Default returns the configuration a worker runs with when the file sets
// nothing: the values of the seed and upstream Tasker, plus this project's
// additions. Parse starts from it, so a file only needs the keys it changes.
// WorkerID stays empty: it depends on the pod, see [Config.FillWorkerID].
func Default() Config {
	return Config{Worker: Worker{
		MPSCChannels: MPSCChannels{
			HandlerDispatch: HandlerDispatch{
				DispatchBufferSize:          1000,
				CompletionBufferSize:        1000,
				MaxConcurrentHandlers:       10,
				HandlerTimeoutMS:            30000,
				CompletionSendTimeoutMS:     10000,
				SaturationWarningThreshold:  0.80,
				SaturationCriticalThreshold: 0.95,
			},
			FFIDispatch: FFIDispatch{
				Enabled:                      false,
				DispatchBufferSize:           1000,
				CompletionTimeoutMS:          30000,
				StarvationWarningThresholdMS: 10000,
				CallbackTimeoutMS:            5000,
				CallbackStrategy:             CallbackFireAndForget,
				ServiceID:                    "ffi-dispatch",
			},
		},
		Queue: Queue{
			Namespaces:          []string{"default"},
			VisibilityTimeoutMS: 30000,
			BatchSize:           10,
			PollIntervalMS:      500,
			MaxAttempts:         5,
			HeartbeatIntervalMS: 0,
			Retention: Retention{
				Enabled:          true,
				CompletedAfterMS: 24 * 60 * 60 * 1000,     // 24 h
				DeadAfterMS:      7 * 24 * 60 * 60 * 1000, // 7 days
				BatchSize:        1000,
				IntervalMS:       60 * 1000,
			},
		},
		LoadShedding: LoadShedding{
			WarningThresholdPercent: 70,
			RefuseThresholdPercent:  80,
		},
		Drain: Drain{TimeoutMS: 60000},
		HTTP:  HTTP{ListenAddress: ":9090"},
	}}
}

// ms converts a millisecond count to a Duration. Validate bounds every
// millisecond key, so the multiplication cannot overflow on a valid Config.
func ms(v int64) time.Duration { return time.Duration(v) * time.Millisecond }
