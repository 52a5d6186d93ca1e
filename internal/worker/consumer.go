package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
	"github.com/seed-a17b38e7/workerpool-operator/internal/ffi"
)

// consumer is what takes steps off the dispatch channel: the native dispatch
// service, or the FFI channel when the pool's handlers are foreign. Exactly
// one of them consumes, as in upstream Tasker.
type consumer interface {
	// run consumes until stop is called (or ctx ends).
	run(ctx context.Context)
	// admit prepares a claimed step before it is put on the dispatch
	// channel; false means ctx ended first and the step must go back.
	admit(ctx context.Context, m *dispatch.StepMessage) bool
	// unadmit undoes admit for a step that never reached the channel.
	unadmit(m *dispatch.StepMessage)
	// stop takes no more steps and hands back, at once, every step that
	// never reached a handler.
	stop() (unstarted []dispatch.StepMessage)
	// finish waits for steps in progress until ctx ends and hands back
	// those a handler held at that deadline without finishing them
	// (abandoned: their attempt happened) and any that never reached one
	// (unstarted).
	finish(ctx context.Context) (abandoned, unstarted []dispatch.StepMessage, err error)
	// quiesce waits up to d until nothing can send on the completion
	// channel any more, and reports whether that happened.
	quiesce(d time.Duration) bool
}

// native runs Go handlers through the HandlerDispatchService.
type native struct {
	svc *dispatch.HandlerDispatchService
}

func (n native) run(ctx context.Context) { _ = n.svc.Run(ctx) }

// admit is free: the service takes a permit itself before a handler starts.
func (n native) admit(context.Context, *dispatch.StepMessage) bool { return true }

func (n native) unadmit(*dispatch.StepMessage) {}

func (n native) stop() []dispatch.StepMessage { return n.svc.StopIntake() }

// finish waits for running handlers; at the deadline their contexts are
// cancelled and their (retryable) results still settle their steps, so
// nothing is abandoned here.
func (n native) finish(ctx context.Context) ([]dispatch.StepMessage, []dispatch.StepMessage, error) {
	rep, err := n.svc.Shutdown(ctx)
	if err != nil {
		err = fmt.Errorf("%w (%d handlers cancelled)", err, rep.Cancelled)
	}
	return nil, rep.Unstarted, err
}

func (n native) quiesce(d time.Duration) bool { return waitFor(n.svc.Wait, d) }

// foreign serves foreign handlers through the FFI channel; run is its
// timeout sweeper and starvation check.
type foreign struct {
	ch      *ffi.Channel
	permits *dispatch.Semaphore
}

func (f foreign) run(ctx context.Context) { f.ch.Run(ctx) }

// admit takes the permit the event holds until the FFI channel settles it.
// The intake claimed no more than the permits below the refuse threshold,
// so one is normally free at once.
func (f foreign) admit(ctx context.Context, m *dispatch.StepMessage) bool {
	p, err := f.permits.Acquire(ctx)
	if err != nil {
		return false
	}
	m.Permit = p
	return true
}

func (f foreign) unadmit(m *dispatch.StepMessage) { f.permits.Release(m.Permit) }

// stop hands back what no poller took (the intake has stopped, so the
// dispatch channel only drains).
func (f foreign) stop() []dispatch.StepMessage { return f.ch.TakeUnpolled() }

// finish waits for pollers to complete what they hold and at the deadline
// takes back whatever is still pending (a later Complete of it is refused).
func (f foreign) finish(ctx context.Context) ([]dispatch.StepMessage, []dispatch.StepMessage, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var err error
	for f.ch.PendingCount() > 0 && err == nil {
		select {
		case <-t.C:
		case <-ctx.Done():
			err = fmt.Errorf("drain deadline passed with %d FFI events pending: %w", f.ch.PendingCount(), ctx.Err())
		}
	}
	polled, unpolled := f.ch.Stop()
	return polled, unpolled, err
}

func (f foreign) quiesce(d time.Duration) bool { return waitFor(f.ch.WaitDeliveries, d) }
