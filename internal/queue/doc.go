// Package queue is the worker's durable step queue on PostgreSQL.
//
// It exists so that no step is lost: upstream Tasker archived a queue message
// right after claiming and dispatching it, so a crash, a full channel or a
// dropped timeout left the step stranded for half an hour. Here a step stays
// in the table, claimed but redeliverable, until its result is acknowledged
// with Complete; a worker that dies simply lets its claims expire and another
// worker gets them. Delivery is at-least-once; handlers should be idempotent.
//
// # Life cycle
//
//	ready ──Claim──▶ claimed ──Complete(success)──────────────▶ completed
//	  ▲                │ │ └──Complete(permanent_failure)─────▶ dead
//	  │                │ └───Complete(retryable_failure) ─┬──▶ dead (attempts used up)
//	  └── backoff ─────┼──────────────────────────────────┘
//	  └── Release ─────┤ (handler never started: attempt given back)
//	  └── visibility expires (worker died) ─▶ redelivered by the next Claim,
//	                                          or dead if that was the final attempt
//
// Every Claim increments the row's claim_token. Extend (heartbeat), Complete
// and Release only touch a row whose state is 'claimed' and whose token still
// equals the one the claim returned, so a worker that stalled past its
// visibility cannot overwrite the result of the worker that got the step
// next ("fencing"); its late acknowledgement is reported as not applied.
//
// Retries wait Options.Backoff[attempt-1] (default 1s, 5s, 15s, 30s, then
// 60s for every later attempt), multiplied by a jitter factor drawn per
// retry, by default uniformly from [0.8, 1.2) so a burst of failures does not
// come back as a burst. The jitter source is Options.Jitter; NoJitter makes
// timing exact for tests.
//
// # Producing steps from any language
//
// Go code calls Queue.Enqueue. Anything else that can talk to PostgreSQL
// inserts rows and notifies, in one transaction so the wake-up is only sent
// if the insert commits:
//
//	BEGIN;
//	INSERT INTO tasker_steps (queue, step_uuid, task_uuid, handler, payload, max_attempts, timeout_ms)
//	VALUES ('payments', '6f1c...-uuid', 'a7e2...-uuid', 'charge_card', '{"amount": 1200}', 3, 30000)
//	ON CONFLICT (step_uuid) DO NOTHING;   -- makes a retried insert harmless
//	NOTIFY tasker_steps, 'payments';      -- payload: the queue name
//	COMMIT;
//
// Only queue and handler are required; step_uuid and task_uuid default to
// gen_random_uuid(), payload to {}, max_attempts to 3 (Enqueue uses
// Options.MaxAttempts instead), visible_at to now() (set it in the future to
// delay the step), timeout_ms to none. Never set state, attempts or
// claim_token on insert. The NOTIFY is only a hint that cuts latency:
// workers also poll, so a producer that cannot notify still works. A NOTIFY
// with an empty payload wakes every queue.
//
// # Operations
//
// Migrate is safe to run from every worker at start-up. RefreshStats feeds
// the depth and oldest-age gauges; Stats and Get answer "what is in the
// queue"; RunRetention (which the worker runs on a schedule, one worker at a
// time) deletes completed and dead steps past their configured ages in
// bounded batches, so the table stays bounded. last_error has one shape for
// every cause: see lasterror.go and docs/queue.md.
package queue
