package dispatch

import (
	"encoding/json"
	"fmt"
	"time"
)

// Error types carried in StepError.ErrorType and ResultMetadata.ErrorType.
// Orchestration and dashboards key on these strings, so they are part of the
// wire contract and never change.
const (
	ErrorTypeHandlerNotFound            = "handler_not_found"
	ErrorTypeHandlerError               = "handler_error"
	ErrorTypeHandlerPanic               = "handler_panic"
	ErrorTypeHandlerTimeout             = "handler_timeout"
	ErrorTypeSemaphoreAcquisitionFailed = "semaphore_acquisition_failed"
	ErrorTypeFFITimeout                 = "ffi_timeout"
	// ErrorTypeResultUndelivered: the handler finished but its result could
	// not be handed to the completion channel in time (the database was
	// stalled); the step is retried.
	ErrorTypeResultUndelivered = "result_undelivered"
	// ErrorTypeFFIAbandoned: a foreign handler polled the event and did not
	// complete it before the worker stopped; the step is retried.
	ErrorTypeFFIAbandoned = "ffi_abandoned"
)

// Result statuses of the wire format. A failure produced by the worker itself
// is "failed"; "error" is accepted from foreign handlers for parity.
const (
	StatusCompleted = "completed"
	StatusFailed    = "failed"
	StatusError     = "error"
)

// Outcome classifies a result the way the queue settles it, and labels
// tasker_steps_completed_total.
type Outcome string

// The three ways a step can end an attempt.
const (
	OutcomeSuccess          Outcome = "success"
	OutcomeRetryableFailure Outcome = "retryable_failure"
	OutcomePermanentFailure Outcome = "permanent_failure"
)

// Receipt identifies the durable queue message a step came from. The dispatch
// core never interprets it; it travels with the step so that whoever settles
// the result can acknowledge exactly that claim (ID plus fencing token).
type Receipt struct {
	// ID is the queue row of the step.
	ID int64
	// Token is the claim's fencing token; a settle with a stale token is refused.
	Token int64
}

// StepMessage is what a handler receives: one attempt at one workflow step.
type StepMessage struct {
	// EventID identifies this dispatch (one attempt); FFI pollers complete by it.
	EventID string `json:"event_id"`
	// StepUUID and TaskUUID identify the workflow step and its task.
	StepUUID string `json:"step_uuid"`
	// TaskUUID identifies the task the step belongs to.
	TaskUUID string `json:"task_uuid"`
	// CorrelationID follows the step through logs across services.
	CorrelationID string `json:"correlation_id,omitempty"`
	// Handler names the registered handler that runs this step.
	Handler string `json:"handler"`
	// Queue is the queue (namespace) the step was claimed from, for logs.
	Queue string `json:"-"`
	// Payload is the step's input, passed through untouched.
	Payload json.RawMessage `json:"payload,omitempty"`
	// Attempt counts from 1 for the first delivery.
	Attempt int `json:"attempt"`
	// Timeout, when positive, overrides the service's handler timeout for
	// this step (upstream ignored per-step timeouts).
	Timeout time.Duration `json:"-"`
	// TimeoutMs mirrors Timeout on the wire for foreign handlers.
	TimeoutMs int64 `json:"timeout_ms,omitempty"`
	// Receipt ties the step to its queue claim; see Receipt.
	Receipt Receipt `json:"-"`
	// QueuedAt is when the worker handed the step to the dispatch channel;
	// the FFI channel reports how long its oldest unpolled event has waited.
	QueuedAt time.Time `json:"-"`
	// Permit is the concurrency permit a step on the FFI path holds from the
	// intake until the FFI channel settles it or hands it back (see
	// ffi.Config.Permits). The native service keeps its permits itself and
	// ignores this field.
	Permit Permit `json:"-"`
}

// StepExecutionResult is the result wire format shared with upstream Tasker
// and with foreign handlers completing through the C ABI.
type StepExecutionResult struct {
	// StepUUID names the step this result settles.
	StepUUID string `json:"step_uuid"`
	// Success is true when the handler completed the step.
	Success bool `json:"success"`
	// Result is the handler's output (null on failure).
	Result json.RawMessage `json:"result"`
	// Status is "completed" on success, "failed" (or "error") otherwise.
	Status string `json:"status"`
	// Metadata describes the run; orchestration reads retryability here.
	Metadata ResultMetadata `json:"metadata"`
	// Error explains a failure; nil on success.
	Error *StepError `json:"error,omitempty"`
}

// ResultMetadata is the metadata block of a result. Orchestration reads
// Retryable from here, so it must always mirror Error.Retryable.
type ResultMetadata struct {
	// ExecutionTimeMs is how long the handler ran (the timeout, for a timeout).
	ExecutionTimeMs int64 `json:"execution_time_ms"`
	// Retryable says whether a failed step may run again.
	Retryable bool `json:"retryable"`
	// CompletedAt is when the result was produced.
	CompletedAt time.Time `json:"completed_at"`
	// WorkerID names the worker that produced the result.
	WorkerID string `json:"worker_id,omitempty"`
	// ErrorType mirrors Error.ErrorType for consumers that read metadata only.
	ErrorType string `json:"error_type,omitempty"`
	// ErrorCode is an optional machine-readable code from the handler.
	ErrorCode string `json:"error_code,omitempty"`
	// Context carries diagnostic facts (e.g. service_id and reason of a
	// semaphore failure).
	Context map[string]any `json:"context,omitempty"`
	// Custom is free-form data from the handler.
	Custom map[string]any `json:"custom,omitempty"`
}

// StepError describes why a step failed. Handlers may return one (as an
// error) to choose the error type and whether the step is retried.
type StepError struct {
	// Message is the human-readable reason.
	Message string `json:"message"`
	// ErrorType classifies the failure (see the ErrorType constants).
	ErrorType string `json:"error_type,omitempty"`
	// ErrorCode is an optional machine-readable code.
	ErrorCode string `json:"error_code,omitempty"`
	// Retryable says whether the step may run again.
	Retryable bool `json:"retryable"`
	// Backtrace is the handler's stack, when one was captured.
	Backtrace []string `json:"backtrace,omitempty"`
}

// Error makes a StepError usable as a handler's returned error.
func (e *StepError) Error() string { return e.Message }

// Permanent wraps err so the step fails without retry (error type
// handler_error). Handlers use it for input that will never succeed.
func Permanent(err error) error {
	return &StepError{Message: err.Error(), ErrorType: ErrorTypeHandlerError, Retryable: false}
}

// SuccessResult builds the result of a handler that succeeded.
func SuccessResult(stepUUID string, result json.RawMessage, executionTime time.Duration) StepExecutionResult {
	if result == nil {
		result = nullJSON
	}
	return StepExecutionResult{
		StepUUID: stepUUID,
		Success:  true,
		Result:   result,
		Status:   StatusCompleted,
		Metadata: ResultMetadata{
			ExecutionTimeMs: executionTime.Milliseconds(),
			CompletedAt:     time.Now().UTC(),
		},
	}
}

// FailureResult builds an explicit failure. metadata.retryable and
// error.retryable are set from the same argument so they can never disagree.
func FailureResult(stepUUID, message, errorType string, retryable bool, executionTime time.Duration, context map[string]any) StepExecutionResult {
	return StepExecutionResult{
		StepUUID: stepUUID,
		Success:  false,
		Result:   nullJSON,
		Status:   StatusFailed,
		Metadata: ResultMetadata{
			ExecutionTimeMs: executionTime.Milliseconds(),
			Retryable:       retryable,
			CompletedAt:     time.Now().UTC(),
			ErrorType:       errorType,
			Context:         context,
		},
		Error: &StepError{Message: message, ErrorType: errorType, Retryable: retryable},
	}
}

var nullJSON = json.RawMessage("null")

// Outcome tells how the queue must settle this result.
func (r *StepExecutionResult) Outcome() Outcome {
	switch {
	case r.Success:
		return OutcomeSuccess
	case r.Retryable():
		return OutcomeRetryableFailure
	default:
		return OutcomePermanentFailure
	}
}

// Retryable reports whether a failed step may be attempted again. The error
// block wins when present, because it is what the handler stated.
func (r *StepExecutionResult) Retryable() bool {
	if r.Error != nil {
		return r.Error.Retryable
	}
	return r.Metadata.Retryable
}

// Normalize makes a result that arrived from outside (a foreign handler)
// consistent: status matches success, metadata.retryable mirrors
// error.retryable, a failure always has an error block, and the completion
// time is set. It returns an error naming the field when the result cannot be
// made consistent.
func (r *StepExecutionResult) Normalize() error {
	if r.StepUUID == "" {
		return fmt.Errorf("result field step_uuid is empty: want the step_uuid of the polled event")
	}
	if r.Result == nil {
		r.Result = nullJSON
	}
	if r.Metadata.CompletedAt.IsZero() {
		r.Metadata.CompletedAt = time.Now().UTC()
	}
	if r.Success {
		if r.Error != nil {
			return fmt.Errorf("result has success=true and an error block: want one or the other")
		}
		if r.Status == "" {
			r.Status = StatusCompleted
		}
		if r.Status != StatusCompleted {
			return fmt.Errorf("result status %q with success=true: want %q", r.Status, StatusCompleted)
		}
		r.Metadata.Retryable = false
		return nil
	}
	switch r.Status {
	case "":
		r.Status = StatusFailed
	case StatusFailed, StatusError:
	default:
		return fmt.Errorf("result status %q with success=false: want %q or %q", r.Status, StatusFailed, StatusError)
	}
	if r.Error == nil {
		r.Error = &StepError{Message: "handler reported failure without an error", ErrorType: r.Metadata.ErrorType, Retryable: r.Metadata.Retryable}
	}
	if r.Error.ErrorType == "" {
		r.Error.ErrorType = r.Metadata.ErrorType
		if r.Error.ErrorType == "" {
			r.Error.ErrorType = ErrorTypeHandlerError
		}
	}
	if r.Metadata.ErrorType == "" {
		r.Metadata.ErrorType = r.Error.ErrorType
	}
	r.Metadata.Retryable = r.Error.Retryable
	return nil
}

// Completion is what travels on the completion channel: the result together
// with the message it answers, so the receiver can settle the right claim.
type Completion struct {
	// Message is the step as it was dispatched (with its queue receipt).
	Message StepMessage
	// Result is how the attempt ended.
	Result StepExecutionResult
	// Fenced is set by the ResultSink when the result was not applied
	// because the step had been claimed again since (its claim expired):
	// the step's fate is another attempt's, so no post-handler callback
	// runs for this result.
	Fenced bool
}
