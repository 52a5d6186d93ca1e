package dispatch

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newRunner(t *testing.T, cb PostHandlerCallback, s CallbackStrategy, timeout time.Duration) (*CallbackRunner, *Metrics) {
	return newBoundedRunner(t, cb, s, timeout, 0)
}

func newBoundedRunner(t *testing.T, cb PostHandlerCallback, s CallbackStrategy, timeout time.Duration, maxBackground int) (*CallbackRunner, *Metrics) {
	t.Helper()
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return NewCallbackRunner(cb, s, timeout, maxBackground, "test", m, testLogger(t)), m
}

// blocker is a callback that blocks until released (ignoring its context) and
// reports when it started and finished.
type blocker struct {
	started, finished, release chan struct{}
}

func newBlocker() *blocker {
	return &blocker{started: make(chan struct{}, 1), finished: make(chan struct{}, 1), release: make(chan struct{})}
}

func (b *blocker) OnHandlerComplete(context.Context, *StepMessage, *StepExecutionResult, string) {
	b.started <- struct{}{}
	<-b.release
	b.finished <- struct{}{}
}

func wait(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestCallbackTimeoutBoundsTheWait(t *testing.T) {
	b := newBlocker()
	defer close(b.release)
	r, m := newRunner(t, b, CallbackBlockingWithTimeout, 50*time.Millisecond)
	m0 := msg(1, "x")
	res := SuccessResult("step-1", nil, 0)
	start := time.Now()
	r.Run(&m0, &res)
	el := time.Since(start)
	if el < 50*time.Millisecond || el > 2*time.Second {
		t.Fatalf("BlockingWithTimeout returned after %v, want about 50ms", el)
	}
	if got := testutil.ToFloat64(m.CallbackTimeouts); got != 1 {
		t.Fatalf("callback timeouts %v", got)
	}
}

// FireAndForget: the caller is back within milliseconds while a 10 s
// callback still runs; the timeout is still counted in the background.
func TestFireAndForgetReturnsAtOnce(t *testing.T) {
	b := newBlocker()
	r, m := newRunner(t, b, CallbackFireAndForget, 30*time.Millisecond)
	m0 := msg(1, "x")
	res := SuccessResult("step-1", nil, 0)
	start := time.Now()
	r.Run(&m0, &res)
	if el := time.Since(start); el > 20*time.Millisecond {
		t.Fatalf("FireAndForget took %v", el)
	}
	wait(t, b.started, "background callback to start")
	if r.Running() != 1 {
		t.Fatalf("running %d", r.Running())
	}
	waitFor(t, "timeout counted", 5*time.Second, func() bool { return testutil.ToFloat64(m.CallbackTimeouts) == 1 })
	close(b.release)
	wait(t, b.finished, "callback to finish")
	waitFor(t, "runner idle", 5*time.Second, func() bool { return r.Running() == 0 })
	if got := testutil.ToFloat64(m.CallbackTimeouts); got != 1 {
		t.Fatalf("timeouts %v after finish", got)
	}
}

func TestFireAndForgetFastCallbackIsNotATimeout(t *testing.T) {
	done := make(chan struct{})
	r, m := newRunner(t, CallbackFunc(func(context.Context, *StepMessage, *StepExecutionResult, string) { close(done) }),
		CallbackFireAndForget, time.Second)
	m0 := msg(1, "x")
	res := SuccessResult("step-1", nil, 0)
	r.Run(&m0, &res)
	wait(t, done, "callback")
	waitFor(t, "runner idle", 5*time.Second, func() bool { return r.Running() == 0 })
	if got := testutil.ToFloat64(m.CallbackTimeouts); got != 0 {
		t.Fatalf("timeouts %v", got)
	}
}

func TestBlockingWaitsForCallback(t *testing.T) {
	b := newBlocker()
	r, _ := newRunner(t, b, CallbackBlocking, time.Millisecond)
	m0 := msg(1, "x")
	res := SuccessResult("step-1", nil, 0)
	returned := make(chan struct{})
	go func() { r.Run(&m0, &res); close(returned) }()
	wait(t, b.started, "callback start")
	select {
	case <-returned:
		t.Fatal("Blocking returned before the callback finished")
	default:
	}
	close(b.release)
	wait(t, returned, "Run to return")
	wait(t, b.finished, "callback finished")
}

// The deadlock to avoid: the caller holds a lock the callback needs. With
// FireAndForget and BlockingWithTimeout the caller gets control back, releases
// the lock, and the callback then completes.
func TestNoDeadlockWhenCallbackNeedsCallersLock(t *testing.T) {
	for _, s := range []CallbackStrategy{CallbackFireAndForget, CallbackBlockingWithTimeout} {
		t.Run(string(s), func(t *testing.T) {
			var mu sync.Mutex
			done := make(chan struct{})
			r, _ := newRunner(t, CallbackFunc(func(context.Context, *StepMessage, *StepExecutionResult, string) {
				mu.Lock()
				defer mu.Unlock()
				close(done)
			}), s, 50*time.Millisecond)
			m0 := msg(1, "x")
			res := SuccessResult("step-1", nil, 0)
			mu.Lock()
			returned := make(chan struct{})
			go func() { r.Run(&m0, &res); close(returned) }()
			wait(t, returned, "Run to return while the caller holds the lock")
			mu.Unlock()
			wait(t, done, "callback to take the lock and finish")
		})
	}
}

func TestCallbackPanicIsRecovered(t *testing.T) {
	for _, s := range []CallbackStrategy{CallbackBlocking, CallbackBlockingWithTimeout, CallbackFireAndForget} {
		t.Run(string(s), func(t *testing.T) {
			r, m := newRunner(t, CallbackFunc(func(context.Context, *StepMessage, *StepExecutionResult, string) { panic("cb") }), s, time.Second)
			m0 := msg(1, "x")
			res := SuccessResult("step-1", nil, 0)
			r.Run(&m0, &res)
			waitFor(t, "panic counted", 5*time.Second, func() bool { return testutil.ToFloat64(m.CallbackPanics) == 1 })
		})
	}
}

func TestNilCallbackRunnerIsNoop(t *testing.T) {
	r, _ := newRunner(t, nil, CallbackBlocking, 0)
	if r != nil {
		t.Fatal("want nil runner for nil callback")
	}
	m0 := msg(1, "x")
	res := SuccessResult("s", nil, 0)
	r.Run(&m0, &res) // must not panic
	if r.Running() != 0 {
		t.Fatal("running")
	}
}

func TestParseCallbackStrategy(t *testing.T) {
	for _, ok := range []string{"Blocking", "BlockingWithTimeout", "FireAndForget"} {
		if _, err := ParseCallbackStrategy(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	if _, err := ParseCallbackStrategy("blocking"); err == nil || !contains(err.Error(), "want one of Blocking, BlockingWithTimeout, FireAndForget") {
		t.Errorf("bad strategy error: %v", err)
	}
}

// FireAndForget callbacks are bounded: with every background slot held by a
// callback that ignores its context, the next one waits at most the callback
// timeout, is then skipped and counted; Wait returns once the background
// callbacks have finished.
func TestFireAndForgetIsBoundedAndAwaited(t *testing.T) {
	var mu sync.Mutex
	ran := 0
	release := make(chan struct{})
	cb := CallbackFunc(func(context.Context, *StepMessage, *StepExecutionResult, string) {
		mu.Lock()
		ran++
		mu.Unlock()
		<-release // ignores its context
	})
	r, m := newBoundedRunner(t, cb, CallbackFireAndForget, 50*time.Millisecond, 2)
	step, res := &StepMessage{StepUUID: "s"}, &StepExecutionResult{StepUUID: "s", Success: true}
	r.Run(step, res)
	r.Run(step, res)
	waitFor(t, "two callbacks running", 5*time.Second, func() bool { return r.Running() == 2 })
	r.Run(step, res) // no slot frees up within the timeout: skipped
	if r.Running() != 2 {
		t.Fatalf("%d callbacks running, want at most 2", r.Running())
	}
	// Two timed out in the background, one skipped.
	waitFor(t, "timeouts counted", 5*time.Second, func() bool { return testutil.ToFloat64(m.CallbackTimeouts) == 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	if left := r.Wait(ctx); left != 2 {
		t.Fatalf("Wait with callbacks still blocked: %d left, want 2", left)
	}
	cancel()
	close(release)
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if left := r.Wait(ctx); left != 0 {
		t.Fatalf("Wait after release: %d left", left)
	}
	mu.Lock()
	defer mu.Unlock()
	if ran != 2 {
		t.Fatalf("callback ran %d times, want 2 (the third was skipped)", ran)
	}
}
