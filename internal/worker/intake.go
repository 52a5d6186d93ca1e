package worker

import (
	"context"
	"time"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
)

// intake claims steps while load shedding allows and feeds them to the
// dispatch channel, until ctx ends. It wakes on LISTEN/NOTIFY, on freed
// capacity (when it had to stop for capacity) and on the poll interval.
func (w *Worker) intake(ctx context.Context) {
	qc := w.cfg.Worker.Queue
	listener := w.queue.Listen(ctx, qc.Namespaces)
	defer listener.Close()
	poll := time.NewTicker(qc.PollInterval())
	defer poll.Stop()
	backoff := qc.PollInterval()
	for ctx.Err() == nil {
		room := w.room()
		if room > 0 {
			steps, err := w.claim(ctx, room)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				w.log.Error(err, "claiming steps failed; retrying", "backoff", backoff)
				if !sleepCtx(ctx, backoff) {
					return
				}
				backoff = min(2*backoff, 10*time.Second)
				continue
			}
			backoff = qc.PollInterval()
			if !w.feed(ctx, steps) {
				return
			}
			if len(steps) == room {
				continue // a full batch: more is probably waiting
			}
		}
		// Freed capacity matters only when capacity was what stopped us;
		// otherwise the queue is empty and we wait for a notification.
		var freed <-chan struct{}
		if room == 0 {
			freed = w.capacityFreed
		}
		select {
		case <-ctx.Done():
			return
		case <-listener.C():
		case <-poll.C:
		case <-freed:
		}
	}
}

// claimTimeout bounds one claim statement.
const claimTimeout = 30 * time.Second

// claim runs one claim statement to its end even when ctx (the worker's
// run) ends meanwhile, so the worker always learns which steps it claimed:
// feed then returns them to the queue. Cancelling the statement instead
// would abandon its outcome: the client gives up at once, but a statement
// the server has not started yet (a busy machine) still runs and commits,
// and could claim, after the drain released them, steps the stopped worker
// never hears of; they would sit claimed until their visibility expired.
//
// It does end at the drain deadline (w.hard): a claim still running then,
// say against an unreachable database, must not hold up the exit; whatever
// it claimed expires and is redelivered.
func (w *Worker) claim(ctx context.Context, room int) ([]queue.ClaimedStep, error) {
	qc := w.cfg.Worker.Queue
	claimCtx, cancel := context.WithTimeout(w.hard, claimTimeout)
	defer cancel()
	return w.queue.Claim(claimCtx, qc.Namespaces, w.id, room, qc.VisibilityTimeout())
}

// room is how many steps may be claimed now: nothing while load shedding
// refuses, else at most a batch, no more than the dispatch buffer can take,
// and no more than the permits below the refuse threshold minus every claim
// still held (waiting, running or being settled). Counting held claims
// rather than channel and semaphore occupancy is exact: a step the dispatch
// loop has just taken is momentarily in neither.
func (w *Worker) room() int {
	if !w.checker.CanAccept() {
		return 0
	}
	limit := w.checker.Headroom() + w.svc.InFlight() // permits below the refuse threshold
	return max(0, min(w.cfg.Worker.Queue.BatchSize, cap(w.dispatchCh)-len(w.dispatchCh), limit-w.claims.len()))
}

// feed hands claimed steps to the dispatch core. If ctx ends first, the steps
// not yet handed over go straight back to the queue.
func (w *Worker) feed(ctx context.Context, steps []queue.ClaimedStep) bool {
	w.claims.add(steps)
	now := time.Now()
	for i, s := range steps {
		m := message(s)
		m.QueuedAt = now
		if w.consumer.admit(ctx, &m) {
			select {
			case w.dispatchCh <- m:
				continue
			case <-ctx.Done():
				w.consumer.unadmit(&m)
			}
		}
		rest := make([]dispatch.StepMessage, 0, len(steps)-i)
		for _, r := range steps[i:] {
			rest = append(rest, message(r))
		}
		if err := w.release(w.hard, rest); err != nil {
			w.log.Error(err, "returning claimed steps at shutdown")
		}
		return false
	}
	return true
}

// message turns a claimed queue row into what a handler receives.
func message(s queue.ClaimedStep) dispatch.StepMessage {
	m := dispatch.StepMessage{
		EventID:  eventID(s.Claim()),
		StepUUID: s.StepUUID.String(),
		TaskUUID: s.TaskUUID.String(),
		Handler:  s.Handler,
		Queue:    s.Queue,
		Payload:  s.Payload,
		Attempt:  s.Attempt,
		Timeout:  s.Timeout,
		Receipt:  dispatch.Receipt{ID: s.ID, Token: s.Token},
	}
	if !s.CorrelationID.IsZero() {
		m.CorrelationID = s.CorrelationID.String()
	}
	if s.Timeout > 0 {
		m.TimeoutMs = s.Timeout.Milliseconds()
	}
	return m
}

// heartbeat extends the visibility of every held claim each heartbeat
// interval, so a long handler keeps its step. A claim that was lost (it
// expired and another worker took it) is dropped; its result will be fenced.
//
// Claims received less than heartbeatMinAge ago are left for the next beat:
// their visibility was just set, and at high throughput they are the
// thousands of steps whose results are being settled at that very moment,
// whose rows the heartbeat would otherwise lock for a second, stalling the
// settles. A claim is still extended within one interval plus
// heartbeatMinAge of being received, which heartbeatMinAge keeps well inside
// the visibility timeout.
func (w *Worker) heartbeat(ctx context.Context) {
	qc := w.cfg.Worker.Queue
	t := time.NewTicker(qc.HeartbeatInterval())
	defer t.Stop()
	minAge := heartbeatMinAge(qc.HeartbeatInterval(), qc.VisibilityTimeout())
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		claims := w.claims.snapshot(minAge)
		if len(claims) == 0 {
			continue
		}
		lost, err := w.queue.Extend(ctx, claims, qc.VisibilityTimeout())
		if err != nil {
			if ctx.Err() == nil {
				w.log.Error(err, "heartbeat failed; claims may expire", "claims", len(claims))
			}
			continue
		}
		if len(lost) > 0 {
			w.claims.remove(lost...)
			w.log.Info("claims lost before their results were settled; the steps were re-claimed elsewhere", "lost", len(lost))
		}
	}
}

// heartbeatMinAge is how old a claim must be for a heartbeat to extend it: a
// quarter of the interval, at most one second, and at most half of the slack
// between interval and visibility, so that the first extension (at the
// latest interval + minAge after the claim) still comes before the claim
// expires with half the margin an unfiltered heartbeat has.
func heartbeatMinAge(interval, visibility time.Duration) time.Duration {
	return max(0, min(interval/4, time.Second, (visibility-interval)/2))
}

// sleepCtx waits d or until ctx ends, reporting whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
