package ffi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
)

type harness struct {
	ch         *Channel
	dispatch   chan dispatch.StepMessage
	completion chan *dispatch.Completion
	metrics    *dispatch.Metrics
	reg        *prometheus.Registry
}

func newHarness(t *testing.T, cfg Config, completionCap int) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := dispatch.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{dispatch: make(chan dispatch.StepMessage, 64), completion: make(chan *dispatch.Completion, completionCap), metrics: m, reg: reg}
	h.ch = New(cfg, h.dispatch, h.completion, m, testr.New(t))
	if err := h.ch.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	return h
}

func event(i int) dispatch.StepMessage {
	return dispatch.StepMessage{EventID: fmt.Sprintf("ev-%d", i), StepUUID: fmt.Sprintf("step-%d", i), TaskUUID: "task", Handler: "py", Attempt: 1,
		Receipt: dispatch.Receipt{ID: int64(i), Token: 1}}
}

func success(step string) dispatch.StepExecutionResult {
	return dispatch.StepExecutionResult{StepUUID: step, Success: true}
}

func (h *harness) poll(t *testing.T) dispatch.StepMessage {
	t.Helper()
	m, ok := h.ch.Poll()
	if !ok {
		t.Fatal("poll found nothing")
	}
	return m
}

// age makes a pending event look older than it is.
func (h *harness) age(id string, by time.Duration) {
	h.ch.mu.Lock()
	defer h.ch.mu.Unlock()
	h.ch.pending[id].dispatchedAt = h.ch.pending[id].dispatchedAt.Add(-by)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func TestPollNeverBlocksAndCompleteDelivers(t *testing.T) {
	h := newHarness(t, Config{WorkerID: "w1"}, 4)
	start := time.Now()
	if _, ok := h.ch.Poll(); ok {
		t.Fatal("poll on an empty channel returned an event")
	}
	if time.Since(start) > 50*time.Millisecond {
		t.Fatal("poll blocked")
	}
	h.dispatch <- event(1)
	m := h.poll(t)
	if h.ch.PendingCount() != 1 {
		t.Fatalf("pending %d after poll", h.ch.PendingCount())
	}
	res := success(m.StepUUID)
	res.Result = []byte(`{"ok":1}`)
	if st, err := h.ch.Complete(m.EventID, res); st != Completed || err != nil {
		t.Fatalf("complete: %v %v", st, err)
	}
	c := <-h.completion
	if c.Message.Receipt != m.Receipt || !c.Result.Success || c.Result.Metadata.WorkerID != "w1" || string(c.Result.Result) != `{"ok":1}` {
		t.Fatalf("delivered %+v", c)
	}
	if h.ch.PendingCount() != 0 {
		t.Fatal("event still pending after completion")
	}
}

func TestCompleteRefusalsAreDistinct(t *testing.T) {
	h := newHarness(t, Config{CompletionTimeout: time.Second}, 4)
	h.dispatch <- event(1)
	h.dispatch <- event(2)
	m1, m2 := h.poll(t), h.poll(t)
	if st, _ := h.ch.Complete("nope", success("x")); st != UnknownEvent {
		t.Errorf("unknown id: %v", st)
	}
	if st, err := h.ch.Complete(m1.EventID, success("step-999")); st != InvalidResult || !errors.Is(err, ErrResultMismatch) {
		t.Errorf("mismatched step: %v %v", st, err)
	}
	if st, err := h.ch.Complete(m1.EventID, dispatch.StepExecutionResult{Success: true}); st != InvalidResult || err == nil || !strings.Contains(err.Error(), "step_uuid") {
		t.Errorf("result without step_uuid: %v %v", st, err)
	}
	if st, _ := h.ch.Complete(m1.EventID, success(m1.StepUUID)); st != Completed {
		t.Fatalf("a correct result after refusals: %v", st)
	}
	if st, _ := h.ch.Complete(m1.EventID, success(m1.StepUUID)); st != AlreadyCompleted {
		t.Errorf("double completion: %v", st)
	}
	h.age(m2.EventID, 2*time.Second)
	if n := h.ch.CleanupTimeouts(); n != 1 {
		t.Fatalf("cleanup delivered %d, want 1", n)
	}
	if st, _ := h.ch.Complete(m2.EventID, success(m2.StepUUID)); st != TimedOut {
		t.Errorf("complete after timeout: %v", st)
	}
	if got := testutil.ToFloat64(h.ch.completions.WithLabelValues("already_completed")); got != 1 {
		t.Errorf("already_completed counted %v", got)
	}
}

// A full completion channel: Complete waits at most the send timeout, says
// RetryLater, and the event stays pending and can be completed later. While
// it waits, no lock is held: other threads poll and read metrics freely.
func TestSendTimeoutLeavesEventPendingWithoutHoldingLocks(t *testing.T) {
	h := newHarness(t, Config{CompletionSendTimeout: 300 * time.Millisecond}, 1)
	h.completion <- &dispatch.Completion{} // full
	h.dispatch <- event(1)
	h.dispatch <- event(2)
	m := h.poll(t)
	type out struct {
		st  CompleteStatus
		dur time.Duration
	}
	done := make(chan out, 1)
	go func() {
		s := time.Now()
		st, _ := h.ch.Complete(m.EventID, success(m.StepUUID))
		done <- out{st, time.Since(s)}
	}()
	eventually(t, "complete to be in progress", func() bool {
		h.ch.mu.Lock()
		defer h.ch.mu.Unlock()
		return h.ch.pending[m.EventID].completing
	})
	// Meanwhile other callers are not blocked.
	s := time.Now()
	h.poll(t)
	_ = h.ch.Metrics()
	if st, _ := h.ch.Complete(m.EventID, success(m.StepUUID)); st != Busy {
		t.Errorf("concurrent completion of the same event: %v", st)
	}
	if d := time.Since(s); d > 100*time.Millisecond {
		t.Fatalf("poll/metrics blocked %v behind a waiting Complete", d)
	}
	o := <-done
	if o.st != RetryLater || o.dur < 300*time.Millisecond || o.dur > 3*time.Second {
		t.Fatalf("full channel: %v after %v, want RetryLater after ~300ms", o.st, o.dur)
	}
	if h.ch.PendingCount() != 2 {
		t.Fatalf("pending %d, want the event kept", h.ch.PendingCount())
	}
	<-h.completion // room again
	if st, _ := h.ch.Complete(m.EventID, success(m.StepUUID)); st != Completed {
		t.Fatalf("retry after room: %v", st)
	}
}

func TestMetricsAndStrictStarvationBoundary(t *testing.T) {
	h := newHarness(t, Config{StarvationWarningThreshold: time.Second, CompletionTimeout: time.Hour}, 4)
	m0 := h.ch.Metrics()
	if m0.PendingCount != 0 || m0.OldestPendingAgeMs != nil || m0.StarvationDetected {
		t.Fatalf("empty metrics %+v", m0)
	}
	for i := range 3 {
		h.dispatch <- event(i)
		h.poll(t)
	}
	now := time.Now()
	h.ch.mu.Lock()
	h.ch.pending["ev-0"].dispatchedAt = now.Add(-time.Second)                    // exactly at the threshold: not starving
	h.ch.pending["ev-1"].dispatchedAt = now.Add(-time.Second - time.Millisecond) // just over: starving
	h.ch.pending["ev-2"].dispatchedAt = now.Add(-100 * time.Millisecond)
	h.ch.mu.Unlock()
	m := h.ch.metricsAt(now)
	if m.PendingCount != 3 || *m.OldestPendingAgeMs != 1001 || *m.NewestPendingAgeMs != 100 || m.OldestEventID != "ev-1" {
		t.Errorf("metrics %+v oldest=%d newest=%d", m, *m.OldestPendingAgeMs, *m.NewestPendingAgeMs)
	}
	if m.StarvingEventCount != 1 || !m.StarvationDetected {
		t.Errorf("starving %d (want 1: age > threshold is strict)", m.StarvingEventCount)
	}
	// The exported gauges and the explicit check read the clock themselves:
	// move ev-0 well under the threshold for them.
	h.ch.mu.Lock()
	h.ch.pending["ev-0"].dispatchedAt = time.Now().Add(-500 * time.Millisecond)
	h.ch.mu.Unlock()
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(`
# HELP tasker_ffi_pending_events Events polled by a foreign handler and not yet completed.
# TYPE tasker_ffi_pending_events gauge
tasker_ffi_pending_events 3
# HELP tasker_ffi_starving_events Pending FFI events older than the starvation warning threshold.
# TYPE tasker_ffi_starving_events gauge
tasker_ffi_starving_events 1
`), "tasker_ffi_pending_events", "tasker_ffi_starving_events"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(h.reg, "tasker_ffi_oldest_event_age_ms"); err != nil || n != 1 {
		t.Errorf("oldest age gauge: %d %v", n, err)
	}
	warn := h.ch.CheckStarvationWarnings()
	if len(warn) != 1 || warn[0].EventID != "ev-1" {
		t.Errorf("starvation warnings %+v", warn)
	}
}

func TestCleanupTimeoutStrictBoundary(t *testing.T) {
	h := newHarness(t, Config{CompletionTimeout: time.Second}, 4)
	h.dispatch <- event(1)
	h.dispatch <- event(2)
	a, b := h.poll(t), h.poll(t)
	h.age(a.EventID, time.Second-50*time.Millisecond) // just under
	h.age(b.EventID, time.Second+50*time.Millisecond) // over
	if n := h.ch.CleanupTimeouts(); n != 1 {
		t.Fatalf("cleanup %d, want only the event past the timeout", n)
	}
	c := <-h.completion
	r := c.Result
	if c.Message.EventID != b.EventID || r.Error == nil || r.Error.ErrorType != dispatch.ErrorTypeFFITimeout || !r.Error.Retryable ||
		r.Error.Message != "FFI handler timed out after 1000ms" || r.Metadata.ExecutionTimeMs != 1000 {
		t.Fatalf("timeout result %+v %+v", c.Message, r.Error)
	}
	if testutil.ToFloat64(h.ch.timeouts) != 1 {
		t.Error("timeout not counted")
	}
}

// The channel sweeps timeouts itself, and an ffi_timeout failure that cannot
// be delivered (full channel) is retried on later sweeps, never dropped.
func TestSweeperDeliversTimeoutsWithoutLoss(t *testing.T) {
	h := newHarness(t, Config{CompletionTimeout: 50 * time.Millisecond, StarvationWarningThreshold: 20 * time.Millisecond,
		CompletionSendTimeout: 10 * time.Millisecond, SweepInterval: 5 * time.Millisecond}, 1)
	h.completion <- &dispatch.Completion{} // full: the first sweeps cannot deliver
	h.dispatch <- event(1)
	m := h.poll(t)
	ctx, cancel := context.WithCancel(context.Background())
	swept := make(chan struct{})
	go func() { defer close(swept); h.ch.Run(ctx) }()
	// The sweeper logs through t: it must be gone before the test ends.
	defer func() { cancel(); <-swept }()
	eventually(t, "timeout to come due", func() bool {
		mm := h.ch.Metrics()
		return mm.OldestPendingAgeMs != nil && *mm.OldestPendingAgeMs > 120
	})
	if h.ch.PendingCount() != 1 {
		t.Fatal("an undeliverable timeout dropped the event")
	}
	<-h.completion
	var c *dispatch.Completion
	select {
	case c = <-h.completion:
	case <-time.After(5 * time.Second):
		t.Fatal("sweeper never delivered the timeout")
	}
	if c.Message.EventID != m.EventID || c.Result.Error.ErrorType != dispatch.ErrorTypeFFITimeout {
		t.Fatalf("got %+v", c.Result.Error)
	}
	eventually(t, "event settled", func() bool { return h.ch.PendingCount() == 0 })
}

func TestManyThreadsPollAndComplete(t *testing.T) {
	h := newHarness(t, Config{}, 1024)
	const n = 2000
	go func() {
		for i := range n {
			h.dispatch <- event(i)
		}
	}()
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]int{}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				finished := len(seen) == n
				mu.Unlock()
				if finished {
					return
				}
				m, ok := h.ch.Poll()
				if !ok {
					continue
				}
				if st, err := h.ch.Complete(m.EventID, success(m.StepUUID)); st != Completed {
					t.Errorf("complete %s: %v %v", m.EventID, st, err)
					return
				}
				mu.Lock()
				seen[m.EventID]++
				mu.Unlock()
			}
		}()
	}
	got := 0
	for got < n {
		select {
		case <-h.completion:
			got++
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d completions", got, n)
		}
	}
	wg.Wait()
	for id, k := range seen {
		if k != 1 {
			t.Fatalf("%s completed %d times", id, k)
		}
	}
}

func TestStopReturnsPendingAndRefusesLater(t *testing.T) {
	h := newHarness(t, Config{}, 4)
	h.dispatch <- event(1)
	h.dispatch <- event(2)
	m := h.poll(t)
	polled, unpolled := h.ch.Stop()
	if len(polled) != 1 || polled[0].EventID != m.EventID || len(unpolled) != 1 || unpolled[0].EventID != "ev-2" {
		t.Fatalf("stop returned polled %+v, unpolled %+v", polled, unpolled)
	}
	if _, ok := h.ch.Poll(); ok {
		t.Fatal("poll after stop")
	}
	if st, _ := h.ch.Complete(m.EventID, success(m.StepUUID)); st != Stopped {
		t.Fatalf("complete after stop: %v", st)
	}
}

func TestSettledMemoryIsBounded(t *testing.T) {
	h := newHarness(t, Config{SettledMemory: 3}, 16)
	for i := range 5 {
		h.dispatch <- event(i)
		m := h.poll(t)
		if st, _ := h.ch.Complete(m.EventID, success(m.StepUUID)); st != Completed {
			t.Fatal(st)
		}
	}
	if len(h.ch.settled) != 3 {
		t.Fatalf("settled holds %d ids, want 3", len(h.ch.settled))
	}
	if st, _ := h.ch.Complete("ev-0", success("step-0")); st != UnknownEvent {
		t.Errorf("forgotten id: %v", st)
	}
	if st, _ := h.ch.Complete("ev-4", success("step-4")); st != AlreadyCompleted {
		t.Errorf("remembered id: %v", st)
	}
}
