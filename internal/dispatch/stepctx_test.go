package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The handler's context carries the step's deadline, and contexts a handler
// derives from it are cancelled with it.
func TestHandlerContextDeadlineAndDerivedContexts(t *testing.T) {
	type seen struct {
		untilDeadline time.Duration
		hasDeadline   bool
		derivedErr    error
		derivedCause  error
	}
	got := make(chan seen, 1)
	h := newHarness(t, ServiceConfig{HandlerTimeout: 300 * time.Millisecond}, 1, 1, map[string]Handler{
		"derive": HandlerFunc(func(ctx context.Context, _ *StepMessage) (json.RawMessage, error) {
			d, ok := ctx.Deadline()
			s := seen{untilDeadline: time.Until(d), hasDeadline: ok}
			derived, cancel := context.WithTimeout(ctx, time.Hour)
			defer cancel()
			<-derived.Done()
			s.derivedErr, s.derivedCause = derived.Err(), context.Cause(derived)
			got <- s
			return nil, derived.Err()
		}),
	})
	h.dispatch <- msg(1, "derive")
	r := recv(t, h.completion, 5*time.Second).Result
	if r.Error == nil || r.Error.ErrorType != ErrorTypeHandlerTimeout {
		t.Fatalf("want a timeout failure, got %+v", r.Error)
	}
	s := <-got
	if !s.hasDeadline || s.untilDeadline <= 0 || s.untilDeadline > 300*time.Millisecond {
		t.Errorf("deadline %v ahead (ok %v), want within the 300ms timeout", s.untilDeadline, s.hasDeadline)
	}
	if !errors.Is(s.derivedErr, context.DeadlineExceeded) {
		t.Errorf("derived context ended with %v, want DeadlineExceeded", s.derivedErr)
	}
}

func TestStepContextAfterFuncStop(t *testing.T) {
	var c stepContext
	ran := make(chan string, 3)
	stopA := c.AfterFunc(func() { ran <- "a" })
	c.AfterFunc(func() { ran <- "b" })
	if !stopA() {
		t.Fatal("stop before cancel should report it stopped the function")
	}
	if stopA() {
		t.Fatal("second stop should report false")
	}
	if !c.cancel(context.Canceled) || c.cancel(context.DeadlineExceeded) {
		t.Fatal("only the first cancel should take effect")
	}
	if got := <-ran; got != "b" {
		t.Fatalf("ran %q, want b", got)
	}
	select {
	case got := <-ran:
		t.Fatalf("stopped function %q ran", got)
	case <-time.After(20 * time.Millisecond):
	}
	c.AfterFunc(func() { ran <- "late" }) // registered after cancel: runs at once
	if got := <-ran; got != "late" {
		t.Fatalf("ran %q, want late", got)
	}
	if c.Err() != context.Canceled {
		t.Fatalf("err %v", c.Err())
	}
	<-c.Done()
}

// Wait covers the delivery of a timeout failure too: it must not return (and
// let the caller close the completion channel) while that send is waiting
// for room, even though the handler itself has already returned.
func TestWaitCoversTimeoutDelivery(t *testing.T) {
	g := newGate(false)
	h := newHarness(t, ServiceConfig{HandlerTimeout: 20 * time.Millisecond, CompletionSendTimeout: time.Minute},
		1, 1, map[string]Handler{"gate": g})
	h.completion <- &Completion{} // full: the timeout failure has to wait
	h.dispatch <- msg(1, "gate")
	waitFor(t, "step to time out", 5*time.Second, func() bool { return h.svc.Overdue() == 1 })
	close(g.release)
	waitFor(t, "late result discarded", 5*time.Second, func() bool { return testutil.ToFloat64(h.metrics.LateResults) == 1 })
	waited := make(chan struct{})
	go func() { h.svc.Wait(); close(waited) }()
	select {
	case <-waited:
		t.Fatal("Wait returned while the timeout failure was still being sent")
	case <-time.After(50 * time.Millisecond):
	}
	<-h.completion // make room
	if r := recv(t, h.completion, 5*time.Second).Result; r.Error == nil || r.Error.ErrorType != ErrorTypeHandlerTimeout {
		t.Fatalf("want the timeout failure, got %+v", r)
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after the timeout failure was delivered")
	}
}
