package queue

import (
	"encoding/json"
	"time"
)

// last_error has one shape whatever the cause: a failed step result in the
// worker's result wire format, as the worker writes it for a handler's
// failure. Readers (docs/queue.md's queries, dashboards) find the cause in
// last_error->'error' ({message, error_type, retryable} plus the handler's
// error_code and backtrace when it gave them) and the details in
// last_error->'metadata' (worker_id, execution_time_ms, context, custom).
// Failures the queue itself decides (a claim that expired on the final
// attempt) are written in the same shape, so one query answers for all.

// ErrorTypeClaimExpired is the error type of a step made dead because the
// claim of its final attempt expired without an acknowledgement (its worker
// died or stalled).
const ErrorTypeClaimExpired = "claim_expired"

// claimExpiredErrorSQL builds the last_error of a claim that expired on the
// step's final attempt (s is the row before the update). The error it
// replaces is kept in metadata.context.previous_error.
const claimExpiredErrorSQL = `jsonb_build_object(
		'step_uuid', s.step_uuid, 'success', false, 'result', NULL, 'status', 'failed',
		'metadata', jsonb_build_object(
			'execution_time_ms', 0, 'retryable', false, 'completed_at', now(), 'worker_id', s.claimed_by,
			'error_type', '` + ErrorTypeClaimExpired + `',
			'context', jsonb_build_object('attempt', s.attempts, 'max_attempts', s.max_attempts,
				'claimed_at', s.claimed_at, 'previous_error', s.last_error)),
		'error', jsonb_build_object(
			'message', format('claim by %s expired on final attempt %s of %s without acknowledgement',
				s.claimed_by, s.attempts, s.max_attempts),
			'error_type', '` + ErrorTypeClaimExpired + `', 'retryable', false))`

// failedResult is the wire format of a failed step result, the shape of
// last_error.
type failedResult struct {
	StepUUID string          `json:"step_uuid"`
	Success  bool            `json:"success"`
	Result   json.RawMessage `json:"result"`
	Status   string          `json:"status"`
	Metadata struct {
		ExecutionTimeMs int64          `json:"execution_time_ms"`
		Retryable       bool           `json:"retryable"`
		CompletedAt     time.Time      `json:"completed_at"`
		ErrorType       string         `json:"error_type"`
		Context         map[string]any `json:"context,omitempty"`
	} `json:"metadata"`
	Error struct {
		Message   string `json:"message"`
		ErrorType string `json:"error_type"`
		Retryable bool   `json:"retryable"`
	} `json:"error"`
}

// FailedResult returns a failed step result in the wire format, for callers
// of Complete that have no handler result to store (the worker builds its
// own through the dispatch package, in the same shape).
func FailedResult(stepUUID, message, errorType string, retryable bool, context map[string]any) json.RawMessage {
	var r failedResult
	r.StepUUID, r.Result, r.Status = stepUUID, json.RawMessage("null"), "failed"
	r.Metadata.Retryable, r.Metadata.CompletedAt, r.Metadata.ErrorType, r.Metadata.Context = retryable, time.Now().UTC(), errorType, context
	r.Error.Message, r.Error.ErrorType, r.Error.Retryable = message, errorType, retryable
	b, _ := json.Marshal(&r) // plain values: cannot fail
	return b
}
