package queue

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationLockKey is the pg_advisory_xact_lock key that serialises
// migrations, so many workers starting at once apply each migration exactly
// once. Arbitrary but fixed: the bytes of "taskerq1".
const migrationLockKey int64 = 0x7461736b65727131

// migration is one forward-only schema change. Versions are never reused or
// edited once released; a change is a new migration.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations are applied in order by Migrate. Keep them additive so a worker
// one version behind keeps working during a rolling upgrade.
var migrations = []migration{
	{
		version: 1,
		name:    "create tasker_steps",
		sql: `
CREATE TABLE tasker_steps (
	id             bigserial   PRIMARY KEY,
	queue          text        NOT NULL CHECK (queue <> ''),
	step_uuid      uuid        NOT NULL DEFAULT gen_random_uuid(),
	task_uuid      uuid        NOT NULL DEFAULT gen_random_uuid(),
	correlation_id uuid,
	handler        text        NOT NULL CHECK (handler <> ''),
	payload        jsonb       NOT NULL DEFAULT '{}'::jsonb,
	timeout_ms     integer     CHECK (timeout_ms IS NULL OR timeout_ms > 0),
	state          text        NOT NULL DEFAULT 'ready'
	                           CHECK (state IN ('ready', 'claimed', 'completed', 'dead')),
	attempts       integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
	max_attempts   integer     NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
	visible_at     timestamptz NOT NULL DEFAULT now(),
	enqueued_at    timestamptz NOT NULL DEFAULT now(),
	claim_token    bigint      NOT NULL DEFAULT 0,
	claimed_by     text,
	claimed_at     timestamptz,
	completed_at   timestamptz,
	result         jsonb,
	last_error     jsonb,
	CONSTRAINT tasker_steps_step_uuid_key UNIQUE (step_uuid)
);

-- Drives Claim: per queue, in visibility order, only rows that can still be
-- claimed (ready, or claimed with a visibility that may expire).
CREATE INDEX tasker_steps_claimable_idx
	ON tasker_steps (queue, visible_at, id)
	WHERE state IN ('ready', 'claimed');

COMMENT ON TABLE tasker_steps IS
	'Durable Tasker step queue. Producers INSERT rows (state ready) and NOTIFY tasker_steps with the queue name; see internal/queue/doc.go.';
COMMENT ON COLUMN tasker_steps.claim_token IS
	'Fencing token: incremented on every claim; acknowledgements must present the current value.';
`,
	},
	{
		version: 2,
		name:    "no planner statistics on jsonb columns",
		// Nothing filters, joins or sorts on payload, result or last_error,
		// yet every ANALYZE of this high-churn table (autovacuum runs one
		// every few seconds under load) sorted a sample of each with jsonb
		// comparisons: a quarter of ANALYZE's time. SET STATISTICS takes
		// only a SHARE UPDATE EXCLUSIVE lock, so running workers are not
		// blocked while it applies.
		sql: `
ALTER TABLE tasker_steps
	ALTER COLUMN payload SET STATISTICS 0,
	ALTER COLUMN result SET STATISTICS 0,
	ALTER COLUMN last_error SET STATISTICS 0;
`,
	},
	{
		version: 3,
		name:    "index finished steps for retention",
		// Retention deletes completed and dead steps oldest first. Without
		// an index every batch would scan the table for old finished rows.
		// The index is partial: claims and retries (ready, claimed) never
		// write to it, and a step enters it once, when it finishes. Building
		// it blocks writes to the table for the time of the build, which is
		// short on a table that retention keeps small.
		sql: `
CREATE INDEX tasker_steps_finished_idx ON tasker_steps (completed_at)
	WHERE state IN ('completed', 'dead');
`,
	},
	{
		version: 4,
		name:    "vacuum the queue table as fast as it churns",
		// Every step leaves three dead row versions behind (claim, settle,
		// retention's delete): at 10 000 steps/s that is 30 000 a second.
		// With the default thresholds (20 % of the table) and cost delay,
		// autovacuum fell behind in a 2-million-step soak and the table's
		// file kept growing although retention kept its live rows bounded.
		// A fixed threshold and no cost delay let each autovacuum run clean
		// up what accumulated since the last, so freed space is reused.
		// SET (...) takes only a SHARE UPDATE EXCLUSIVE lock.
		sql: `
ALTER TABLE tasker_steps SET (
	autovacuum_vacuum_scale_factor = 0,
	autovacuum_vacuum_threshold = 10000,
	autovacuum_vacuum_insert_scale_factor = 0,
	autovacuum_vacuum_insert_threshold = 10000,
	autovacuum_vacuum_cost_delay = 0
);
`,
	},
}

// LatestSchemaVersion is the schema version this build of the queue needs;
// Migrate brings a database up to it. Bump it with every new migration.
const LatestSchemaVersion = 4

// SchemaVersion is the newest schema version applied to the database, 0 when
// the queue schema is not there at all. Tools that only read or enqueue use it
// to refuse a database no worker has migrated yet with a clear message instead
// of "relation does not exist".
func SchemaVersion(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	// Two statements: a relation named in a query must exist when the query
	// is parsed, whichever branch would run.
	var present bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('tasker_schema_migrations') IS NOT NULL`).Scan(&present); err != nil {
		return 0, fmt.Errorf("read queue schema version: %w", err)
	}
	if !present {
		return 0, nil
	}
	var version int
	if err := pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM tasker_schema_migrations`).Scan(&version); err != nil {
		return 0, fmt.Errorf("read queue schema version: %w", err)
	}
	return version, nil
}

// Migrate creates or upgrades the queue's tables. It is idempotent and safe
// to run from every worker at start-up: one transaction holds an advisory
// lock while it reads tasker_schema_migrations and applies what is missing,
// so concurrent callers wait and then find nothing left to do.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate queue schema: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
		return fmt.Errorf("migrate queue schema: take advisory lock: %w", err)
	}
	if _, err := tx.Exec(ctx, `
CREATE TABLE IF NOT EXISTS tasker_schema_migrations (
	version    integer     PRIMARY KEY,
	name       text        NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`); err != nil {
		return fmt.Errorf("migrate queue schema: create tasker_schema_migrations: %w", err)
	}

	rows, err := tx.Query(ctx, `SELECT version FROM tasker_schema_migrations`)
	if err != nil {
		return fmt.Errorf("migrate queue schema: read applied versions: %w", err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return fmt.Errorf("migrate queue schema: read applied versions: %w", err)
	}
	done := make(map[int]bool, len(applied))
	for _, v := range applied {
		done[int(v)] = true
	}

	for _, m := range migrations {
		if done[m.version] {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("migrate queue schema: apply %d (%s): %w", m.version, m.name, err)
		}
		if _, err := tx.Exec(ctx,
			`INSERT INTO tasker_schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
			return fmt.Errorf("migrate queue schema: record %d: %w", m.version, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate queue schema: commit: %w", err)
	}
	return nil
}
