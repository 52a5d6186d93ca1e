package dispatch

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/seed-a17b38e7/workerpool-operator/internal/lograte"
)

// PostHandlerCallback is the domain-event hook that runs after a step's result
// is durable: persisted, and applied to the step (not fenced out by a newer
// claim). It never runs for a result that was not persisted, and nothing it
// does (slowness, a panic) changes the step.
type PostHandlerCallback interface {
	OnHandlerComplete(ctx context.Context, step *StepMessage, result *StepExecutionResult, serviceID string)
}

// CallbackFunc lets a plain function serve as a PostHandlerCallback.
type CallbackFunc func(ctx context.Context, step *StepMessage, result *StepExecutionResult, serviceID string)

// OnHandlerComplete calls f.
func (f CallbackFunc) OnHandlerComplete(ctx context.Context, step *StepMessage, result *StepExecutionResult, serviceID string) {
	f(ctx, step, result, serviceID)
}

// CallbackStrategy chooses how long the completion processor waits for the
// callback of a result it has just made durable. A foreign thread's Complete
// never waits for a callback under any strategy, so no callback can deadlock
// a foreign caller that holds a lock the callback needs.
type CallbackStrategy string

// The seed's three strategies.
const (
	// CallbackBlocking waits for the callback however long it takes.
	CallbackBlocking CallbackStrategy = "Blocking"
	// CallbackBlockingWithTimeout waits at most the callback timeout; the
	// callback's context is cancelled then and the timeout is counted.
	CallbackBlockingWithTimeout CallbackStrategy = "BlockingWithTimeout"
	// CallbackFireAndForget returns at once; the callback runs in the
	// background bounded by the callback timeout. The default.
	CallbackFireAndForget CallbackStrategy = "FireAndForget"
)

// ParseCallbackStrategy accepts exactly the three strategy names.
func ParseCallbackStrategy(s string) (CallbackStrategy, error) {
	switch CallbackStrategy(s) {
	case CallbackBlocking, CallbackBlockingWithTimeout, CallbackFireAndForget:
		return CallbackStrategy(s), nil
	}
	return "", fmt.Errorf("callback strategy %q: want one of Blocking, BlockingWithTimeout, FireAndForget", s)
}

// DefaultCallbackTimeout bounds callbacks when no timeout is configured.
const DefaultCallbackTimeout = 5 * time.Second

// DefaultMaxBackgroundCallbacks bounds the callbacks running in the
// background at once: every FireAndForget callback, and BlockingWithTimeout
// callbacks still running after their timeout.
const DefaultMaxBackgroundCallbacks = 1024

// CallbackRunner runs a PostHandlerCallback under a strategy. Background
// callbacks are bounded (a callback that ignores its context cannot pile up
// goroutines without limit) and can be awaited at drain.
type CallbackRunner struct {
	callback   PostHandlerCallback
	strategy   CallbackStrategy
	timeout    time.Duration
	serviceID  string
	metrics    *Metrics
	log        logr.Logger
	running    atomic.Int64
	slots      chan struct{} // one per background goroutine
	background sync.WaitGroup
	skipLog    *lograte.Limiter
}

// NewCallbackRunner returns nil when cb is nil; a nil runner's Run does
// nothing, so the hot path pays nothing when no callback is configured. An
// empty strategy means FireAndForget; a non-positive timeout means
// DefaultCallbackTimeout; a non-positive maxBackground means
// DefaultMaxBackgroundCallbacks.
func NewCallbackRunner(cb PostHandlerCallback, strategy CallbackStrategy, timeout time.Duration, maxBackground int,
	serviceID string, metrics *Metrics, log logr.Logger) *CallbackRunner {
	if cb == nil {
		return nil
	}
	if strategy == "" {
		strategy = CallbackFireAndForget
	}
	if timeout <= 0 {
		timeout = DefaultCallbackTimeout
	}
	if maxBackground <= 0 {
		maxBackground = DefaultMaxBackgroundCallbacks
	}
	return &CallbackRunner{callback: cb, strategy: strategy, timeout: timeout, serviceID: serviceID, metrics: metrics, log: log,
		slots: make(chan struct{}, maxBackground), skipLog: lograte.New(10, 10*time.Second)}
}

// Running is the number of callbacks still executing (including background
// ones past their timeout), for tests and diagnostics.
func (r *CallbackRunner) Running() int64 {
	if r == nil {
		return 0
	}
	return r.running.Load()
}

// Run invokes the callback for a result that is durable. It returns when the
// strategy allows: after the callback (Blocking), after the callback or the
// timeout (BlockingWithTimeout), or once the callback has a background slot
// (FireAndForget). When every background slot stays taken for the callback
// timeout, the callback is skipped and counted as timed out.
func (r *CallbackRunner) Run(step *StepMessage, result *StepExecutionResult) {
	if r == nil {
		return
	}
	switch r.strategy {
	case CallbackBlocking:
		r.invoke(context.Background(), step, result)
	case CallbackBlockingWithTimeout:
		// Copies: the callback may outlive this call.
		s, res := *step, *result
		done := make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		if !r.goBackground(step, func() {
			defer close(done)
			r.invoke(ctx, &s, &res)
		}) {
			cancel()
			return
		}
		t := time.NewTimer(r.timeout)
		select {
		case <-done:
			t.Stop()
		case <-t.C:
			r.timedOut(step)
		}
		cancel()
	default: // FireAndForget
		s, res := *step, *result
		r.goBackground(step, func() { r.runBounded(&s, &res) })
	}
}

// goBackground runs f on a new goroutine once a background slot is free,
// waiting at most the callback timeout for one. It reports whether f runs.
func (r *CallbackRunner) goBackground(step *StepMessage, f func()) bool {
	select {
	case r.slots <- struct{}{}:
	default:
		t := time.NewTimer(r.timeout)
		select {
		case r.slots <- struct{}{}:
			t.Stop()
		case <-t.C:
			r.metrics.CallbackTimeouts.Inc()
			if r.skipLog.Allow() {
				r.log.Info("post-handler callback skipped: every background slot stayed busy for the callback timeout; domain events for this step are missing",
					"serviceId", r.serviceID, "stepUuid", step.StepUUID, "maxBackground", cap(r.slots), "timeout", r.timeout,
					"suppressedSinceLast", r.skipLog.Suppressed())
			}
			return false
		}
	}
	r.background.Add(1)
	go func() {
		defer func() {
			<-r.slots
			r.background.Done()
		}()
		f()
	}()
	return true
}

// Wait waits until no callback runs in the background any more, or ctx ends;
// it returns how many were still running then. The worker's drain calls it
// so that callbacks of results settled during the drain still finish.
func (r *CallbackRunner) Wait(ctx context.Context) int {
	if r == nil {
		return 0
	}
	done := make(chan struct{})
	go func() { r.background.Wait(); close(done) }()
	select {
	case <-done:
		return 0
	case <-ctx.Done():
		return len(r.slots)
	}
}

// runBounded runs the callback in the background, cancelling its context and
// counting a timeout if it is still running after the callback timeout.
func (r *CallbackRunner) runBounded(step *StepMessage, result *StepExecutionResult) {
	ctx, cancel := context.WithCancel(context.Background())
	var settled atomic.Bool
	t := time.AfterFunc(r.timeout, func() {
		if settled.CompareAndSwap(false, true) {
			r.timedOut(step)
		}
		cancel()
	})
	r.invoke(ctx, step, result)
	if settled.CompareAndSwap(false, true) {
		t.Stop()
	}
	cancel()
}

func (r *CallbackRunner) timedOut(step *StepMessage) {
	r.log.Info("post-handler callback timed out; domain events for this step may be missing",
		"serviceId", r.serviceID, "stepUuid", step.StepUUID, "timeout", r.timeout, "strategy", string(r.strategy))
	r.metrics.CallbackTimeouts.Inc()
}

// invoke runs the callback, recovering a panic so it can never affect the step.
func (r *CallbackRunner) invoke(ctx context.Context, step *StepMessage, result *StepExecutionResult) {
	r.running.Add(1)
	defer r.running.Add(-1)
	defer func() {
		if p := recover(); p != nil {
			r.log.Error(fmt.Errorf("panic: %v", p), "post-handler callback panicked; step result unaffected",
				"serviceId", r.serviceID, "stepUuid", step.StepUUID)
			r.metrics.CallbackPanics.Inc()
		}
	}()
	r.callback.OnHandlerComplete(ctx, step, result, r.serviceID)
}
