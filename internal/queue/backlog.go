package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// BacklogLimit is where ReadBacklog stops counting one queue's steps: the
// count walks the claimable index, so its cost stays bounded however deep
// the queue (10 million ready rows cost what 100 000 do), and a deeper queue
// is reported as at least this many.
const BacklogLimit = 100_000

// Backlog is one queue's claimable steps, as an autoscaler sees them.
type Backlog struct {
	// Ready is how many steps could be claimed now (ready and visible, or a
	// claim whose visibility expired), counted up to the limit.
	Ready int64
	// Capped says Ready reached the limit: the queue holds at least Ready.
	Capped bool
	// OldestReady is how long the oldest claimable step has waited.
	OldestReady time.Duration
}

// Querier runs a query: a *pgxpool.Pool, *pgx.Conn or pgx.Tx.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// backlogSQL reads each queue with two index lookups on the claimable index
// (Claim's own predicate): a count that stops at $2, and the oldest
// visibility.
const backlogSQL = `
SELECT q.name,
  (SELECT count(*) FROM (
     SELECT 1 FROM tasker_steps s
     WHERE s.queue = q.name AND s.state IN ('ready', 'claimed') AND s.visible_at <= now()
     LIMIT $2) c),
  coalesce((
     SELECT extract(epoch FROM now() - s.visible_at) FROM tasker_steps s
     WHERE s.queue = q.name AND s.state IN ('ready', 'claimed') AND s.visible_at <= now()
     ORDER BY s.visible_at LIMIT 1), 0)::float8
FROM unnest($1::text[]) AS q(name)`

// ReadBacklog measures each queue's claimable steps, counting at most limit
// per queue (BacklogLimit when limit <= 0). Every queue asked for is in the
// result, an empty one with zeros.
func ReadBacklog(ctx context.Context, db Querier, queues []string, limit int) (map[string]Backlog, error) {
	if limit <= 0 {
		limit = BacklogLimit
	}
	rows, err := db.Query(ctx, backlogSQL, queues, limit)
	if err != nil {
		return nil, fmt.Errorf("read queue backlog: %w", err)
	}
	defer rows.Close()
	out := make(map[string]Backlog, len(queues))
	for rows.Next() {
		var name string
		var ready int64
		var age float64
		if err := rows.Scan(&name, &ready, &age); err != nil {
			return nil, fmt.Errorf("read queue backlog: %w", err)
		}
		out[name] = Backlog{Ready: ready, Capped: ready >= int64(limit), OldestReady: time.Duration(max(age, 0) * float64(time.Second))}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read queue backlog: %w", err)
	}
	return out, nil
}
