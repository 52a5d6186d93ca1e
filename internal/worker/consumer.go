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
	// stop takes no more steps and hands back, at once, every step that
	// never reached a handler.
	stop() (unstarted []dispatch.StepMessage)
	// finish waits for steps in progress until ctx ends and hands back any
	// a handler still held at that deadline.
	finish(ctx context.Context) (abandoned []dispatch.StepMessage, err error)
	// quiesce waits up to d until nothing can send on the completion
	// channel any more, and reports whether that happened.
	quiesce(d time.Duration) bool
}

// native runs Go handlers through the HandlerDispatchService.
type native struct {
	svc *dispatch.HandlerDispatchService
}

func (n native) run(ctx context.Context) { _ = n.svc.Run(ctx) }

func (n native) stop() []dispatch.StepMessage { return n.svc.StopIntake() }

// finish waits for running handlers; at the deadline their contexts are
// cancelled and their (retryable) results still settle their steps.
func (n native) finish(ctx context.Context) ([]dispatch.StepMessage, error) {
	rep, err := n.svc.Shutdown(ctx)
	if err != nil {
		err = fmt.Errorf("%w (%d handlers cancelled)", err, rep.Cancelled)
	}
	return rep.Unstarted, err
}

func (n native) quiesce(d time.Duration) bool { return waitFor(n.svc.Wait, d) }

// foreign serves foreign handlers through the FFI channel; run is its
// timeout sweeper and starvation check.
type foreign struct {
	ch       *ffi.Channel
	dispatch chan dispatch.StepMessage
}

func (f foreign) run(ctx context.Context) { f.ch.Run(ctx) }

// stop hands back what no poller took (the intake has stopped, so the
// dispatch channel only drains). Pollers may still be polling, so each
// receive is non-blocking: a length check followed by a receive would block
// for ever if a poller took the last event in between.
func (f foreign) stop() []dispatch.StepMessage {
	var unstarted []dispatch.StepMessage
	for {
		select {
		case m := <-f.dispatch:
			unstarted = append(unstarted, m)
		default:
			return unstarted
		}
	}
}

// finish waits for pollers to complete what they hold and at the deadline
// takes back whatever is still pending (a later Complete of it is refused).
func (f foreign) finish(ctx context.Context) ([]dispatch.StepMessage, error) {
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
	return f.ch.Stop(), err
}

func (f foreign) quiesce(d time.Duration) bool { return waitFor(f.ch.WaitDeliveries, d) }
