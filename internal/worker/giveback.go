package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
)

// undelivered takes a completion whose result the dispatch service could not
// hand to the completion channel within the send timeout (the completion
// processor is stalled, usually on the database). The claim leaves the held
// set at once, so the heartbeat stops extending it and its intake slot is
// free again; giveBackLoop then settles the step as a retryable
// result_undelivered failure, so it is retried after its backoff with the
// attempt counted. If that settle cannot happen either, the claim expires
// and the queue redelivers the step: it is held neither forever nor lost.
func (w *Worker) undelivered(c *dispatch.Completion) {
	outcome := string(c.Result.Outcome())
	c.Result = dispatch.FailureResult(c.Message.StepUUID,
		fmt.Sprintf("Result not delivered within completion_send_timeout_ms (%dms); the step is retried",
			w.cfg.Worker.MPSCChannels.HandlerDispatch.CompletionSendTimeoutMS),
		dispatch.ErrorTypeResultUndelivered, true, 0, map[string]any{"undelivered_outcome": outcome})
	c.Result.Metadata.WorkerID = w.id
	w.claims.remove(receiptClaim(c.Message.Receipt))
	w.signalCapacity()
	select {
	case w.givenBack <- c:
	default:
		// More undelivered results than the completion buffer holds: this
		// one's claim simply expires.
	}
}

// giveBackLoop settles the completions undelivered queued, in batches, until
// ctx ends. A batch that cannot be settled is retried until the claims it
// holds would have expired anyway.
func (w *Worker) giveBackLoop(ctx context.Context) {
	batch := make([]*dispatch.Completion, 0, 256)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case c := <-w.givenBack:
			batch = append(batch, c)
		}
	fill:
		for len(batch) < cap(batch) {
			select {
			case c := <-w.givenBack:
				batch = append(batch, c)
			default:
				break fill
			}
		}
		giveUp := time.Now().Add(w.cfg.Worker.Queue.VisibilityTimeout())
		for wait := 50 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
			err := w.Persist(ctx, batch)
			if err == nil {
				break
			}
			if time.Now().After(giveUp) {
				w.log.Error(err, "giving undelivered results back failed; their claims expire and the queue redelivers the steps",
					"steps", len(batch))
				break
			}
			if !sleepCtx(ctx, wait) {
				return
			}
		}
		clear(batch)
	}
}

// signalCapacity wakes an intake that stopped for lack of room.
func (w *Worker) signalCapacity() {
	select {
	case w.capacityFreed <- struct{}{}:
	default:
	}
}
