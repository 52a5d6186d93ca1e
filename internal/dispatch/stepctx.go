package dispatch

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// stepContext is the context a handler runs under. The standard timer
// context costs a parent registration, a cancel context and a timer per step,
// which was most of the dispatch core's overhead; this one is a plain struct
// embedded in the step's state, its Done channel is made only if the handler
// asks for it, and it has no parent: the service cancels it itself at the
// step's deadline or at the drain deadline.
type stepContext struct {
	// deadline is a monoEpoch offset, 0 until the handler starts; the
	// watchdog reads it concurrently.
	deadline atomic.Int64
	mu       sync.Mutex
	done     chan struct{}
	err      error
	after    *afterFunc // functions registered through AfterFunc, newest first
}

// afterFunc is a function registered through AfterFunc.
type afterFunc struct {
	f       func()
	stopped bool
	next    *afterFunc
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Deadline is the step's deadline. It carries a monotonic reading, so
// time.Until and comparisons with time.Now are exact.
func (c *stepContext) Deadline() (time.Time, bool) {
	return monoEpoch.Add(time.Duration(c.deadline.Load())), true
}

// Done returns a channel closed when the step is cancelled.
func (c *stepContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		if c.err != nil {
			c.done = closedChan
		} else {
			c.done = make(chan struct{})
		}
	}
	return c.done
}

// Err is nil until the step is cancelled, then DeadlineExceeded or Canceled.
func (c *stepContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Value carries nothing: a step context has no parent.
func (c *stepContext) Value(any) any { return nil }

// AfterFunc lets contexts derived from this one (context.WithTimeout(ctx, …)
// inside a handler) follow its cancellation without a goroutine each; the
// context package looks for this method.
func (c *stepContext) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		go f()
		return func() bool { return false }
	}
	a := &afterFunc{f: f, next: c.after}
	c.after = a
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if a.stopped {
			return false
		}
		a.stopped = true
		return c.err == nil
	}
}

// cancel ends the context with err; later calls do nothing. It reports
// whether this call cancelled it.
func (c *stepContext) cancel(err error) bool {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return false
	}
	c.err = err
	if c.done == nil {
		c.done = closedChan
	} else {
		close(c.done)
	}
	after := c.after
	c.after = nil
	c.mu.Unlock()
	for a := after; a != nil; a = a.next {
		c.mu.Lock()
		run := !a.stopped
		a.stopped = true
		c.mu.Unlock()
		if run {
			go a.f()
		}
	}
	return true
}

var _ context.Context = (*stepContext)(nil)
