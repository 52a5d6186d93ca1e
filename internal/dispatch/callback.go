package dispatch

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// PostHandlerCallback is the domain-event hook that runs after a step's result
// has been handed to the completion channel. It never runs for a result that
// could not be sent, and nothing it does (slowness, a panic) changes the step.
type PostHandlerCallback interface {
	OnHandlerComplete(ctx context.Context, step *StepMessage, result *StepExecutionResult, serviceID string)
}

// CallbackFunc lets a plain function serve as a PostHandlerCallback.
type CallbackFunc func(ctx context.Context, step *StepMessage, result *StepExecutionResult, serviceID string)

// OnHandlerComplete calls f.
func (f CallbackFunc) OnHandlerComplete(ctx context.Context, step *StepMessage, result *StepExecutionResult, serviceID string) {
	f(ctx, step, result, serviceID)
}

// CallbackStrategy chooses how long the completing caller waits for the
// callback. It matters most for foreign threads (seed risk 4): a callback that
// blocks on a lock the foreign caller holds deadlocks under Blocking.
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

// CallbackRunner runs a PostHandlerCallback under a strategy. Both the native
// dispatch service and the FFI channel use it, so the guarantees are the
// same on both paths.
type CallbackRunner struct {
	callback  PostHandlerCallback
	strategy  CallbackStrategy
	timeout   time.Duration
	serviceID string
	metrics   *Metrics
	log       logr.Logger
	running   atomic.Int64
}

// NewCallbackRunner returns nil when cb is nil; a nil runner's Run does
// nothing, so the hot path pays nothing when no callback is configured. An
// empty strategy means FireAndForget; a non-positive timeout means
// DefaultCallbackTimeout.
func NewCallbackRunner(cb PostHandlerCallback, strategy CallbackStrategy, timeout time.Duration, serviceID string, metrics *Metrics, log logr.Logger) *CallbackRunner {
	if cb == nil {
		return nil
	}
	if strategy == "" {
		strategy = CallbackFireAndForget
	}
	if timeout <= 0 {
		timeout = DefaultCallbackTimeout
	}
	return &CallbackRunner{callback: cb, strategy: strategy, timeout: timeout, serviceID: serviceID, metrics: metrics, log: log}
}

// Running is the number of callbacks still executing (including background
// ones past their timeout), for tests and diagnostics.
func (r *CallbackRunner) Running() int64 {
	if r == nil {
		return 0
	}
	return r.running.Load()
}

// Run invokes the callback for a result that was already sent. It returns
// when the strategy allows: after the callback (Blocking), after the callback
// or the timeout (BlockingWithTimeout), or at once (FireAndForget).
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
		go func() {
			defer close(done)
			r.invoke(ctx, &s, &res)
		}()
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
		go r.runBounded(&s, &res)
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
