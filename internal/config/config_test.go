package config

import (
	"testing"
	"time"
)

func TestDefault(t *testing.T) {
	d := Default()
	h, f, q := d.Worker.MPSCChannels.HandlerDispatch, d.Worker.MPSCChannels.FFIDispatch, d.Worker.Queue
	tests := []struct {
		key       string
		got, want any
	}{
		{"worker.worker_id", d.Worker.WorkerID, ""},
		{"handler_dispatch.dispatch_buffer_size", h.DispatchBufferSize, 1000},
		{"handler_dispatch.completion_buffer_size", h.CompletionBufferSize, 1000},
		{"handler_dispatch.max_concurrent_handlers", h.MaxConcurrentHandlers, 10},
		{"handler_dispatch.handler_timeout_ms", h.HandlerTimeoutMS, int64(30000)},
		{"handler_dispatch.completion_send_timeout_ms", h.CompletionSendTimeoutMS, int64(10000)},
		{"handler_dispatch.saturation_warning_threshold", h.SaturationWarningThreshold, 0.80},
		{"handler_dispatch.saturation_critical_threshold", h.SaturationCriticalThreshold, 0.95},
		{"ffi_dispatch.enabled", f.Enabled, false},
		{"ffi_dispatch.dispatch_buffer_size", f.DispatchBufferSize, 1000},
		{"ffi_dispatch.completion_timeout_ms", f.CompletionTimeoutMS, int64(30000)},
		{"ffi_dispatch.starvation_warning_threshold_ms", f.StarvationWarningThresholdMS, int64(10000)},
		{"ffi_dispatch.callback_timeout_ms", f.CallbackTimeoutMS, int64(5000)},
		{"ffi_dispatch.callback_strategy", f.CallbackStrategy, CallbackFireAndForget},
		{"ffi_dispatch.service_id", f.ServiceID, "ffi-dispatch"},
		{"queue.namespaces", len(q.Namespaces) == 1 && q.Namespaces[0] == "default", true},
		{"queue.visibility_timeout_ms", q.VisibilityTimeoutMS, int64(30000)},
		{"queue.batch_size", q.BatchSize, 10},
		{"queue.poll_interval_ms", q.PollIntervalMS, int64(500)},
		{"queue.max_attempts", q.MaxAttempts, 5},
		{"queue.heartbeat_interval_ms", q.HeartbeatIntervalMS, int64(0)},
		{"load_shedding.warning_threshold_percent", d.Worker.LoadShedding.WarningThresholdPercent, 70},
		{"load_shedding.refuse_threshold_percent", d.Worker.LoadShedding.RefuseThresholdPercent, 80},
		{"drain.timeout_ms", d.Worker.Drain.TimeoutMS, int64(60000)},
		{"http.listen_address", d.Worker.HTTP.ListenAddress, ":9090"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v (%T), want %v (%T)", tt.key, tt.got, tt.got, tt.want, tt.want)
		}
	}
	if err := d.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v, want nil", err)
	}
}

func TestDefaultReturnsIndependentCopies(t *testing.T) {
	a := Default()
	a.Worker.Queue.Namespaces[0] = "changed"
	if got := Default().Worker.Queue.Namespaces[0]; got != "default" {
		t.Fatalf("Default() shares its namespaces slice: got %q after mutating a copy", got)
	}
}

func TestDurationHelpers(t *testing.T) {
	c := Default()
	c.Worker.MPSCChannels.HandlerDispatch.HandlerTimeoutMS = 1500
	c.Worker.MPSCChannels.HandlerDispatch.CompletionSendTimeoutMS = 250
	c.Worker.MPSCChannels.FFIDispatch.CompletionTimeoutMS = 45000
	c.Worker.MPSCChannels.FFIDispatch.StarvationWarningThresholdMS = 12000
	c.Worker.MPSCChannels.FFIDispatch.CallbackTimeoutMS = 7
	c.Worker.Queue.VisibilityTimeoutMS = 90000
	c.Worker.Queue.PollIntervalMS = 100
	c.Worker.Drain.TimeoutMS = 120000
	withHeartbeat := c.Worker.Queue
	withHeartbeat.HeartbeatIntervalMS = 5000

	h, f := c.Worker.MPSCChannels.HandlerDispatch, c.Worker.MPSCChannels.FFIDispatch
	tests := []struct {
		name      string
		got, want time.Duration
	}{
		{"HandlerTimeout", h.HandlerTimeout(), 1500 * time.Millisecond},
		{"CompletionSendTimeout", h.CompletionSendTimeout(), 250 * time.Millisecond},
		{"CompletionTimeout", f.CompletionTimeout(), 45 * time.Second},
		{"StarvationWarningThreshold", f.StarvationWarningThreshold(), 12 * time.Second},
		{"CallbackTimeout", f.CallbackTimeout(), 7 * time.Millisecond},
		{"VisibilityTimeout", c.Worker.Queue.VisibilityTimeout(), 90 * time.Second},
		{"PollInterval", c.Worker.Queue.PollInterval(), 100 * time.Millisecond},
		{"HeartbeatInterval default is a third of visibility", c.Worker.Queue.HeartbeatInterval(), 30 * time.Second},
		{"HeartbeatInterval explicit", withHeartbeat.HeartbeatInterval(), 5 * time.Second},
		{"Drain.Timeout", c.Worker.Drain.Timeout(), 2 * time.Minute},
		{"MaxTimeoutMS is 24h", ms(MaxTimeoutMS), 24 * time.Hour},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestCallbackStrategyValid(t *testing.T) {
	tests := []struct {
		s    CallbackStrategy
		want bool
	}{
		{CallbackBlocking, true},
		{CallbackBlockingWithTimeout, true},
		{CallbackFireAndForget, true},
		{"", false},
		{"fireandforget", false},
		{"Async", false},
	}
	for _, tt := range tests {
		if got := tt.s.Valid(); got != tt.want {
			t.Errorf("CallbackStrategy(%q).Valid() = %v, want %v", tt.s, got, tt.want)
		}
	}
}
