package config

import (
	"errors"
	"fmt"
	"net"
)

// Limits enforced by Validate. They are named so that tests and messages
// agree, and so that the operator's CRD validation can be checked against
// them.
const (
	// MaxBufferSize bounds every channel buffer: beyond a million entries a
	// buffer hides a stalled consumer rather than absorbing a burst.
	MaxBufferSize = 1_000_000
	// MaxConcurrentHandlers bounds max_concurrent_handlers; each permit can
	// be a goroutine holding a database row and a handler's memory.
	MaxConcurrentHandlers = 100_000
	// MaxTimeoutMS bounds every _ms key at 24 hours, which catches values
	// written in the wrong unit (seconds or microseconds) early.
	MaxTimeoutMS = 24 * 60 * 60 * 1000
	// MaxBatchSize bounds batch_size, the messages claimed per poll.
	MaxBatchSize = 10_000
	// MaxAttempts bounds max_attempts.
	MaxAttempts = 1000
	// MaxNamespaceLength is the longest queue namespace; it keeps the name
	// usable as a PostgreSQL identifier suffix and a Kubernetes label value.
	MaxNamespaceLength = 63
	// MaxRetentionMS bounds the retention ages at 366 days: dead steps are
	// kept for days, so the 24 h bound of other _ms keys is too short.
	MaxRetentionMS = 366 * 24 * 60 * 60 * 1000
	// MaxRetentionBatchSize bounds worker.queue.retention.batch_size, so
	// one DELETE never holds locks on more rows than this.
	MaxRetentionBatchSize = 100_000
)

const (
	keyHandler = "worker.mpsc_channels.handler_dispatch."
	keyFFI     = "worker.mpsc_channels.ffi_dispatch."
	keyQueue   = "worker.queue."
	keyShed    = "worker.load_shedding."
	keyRetain  = "worker.queue.retention."
)

// Validate checks every range and cross-key rule and returns all problems at
// once (joined with errors.Join), each naming the dotted key, its value and
// what is accepted, so that one edit can fix a file. Parse calls it; the
// operator calls it on what it is about to render, so a bad WorkerPool is
// refused before a pod ever crash-loops on it.
func (c Config) Validate() error {
	var errs []error
	bad := func(key string, value any, format string, args ...any) {
		if s, ok := value.(string); ok {
			value = fmt.Sprintf("%q", s)
		}
		errs = append(errs, fmt.Errorf("%s = %v: %s", key, value, fmt.Sprintf(format, args...)))
	}
	between := func(key string, v, lo, hi int64) {
		if v < lo || v > hi {
			bad(key, v, "must be between %d and %d", lo, hi)
		}
	}
	timeout := func(key string, v int64) {
		if v < 1 || v > MaxTimeoutMS {
			bad(key, v, "must be between 1 and %d (1ms to 24h)", MaxTimeoutMS)
		}
	}
	// fraction is written so that NaN fails it.
	fraction := func(key string, v float64) bool {
		if !(v > 0 && v <= 1) {
			bad(key, v, "must be greater than 0 and at most 1")
			return false
		}
		return true
	}

	h := c.Worker.MPSCChannels.HandlerDispatch
	between(keyHandler+"dispatch_buffer_size", int64(h.DispatchBufferSize), 1, MaxBufferSize)
	between(keyHandler+"completion_buffer_size", int64(h.CompletionBufferSize), 1, MaxBufferSize)
	between(keyHandler+"max_concurrent_handlers", int64(h.MaxConcurrentHandlers), 1, MaxConcurrentHandlers)
	timeout(keyHandler+"handler_timeout_ms", h.HandlerTimeoutMS)
	timeout(keyHandler+"completion_send_timeout_ms", h.CompletionSendTimeoutMS)
	warnOK := fraction(keyHandler+"saturation_warning_threshold", h.SaturationWarningThreshold)
	critOK := fraction(keyHandler+"saturation_critical_threshold", h.SaturationCriticalThreshold)
	if warnOK && critOK && h.SaturationWarningThreshold >= h.SaturationCriticalThreshold {
		bad(keyHandler+"saturation_warning_threshold", h.SaturationWarningThreshold,
			"must be below saturation_critical_threshold (%v)", h.SaturationCriticalThreshold)
	}

	f := c.Worker.MPSCChannels.FFIDispatch
	between(keyFFI+"dispatch_buffer_size", int64(f.DispatchBufferSize), 1, MaxBufferSize)
	timeout(keyFFI+"completion_timeout_ms", f.CompletionTimeoutMS)
	timeout(keyFFI+"starvation_warning_threshold_ms", f.StarvationWarningThresholdMS)
	if f.StarvationWarningThresholdMS >= f.CompletionTimeoutMS {
		bad(keyFFI+"starvation_warning_threshold_ms", f.StarvationWarningThresholdMS,
			"must be below completion_timeout_ms (%d), or events time out before they are reported as starving",
			f.CompletionTimeoutMS)
	}
	if !f.CallbackStrategy.Valid() {
		bad(keyFFI+"callback_strategy", string(f.CallbackStrategy), "must be one of %q, %q, %q",
			CallbackBlocking, CallbackBlockingWithTimeout, CallbackFireAndForget)
	}
	if f.CallbackStrategy == CallbackBlocking {
		if f.CallbackTimeoutMS < 0 || f.CallbackTimeoutMS > MaxTimeoutMS {
			bad(keyFFI+"callback_timeout_ms", f.CallbackTimeoutMS,
				"must be between 0 and %d (unused by callback_strategy %q)", MaxTimeoutMS, CallbackBlocking)
		}
	} else if f.CallbackTimeoutMS < 1 || f.CallbackTimeoutMS > MaxTimeoutMS {
		bad(keyFFI+"callback_timeout_ms", f.CallbackTimeoutMS,
			"must be between 1 and %d (1ms to 24h) unless callback_strategy is %q", MaxTimeoutMS, CallbackBlocking)
	}
	if f.ServiceID == "" {
		bad(keyFFI+"service_id", f.ServiceID, "must not be empty: it names the channel in logs and results")
	}

	q := c.Worker.Queue
	if len(q.Namespaces) == 0 {
		errs = append(errs, fmt.Errorf("%snamespaces = []: must list at least one namespace", keyQueue))
	}
	seen := make(map[string]bool, len(q.Namespaces))
	for i, ns := range q.Namespaces {
		key := fmt.Sprintf("%snamespaces[%d]", keyQueue, i)
		switch {
		case !validNamespace(ns):
			bad(key, ns, "must be 1 to %d characters of lowercase letters, digits, '-' and '_'", MaxNamespaceLength)
		case seen[ns]:
			bad(key, ns, "duplicate namespace: each namespace must be listed once")
		}
		seen[ns] = true
	}
	timeout(keyQueue+"visibility_timeout_ms", q.VisibilityTimeoutMS)
	between(keyQueue+"batch_size", int64(q.BatchSize), 1, MaxBatchSize)
	timeout(keyQueue+"poll_interval_ms", q.PollIntervalMS)
	between(keyQueue+"max_attempts", int64(q.MaxAttempts), 1, MaxAttempts)
	if q.HeartbeatIntervalMS != 0 && (q.HeartbeatIntervalMS < 0 || q.HeartbeatIntervalMS >= q.VisibilityTimeoutMS) {
		bad(keyQueue+"heartbeat_interval_ms", q.HeartbeatIntervalMS,
			"must be 0 (meaning visibility_timeout_ms / 3) or between 1 and visibility_timeout_ms - 1 (%d), "+
				"or messages become visible to other workers between heartbeats", q.VisibilityTimeoutMS-1)
	}

	r := q.Retention
	between(keyRetain+"completed_after_ms", r.CompletedAfterMS, 1, MaxRetentionMS)
	between(keyRetain+"dead_after_ms", r.DeadAfterMS, 1, MaxRetentionMS)
	between(keyRetain+"batch_size", int64(r.BatchSize), 1, MaxRetentionBatchSize)
	timeout(keyRetain+"interval_ms", r.IntervalMS)

	l := c.Worker.LoadShedding
	between(keyShed+"warning_threshold_percent", int64(l.WarningThresholdPercent), 1, 100)
	between(keyShed+"refuse_threshold_percent", int64(l.RefuseThresholdPercent), 1, 100)
	if l.WarningThresholdPercent > l.RefuseThresholdPercent {
		bad(keyShed+"warning_threshold_percent", l.WarningThresholdPercent,
			"must be at most refuse_threshold_percent (%d)", l.RefuseThresholdPercent)
	}

	timeout("worker.drain.timeout_ms", c.Worker.Drain.TimeoutMS)

	if addr := c.Worker.HTTP.ListenAddress; addr == "" {
		bad("worker.http.listen_address", addr, `must not be empty; use a host:port such as ":9090"`)
	} else if _, _, err := net.SplitHostPort(addr); err != nil {
		bad("worker.http.listen_address", addr, `must be a host:port such as ":9090": %v`, err)
	}

	return errors.Join(errs...)
}

// validNamespace reports whether ns is 1..MaxNamespaceLength characters of
// a-z, 0-9, '-' and '_'.
func validNamespace(ns string) bool {
	if len(ns) < 1 || len(ns) > MaxNamespaceLength {
		return false
	}
	for _, r := range ns {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' && r != '_' {
			return false
		}
	}
	return true
}
