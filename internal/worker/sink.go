package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
)

// Persist is the completion processor's sink: it settles a batch of results
// in the queue in one statement. Only after it returns nil are the steps
// acknowledged; on error the processor retries the whole batch, which the
// fencing tokens make idempotent.
func (w *Worker) Persist(ctx context.Context, batch []*dispatch.Completion) error {
	cs := make([]queue.Completion, len(batch))
	var buf []byte // one buffer for the batch's success results (fast path)
	for i, c := range batch {
		var (
			body  []byte
			err   error
			ok    bool
			start = len(buf)
		)
		if buf, ok = appendSuccessJSON(buf, &c.Result); ok {
			body = buf[start:len(buf):len(buf)] // capped: later appends never touch it
		} else {
			body, err = json.Marshal(&c.Result)
		}
		if err != nil {
			// A result whose handler output is not valid JSON: keep the
			// step, record why.
			c.Result = dispatch.FailureResult(c.Result.StepUUID, fmt.Sprintf("result is not valid JSON: %v", err),
				dispatch.ErrorTypeHandlerError, false, 0, nil)
			body, _ = json.Marshal(&c.Result)
		}
		cs[i] = queue.Completion{
			Claim:   receiptClaim(c.Message.Receipt),
			Outcome: queue.Outcome(c.Result.Outcome()),
		}
		if c.Result.Success {
			cs[i].Result = body
		} else {
			cs[i].Error = body
		}
	}
	res, err := w.queue.Complete(ctx, cs)
	if err != nil {
		return fmt.Errorf("settle %d step results: %w", len(cs), err)
	}
	claims := make([]queue.Claim, len(res))
	for i, r := range res {
		claims[i] = r.Claim
		c := batch[i]
		switch {
		case r.Err != nil:
			w.log.Error(r.Err, "step result rejected by the queue", "id", r.ID, "stepUuid", c.Message.StepUUID)
		case !r.Applied:
			c.Fenced = true
			w.log.V(1).Info("step result fenced out: the step was re-claimed after this claim expired", "id", r.ID)
		case !c.Result.Success:
			w.logFailure(c, r)
		}
	}
	w.claims.remove(claims...)
	w.signalCapacity()
	return nil
}

// maxLoggedStack bounds the stack a failure's log line carries.
const maxLoggedStack = 8 << 10

// logFailure writes one step failure the queue has just applied: at error
// level, with the step, queue, handler and error type, and a panic's stack;
// rate-limited separately for steps that go on to a retry and steps that are
// now dead, so a flood of either cannot drown the log or hide the other.
func (w *Worker) logFailure(c *dispatch.Completion, r queue.CompletionResult) {
	dead := r.State == queue.StateDead
	lim, msg := w.failureLog, "step failed; it is retried after its backoff"
	if dead {
		lim, msg = w.deadLog, "step dead-lettered: it failed and will not be retried"
	}
	if !lim.Allow() {
		return
	}
	e := c.Result.Error
	if e == nil {
		e = &dispatch.StepError{Message: "no error details", ErrorType: c.Result.Metadata.ErrorType}
	}
	kv := []any{"stepUuid", c.Message.StepUUID, "id", r.ID, "queue", c.Message.Queue, "handler", c.Message.Handler,
		"errorType", e.ErrorType, "retryable", e.Retryable, "attempt", c.Message.Attempt, "state", string(r.State),
		"suppressedSinceLast", lim.Suppressed()}
	if len(e.Backtrace) > 0 {
		stack := strings.Join(e.Backtrace, "\n")
		if len(stack) > maxLoggedStack {
			stack = stack[:maxLoggedStack] + "\n..."
		}
		kv = append(kv, "stack", stack)
	}
	w.log.Error(errors.New(e.Message), msg, kv...)
}

// appendSuccessJSON appends the JSON of a plain success result (no error
// block, no metadata maps, strings that need no escaping) to buf, as
// json.Marshal would write it up to insignificant whitespace inside the
// handler's raw result. It reports false, with buf unchanged in content,
// for anything else, which then takes json.Marshal. Reflection-based
// marshalling of every result was the sink's largest CPU cost at high
// throughput.
func appendSuccessJSON(buf []byte, r *dispatch.StepExecutionResult) ([]byte, bool) {
	m := &r.Metadata
	if !r.Success || r.Error != nil || m.ErrorType != "" || m.ErrorCode != "" || len(m.Context) > 0 || len(m.Custom) > 0 ||
		!plainJSONString(r.StepUUID) || !plainJSONString(r.Status) || !plainJSONString(m.WorkerID) ||
		m.CompletedAt.Year() < 0 || m.CompletedAt.Year() > 9999 || (len(r.Result) > 0 && !json.Valid(r.Result)) {
		return buf, false
	}
	buf = append(buf, `{"step_uuid":"`...)
	buf = append(buf, r.StepUUID...)
	buf = append(buf, `","success":true,"result":`...)
	if len(r.Result) == 0 {
		buf = append(buf, "null"...)
	} else {
		buf = append(buf, r.Result...)
	}
	buf = append(buf, `,"status":"`...)
	buf = append(buf, r.Status...)
	buf = append(buf, `","metadata":{"execution_time_ms":`...)
	buf = strconv.AppendInt(buf, m.ExecutionTimeMs, 10)
	buf = append(buf, `,"retryable":`...)
	buf = strconv.AppendBool(buf, m.Retryable)
	buf = append(buf, `,"completed_at":"`...)
	buf = m.CompletedAt.AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, '"')
	if m.WorkerID != "" {
		buf = append(buf, `,"worker_id":"`...)
		buf = append(buf, m.WorkerID...)
		buf = append(buf, '"')
	}
	return append(buf, "}}"...), true
}

// plainJSONString reports whether s can be written between quotes as is:
// printable ASCII without the characters encoding/json escapes.
func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

func receiptClaim(r dispatch.Receipt) queue.Claim { return queue.Claim{ID: r.ID, Token: r.Token} }
