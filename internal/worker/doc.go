// Package worker is the Tasker worker runtime: it claims steps from the
// PostgreSQL queue, runs them through the dispatch core, and settles their
// results back in the queue, acknowledging a step only once its result is
// durable. It serves /metrics, /healthz and /readyz, keeps long-running
// steps claimed with heartbeats, and drains on shutdown so that no step is
// lost: unstarted steps go back to the queue at once, running ones finish
// within the drain timeout, and anything else is redelivered when its claim
// expires.
package worker
