package config

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// joined returns the individual errors of an errors.Join result.
func joined(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		// want is nil for a valid config; otherwise every string must appear
		// in the single error reported.
		want []string
	}{
		// handler_dispatch
		{"handler dispatch_buffer_size 0", func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.DispatchBufferSize = 0 },
			[]string{"worker.mpsc_channels.handler_dispatch.dispatch_buffer_size = 0", "between 1 and 1000000"}},
		{"handler dispatch_buffer_size too big", func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.DispatchBufferSize = 1000001 },
			[]string{"worker.mpsc_channels.handler_dispatch.dispatch_buffer_size = 1000001", "between 1 and 1000000"}},
		{"handler dispatch_buffer_size bounds ok", func(c *Config) {
			c.Worker.MPSCChannels.HandlerDispatch.DispatchBufferSize = 1
			c.Worker.MPSCChannels.HandlerDispatch.CompletionBufferSize = 1000000
		}, nil},
		{"completion_buffer_size negative", func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.CompletionBufferSize = -1 },
			[]string{"worker.mpsc_channels.handler_dispatch.completion_buffer_size = -1", "between 1 and 1000000"}},
		{"max_concurrent_handlers 0", func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.MaxConcurrentHandlers = 0 },
			[]string{"worker.mpsc_channels.handler_dispatch.max_concurrent_handlers = 0", "between 1 and 100000"}},
		{"max_concurrent_handlers too big", func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.MaxConcurrentHandlers = 100001 },
			[]string{"max_concurrent_handlers = 100001", "between 1 and 100000"}},
		{"handler_timeout_ms 0", func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.HandlerTimeoutMS = 0 },
			[]string{"worker.mpsc_channels.handler_dispatch.handler_timeout_ms = 0", "between 1 and 86400000"}},
		{"handler_timeout_ms over 24h", func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.HandlerTimeoutMS = MaxTimeoutMS + 1 },
			[]string{"handler_timeout_ms = 86400001", "between 1 and 86400000 (1ms to 24h)"}},
		{"handler_timeout_ms exactly 24h ok", func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.HandlerTimeoutMS = MaxTimeoutMS }, nil},
		{"completion_send_timeout_ms negative", func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.CompletionSendTimeoutMS = -5 },
			[]string{"worker.mpsc_channels.handler_dispatch.completion_send_timeout_ms = -5", "between 1 and 86400000"}},
		{"saturation warning 0", func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.SaturationWarningThreshold = 0 },
			[]string{"worker.mpsc_channels.handler_dispatch.saturation_warning_threshold = 0", "greater than 0 and at most 1"}},
		{"saturation critical above 1", func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.SaturationCriticalThreshold = 1.5 },
			[]string{"worker.mpsc_channels.handler_dispatch.saturation_critical_threshold = 1.5", "greater than 0 and at most 1"}},
		{"saturation critical NaN", func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.SaturationCriticalThreshold = math.NaN() },
			[]string{"saturation_critical_threshold = NaN", "greater than 0 and at most 1"}},
		{"saturation warning equals critical", func(c *Config) {
			c.Worker.MPSCChannels.HandlerDispatch.SaturationWarningThreshold = 0.9
			c.Worker.MPSCChannels.HandlerDispatch.SaturationCriticalThreshold = 0.9
		}, []string{"worker.mpsc_channels.handler_dispatch.saturation_warning_threshold = 0.9", "must be below saturation_critical_threshold (0.9)"}},
		{"saturation warning above critical", func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.SaturationWarningThreshold = 0.99 },
			[]string{"saturation_warning_threshold = 0.99", "must be below saturation_critical_threshold (0.95)"}},
		{"saturation critical 1 ok", func(c *Config) { c.Worker.MPSCChannels.HandlerDispatch.SaturationCriticalThreshold = 1 }, nil},

		// ffi_dispatch
		{"ffi dispatch_buffer_size 0", func(c *Config) { c.Worker.MPSCChannels.FFIDispatch.DispatchBufferSize = 0 },
			[]string{"worker.mpsc_channels.ffi_dispatch.dispatch_buffer_size = 0", "between 1 and 1000000"}},
		{"ffi completion_timeout_ms over 24h", func(c *Config) {
			c.Worker.MPSCChannels.FFIDispatch.CompletionTimeoutMS = MaxTimeoutMS + 1
		}, []string{"worker.mpsc_channels.ffi_dispatch.completion_timeout_ms = 86400001", "between 1 and 86400000"}},
		{"starvation threshold 0", func(c *Config) { c.Worker.MPSCChannels.FFIDispatch.StarvationWarningThresholdMS = 0 },
			[]string{"worker.mpsc_channels.ffi_dispatch.starvation_warning_threshold_ms = 0", "between 1 and 86400000"}},
		{"starvation threshold equals completion timeout", func(c *Config) {
			c.Worker.MPSCChannels.FFIDispatch.StarvationWarningThresholdMS = 30000
		}, []string{"worker.mpsc_channels.ffi_dispatch.starvation_warning_threshold_ms = 30000", "must be below completion_timeout_ms (30000)"}},
		{"starvation threshold just below completion timeout ok", func(c *Config) {
			c.Worker.MPSCChannels.FFIDispatch.StarvationWarningThresholdMS = 29999
		}, nil},
		{"callback_strategy unknown", func(c *Config) { c.Worker.MPSCChannels.FFIDispatch.CallbackStrategy = "Async" },
			[]string{`worker.mpsc_channels.ffi_dispatch.callback_strategy = "Async"`, `must be one of "Blocking", "BlockingWithTimeout", "FireAndForget"`}},
		{"callback_strategy wrong case", func(c *Config) { c.Worker.MPSCChannels.FFIDispatch.CallbackStrategy = "blocking" },
			[]string{`callback_strategy = "blocking"`, `"Blocking", "BlockingWithTimeout", "FireAndForget"`}},
		{"callback_timeout_ms 0 with FireAndForget", func(c *Config) { c.Worker.MPSCChannels.FFIDispatch.CallbackTimeoutMS = 0 },
			[]string{"worker.mpsc_channels.ffi_dispatch.callback_timeout_ms = 0", `between 1 and 86400000 (1ms to 24h) unless callback_strategy is "Blocking"`}},
		{"callback_timeout_ms 0 with BlockingWithTimeout", func(c *Config) {
			c.Worker.MPSCChannels.FFIDispatch.CallbackStrategy = CallbackBlockingWithTimeout
			c.Worker.MPSCChannels.FFIDispatch.CallbackTimeoutMS = 0
		}, []string{"callback_timeout_ms = 0", `unless callback_strategy is "Blocking"`}},
		{"callback_timeout_ms 0 with Blocking ok", func(c *Config) {
			c.Worker.MPSCChannels.FFIDispatch.CallbackStrategy = CallbackBlocking
			c.Worker.MPSCChannels.FFIDispatch.CallbackTimeoutMS = 0
		}, nil},
		{"callback_timeout_ms negative with Blocking", func(c *Config) {
			c.Worker.MPSCChannels.FFIDispatch.CallbackStrategy = CallbackBlocking
			c.Worker.MPSCChannels.FFIDispatch.CallbackTimeoutMS = -1
		}, []string{"worker.mpsc_channels.ffi_dispatch.callback_timeout_ms = -1", "between 0 and 86400000"}},
		{"service_id empty", func(c *Config) { c.Worker.MPSCChannels.FFIDispatch.ServiceID = "" },
			[]string{`worker.mpsc_channels.ffi_dispatch.service_id = ""`, "must not be empty"}},

		// queue
		{"namespaces empty", func(c *Config) { c.Worker.Queue.Namespaces = nil },
			[]string{"worker.queue.namespaces = []", "at least one namespace"}},
		{"namespace uppercase", func(c *Config) { c.Worker.Queue.Namespaces = []string{"default", "Payments"} },
			[]string{`worker.queue.namespaces[1] = "Payments"`, "1 to 63 characters of lowercase letters, digits, '-' and '_'"}},
		{"namespace empty string", func(c *Config) { c.Worker.Queue.Namespaces = []string{""} },
			[]string{`worker.queue.namespaces[0] = ""`, "1 to 63 characters"}},
		{"namespace with dot", func(c *Config) { c.Worker.Queue.Namespaces = []string{"a.b"} },
			[]string{`worker.queue.namespaces[0] = "a.b"`, "lowercase letters, digits, '-' and '_'"}},
		{"namespace too long", func(c *Config) { c.Worker.Queue.Namespaces = []string{strings.Repeat("a", 64)} },
			[]string{"worker.queue.namespaces[0] = \"" + strings.Repeat("a", 64) + "\"", "1 to 63 characters"}},
		{"namespace 63 chars and all classes ok", func(c *Config) {
			c.Worker.Queue.Namespaces = []string{strings.Repeat("a", 60) + "-_9"}
		}, nil},
		{"namespace duplicate", func(c *Config) { c.Worker.Queue.Namespaces = []string{"a", "b", "a"} },
			[]string{`worker.queue.namespaces[2] = "a"`, "duplicate namespace"}},
		{"visibility_timeout_ms 0", func(c *Config) {
			c.Worker.Queue.VisibilityTimeoutMS = 0
			c.Worker.Queue.HeartbeatIntervalMS = 0
		}, []string{"worker.queue.visibility_timeout_ms = 0", "between 1 and 86400000"}},
		{"batch_size 0", func(c *Config) { c.Worker.Queue.BatchSize = 0 },
			[]string{"worker.queue.batch_size = 0", "between 1 and 10000"}},
		{"batch_size too big", func(c *Config) { c.Worker.Queue.BatchSize = 10001 },
			[]string{"worker.queue.batch_size = 10001", "between 1 and 10000"}},
		{"poll_interval_ms 0", func(c *Config) { c.Worker.Queue.PollIntervalMS = 0 },
			[]string{"worker.queue.poll_interval_ms = 0", "between 1 and 86400000"}},
		{"max_attempts 0", func(c *Config) { c.Worker.Queue.MaxAttempts = 0 },
			[]string{"worker.queue.max_attempts = 0", "between 1 and 1000"}},
		{"max_attempts too big", func(c *Config) { c.Worker.Queue.MaxAttempts = 1001 },
			[]string{"worker.queue.max_attempts = 1001", "between 1 and 1000"}},
		{"retention completed_after_ms 0", func(c *Config) { c.Worker.Queue.Retention.CompletedAfterMS = 0 },
			[]string{"worker.queue.retention.completed_after_ms = 0", "between 1 and 31622400000"}},
		{"retention dead_after_ms over a year", func(c *Config) { c.Worker.Queue.Retention.DeadAfterMS = MaxRetentionMS + 1 },
			[]string{"worker.queue.retention.dead_after_ms = 31622400001", "between 1 and 31622400000"}},
		{"retention dead_after_ms 30 days ok", func(c *Config) { c.Worker.Queue.Retention.DeadAfterMS = 30 * 24 * 3600000 }, nil},
		{"retention batch_size 0", func(c *Config) { c.Worker.Queue.Retention.BatchSize = 0 },
			[]string{"worker.queue.retention.batch_size = 0", "between 1 and 100000"}},
		{"retention interval_ms 0", func(c *Config) { c.Worker.Queue.Retention.IntervalMS = 0 },
			[]string{"worker.queue.retention.interval_ms = 0", "between 1 and 86400000"}},
		{"retention disabled still validated", func(c *Config) {
			c.Worker.Queue.Retention.Enabled = false
			c.Worker.Queue.Retention.BatchSize = -5
		}, []string{"worker.queue.retention.batch_size = -5"}},
		{"heartbeat negative", func(c *Config) { c.Worker.Queue.HeartbeatIntervalMS = -1 },
			[]string{"worker.queue.heartbeat_interval_ms = -1", "must be 0 (meaning visibility_timeout_ms / 3) or between 1 and visibility_timeout_ms - 1 (29999)"}},
		{"heartbeat equals visibility timeout", func(c *Config) { c.Worker.Queue.HeartbeatIntervalMS = 30000 },
			[]string{"worker.queue.heartbeat_interval_ms = 30000", "between 1 and visibility_timeout_ms - 1 (29999)"}},
		{"heartbeat below visibility timeout ok", func(c *Config) { c.Worker.Queue.HeartbeatIntervalMS = 29999 }, nil},

		// load_shedding
		{"warning percent 0", func(c *Config) { c.Worker.LoadShedding.WarningThresholdPercent = 0 },
			[]string{"worker.load_shedding.warning_threshold_percent = 0", "between 1 and 100"}},
		{"refuse percent over 100", func(c *Config) { c.Worker.LoadShedding.RefuseThresholdPercent = 101 },
			[]string{"worker.load_shedding.refuse_threshold_percent = 101", "between 1 and 100"}},
		{"warning above refuse", func(c *Config) { c.Worker.LoadShedding.WarningThresholdPercent = 90 },
			[]string{"worker.load_shedding.warning_threshold_percent = 90", "at most refuse_threshold_percent (80)"}},
		{"warning equals refuse ok", func(c *Config) {
			c.Worker.LoadShedding.WarningThresholdPercent = 100
			c.Worker.LoadShedding.RefuseThresholdPercent = 100
		}, nil},

		// drain, http
		{"drain timeout 0", func(c *Config) { c.Worker.Drain.TimeoutMS = 0 },
			[]string{"worker.drain.timeout_ms = 0", "between 1 and 86400000"}},
		{"listen_address empty", func(c *Config) { c.Worker.HTTP.ListenAddress = "" },
			[]string{`worker.http.listen_address = ""`, "must not be empty", `":9090"`}},
		{"listen_address without port", func(c *Config) { c.Worker.HTTP.ListenAddress = "9090" },
			[]string{`worker.http.listen_address = "9090"`, `must be a host:port such as ":9090"`}},
		{"listen_address with host ok", func(c *Config) { c.Worker.HTTP.ListenAddress = "127.0.0.1:8080" }, nil},

		// worker_id is free-form: the pod name fills it at start-up.
		{"worker_id empty ok", func(c *Config) { c.Worker.WorkerID = "" }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			errs := joined(err)
			if len(errs) != 1 {
				t.Fatalf("Validate() reported %d problems, want 1:\n%v", len(errs), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(errs[0].Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", errs[0], w)
				}
			}
		})
	}
}

func TestValidateReportsAllProblems(t *testing.T) {
	c := Default()
	c.Worker.MPSCChannels.HandlerDispatch.DispatchBufferSize = 0
	c.Worker.MPSCChannels.FFIDispatch.CallbackStrategy = "Nope"
	c.Worker.Queue.BatchSize = 0
	c.Worker.HTTP.ListenAddress = ""

	err := c.Validate()
	errs := joined(err)
	if len(errs) != 4 {
		t.Fatalf("Validate() reported %d problems, want 4:\n%v", len(errs), err)
	}
	for _, key := range []string{
		"worker.mpsc_channels.handler_dispatch.dispatch_buffer_size",
		"worker.mpsc_channels.ffi_dispatch.callback_strategy",
		"worker.queue.batch_size",
		"worker.http.listen_address",
	} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error does not name %s:\n%v", key, err)
		}
	}
	// Each problem stays a separate error for callers that list them.
	if !errors.Is(err, errs[2]) {
		t.Errorf("errors.Is(err, errs[2]) = false, want true")
	}
}
