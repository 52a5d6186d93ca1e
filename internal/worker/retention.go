package worker

import (
	"context"
	"time"

	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
)

// retentionMaxBatches bounds one retention pass per state; a larger backlog
// is worked off over the next passes.
const retentionMaxBatches = 100

// retention deletes finished steps past their ages every interval until ctx
// ends ([worker.queue.retention]). Every worker runs it; the queue's
// advisory lock lets one of them delete at a time.
func (w *Worker) retention(ctx context.Context) {
	rc := w.cfg.Worker.Queue.Retention
	if !rc.Enabled {
		return
	}
	policy := queue.RetentionPolicy{CompletedAfter: rc.CompletedAfter(), DeadAfter: rc.DeadAfter(),
		BatchSize: rc.BatchSize, MaxBatches: retentionMaxBatches}
	t := time.NewTicker(rc.Interval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		res, err := w.queue.RunRetention(ctx, policy)
		switch {
		case err != nil && ctx.Err() == nil:
			w.log.Error(err, "retention pass failed; retrying next interval", "deleted", res.Completed+res.Dead)
		case res.Completed+res.Dead > 0:
			w.log.V(1).Info("retention pass", "completedDeleted", res.Completed, "deadDeleted", res.Dead,
				"batches", res.Batches, "took", time.Since(start))
		}
	}
}
