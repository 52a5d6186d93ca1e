package worker

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
)

// Persist is the completion processor's sink: it settles a batch of results
// in the queue in one statement. Only after it returns nil are the steps
// acknowledged; on error the processor retries the whole batch, which the
// fencing tokens make idempotent.
func (w *Worker) Persist(ctx context.Context, batch []*dispatch.Completion) error {
	cs := make([]queue.Completion, len(batch))
	for i, c := range batch {
		body, err := json.Marshal(&c.Result)
		if err != nil {
			// A result whose handler output is not valid JSON: keep the
			// step, record why.
			c.Result = dispatch.FailureResult(c.Result.StepUUID, fmt.Sprintf("result is not valid JSON: %v", err),
				dispatch.ErrorTypeHandlerError, false, 0, nil)
			body, _ = json.Marshal(&c.Result)
		}
		cs[i] = queue.Completion{
			Claim:   receiptClaim(c.Message.Receipt),
			Outcome: queue.Outcome(c.Result.Outcome()),
		}
		if c.Result.Success {
			cs[i].Result = body
		} else {
			cs[i].Error = body
		}
	}
	res, err := w.queue.Complete(ctx, cs)
	if err != nil {
		return fmt.Errorf("settle %d step results: %w", len(cs), err)
	}
	claims := make([]queue.Claim, len(res))
	for i, r := range res {
		claims[i] = r.Claim
		switch {
		case r.Err != nil:
			w.log.Error(r.Err, "step result rejected by the queue", "id", r.ID)
		case !r.Applied:
			w.log.V(1).Info("step result fenced out: the step was re-claimed after this claim expired", "id", r.ID)
		}
	}
	w.claims.remove(claims...)
	select {
	case w.capacityFreed <- struct{}{}:
	default:
	}
	return nil
}

func receiptClaim(r dispatch.Receipt) queue.Claim { return queue.Claim{ID: r.ID, Token: r.Token} }
