package ffi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
)

// logLines captures a logger's JSON lines so tests can assert on warnings.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, s)
}

// has reports whether one line contains every part.
func (l *logLines) has(parts ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, line := range l.lines {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		return true
	}
	return false
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// newLoggedHarness is newHarness with the channel's (and the poller's) logs
// captured.
func newLoggedHarness(t *testing.T, cfg Config, completionCap int) (*harness, *logLines) {
	t.Helper()
	logs := &logLines{}
	log := funcr.NewJSON(logs.add, funcr.Options{})
	reg := prometheus.NewRegistry()
	m, err := dispatch.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{dispatch: make(chan dispatch.StepMessage, 64), completion: make(chan *dispatch.Completion, completionCap), metrics: m, reg: reg}
	h.ch = New(cfg, h.dispatch, h.completion, m, log)
	if err := h.ch.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", logs)
		}
	})
	return h, logs
}

// runPoller runs a poller of h until the returned cancel (or the test's end)
// and returns a channel closed when Run has returned.
func runPoller(t *testing.T, h *harness, reg *dispatch.Registry, cfg PollerConfig, logs *logLines) (context.CancelFunc, <-chan struct{}) {
	t.Helper()
	p := NewPoller(h.ch, reg, cfg, funcr.NewJSON(logs.add, funcr.Options{}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("poller did not stop within 5s of its context's cancellation")
		}
	})
	return cancel, done
}

// runSweeper runs the channel's own timeout sweep and starvation check.
func runSweeper(t *testing.T, h *harness) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.ch.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func recv(t *testing.T, h *harness, within time.Duration) *dispatch.Completion {
	t.Helper()
	select {
	case c := <-h.completion:
		return c
	case <-time.After(within):
		t.Fatalf("no completion within %v (pending %d)", within, h.ch.PendingCount())
		return nil
	}
}

func waitClosed(t *testing.T, ch <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(within):
		t.Fatalf("timed out after %v waiting for %s", within, what)
	}
}

func eventFor(i int, handler string) dispatch.StepMessage {
	m := event(i)
	m.Handler = handler
	return m
}

// blockUntilCancelled is a handler that reports it started and honours its
// context.
func blockUntilCancelled(inside chan<- string) dispatch.HandlerFunc {
	return func(ctx context.Context, s *dispatch.StepMessage) (json.RawMessage, error) {
		inside <- s.EventID
		<-ctx.Done()
		return nil, ctx.Err()
	}
}

func TestPollerMapsOutcomesLikeNativeDispatch(t *testing.T) {
	h, logs := newLoggedHarness(t, Config{WorkerID: "w1"}, 16)
	reg := dispatch.NewRegistry()
	reg.MustRegister("ok", dispatch.HandlerFunc(func(_ context.Context, s *dispatch.StepMessage) (json.RawMessage, error) {
		return json.RawMessage(`{"ok":true}`), nil
	}))
	reg.MustRegister("fail", dispatch.HandlerFunc(func(context.Context, *dispatch.StepMessage) (json.RawMessage, error) {
		return nil, errors.New("flaky downstream")
	}))
	reg.MustRegister("permanent", dispatch.HandlerFunc(func(context.Context, *dispatch.StepMessage) (json.RawMessage, error) {
		return nil, dispatch.Permanent(errors.New("bad input"))
	}))
	reg.MustRegister("panics", dispatch.HandlerFunc(func(context.Context, *dispatch.StepMessage) (json.RawMessage, error) {
		panic("kaboom")
	}))
	cases := []struct {
		handler   string
		success   bool
		errorType string
		retryable bool
		message   string
	}{
		{"ok", true, "", false, ""},
		{"fail", false, dispatch.ErrorTypeHandlerError, true, "flaky downstream"},
		{"permanent", false, dispatch.ErrorTypeHandlerError, false, "bad input"},
		{"missing", false, dispatch.ErrorTypeHandlerNotFound, false, "Handler not found: missing"},
		{"panics", false, dispatch.ErrorTypeHandlerPanic, false, "kaboom"},
	}
	for i, c := range cases {
		h.dispatch <- eventFor(i, c.handler)
	}
	runPoller(t, h, reg, PollerConfig{Pollers: 2}, logs)
	got := map[string]*dispatch.Completion{}
	for range cases {
		c := recv(t, h, 5*time.Second)
		got[c.Message.Handler] = c
	}
	for i, c := range cases {
		comp := got[c.handler]
		if comp == nil {
			t.Errorf("%s: no completion", c.handler)
			continue
		}
		r := comp.Result
		if comp.Message.EventID != event(i).EventID || r.StepUUID != event(i).StepUUID || r.Metadata.WorkerID != "w1" {
			t.Errorf("%s: completion for %s/%s by %q", c.handler, comp.Message.EventID, r.StepUUID, r.Metadata.WorkerID)
		}
		if r.Success != c.success {
			t.Errorf("%s: success %v, want %v (%+v)", c.handler, r.Success, c.success, r.Error)
			continue
		}
		if c.success {
			if string(r.Result) != `{"ok":true}` || r.Status != dispatch.StatusCompleted {
				t.Errorf("%s: result %s status %q", c.handler, r.Result, r.Status)
			}
			continue
		}
		if r.Error == nil || r.Error.ErrorType != c.errorType || r.Metadata.ErrorType != c.errorType {
			t.Errorf("%s: error %+v, want type %s", c.handler, r.Error, c.errorType)
			continue
		}
		if r.Error.Retryable != c.retryable || r.Metadata.Retryable != c.retryable {
			t.Errorf("%s: retryable error=%v metadata=%v, want %v", c.handler, r.Error.Retryable, r.Metadata.Retryable, c.retryable)
		}
		if !strings.Contains(r.Error.Message, c.message) {
			t.Errorf("%s: message %q lacks %q", c.handler, r.Error.Message, c.message)
		}
	}
	if p := got["panics"]; p != nil && p.Result.Error != nil && len(p.Result.Error.Backtrace) == 0 {
		t.Error("panic result carries no backtrace")
	}
	eventually(t, "nothing pending", func() bool { return h.ch.PendingCount() == 0 })
	if n := testutil.ToFloat64(h.ch.completions.WithLabelValues("completed")); n != float64(len(cases)) {
		t.Errorf("%v completed Complete calls, want %d", n, len(cases))
	}
}

// The handler's context ends at the completion timeout counted from the poll
// (or at the step's own shorter timeout): a handler that fails then is a
// retryable handler_timeout, as in native dispatch.
func TestPollerBoundsHandlerByCompletionTimeout(t *testing.T) {
	h, logs := newLoggedHarness(t, Config{CompletionTimeout: 150 * time.Millisecond, StarvationWarningThreshold: 100 * time.Millisecond}, 4)
	inside := make(chan string, 2)
	reg := dispatch.NewRegistry()
	reg.MustRegister("block", blockUntilCancelled(inside))
	h.dispatch <- eventFor(1, "block")
	own := eventFor(2, "block")
	own.Timeout = 20 * time.Millisecond
	h.dispatch <- own
	start := time.Now()
	runPoller(t, h, reg, PollerConfig{Pollers: 2}, logs)
	for range 2 {
		c := recv(t, h, 5*time.Second)
		r := c.Result
		if r.Success || r.Error == nil || r.Error.ErrorType != dispatch.ErrorTypeHandlerTimeout || !r.Retryable() {
			t.Fatalf("%s: %+v, want a retryable handler_timeout", c.Message.EventID, r.Error)
		}
	}
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Errorf("both handlers ended after %v, before the completion timeout", took)
	}
}

func TestPollerHoldKeepsEventPendingAndStarving(t *testing.T) {
	const threshold = 100 * time.Millisecond
	const hold = 500 * time.Millisecond
	h, logs := newLoggedHarness(t, Config{StarvationWarningThreshold: threshold, CompletionTimeout: 10 * time.Second, SweepInterval: 5 * time.Millisecond}, 4)
	runSweeper(t, h)
	var handled atomic.Int32
	reg := dispatch.NewRegistry()
	reg.MustRegister("noop", dispatch.HandlerFunc(func(context.Context, *dispatch.StepMessage) (json.RawMessage, error) {
		handled.Add(1)
		return nil, nil
	}))
	start := time.Now()
	h.dispatch <- eventFor(1, "noop")
	runPoller(t, h, reg, PollerConfig{Pollers: 1, Hold: hold}, logs)

	eventually(t, "the handled event pending and starving", func() bool {
		m := h.ch.Metrics()
		return handled.Load() == 1 && m.PendingCount == 1 && m.StarvingEventCount == 1 && m.StarvationDetected &&
			m.OldestPendingAgeMs != nil && *m.OldestPendingAgeMs > threshold.Milliseconds()
	})
	eventually(t, "a starvation warning naming the event", func() bool {
		return logs.has("slow polling detected", `"eventId":"ev-1"`)
	})
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(`
# HELP tasker_ffi_starving_events Pending FFI events older than the starvation warning threshold.
# TYPE tasker_ffi_starving_events gauge
tasker_ffi_starving_events 1
`), "tasker_ffi_starving_events"); err != nil {
		t.Fatal(err)
	}
	// Still pending (not completed early) once most of the hold has passed.
	eventually(t, "the event pending for most of the hold", func() bool {
		m := h.ch.Metrics()
		return m.PendingCount == 1 && m.OldestPendingAgeMs != nil && *m.OldestPendingAgeMs >= (hold*8/10).Milliseconds()
	})
	c := recv(t, h, 5*time.Second)
	took := time.Since(start)
	if !c.Result.Success || c.Message.EventID != "ev-1" {
		t.Fatalf("completion %s: %+v", c.Message.EventID, c.Result.Error)
	}
	if took < hold {
		t.Fatalf("completed %v after enqueue, before the hold of %v", took, hold)
	}
	eventually(t, "starvation cleared", func() bool {
		m := h.ch.Metrics()
		return m.PendingCount == 0 && m.StarvingEventCount == 0 && !m.StarvationDetected && m.OldestPendingAgeMs == nil
	})
	if s := h.ch.CheckStarvationWarnings(); len(s) != 0 {
		t.Fatalf("starving after completion: %+v", s)
	}
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(`
# HELP tasker_ffi_starving_events Pending FFI events older than the starvation warning threshold.
# TYPE tasker_ffi_starving_events gauge
tasker_ffi_starving_events 0
# HELP tasker_ffi_oldest_event_age_ms Age of the oldest pending FFI event in milliseconds (0 when none).
# TYPE tasker_ffi_oldest_event_age_ms gauge
tasker_ffi_oldest_event_age_ms 0
`), "tasker_ffi_starving_events", "tasker_ffi_oldest_event_age_ms"); err != nil {
		t.Fatal(err)
	}
	t.Logf("held %v, completed %v after enqueue", hold, took.Round(time.Millisecond))
}

// A hold below the threshold keeps the event pending for the hold, but never
// starving.
func TestPollerHoldBelowThresholdDoesNotStarve(t *testing.T) {
	const hold = 50 * time.Millisecond
	h, logs := newLoggedHarness(t, Config{StarvationWarningThreshold: 2 * time.Second, CompletionTimeout: 10 * time.Second, SweepInterval: 5 * time.Millisecond}, 4)
	runSweeper(t, h)
	reg := dispatch.NewRegistry()
	reg.MustRegister("noop", dispatch.HandlerFunc(func(context.Context, *dispatch.StepMessage) (json.RawMessage, error) { return nil, nil }))
	start := time.Now()
	h.dispatch <- eventFor(1, "noop")
	runPoller(t, h, reg, PollerConfig{Hold: hold}, logs)
	c := recv(t, h, 5*time.Second)
	if took := time.Since(start); !c.Result.Success || took < hold {
		t.Fatalf("completion after %v: %+v", took, c.Result.Error)
	}
	if logs.has("slow polling detected") {
		t.Fatal("starvation warning for an event held below the threshold")
	}
}

// Pollers goroutines poll at once: each handler waits until all of them are
// inside, which only a concurrent poller can satisfy.
func TestPollerGoroutinesPollConcurrently(t *testing.T) {
	const n = 4
	h, logs := newLoggedHarness(t, Config{}, 16)
	var inside atomic.Int32
	all := make(chan struct{})
	reg := dispatch.NewRegistry()
	reg.MustRegister("rendezvous", dispatch.HandlerFunc(func(ctx context.Context, s *dispatch.StepMessage) (json.RawMessage, error) {
		if inside.Add(1) == n {
			close(all)
		}
		select {
		case <-all:
			return json.RawMessage(`{"met":true}`), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}))
	for i := range n {
		h.dispatch <- eventFor(i, "rendezvous")
	}
	runPoller(t, h, reg, PollerConfig{Pollers: n}, logs)
	waitClosed(t, all, 10*time.Second, fmt.Sprintf("%d handlers inside at once", n))
	for range n {
		if c := recv(t, h, 5*time.Second); !c.Result.Success {
			t.Fatalf("%s: %+v", c.Message.EventID, c.Result.Error)
		}
	}
}

// Cancelling the context stops every goroutine, cancels a running handler
// (whose result, a retryable failure, is still delivered: nothing is lost)
// and nothing is polled afterwards.
func TestPollerStopsWhenContextCancelled(t *testing.T) {
	h, logs := newLoggedHarness(t, Config{}, 16)
	inside := make(chan string, 1)
	reg := dispatch.NewRegistry()
	reg.MustRegister("block", blockUntilCancelled(inside))
	h.dispatch <- eventFor(1, "block")
	cancel, done := runPoller(t, h, reg, PollerConfig{Pollers: 3, Hold: time.Hour}, logs)
	select {
	case <-inside:
	case <-time.After(5 * time.Second):
		t.Fatal("handler never started")
	}
	cancel()
	waitClosed(t, done, 5*time.Second, "Run to return after cancel")
	c := recv(t, h, time.Second)
	if c.Result.Success || !c.Result.Retryable() || c.Message.EventID != "ev-1" {
		t.Fatalf("cancelled handler's completion: %+v", c.Result)
	}
	if h.ch.PendingCount() != 0 {
		t.Fatal("event left pending")
	}
	h.dispatch <- eventFor(2, "block")
	if m, ok := h.ch.Poll(); !ok || m.EventID != "ev-2" {
		t.Fatal("an event sent after Run returned was taken by a poller")
	}
}

func TestPollerLogsEveryRefusedCompletion(t *testing.T) {
	t.Run("stopped channel", func(t *testing.T) {
		h, logs := newLoggedHarness(t, Config{}, 4)
		inside := make(chan string, 1)
		release := make(chan struct{})
		reg := dispatch.NewRegistry()
		reg.MustRegister("wait", dispatch.HandlerFunc(func(ctx context.Context, s *dispatch.StepMessage) (json.RawMessage, error) {
			inside <- s.EventID
			select {
			case <-release:
				return nil, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}))
		h.dispatch <- eventFor(1, "wait")
		_, done := runPoller(t, h, reg, PollerConfig{Pollers: 2}, logs)
		select {
		case <-inside:
		case <-time.After(5 * time.Second):
			t.Fatal("handler never started")
		}
		if back, _ := h.ch.Stop(); len(back) != 1 || back[0].EventID != "ev-1" {
			t.Fatalf("Stop returned %+v", back)
		}
		close(release)
		eventually(t, "the Stopped refusal logged with the event id", func() bool {
			return logs.has("FFI poller: completion not accepted", `"eventId":"ev-1"`, Stopped.String())
		})
		h.dispatch <- eventFor(2, "wait")
		select {
		case <-done:
			t.Fatal("poller returned while its context is live")
		default:
		}
		if len(h.dispatch) != 1 {
			t.Fatal("a stopped channel handed out an event")
		}
	})
	t.Run("timed out", func(t *testing.T) {
		h, logs := newLoggedHarness(t, Config{CompletionTimeout: 100 * time.Millisecond, StarvationWarningThreshold: 50 * time.Millisecond, SweepInterval: 5 * time.Millisecond}, 4)
		runSweeper(t, h)
		reg := dispatch.NewRegistry()
		reg.MustRegister("noop", dispatch.HandlerFunc(func(context.Context, *dispatch.StepMessage) (json.RawMessage, error) { return nil, nil }))
		h.dispatch <- eventFor(1, "noop")
		runPoller(t, h, reg, PollerConfig{Hold: 400 * time.Millisecond}, logs)
		c := recv(t, h, 5*time.Second)
		if c.Result.Error == nil || c.Result.Error.ErrorType != dispatch.ErrorTypeFFITimeout || !c.Result.Retryable() {
			t.Fatalf("want the sweeper's ffi_timeout, got %+v", c.Result)
		}
		eventually(t, "the TimedOut refusal logged with the event id", func() bool {
			return logs.has("FFI poller: completion not accepted", `"eventId":"ev-1"`, TimedOut.String())
		})
		select {
		case extra := <-h.completion:
			t.Fatalf("second completion for a timed-out event: %+v", extra)
		default:
		}
	})
	t.Run("retry later", func(t *testing.T) {
		h, logs := newLoggedHarness(t, Config{CompletionSendTimeout: 20 * time.Millisecond}, 1)
		filler := &dispatch.Completion{}
		h.completion <- filler
		reg := dispatch.NewRegistry()
		reg.MustRegister("noop", dispatch.HandlerFunc(func(context.Context, *dispatch.StepMessage) (json.RawMessage, error) { return nil, nil }))
		h.dispatch <- eventFor(1, "noop")
		runPoller(t, h, reg, PollerConfig{MaxIdleBackoff: 10 * time.Millisecond}, logs)
		eventually(t, "the RetryLater answer logged with the event id", func() bool {
			return logs.has("FFI poller: completion not accepted yet; retrying", `"eventId":"ev-1"`)
		})
		if got := <-h.completion; got != filler {
			t.Fatal("unexpected completion in the filled channel")
		}
		c := recv(t, h, 5*time.Second)
		if !c.Result.Success || c.Message.EventID != "ev-1" {
			t.Fatalf("retried completion: %+v", c.Result)
		}
		eventually(t, "nothing pending", func() bool { return h.ch.PendingCount() == 0 })
	})
}
