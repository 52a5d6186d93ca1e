package queue

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/go-logr/logr"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed-a17b38e7/workerpool-operator/internal/lograte"
)

// NotifyChannel is the LISTEN/NOTIFY channel producers signal after
// inserting steps; the payload is the queue name (empty wakes every queue).
const NotifyChannel = "tasker_steps"

// State is a step's place in its life cycle; the values are what the state
// column holds.
type State string

// The states a step moves through. ready → claimed → completed is the happy
// path; claimed → ready is a retry or a release; dead is terminal failure
// with last_error kept for inspection.
const (
	StateReady     State = "ready"
	StateClaimed   State = "claimed"
	StateCompleted State = "completed"
	StateDead      State = "dead"
)

// Outcome is how a handler's run ended, which decides what Complete does with
// the step. The values match the worker's tasker_steps_completed_total
// outcome labels.
type Outcome string

// Outcomes accepted by Complete.
const (
	// Success stores the result and completes the step.
	Success Outcome = "success"
	// RetryableFailure puts the step back with backoff until its attempts run
	// out, then makes it dead.
	RetryableFailure Outcome = "retryable_failure"
	// PermanentFailure makes the step dead at once (handler_not_found,
	// handler_panic, or a handler saying retrying is pointless).
	PermanentFailure Outcome = "permanent_failure"
)

// DefaultMaxAttempts is how many times a step may be claimed before it is
// dead, when neither the step nor Options say otherwise (upstream Tasker's
// default retry limit).
const DefaultMaxAttempts = 3

// DefaultBackoff returns upstream Tasker's retry schedule: the delay after
// the 1st, 2nd, ... failed attempt, the last entry repeating (1s, 5s, 15s,
// 30s, then 60s for every later attempt).
func DefaultBackoff() []time.Duration {
	return []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second, 60 * time.Second}
}

// DefaultJitterFraction is the ± spread applied to retry delays by default,
// so steps that failed together (a downstream outage) do not all come back
// in the same instant.
const DefaultJitterFraction = 0.2

// UniformJitter returns a jitter source drawing a multiplier uniformly from
// [1-fraction, 1+fraction). It is safe for concurrent use.
func UniformJitter(fraction float64) func() float64 {
	return func() float64 { return 1 - fraction + 2*fraction*rand.Float64() }
}

// NoJitter is a jitter source that leaves delays exactly as scheduled; tests
// use it to make retry timing deterministic.
func NoJitter() float64 { return 1 }

// Options configure a Queue. The zero value gives upstream's defaults.
type Options struct {
	// Queues this worker consumes. RefreshStats reports depth for exactly
	// these (zeros included); empty means every queue found in the table.
	Queues []string
	// MaxAttempts applies to enqueued steps that do not set their own.
	// Default DefaultMaxAttempts.
	MaxAttempts int
	// Backoff is the retry schedule: Backoff[n-1] is the delay after the n-th
	// failed attempt; attempts beyond the schedule use its last entry (the
	// cap). Default DefaultBackoff(). Tests use short schedules (10ms).
	Backoff []time.Duration
	// Jitter returns the multiplier applied to each retry delay. Default
	// UniformJitter(DefaultJitterFraction), i.e. ±20 %. Use NoJitter for
	// deterministic tests.
	Jitter func() float64
	// Logger receives listener reconnects and similar operational events.
	Logger logr.Logger
	// FinalAttemptGrace is how long a claim on a step's final attempt must
	// have been expired before another claimer makes the step dead
	// (claim_expired). Within it the owner's late heartbeat can still extend
	// the claim, so a step is not dead-lettered while the worker running it
	// is merely slow to heartbeat. Default DefaultFinalAttemptGrace.
	FinalAttemptGrace time.Duration
}

// DefaultFinalAttemptGrace is Options.FinalAttemptGrace when unset: the
// default visibility timeout, so a poison step is dead-lettered at most one
// visibility later than without a grace.
const DefaultFinalAttemptGrace = 30 * time.Second

// Queue is the durable step queue on PostgreSQL. It is safe for concurrent
// use; all state lives in the database, so any number of workers can share
// the same tables.
type Queue struct {
	pool      *pgxpool.Pool
	opts      Options
	backoffUS []int64
	log       logr.Logger
	m         *metrics
	// deadLog rate-limits the log lines of steps Claim dead-letters.
	deadLog *lograte.Limiter
}

// New wraps a pool (already migrated with Migrate) and registers the queue's
// metrics on reg. reg may be nil to skip registration; pass a fresh registry
// per Queue in tests, since registering twice on one registry fails.
func New(pool *pgxpool.Pool, opts Options, reg prometheus.Registerer) (*Queue, error) {
	if pool == nil {
		return nil, errors.New("queue: nil pool")
	}
	if opts.MaxAttempts == 0 {
		opts.MaxAttempts = DefaultMaxAttempts
	}
	if opts.MaxAttempts < 1 {
		return nil, fmt.Errorf("queue: MaxAttempts %d < 1", opts.MaxAttempts)
	}
	if len(opts.Backoff) == 0 {
		opts.Backoff = DefaultBackoff()
	}
	backoffUS := make([]int64, len(opts.Backoff))
	for i, d := range opts.Backoff {
		if d < 0 {
			return nil, fmt.Errorf("queue: negative backoff %v at index %d", d, i)
		}
		backoffUS[i] = d.Microseconds()
	}
	if opts.Jitter == nil {
		opts.Jitter = UniformJitter(DefaultJitterFraction)
	}
	if opts.FinalAttemptGrace < 0 {
		return nil, fmt.Errorf("queue: negative FinalAttemptGrace %v", opts.FinalAttemptGrace)
	}
	if opts.FinalAttemptGrace == 0 {
		opts.FinalAttemptGrace = DefaultFinalAttemptGrace
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	q := &Queue{
		pool:      pool,
		opts:      opts,
		backoffUS: backoffUS,
		log:       opts.Logger,
		m:         newMetrics(),
		deadLog:   lograte.New(20, 10*time.Second),
	}
	if err := q.m.register(reg); err != nil {
		return nil, err
	}
	return q, nil
}

// Pool returns the pool the queue uses, for callers that need to run their
// own statements in the same database (health checks, tests).
func (q *Queue) Pool() *pgxpool.Pool { return q.pool }

// NewStep is a step to enqueue.
type NewStep struct {
	// Queue (namespace) the step belongs to. Required.
	Queue string
	// Handler names the handler to run. Required.
	Handler string
	// Payload is the handler's input; empty means {}.
	Payload json.RawMessage
	// StepUUID identifies the step. Zero means generate one. Enqueueing a
	// step_uuid that already exists is a no-op reported as Duplicate, which
	// makes a producer's retry after an ambiguous error safe.
	StepUUID UUID
	// TaskUUID is the task the step belongs to. Zero means generate one.
	TaskUUID UUID
	// CorrelationID traces the step across services. Zero means none.
	CorrelationID UUID
	// Timeout is the step's own handler timeout; 0 means the worker's default.
	// Stored in whole milliseconds (rounded up).
	Timeout time.Duration
	// MaxAttempts overrides Options.MaxAttempts for this step when > 0.
	MaxAttempts int
	// Delay postpones the step's first visibility.
	Delay time.Duration
}

// EnqueuedStep reports what Enqueue stored for one NewStep, in input order.
type EnqueuedStep struct {
	// ID is the row id (0 only if a concurrent producer inserted the same
	// step_uuid in the same instant, which Duplicate also reports).
	ID int64
	// StepUUID is the step's id, generated if the input left it zero.
	StepUUID UUID
	// Queue is the input's queue.
	Queue string
	// EnqueuedAt is when the row was first inserted.
	EnqueuedAt time.Time
	// Duplicate means a step with this step_uuid already existed; nothing
	// was inserted and ID/EnqueuedAt describe the existing row.
	Duplicate bool
}

// enqueueSQL inserts a batch whose step_uuids may already exist (the
// caller chose them, e.g. to retry an ambiguous enqueue safely). Duplicates
// are left alone and reported with the existing row's id; the scalar
// subqueries run only for them (coalesce stops at the first non-null), so
// new rows cost no extra index probe.
const enqueueSQL = `
WITH input AS (
	SELECT *
	FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::int[], $8::int[], $9::bigint[])
		WITH ORDINALITY AS u(queue, step_uuid, task_uuid, correlation_id, handler, payload, timeout_ms, max_attempts, delay_us, ord)
), ins AS (
	INSERT INTO tasker_steps (queue, step_uuid, task_uuid, correlation_id, handler, payload, timeout_ms, max_attempts, visible_at)
	SELECT queue, step_uuid, task_uuid, correlation_id, handler, payload::jsonb, timeout_ms, max_attempts,
	       now() + delay_us * interval '1 microsecond'
	FROM input
	ORDER BY ord
	ON CONFLICT (step_uuid) DO NOTHING
	RETURNING id, step_uuid, enqueued_at
)
SELECT input.ord,
       coalesce(ins.id, (SELECT old.id FROM tasker_steps old WHERE old.step_uuid = input.step_uuid), 0),
       ins.id IS NULL,
       coalesce(ins.enqueued_at, (SELECT old.enqueued_at FROM tasker_steps old WHERE old.step_uuid = input.step_uuid))
FROM input
LEFT JOIN ins ON ins.step_uuid = input.step_uuid
ORDER BY input.ord`

// enqueueNewSQL inserts a batch whose step_uuids Enqueue generated itself:
// random version-4 UUIDs cannot already exist, so the statement skips ON
// CONFLICT, whose arbiter check (one more step_uuid index probe and a
// speculative-insertion lock per row) cost about a fifth of the insert. Rows
// are inserted in input order, so ids (and claim order) follow it. Should a
// generated UUID ever collide, the unique constraint fails the whole batch
// and nothing is stored; the caller's retry generates new ones.
const enqueueNewSQL = `
INSERT INTO tasker_steps (queue, step_uuid, task_uuid, correlation_id, handler, payload, timeout_ms, max_attempts, visible_at)
SELECT queue, step_uuid, task_uuid, correlation_id, handler, payload::jsonb, timeout_ms, max_attempts,
       now() + delay_us * interval '1 microsecond'
FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::int[], $8::int[], $9::bigint[])
	WITH ORDINALITY AS u(queue, step_uuid, task_uuid, correlation_id, handler, payload, timeout_ms, max_attempts, delay_us, ord)
ORDER BY ord
RETURNING id, step_uuid, enqueued_at`

const notifySQL = `SELECT pg_notify('` + NotifyChannel + `', q) FROM unnest($1::text[]) AS q`

// Enqueue inserts steps in one round trip and one implicit transaction (an
// INSERT over unnest'ed arrays, then one NOTIFY per distinct queue, delivered
// at commit). Either every new step is stored or none is.
func (q *Queue) Enqueue(ctx context.Context, steps []NewStep) ([]EnqueuedStep, error) {
	if len(steps) == 0 {
		return nil, nil
	}
	n := len(steps)
	var (
		queues    = make([]string, n)
		stepIDs   = make([]pgtype.UUID, n)
		taskIDs   = make([]pgtype.UUID, n)
		corrIDs   = make([]pgtype.UUID, n)
		handlers  = make([]string, n)
		payloads  = make([]string, n)
		timeouts  = make([]pgtype.Int4, n)
		maxAtts   = make([]int32, n)
		delays    = make([]int64, n)
		out       = make([]EnqueuedStep, n)
		seen      = make(map[UUID]int, n)
		generated = true // every step_uuid generated here
		distinctQ []string
		seenQ     = map[string]bool{}
	)
	for i, s := range steps {
		if s.Queue == "" || s.Handler == "" {
			return nil, fmt.Errorf("enqueue: step %d: queue and handler are required", i)
		}
		if len(s.Payload) > 0 && !json.Valid(s.Payload) {
			return nil, fmt.Errorf("enqueue: step %d: payload is not valid JSON", i)
		}
		if s.Timeout < 0 || s.Delay < 0 || s.MaxAttempts < 0 {
			return nil, fmt.Errorf("enqueue: step %d: negative timeout, delay or max attempts", i)
		}
		if s.StepUUID.IsZero() {
			s.StepUUID = NewUUID()
		} else {
			generated = false
		}
		if j, dup := seen[s.StepUUID]; dup {
			return nil, fmt.Errorf("enqueue: steps %d and %d share step_uuid %s", j, i, s.StepUUID)
		}
		seen[s.StepUUID] = i
		if s.TaskUUID.IsZero() {
			s.TaskUUID = NewUUID()
		}
		queues[i] = s.Queue
		stepIDs[i] = pgtype.UUID{Bytes: s.StepUUID, Valid: true}
		taskIDs[i] = pgtype.UUID{Bytes: s.TaskUUID, Valid: true}
		corrIDs[i] = pgtype.UUID{Bytes: s.CorrelationID, Valid: !s.CorrelationID.IsZero()}
		handlers[i] = s.Handler
		payloads[i] = "{}"
		if len(s.Payload) > 0 {
			payloads[i] = string(s.Payload)
		}
		if s.Timeout > 0 {
			ms := (s.Timeout + time.Millisecond - 1) / time.Millisecond
			if ms > math.MaxInt32 {
				return nil, fmt.Errorf("enqueue: step %d: timeout %v too large", i, s.Timeout)
			}
			timeouts[i] = pgtype.Int4{Int32: int32(ms), Valid: true}
		}
		maxAtts[i] = int32(q.opts.MaxAttempts)
		if s.MaxAttempts > 0 {
			maxAtts[i] = int32(s.MaxAttempts)
		}
		delays[i] = s.Delay.Microseconds()
		out[i] = EnqueuedStep{StepUUID: s.StepUUID, Queue: s.Queue}
		if !seenQ[s.Queue] {
			seenQ[s.Queue] = true
			distinctQ = append(distinctQ, s.Queue)
		}
	}

	batch := &pgx.Batch{}
	sql, read := enqueueSQL, readEnqueued
	if generated {
		sql, read = enqueueNewSQL, func(br pgx.BatchResults, out []EnqueuedStep) (int, error) {
			return readInserted(br, out, seen)
		}
	}
	batch.Queue(sql, queues, stepIDs, taskIDs, corrIDs, handlers, payloads, timeouts, maxAtts, delays)
	batch.Queue(notifySQL, distinctQ)
	br := q.pool.SendBatch(ctx, batch)
	inserted, err := read(br, out)
	if err == nil {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("enqueue %d steps into %v: %w", n, distinctQ, err)
	}
	q.m.enqueued.Add(float64(inserted))
	return out, nil
}

func readEnqueued(br pgx.BatchResults, out []EnqueuedStep) (inserted int, err error) {
	rows, err := br.Query()
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			ord int64
			id  int64
			dup bool
			at  pgtype.Timestamptz
		)
		if err := rows.Scan(&ord, &id, &dup, &at); err != nil {
			return 0, err
		}
		e := &out[ord-1]
		e.ID, e.Duplicate, e.EnqueuedAt = id, dup, at.Time
		if !dup {
			inserted++
		}
	}
	return inserted, rows.Err()
}

// readInserted reads enqueueNewSQL's rows, matching them to the input by
// step_uuid; every step must have been inserted.
func readInserted(br pgx.BatchResults, out []EnqueuedStep, index map[UUID]int) (inserted int, err error) {
	rows, err := br.Query()
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id   int64
			uuid UUID
			at   pgtype.Timestamptz
		)
		if err := rows.Scan(&id, &uuid, &at); err != nil {
			return 0, err
		}
		i, ok := index[uuid]
		if !ok {
			return 0, fmt.Errorf("insert returned unknown step_uuid %s", uuid)
		}
		out[i].ID, out[i].EnqueuedAt = id, at.Time
		inserted++
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if inserted != len(out) {
		return 0, fmt.Errorf("inserted %d of %d steps", inserted, len(out))
	}
	return inserted, nil
}

// Claim identifies one claim of one step: the row and the fencing token the
// claim was granted with. Every acknowledgement presents it, and the database
// refuses it once the step has been claimed again by someone else.
type Claim struct {
	// ID is the step's row id.
	ID int64
	// Token is the step's claim_token at the time of this claim.
	Token int64
}

// ClaimedStep is a step this worker now holds until its visibility expires
// (extend it with Extend while the handler runs).
type ClaimedStep struct {
	// ID is the row id; with Token it forms the Claim to acknowledge with.
	ID int64
	// Token is the fencing token this claim was granted (see Claim).
	Token int64
	// Queue is the queue the step was claimed from.
	Queue string
	// StepUUID identifies the step in results (the wire format's step_uuid).
	StepUUID UUID
	// TaskUUID is the task the step belongs to (handler context, metadata).
	TaskUUID UUID
	// CorrelationID traces the step across services; zero if none.
	CorrelationID UUID
	// Handler names the handler to dispatch to.
	Handler string
	// Payload is the handler's input, as enqueued.
	Payload json.RawMessage
	// Attempt is this run's number, starting at 1.
	Attempt int
	// MaxAttempts is how many runs the step gets before it is dead.
	MaxAttempts int
	// Timeout is the step's own handler timeout, 0 if it has none.
	Timeout time.Duration
	// EnqueuedAt is when the step was first enqueued.
	EnqueuedAt time.Time
	// Redelivered means a previous claim expired unacknowledged (its worker
	// died or stalled); handlers that are not idempotent may want to know.
	Redelivered bool
}

// Claim returns the fencing pair to acknowledge this step with.
func (s ClaimedStep) Claim() Claim { return Claim{ID: s.ID, Token: s.Token} }

// claimSQL picks up to $2 claimable steps per queue through the partial
// index (a LATERAL per queue keeps each probe an ordered index range scan,
// however many queues are asked for), keeps the globally oldest $2, and
// claims them in the same statement. SKIP LOCKED lets concurrent claimers
// take disjoint rows without waiting on each other.
//
// A claimed row whose visibility expired is claimable again (redelivery). If
// it had already used its last attempt, it becomes dead instead of running
// again: a step that keeps killing its worker must not crash-loop the pool.
// Such a final-attempt claim is left alone until it has been expired for
// $5 µs (Options.FinalAttemptGrace): its owner may only be late with its
// heartbeat, and may still extend the claim and complete the step.
const claimSQL = `
WITH picked AS (
	SELECT c.id, c.state AS prev_state, c.visible_at AS prev_visible_at,
	       (c.state = 'claimed' AND c.attempts >= c.max_attempts) AS exhausted
	FROM unnest($1::text[]) AS q(name)
	CROSS JOIN LATERAL (
		SELECT s.id, s.state, s.visible_at, s.attempts, s.max_attempts
		FROM tasker_steps s
		WHERE s.queue = q.name
		  AND s.state IN ('ready', 'claimed')
		  AND s.visible_at <= now()
		  AND NOT (s.state = 'claimed' AND s.attempts >= s.max_attempts
		           AND s.visible_at > now() - $5::bigint * interval '1 microsecond')
		ORDER BY s.visible_at, s.id
		LIMIT $2
		FOR UPDATE SKIP LOCKED
	) c
	ORDER BY c.visible_at, c.id
	LIMIT $2
), claimed AS (
UPDATE tasker_steps s SET
	state = CASE WHEN p.exhausted THEN 'dead' ELSE 'claimed' END,
	attempts = CASE WHEN p.exhausted THEN s.attempts ELSE s.attempts + 1 END,
	claim_token = s.claim_token + 1,
	claimed_by = CASE WHEN p.exhausted THEN s.claimed_by ELSE $3 END,
	claimed_at = CASE WHEN p.exhausted THEN s.claimed_at ELSE now() END,
	visible_at = now() + $4::bigint * interval '1 microsecond',
	completed_at = CASE WHEN p.exhausted THEN now() END,
	last_error = CASE WHEN p.exhausted THEN ` + claimExpiredErrorSQL + `
		ELSE s.last_error END
FROM picked p
WHERE s.id = p.id
RETURNING s.id, s.claim_token, s.queue, s.step_uuid, s.task_uuid, s.correlation_id, s.handler, s.payload,
          s.timeout_ms, s.attempts, s.max_attempts, s.enqueued_at, p.prev_state = 'claimed' AS redelivered,
          p.exhausted, p.prev_visible_at
)
SELECT id, claim_token, queue, step_uuid, task_uuid, correlation_id, handler, payload,
       timeout_ms, attempts, max_attempts, enqueued_at, redelivered, exhausted
FROM claimed
ORDER BY prev_visible_at, id`

// Claim takes up to limit visible steps from the given queues, oldest first,
// and hides them from other claimers for visibility. Each claim increments
// the step's attempts and its fencing token. The result is in claim order
// (oldest visibility first). Steps whose earlier claim
// expired come back here (Redelivered); one that expired on its final
// attempt is made dead instead and not returned.
func (q *Queue) Claim(ctx context.Context, queues []string, workerID string, limit int, visibility time.Duration) ([]ClaimedStep, error) {
	if limit <= 0 || len(queues) == 0 {
		return nil, nil
	}
	if visibility <= 0 {
		return nil, fmt.Errorf("claim from %v: visibility %v must be positive", queues, visibility)
	}
	start := time.Now()
	rows, err := q.pool.Query(ctx, claimSQL, queues, limit, workerID, visibility.Microseconds(), q.opts.FinalAttemptGrace.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("claim from %v: %w", queues, err)
	}
	defer rows.Close()
	var (
		out         []ClaimedStep
		redelivered int
		dead        int
	)
	for rows.Next() {
		var (
			s         ClaimedStep
			payload   []byte
			timeoutMS pgtype.Int4
			attempt   int32
			maxAtt    int32
			exhausted bool
		)
		if err := rows.Scan(&s.ID, &s.Token, &s.Queue, &s.StepUUID, &s.TaskUUID, &s.CorrelationID, &s.Handler,
			&payload, &timeoutMS, &attempt, &maxAtt, &s.EnqueuedAt, &s.Redelivered, &exhausted); err != nil {
			return nil, fmt.Errorf("claim from %v: scan: %w", queues, err)
		}
		if exhausted {
			dead++
			if q.deadLog.Allow() {
				q.log.Error(errors.New("claim expired on the final attempt"), "step dead-lettered: its worker died or hung on the final attempt",
					"stepUuid", s.StepUUID.String(), "id", s.ID, "queue", s.Queue, "handler", s.Handler, "errorType", ErrorTypeClaimExpired,
					"attempt", attempt, "maxAttempts", maxAtt, "suppressedSinceLast", q.deadLog.Suppressed())
			}
			continue
		}
		s.Payload = json.RawMessage(payload)
		s.Attempt, s.MaxAttempts = int(attempt), int(maxAtt)
		if timeoutMS.Valid {
			s.Timeout = time.Duration(timeoutMS.Int32) * time.Millisecond
		}
		if s.Redelivered {
			redelivered++
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim from %v: %w", queues, err)
	}
	q.m.claimSeconds.Observe(time.Since(start).Seconds())
	q.m.claimed.Add(float64(len(out)))
	q.m.redelivered.Add(float64(redelivered))
	q.m.dead.Add(float64(dead))
	return out, nil
}

// Lock order of the fenced updates. Extend (the heartbeat), Release and
// Complete each update a set of held claims' rows, joined from arrays of ids
// and tokens. The arrays are sent sorted by id, so that with the usual plan
// (one primary-key probe per array element, in array order) rows are locked
// in ascending id order and concurrent statements queue instead of
// deadlocking. That is an optimisation, not what prevents deadlocks: a plan
// may read rows in another order, so the one statement that runs
// concurrently with the others on the same rows, the heartbeat, never waits
// for a row lock at all (see extendSQL).

// compareClaims orders claims by id, then token.
func compareClaims(a, b Claim) int {
	if c := cmp.Compare(a.ID, b.ID); c != 0 {
		return c
	}
	return cmp.Compare(a.Token, b.Token)
}

// claimArrays returns the claims' ids and tokens, sorted by id (see "Lock
// order" above).
func claimArrays(claims []Claim) (ids, tokens []int64) {
	sorted := slices.SortedFunc(slices.Values(claims), compareClaims)
	ids = make([]int64, len(sorted))
	tokens = make([]int64, len(sorted))
	for i, c := range sorted {
		ids[i], tokens[i] = c.ID, c.Token
	}
	return ids, tokens
}

// missing returns the claims not in kept, in input order. Claims are compared
// whole: the same step may appear with a stale and a current token.
func missing(claims []Claim, kept map[Claim]bool) []Claim {
	var lost []Claim
	for _, c := range claims {
		if !kept[c] {
			lost = append(lost, c)
		}
	}
	return lost
}

// extendSQL never waits for a row lock. A claim whose row is locked right now
// is being settled (or released) by the same worker, which is why it needs
// no extension; if that settle fails and is retried, the next heartbeat
// extends it. Such claims are skipped and reported as still held: the last
// branch reads them as of the statement's snapshot, where they still carry
// their token. Waiting instead deadlocked: a heartbeat locking ~4000 rows
// and a settle locking a few hundred of them met in opposite orders, and
// PostgreSQL aborted one after a 1 s stall (seen in the worker benchmark).
//
// "s.id = ANY($1)" repeats what the join already says so that the table side
// is always a primary-key probe of at most len(ids) rows: statistics taken
// while no step was claimed (an idle queue) make "state = 'claimed'" look
// empty, and the planner then scanned the whole table and compared every
// claimed row with every array element, on every heartbeat.
const extendSQL = `
WITH c AS (
	SELECT * FROM unnest($1::bigint[], $2::bigint[]) AS c(id, token)
), held AS (
	SELECT s.id
	FROM tasker_steps s
	JOIN c ON c.id = s.id
	WHERE s.id = ANY($1::bigint[]) AND s.state = 'claimed' AND s.claim_token = c.token
	FOR UPDATE OF s SKIP LOCKED
), extended AS (
	UPDATE tasker_steps s SET visible_at = now() + $3::bigint * interval '1 microsecond'
	FROM held
	WHERE s.id = ANY($1::bigint[]) AND s.id = held.id
	RETURNING s.id, s.claim_token
)
SELECT id, claim_token FROM extended
UNION ALL
SELECT s.id, s.claim_token
FROM tasker_steps s
JOIN c ON c.id = s.id
WHERE s.id = ANY($1::bigint[]) AND s.state = 'claimed' AND s.claim_token = c.token
  AND s.id NOT IN (SELECT id FROM held)`

// Extend is the heartbeat: it pushes the visibility of steps still held with
// these tokens to now+visibility, so a long-running handler is not
// redelivered to another worker. It returns the claims that are no longer
// held (redelivered elsewhere, or acknowledged); their handlers' results will
// be fenced out, so the caller may stop them. It never waits for a row lock:
// a claim whose row is locked at that moment (its result being settled) is
// left as it is and counts as held.
func (q *Queue) Extend(ctx context.Context, claims []Claim, visibility time.Duration) (lost []Claim, err error) {
	if len(claims) == 0 {
		return nil, nil
	}
	if visibility <= 0 {
		return nil, fmt.Errorf("extend %d claims: visibility %v must be positive", len(claims), visibility)
	}
	ids, tokens := claimArrays(claims)
	kept, err := q.updatedClaims(ctx, extendSQL, ids, tokens, visibility.Microseconds())
	if err != nil {
		return nil, fmt.Errorf("extend %d claims: %w", len(claims), err)
	}
	lost = missing(claims, kept)
	q.m.claimsLost.Add(float64(len(lost)))
	return lost, nil
}

const releaseSQL = `
UPDATE tasker_steps s SET
	state = 'ready',
	visible_at = now(),
	attempts = greatest(s.attempts - 1, 0),
	claimed_by = NULL,
	claimed_at = NULL
FROM unnest($1::bigint[], $2::bigint[]) AS c(id, token)
WHERE s.id = c.id AND s.state = 'claimed' AND s.claim_token = c.token
RETURNING s.id, s.claim_token`

// Release hands claimed steps whose handlers never started back to the queue
// at once (visible now, attempt given back), so a draining worker returns its
// buffered steps instead of letting them wait out their visibility. Claims
// no longer held are returned as lost and left alone.
func (q *Queue) Release(ctx context.Context, claims []Claim) (lost []Claim, err error) {
	if len(claims) == 0 {
		return nil, nil
	}
	ids, tokens := claimArrays(claims)
	kept, err := q.updatedClaims(ctx, releaseSQL, ids, tokens)
	if err != nil {
		return nil, fmt.Errorf("release %d claims: %w", len(claims), err)
	}
	lost = missing(claims, kept)
	q.m.released.Add(float64(len(kept)))
	return lost, nil
}

// updatedClaims runs a fenced UPDATE returning (id, claim_token) and
// collects the claims it applied to.
func (q *Queue) updatedClaims(ctx context.Context, sql string, args ...any) (map[Claim]bool, error) {
	rows, err := q.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	claims, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Claim, error) {
		var c Claim
		err := r.Scan(&c.ID, &c.Token)
		return c, err
	})
	if err != nil {
		return nil, err
	}
	kept := make(map[Claim]bool, len(claims))
	for _, c := range claims {
		kept[c] = true
	}
	return kept, nil
}

// Completion is the durable result of one handler run, to acknowledge.
type Completion struct {
	Claim
	// Outcome decides the step's next state.
	Outcome Outcome
	// Result is stored on Success (the step result wire format, or any JSON).
	Result json.RawMessage
	// Error is stored as last_error on a failure: a failed step result in
	// the wire format (see LastError), which is what the worker writes.
	// Empty becomes such a result saying "no error details reported", so a
	// dead step always says something.
	Error json.RawMessage
}

// CompletionResult reports what happened to one Completion, in input order.
type CompletionResult struct {
	Claim
	// Applied is true when the step was still held with this token and has
	// moved on. False with a nil Err means fenced out: the step was claimed
	// again after this claim expired, and the newer claim owns it.
	Applied bool
	// State is the step's new state when Applied: completed, ready (retry
	// scheduled) or dead.
	State State
	// Err is set when this item was rejected before reaching the database
	// (unknown outcome, invalid JSON, the same claim twice in the batch); the
	// other items are still applied.
	Err error
}

// completeSQL applies a batch of completions in one statement. Every CASE
// reads the row's values from before the update. The retry delay is the
// schedule entry for the attempt that just failed (capped at the last entry)
// times the item's jitter multiplier. An empty result or error string stands
// for NULL (it is never valid JSON), so the columns travel as plain text
// arrays, which pgx encodes without reflection.
const completeSQL = `
WITH c AS (
	SELECT *
	FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::float8[])
		AS c(id, token, outcome, result, error, jitter)
)
UPDATE tasker_steps s SET
	state = CASE
		WHEN c.outcome = 'success' THEN 'completed'
		WHEN c.outcome = 'retryable_failure' AND s.attempts < s.max_attempts THEN 'ready'
		ELSE 'dead' END,
	result = CASE WHEN c.outcome = 'success' THEN nullif(c.result, '')::jsonb ELSE s.result END,
	last_error = CASE WHEN c.outcome = 'success' THEN s.last_error ELSE nullif(c.error, '')::jsonb END,
	completed_at = CASE
		WHEN c.outcome = 'retryable_failure' AND s.attempts < s.max_attempts THEN NULL
		ELSE now() END,
	visible_at = CASE
		WHEN c.outcome = 'retryable_failure' AND s.attempts < s.max_attempts
		THEN now() + round(($7::bigint[])[greatest(1, least(s.attempts, cardinality($7::bigint[])))] * c.jitter)::bigint
		           * interval '1 microsecond'
		ELSE s.visible_at END
FROM c
WHERE s.id = c.id AND s.state = 'claimed' AND s.claim_token = c.token
RETURNING s.id, c.token, s.state, c.outcome`

// Complete acknowledges handler results, in one statement per call. Call it
// only once the results are final: this is where a step stops being
// redeliverable. Each item is fenced by its claim token, so a result from a
// claim that expired (and was redelivered) changes nothing and is reported
// as not applied, without failing the rest of the batch. An error return
// means the batch as a whole did not reach the database; retry it.
func (q *Queue) Complete(ctx context.Context, completions []Completion) ([]CompletionResult, error) {
	n := len(completions)
	out := make([]CompletionResult, n)
	type item struct {
		i               int // index in completions
		result, errJSON string
		jitter          float64
	}
	var (
		items = make([]item, 0, n)
		index = make(map[Claim]int, n)
	)
	for i, c := range completions {
		out[i] = CompletionResult{Claim: c.Claim}
		if j, dup := index[c.Claim]; dup {
			out[i].Err = fmt.Errorf("claim %d/%d appears twice in one Complete batch (first at %d)", c.ID, c.Token, j)
			continue
		}
		res, errJSON, err := completionJSON(c)
		if err != nil {
			out[i].Err = fmt.Errorf("step %d: %w", c.ID, err)
			continue
		}
		index[c.Claim] = i
		jitter := 1.0
		if c.Outcome == RetryableFailure {
			jitter = q.opts.Jitter()
		}
		items = append(items, item{i: i, result: res, errJSON: errJSON, jitter: jitter})
	}
	// Rows in ascending id order: see "Lock order".
	slices.SortFunc(items, func(a, b item) int { return compareClaims(completions[a.i].Claim, completions[b.i].Claim) })
	var (
		ids, tokens                = make([]int64, len(items)), make([]int64, len(items))
		outcomes, results, errsCol = make([]string, len(items)), make([]string, len(items)), make([]string, len(items))
		jitters                    = make([]float64, len(items))
	)
	for k, it := range items {
		c := completions[it.i]
		ids[k], tokens[k], outcomes[k] = c.ID, c.Token, string(c.Outcome)
		results[k], errsCol[k], jitters[k] = it.result, it.errJSON, it.jitter
	}
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := q.pool.Query(ctx, completeSQL, ids, tokens, outcomes, results, errsCol, jitters, q.backoffUS)
	if err != nil {
		return nil, fmt.Errorf("complete %d steps: %w", len(ids), err)
	}
	defer rows.Close()
	applied := map[Outcome]int{}
	dead := 0
	for rows.Next() {
		var (
			claim   Claim
			state   string
			outcome string
		)
		if err := rows.Scan(&claim.ID, &claim.Token, &state, &outcome); err != nil {
			return nil, fmt.Errorf("complete %d steps: scan: %w", len(ids), err)
		}
		r := &out[index[claim]]
		r.Applied, r.State = true, State(state)
		applied[Outcome(outcome)]++
		if r.State == StateDead {
			dead++
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("complete %d steps: %w", len(ids), err)
	}
	fenced := len(ids)
	for o, n := range applied {
		q.m.acknowledged.WithLabelValues(string(o)).Add(float64(n))
		fenced -= n
	}
	q.m.dead.Add(float64(dead))
	q.m.fenced.Add(float64(fenced))
	return out, nil
}

// completionJSON validates one completion and returns its result and error
// columns ("" for NULL).
func completionJSON(c Completion) (result, errJSON string, err error) {
	switch c.Outcome {
	case Success:
		if len(c.Result) > 0 {
			if !json.Valid(c.Result) {
				return result, errJSON, errors.New("result is not valid JSON")
			}
			result = string(c.Result)
		}
	case RetryableFailure, PermanentFailure:
		if len(c.Error) == 0 {
			c.Error = FailedResult("", "no error details reported", "handler_error", c.Outcome == RetryableFailure, nil)
		}
		if !json.Valid(c.Error) {
			return result, errJSON, errors.New("error is not valid JSON")
		}
		errJSON = string(c.Error)
	default:
		return result, errJSON, fmt.Errorf("unknown outcome %q", c.Outcome)
	}
	return result, errJSON, nil
}
