package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// ErrNotFound is returned by Get for an id that does not exist.
var ErrNotFound = errors.New("step not found")

// QueueStats counts one queue's steps by state, for tests, the CLI and
// readiness reporting.
type QueueStats struct {
	// Queue is the queue's name.
	Queue string
	// Ready steps are visible now and waiting for a claim.
	Ready int64
	// Scheduled steps are ready but not yet visible (delayed, or in retry
	// backoff).
	Scheduled int64
	// Claimed steps are held by a worker (including expired claims awaiting
	// redelivery, counted again in Expired).
	Claimed int64
	// Expired claims passed their visibility without acknowledgement and
	// will be redelivered by the next Claim.
	Expired int64
	// Completed steps succeeded.
	Completed int64
	// Dead steps failed for good; their last_error says why.
	Dead int64
	// OldestReadyAge is how long the oldest claimable step has waited.
	OldestReadyAge time.Duration
}

const statsSQL = `
SELECT queue,
	count(*) FILTER (WHERE state = 'ready' AND visible_at <= now()),
	count(*) FILTER (WHERE state = 'ready' AND visible_at > now()),
	count(*) FILTER (WHERE state = 'claimed'),
	count(*) FILTER (WHERE state = 'claimed' AND visible_at <= now()),
	count(*) FILTER (WHERE state = 'completed'),
	count(*) FILTER (WHERE state = 'dead'),
	coalesce(extract(epoch FROM now() - min(visible_at) FILTER (
		WHERE state IN ('ready', 'claimed') AND visible_at <= now())), 0)::float8
FROM tasker_steps
GROUP BY queue
ORDER BY queue`

// Stats counts every queue's steps by state. It scans the whole table
// (completed steps included), so it is for tests and operators, not for a
// hot loop; ReadBacklog is the cheap one, for autoscaling.
func (q *Queue) Stats(ctx context.Context) (map[string]QueueStats, error) {
	rows, err := q.pool.Query(ctx, statsSQL)
	if err != nil {
		return nil, fmt.Errorf("queue stats: %w", err)
	}
	defer rows.Close()
	out := map[string]QueueStats{}
	for rows.Next() {
		var s QueueStats
		var age float64
		if err := rows.Scan(&s.Queue, &s.Ready, &s.Scheduled, &s.Claimed, &s.Expired, &s.Completed, &s.Dead, &age); err != nil {
			return nil, fmt.Errorf("queue stats: %w", err)
		}
		s.OldestReadyAge = time.Duration(max(age, 0) * float64(time.Second))
		out[s.Queue] = s
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("queue stats: %w", err)
	}
	return out, nil
}

// Step is a full row of tasker_steps, for inspection (tests, CLI, debugging
// a dead step). Times that are not set are zero.
type Step struct {
	// ID is the row id.
	ID int64
	// Queue is the queue the step belongs to.
	Queue string
	// StepUUID, TaskUUID and CorrelationID are as enqueued (zero if absent).
	StepUUID, TaskUUID, CorrelationID UUID
	// Handler names the handler to run.
	Handler string
	// Payload is the handler's input.
	Payload json.RawMessage
	// Timeout is the step's own handler timeout, 0 if none.
	Timeout time.Duration
	// State is where the step is in its life cycle.
	State State
	// Attempts counts claims so far (Release gives one back).
	Attempts int
	// MaxAttempts is how many claims the step gets before it is dead.
	MaxAttempts int
	// VisibleAt is when the step can next be claimed (for a claimed step:
	// when its claim expires).
	VisibleAt time.Time
	// EnqueuedAt is when the step was inserted.
	EnqueuedAt time.Time
	// ClaimToken is the current fencing token.
	ClaimToken int64
	// ClaimedBy is the worker id of the latest claim.
	ClaimedBy string
	// ClaimedAt is when the latest claim was made.
	ClaimedAt time.Time
	// CompletedAt is when the step became completed or dead.
	CompletedAt time.Time
	// Result is what the successful run reported.
	Result json.RawMessage
	// LastError is the latest failure's error object, kept after a retry and
	// on a dead step.
	LastError json.RawMessage
}

const getSQL = `
SELECT id, queue, step_uuid, task_uuid, correlation_id, handler, payload, timeout_ms, state, attempts,
       max_attempts, visible_at, enqueued_at, claim_token, claimed_by, claimed_at, completed_at, result, last_error
FROM tasker_steps WHERE id = $1`

// Get reads one step by id; ErrNotFound if there is none.
func (q *Queue) Get(ctx context.Context, id int64) (Step, error) {
	var (
		s                               Step
		payload, result, lastErr        []byte
		timeoutMS                       pgtype.Int4
		state                           string
		attempts, maxAttempts           int32
		claimedBy                       pgtype.Text
		claimedAt, completedAt, visible pgtype.Timestamptz
	)
	err := q.pool.QueryRow(ctx, getSQL, id).Scan(&s.ID, &s.Queue, &s.StepUUID, &s.TaskUUID, &s.CorrelationID,
		&s.Handler, &payload, &timeoutMS, &state, &attempts, &maxAttempts, &visible, &s.EnqueuedAt,
		&s.ClaimToken, &claimedBy, &claimedAt, &completedAt, &result, &lastErr)
	if errors.Is(err, pgx.ErrNoRows) {
		return Step{}, fmt.Errorf("get step %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Step{}, fmt.Errorf("get step %d: %w", id, err)
	}
	s.Payload, s.Result, s.LastError = payload, result, lastErr
	if timeoutMS.Valid {
		s.Timeout = time.Duration(timeoutMS.Int32) * time.Millisecond
	}
	s.State = State(state)
	s.Attempts, s.MaxAttempts = int(attempts), int(maxAttempts)
	s.VisibleAt, s.ClaimedBy, s.ClaimedAt, s.CompletedAt = visible.Time, claimedBy.String, claimedAt.Time, completedAt.Time
	return s, nil
}

// CountByState counts the steps of every queue by state, in one statement.
// States without steps are absent.
func (q *Queue) CountByState(ctx context.Context) (map[State]int, error) {
	rows, err := q.pool.Query(ctx, `SELECT state, count(*) FROM tasker_steps GROUP BY state`)
	if err != nil {
		return nil, fmt.Errorf("count steps by state: %w", err)
	}
	out := map[State]int{}
	for rows.Next() {
		var s string
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			rows.Close()
			return nil, fmt.Errorf("count steps by state: %w", err)
		}
		out[State(s)] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count steps by state: %w", err)
	}
	return out, nil
}
