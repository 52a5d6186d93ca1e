package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// RunHandler runs h for msg outside the HandlerDispatchService and maps the
// outcome per the failure table, exactly as the service does: success is a
// SuccessResult; an error is a handler_error, retryable unless the handler
// returned a *StepError saying otherwise (see Permanent); a panic is
// recovered and becomes a handler_panic, not retryable, with its stack; an
// error returned after ctx's deadline passed is a handler_timeout,
// retryable. It exists so that other consumers of the dispatch channel (the
// FFI channel's built-in Go poller) produce the same results as native
// dispatch without copying the mapping. ctx bounds the handler; RunHandler
// itself does not enforce the deadline, so a handler that ignores ctx runs
// until it returns.
func RunHandler(ctx context.Context, h Handler, msg *StepMessage) StepExecutionResult {
	start := time.Now()
	out, err, panicked := invokeHandler(ctx, h, msg)
	elapsed := time.Since(start)
	if panicked == nil && err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		timeout := elapsed
		if d, ok := ctx.Deadline(); ok {
			timeout = d.Sub(start)
		}
		return FailureResult(msg.StepUUID, fmt.Sprintf("Handler timed out after %dms", timeout.Milliseconds()),
			ErrorTypeHandlerTimeout, true, timeout, nil)
	}
	var r StepExecutionResult
	fillResult(&r, msg, out, err, panicked, elapsed, start.Add(elapsed))
	return r
}

// HandlerNotFoundResult is the failure of a step whose handler is not
// registered: handler_not_found, not retryable (another attempt on the same
// worker cannot find it either).
func HandlerNotFoundResult(msg *StepMessage) StepExecutionResult {
	return FailureResult(msg.StepUUID, "Handler not found: "+msg.Handler, ErrorTypeHandlerNotFound, false, 0, nil)
}
