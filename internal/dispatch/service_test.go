package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

var noop = HandlerFunc(func(context.Context, *StepMessage) (json.RawMessage, error) { return json.RawMessage(`{}`), nil })

// No permit → an explicit retryable failure with metadata, sent
// to the completion channel.
func TestSemaphoreClosedProducesFailureResult(t *testing.T) {
	h := newHarness(t, ServiceConfig{}, 4, 4, map[string]Handler{"noop": noop})
	h.svc.Abort()
	h.dispatch <- msg(1, "noop")
	c := recv(t, h.completion, 5*time.Second)
	r := c.Result
	if r.Success || r.Error == nil || r.Error.ErrorType != ErrorTypeSemaphoreAcquisitionFailed || !r.Error.Retryable || !r.Metadata.Retryable {
		t.Fatalf("want retryable semaphore_acquisition_failed, got %+v / %+v", r, r.Error)
	}
	if !strings.Contains(r.Error.Message, "semaphore closed during acquisition") {
		t.Errorf("message %q", r.Error.Message)
	}
	ctx := r.Metadata.Context
	if ctx["service_id"] != DefaultServiceID || ctx["reason"] != "semaphore closed" || ctx["task_uuid"] != "task-1" {
		t.Errorf("metadata context %v", ctx)
	}
	if c.Message.Receipt != (Receipt{ID: 1, Token: 1}) {
		t.Errorf("receipt lost: %+v", c.Message.Receipt)
	}
	if got := testutil.ToFloat64(h.metrics.SemaphoreFailures); got != 1 {
		t.Errorf("semaphore failures = %v", got)
	}
}

// Permits are released before the send, so with a full
// completion channel new handlers still start.
func TestFullCompletionChannelDoesNotStarveDispatch(t *testing.T) {
	var started atomic.Int32
	h := newHarness(t, ServiceConfig{MaxConcurrentHandlers: 2, CompletionSendTimeout: time.Minute}, 16, 1,
		map[string]Handler{"count": HandlerFunc(func(context.Context, *StepMessage) (json.RawMessage, error) {
			started.Add(1)
			return nil, nil
		})})
	for i := range 6 {
		h.dispatch <- msg(i, "count")
	}
	// One result fills the channel; five senders block without permits.
	waitFor(t, "all 6 handlers to start while the completion channel is full", 5*time.Second,
		func() bool { return started.Load() == 6 })
	if got := h.svc.InFlight(); got != 0 {
		t.Errorf("in flight while blocked on send = %d, want 0 (permits released before send)", got)
	}
	for range 6 {
		recv(t, h.completion, 5*time.Second)
	}
}

func TestHundredMessagesThroughSmallCompletionChannelNoDeadlock(t *testing.T) {
	h := newHarness(t, ServiceConfig{MaxConcurrentHandlers: 10}, 100, 10, map[string]Handler{"noop": noop})
	go func() {
		for i := range 100 {
			h.dispatch <- msg(i, "noop")
		}
	}()
	seen := map[string]bool{}
	slow := time.NewTicker(time.Millisecond) // a deliberately slow consumer
	defer slow.Stop()
	for range 100 {
		<-slow.C
		c := recv(t, h.completion, 10*time.Second)
		seen[c.Message.EventID] = true
	}
	if len(seen) != 100 {
		t.Fatalf("got %d distinct results, want 100", len(seen))
	}
}

func TestFailureTable(t *testing.T) {
	cases := []struct {
		name, handler, errorType, msgPrefix string
		retryable                           bool
		h                                   Handler
		timeout                             time.Duration
	}{
		{"not found", "missing", ErrorTypeHandlerNotFound, "Handler not found: missing", false, nil, 0},
		{"error", "err", ErrorTypeHandlerError, "boom", true,
			HandlerFunc(func(context.Context, *StepMessage) (json.RawMessage, error) { return nil, errors.New("boom") }), 0},
		{"permanent error", "perm", ErrorTypeHandlerError, "bad input", false,
			HandlerFunc(func(context.Context, *StepMessage) (json.RawMessage, error) {
				return nil, Permanent(errors.New("bad input"))
			}), 0},
		{"panic", "panic", ErrorTypeHandlerPanic, "Handler panicked: kaboom", false,
			HandlerFunc(func(context.Context, *StepMessage) (json.RawMessage, error) { panic("kaboom") }), 0},
		{"timeout", "slow", ErrorTypeHandlerTimeout, "Handler timed out after 30ms", true,
			HandlerFunc(func(ctx context.Context, _ *StepMessage) (json.RawMessage, error) {
				<-ctx.Done()
				return nil, ctx.Err()
			}),
			30 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hs := map[string]Handler{}
			if tc.h != nil {
				hs[tc.handler] = tc.h
			}
			h := newHarness(t, ServiceConfig{HandlerTimeout: tc.timeout, WorkerID: "w-1"}, 1, 1, hs)
			h.dispatch <- msg(7, tc.handler)
			r := recv(t, h.completion, 5*time.Second).Result
			if r.Success || r.Status != StatusFailed || r.Error == nil {
				t.Fatalf("want failure, got %+v", r)
			}
			if r.Error.ErrorType != tc.errorType || r.Metadata.ErrorType != tc.errorType {
				t.Errorf("error type %q/%q, want %q", r.Error.ErrorType, r.Metadata.ErrorType, tc.errorType)
			}
			if r.Error.Retryable != tc.retryable || r.Metadata.Retryable != tc.retryable {
				t.Errorf("retryable %v/%v, want %v", r.Error.Retryable, r.Metadata.Retryable, tc.retryable)
			}
			if !strings.HasPrefix(r.Error.Message, tc.msgPrefix) {
				t.Errorf("message %q, want prefix %q", r.Error.Message, tc.msgPrefix)
			}
			if r.StepUUID != "step-7" || r.Metadata.WorkerID != "w-1" {
				t.Errorf("step/worker id %q/%q", r.StepUUID, r.Metadata.WorkerID)
			}
		})
	}
}

func TestSuccessResult(t *testing.T) {
	h := newHarness(t, ServiceConfig{}, 1, 1, map[string]Handler{"echo": HandlerFunc(
		func(_ context.Context, s *StepMessage) (json.RawMessage, error) { return s.Payload, nil })})
	m := msg(1, "echo")
	m.Payload = json.RawMessage(`{"x":1}`)
	h.dispatch <- m
	r := recv(t, h.completion, 5*time.Second).Result
	if !r.Success || r.Status != StatusCompleted || string(r.Result) != `{"x":1}` || r.Error != nil || r.Metadata.Retryable {
		t.Fatalf("got %+v", r)
	}
	if r.Outcome() != OutcomeSuccess {
		t.Errorf("outcome %v", r.Outcome())
	}
}

func TestExactlyNHandlersRunAtOnce(t *testing.T) {
	const n = 4
	g := newGate(false)
	h := newHarness(t, ServiceConfig{MaxConcurrentHandlers: n}, 3*n, 3*n, map[string]Handler{"gate": g})
	for i := range 3 * n {
		h.dispatch <- msg(i, "gate")
	}
	waitFor(t, "n handlers running", 5*time.Second, func() bool { r, _, _ := g.snapshot(); return r == n })
	if got := h.svc.InFlight(); got != n {
		t.Errorf("in flight %d, want %d", got, n)
	}
	close(g.release)
	for range 3 * n {
		recv(t, h.completion, 5*time.Second)
	}
	if _, maxSeen, started := g.snapshot(); maxSeen != n || started != 3*n {
		t.Fatalf("max concurrent %d (want %d), started %d (want %d)", maxSeen, n, started, 3*n)
	}
}

func TestPerStepTimeoutOverridesServiceTimeout(t *testing.T) {
	g := newGate(true)
	h := newHarness(t, ServiceConfig{HandlerTimeout: time.Hour}, 1, 1, map[string]Handler{"gate": g})
	m := msg(1, "gate")
	m.Timeout = 40 * time.Millisecond
	start := time.Now()
	h.dispatch <- m
	r := recv(t, h.completion, 5*time.Second).Result
	if r.Error == nil || r.Error.ErrorType != ErrorTypeHandlerTimeout || r.Error.Message != "Handler timed out after 40ms" {
		t.Fatalf("got %+v", r.Error)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("per-step timeout took %v", el)
	}
	if r.Metadata.ExecutionTimeMs != 40 {
		t.Errorf("execution time %d, want the timeout", r.Metadata.ExecutionTimeMs)
	}
}

// A handler that ignores its context: the timeout failure goes out at the
// deadline, the late result is discarded, and the permit is held until the
// handler really returns.
func TestLateResultDiscardedAfterTimeout(t *testing.T) {
	g := newGate(false)
	h := newHarness(t, ServiceConfig{HandlerTimeout: 20 * time.Millisecond}, 1, 4, map[string]Handler{"gate": g})
	h.dispatch <- msg(1, "gate")
	r := recv(t, h.completion, 5*time.Second).Result
	if r.Error == nil || r.Error.ErrorType != ErrorTypeHandlerTimeout {
		t.Fatalf("got %+v", r)
	}
	if h.svc.InFlight() != 1 || h.svc.Overdue() != 1 {
		t.Fatalf("in flight %d overdue %d while the handler still runs", h.svc.InFlight(), h.svc.Overdue())
	}
	close(g.release)
	waitFor(t, "late result counted", 5*time.Second, func() bool { return testutil.ToFloat64(h.metrics.LateResults) == 1 })
	if len(h.completion) != 0 {
		t.Fatalf("late result was delivered")
	}
	if h.svc.InFlight() != 0 || h.svc.Overdue() != 0 {
		t.Fatalf("permit not released after late return: in flight %d overdue %d", h.svc.InFlight(), h.svc.Overdue())
	}
}

// A result that cannot be delivered within the send timeout is handed to
// Undelivered (which gives the step back to its queue), exactly once, with
// the message that identifies its claim; a later result is delivered as usual.
func TestUndeliveredResultIsHandedBack(t *testing.T) {
	handedBack := make(chan *Completion, 4)
	h := newHarness(t, ServiceConfig{CompletionSendTimeout: 20 * time.Millisecond, Undelivered: func(c *Completion) { handedBack <- c }},
		1, 1, map[string]Handler{"noop": noop})
	h.completion <- &Completion{} // fill it; nobody consumes
	h.dispatch <- msg(1, "noop")
	c := recv(t, handedBack, 5*time.Second)
	if c.Message.Receipt != (Receipt{ID: 1, Token: 1}) || c.Message.StepUUID != "step-1" || !c.Result.Success {
		t.Fatalf("handed back %+v", c)
	}
	if got := testutil.ToFloat64(h.metrics.UndeliveredResults); got != 1 {
		t.Fatalf("undelivered results = %v", got)
	}
	<-h.completion
	h.dispatch <- msg(2, "noop")
	if c := recv(t, h.completion, 5*time.Second); c.Message.StepUUID != "step-2" {
		t.Fatalf("delivered %+v", c)
	}
	if len(handedBack) != 0 {
		t.Fatalf("a delivered result was handed back too")
	}
}

func TestShutdownHandsBackUnstartedMessages(t *testing.T) {
	g := newGate(false)
	h := newHarness(t, ServiceConfig{MaxConcurrentHandlers: 1}, 10, 10, map[string]Handler{"gate": g})
	for i := range 6 {
		h.dispatch <- msg(i, "gate")
	}
	waitFor(t, "one handler running", 5*time.Second, func() bool { r, _, _ := g.snapshot(); return r == 1 })
	type out struct {
		rep ShutdownReport
		err error
	}
	done := make(chan out, 1)
	go func() {
		rep, err := h.svc.Shutdown(context.Background())
		done <- out{rep, err}
	}()
	waitFor(t, "loop stopped", 5*time.Second, func() bool {
		select {
		case <-h.runDone:
			return true
		default:
			return false
		}
	})
	close(g.release)
	o := <-done
	if o.err != nil {
		t.Fatal(o.err)
	}
	c := recv(t, h.completion, 5*time.Second)
	ids := map[string]bool{c.Message.EventID: true}
	for _, m := range o.rep.Unstarted {
		if ids[m.EventID] {
			t.Fatalf("%s both started and handed back", m.EventID)
		}
		ids[m.EventID] = true
	}
	if len(o.rep.Unstarted) != 5 || len(ids) != 6 {
		t.Fatalf("unstarted %d, accounted %d of 6", len(o.rep.Unstarted), len(ids))
	}
	if len(h.completion) != 0 {
		t.Fatal("an unstarted message also produced a result")
	}
}

func TestShutdownDeadlineCancelsRunningHandlers(t *testing.T) {
	g := newGate(true)
	h := newHarness(t, ServiceConfig{MaxConcurrentHandlers: 2, HandlerTimeout: time.Hour}, 2, 2, map[string]Handler{"gate": g})
	h.dispatch <- msg(1, "gate")
	waitFor(t, "handler running", 5*time.Second, func() bool { r, _, _ := g.snapshot(); return r == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	rep, err := h.svc.Shutdown(ctx)
	if err == nil || rep.Cancelled != 1 {
		t.Fatalf("want deadline error with 1 cancelled, got %v %+v", err, rep)
	}
	r := recv(t, h.completion, 5*time.Second).Result
	if r.Error == nil || !r.Error.Retryable || !strings.Contains(r.Error.Message, "shutting down") {
		t.Fatalf("cancelled handler result %+v", r.Error)
	}
}

func TestSemaphore(t *testing.T) {
	s := NewSemaphore(2)
	p0, ok0 := s.TryAcquire()
	_, ok1 := s.TryAcquire()
	if _, ok2 := s.TryAcquire(); !ok0 || !ok1 || ok2 {
		t.Fatal("TryAcquire does not respect capacity 2")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := s.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire on a full semaphore with an ended context: %v", err)
	}
	s.Release(p0)
	s.Close()
	if _, err := s.Acquire(context.Background()); !errors.Is(err, ErrSemaphoreClosed) {
		t.Fatalf("acquire after close: %v", err)
	}
	s.Release(1) // permits held before Close may still be released
	if s.InUse() != 0 {
		t.Fatalf("in use %d", s.InUse())
	}
	defer func() {
		if recover() == nil {
			t.Fatal("over-release did not panic")
		}
	}()
	s.Release(0)
}

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	if err := r.Register("b", noop); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("a", noop); err != nil {
		t.Fatal(err)
	}
	if err := r.Register("a", noop); !errors.Is(err, ErrDuplicateHandler) {
		t.Fatalf("duplicate: %v", err)
	}
	if err := r.Register("", noop); err == nil {
		t.Fatal("empty name accepted")
	}
	if err := r.Register("c", nil); err == nil {
		t.Fatal("nil handler accepted")
	}
	if _, ok := r.Lookup("a"); !ok {
		t.Fatal("lookup a")
	}
	if _, ok := r.Lookup("z"); ok {
		t.Fatal("lookup z")
	}
	if got := strings.Join(r.Names(), ","); got != "a,b" {
		t.Fatalf("names %q", got)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = r.Register(string(rune('c'+i)), noop)
			r.Lookup("a")
		}()
	}
	wg.Wait()
	if len(r.Names()) != 10 {
		t.Fatalf("concurrent registration lost names: %v", r.Names())
	}
}
