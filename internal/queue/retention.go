package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// retentionLockKey is the session advisory lock a retention pass holds, so
// that however many workers run retention on a schedule, one deletes at a
// time and the others skip their turn. Arbitrary but fixed: "taskerq2".
const retentionLockKey int64 = 0x7461736b65727132

// purgeSQL deletes one batch of finished steps of one state, oldest first,
// through the partial index on completed_at (migration 3). The state is a
// literal so that the planner can always prove the index's predicate.
// SKIP LOCKED: a row someone is looking at (an operator requeueing a dead
// step) is left for the next pass.
const purgeSQL = `
WITH doomed AS (
	SELECT id FROM tasker_steps
	WHERE state = '%s' AND completed_at < now() - $1::bigint * interval '1 microsecond'
	ORDER BY completed_at
	LIMIT $2
	FOR UPDATE SKIP LOCKED
)
DELETE FROM tasker_steps s USING doomed WHERE s.id = doomed.id`

var purgeSQLByState = map[State]string{
	StateCompleted: fmt.Sprintf(purgeSQL, StateCompleted),
	StateDead:      fmt.Sprintf(purgeSQL, StateDead),
}

// execer is what a purge batch runs on: the pool, or the connection that
// holds the retention lock.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Purge deletes up to limit steps in state (completed or dead) whose
// completed_at is more than olderThan ago, oldest first, and returns how many
// it deleted. One statement, so its locks are held only for one batch.
func (q *Queue) Purge(ctx context.Context, state State, olderThan time.Duration, limit int) (int64, error) {
	return q.purge(ctx, q.pool, state, olderThan, limit)
}

func (q *Queue) purge(ctx context.Context, db execer, state State, olderThan time.Duration, limit int) (int64, error) {
	sql, ok := purgeSQLByState[state]
	if !ok {
		return 0, fmt.Errorf("purge %s steps: only %s and %s steps can be purged", state, StateCompleted, StateDead)
	}
	if limit <= 0 {
		return 0, nil
	}
	tag, err := db.Exec(ctx, sql, olderThan.Microseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("purge %s steps older than %v: %w", state, olderThan, err)
	}
	n := tag.RowsAffected()
	q.m.retentionDeleted.WithLabelValues(string(state)).Add(float64(n))
	return n, nil
}

// RetentionPolicy says which finished steps a retention pass deletes.
type RetentionPolicy struct {
	// CompletedAfter: completed steps whose completed_at is older than this
	// are deleted.
	CompletedAfter time.Duration
	// DeadAfter: dead steps older than this are deleted (keep them long
	// enough for someone to look at them).
	DeadAfter time.Duration
	// BatchSize is the most rows one DELETE removes.
	BatchSize int
	// MaxBatches bounds one pass per state, so a large backlog is worked
	// off over several passes instead of one long one.
	MaxBatches int
}

// RetentionResult reports one retention pass.
type RetentionResult struct {
	// Skipped: another worker held the retention lock, so this pass did
	// nothing.
	Skipped bool
	// Completed and Dead count the rows deleted.
	Completed, Dead int64
	// Batches counts the DELETE statements run.
	Batches int
}

// RunRetention deletes finished steps older than the policy's ages, in
// batches of at most BatchSize rows, while holding a session advisory lock:
// if another worker holds it, the pass is skipped. A state's deletion stops
// at the first batch that comes back short (nothing older is left) or after
// MaxBatches.
func (q *Queue) RunRetention(ctx context.Context, p RetentionPolicy) (RetentionResult, error) {
	var res RetentionResult
	if p.BatchSize < 1 || p.MaxBatches < 1 || p.CompletedAfter <= 0 || p.DeadAfter <= 0 {
		return res, fmt.Errorf("retention policy %+v: ages, batch size and batches must be positive", p)
	}
	conn, err := q.pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("retention: %w", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, retentionLockKey).Scan(&locked); err != nil {
		return res, fmt.Errorf("retention: take advisory lock: %w", err)
	}
	if !locked {
		res.Skipped = true
		return res, nil
	}
	defer func() {
		// A connection whose unlock failed is closed, which drops the lock
		// with the session rather than returning a locked session to the pool.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, retentionLockKey); err != nil {
			_ = conn.Conn().Close(uctx)
		}
	}()
	for _, s := range []struct {
		state State
		age   time.Duration
		n     *int64
	}{{StateCompleted, p.CompletedAfter, &res.Completed}, {StateDead, p.DeadAfter, &res.Dead}} {
		for range p.MaxBatches {
			n, err := q.purge(ctx, conn, s.state, s.age, p.BatchSize)
			res.Batches++
			*s.n += n
			if err != nil {
				return res, fmt.Errorf("retention: %w", err)
			}
			if n < int64(p.BatchSize) {
				break
			}
		}
	}
	return res, nil
}
