package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// recv takes one completion or fails the test at the deadline.
func recv(t testing.TB, ch <-chan *Completion, timeout time.Duration) *Completion {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(timeout):
		t.Fatalf("no completion within %v", timeout)
		return nil
	}
}

// harness is a running dispatch service with its channels.
type harness struct {
	svc        *HandlerDispatchService
	dispatch   chan StepMessage
	completion chan *Completion
	metrics    *Metrics
	registry   *Registry
	runDone    chan struct{}
}

func newHarness(t *testing.T, cfg ServiceConfig, dispatchCap, completionCap int, handlers map[string]Handler) *harness {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRegistry()
	for name, h := range handlers {
		r.MustRegister(name, h)
	}
	h := &harness{
		dispatch: make(chan StepMessage, dispatchCap), completion: make(chan *Completion, completionCap),
		metrics: m, registry: r, runDone: make(chan struct{}),
	}
	h.svc = NewHandlerDispatchService(cfg, r, h.dispatch, h.completion, m, testLogger(t))
	if err := h.svc.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	go func() { defer close(h.runDone); _ = h.svc.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = h.svc.Shutdown(ctx)
		<-h.runDone
	})
	return h
}

func testLogger(t *testing.T) logr.Logger {
	return testr.NewWithOptions(t, testr.Options{Verbosity: 0})
}

func msg(i int, handler string) StepMessage {
	return StepMessage{
		EventID: fmt.Sprintf("ev-%d", i), StepUUID: fmt.Sprintf("step-%d", i), TaskUUID: fmt.Sprintf("task-%d", i),
		Handler: handler, Attempt: 1, Receipt: Receipt{ID: int64(i), Token: 1},
	}
}

// gate is a handler that blocks until released, counting concurrency.
type gate struct {
	mu       sync.Mutex
	running  int
	maxSeen  int
	started  int
	release  chan struct{}
	obeysCtx bool
}

func newGate(obeysCtx bool) *gate { return &gate{release: make(chan struct{}), obeysCtx: obeysCtx} }

func (g *gate) Handle(ctx context.Context, _ *StepMessage) (json.RawMessage, error) {
	g.mu.Lock()
	g.running++
	g.started++
	g.maxSeen = max(g.maxSeen, g.running)
	g.mu.Unlock()
	defer func() { g.mu.Lock(); g.running--; g.mu.Unlock() }()
	if g.obeysCtx {
		select {
		case <-g.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	} else {
		<-g.release
	}
	return []byte(`{"ok":true}`), nil
}

func (g *gate) snapshot() (running, maxSeen, started int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.running, g.maxSeen, g.started
}
