// Package handlers holds the built-in step handlers every tasker-worker
// binary carries, so a pool can be demonstrated and tested end to end without
// any team code: noop, echo, sleep, fail and panic.
package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
)

// Names of the built-in handlers.
const (
	Noop  = "noop"
	Echo  = "echo"
	Sleep = "sleep"
	Fail  = "fail"
	Panic = "panic"
)

// Register adds every built-in handler to r.
func Register(r *dispatch.Registry) error {
	for name, h := range map[string]dispatch.Handler{
		Noop:  dispatch.HandlerFunc(noop),
		Echo:  dispatch.HandlerFunc(echo),
		Sleep: dispatch.HandlerFunc(sleep),
		Fail:  dispatch.HandlerFunc(fail),
		Panic: dispatch.HandlerFunc(panicking),
	} {
		if err := r.Register(name, h); err != nil {
			return fmt.Errorf("register built-in handlers: %w", err)
		}
	}
	return nil
}

func noop(context.Context, *dispatch.StepMessage) (json.RawMessage, error) { return nil, nil }

// echo returns its payload as the result.
func echo(_ context.Context, s *dispatch.StepMessage) (json.RawMessage, error) {
	return s.Payload, nil
}

// SleepPayload is the sleep handler's input: {"ms": 250}. A bare number is
// accepted too.
type SleepPayload struct {
	// Ms is how long to sleep, in milliseconds.
	Ms int64 `json:"ms"`
}

// sleep waits for the payload's milliseconds, honouring cancellation, which
// makes it the handler for testing timeouts, drain and heartbeats.
func sleep(ctx context.Context, s *dispatch.StepMessage) (json.RawMessage, error) {
	var p SleepPayload
	if len(s.Payload) > 0 {
		if err := json.Unmarshal(s.Payload, &p); err != nil {
			if err2 := json.Unmarshal(s.Payload, &p.Ms); err2 != nil {
				return nil, dispatch.Permanent(fmt.Errorf(`sleep payload %s: want {"ms": N} or a number`, s.Payload))
			}
		}
	}
	if p.Ms < 0 {
		return nil, dispatch.Permanent(fmt.Errorf("sleep payload ms=%d: want >= 0", p.Ms))
	}
	t := time.NewTimer(time.Duration(p.Ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return json.RawMessage(fmt.Sprintf(`{"slept_ms":%d}`, p.Ms)), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// FailPayload is the fail handler's input. Retryable defaults to true.
type FailPayload struct {
	// Message is the error text.
	Message string `json:"message"`
	// Retryable, when false, makes the failure permanent.
	Retryable *bool `json:"retryable"`
	// FailAttempts, when positive, fails only the first N attempts and then
	// succeeds, for exercising retries.
	FailAttempts int `json:"fail_attempts"`
}

// fail returns an error, retryable or not as the payload says.
func fail(_ context.Context, s *dispatch.StepMessage) (json.RawMessage, error) {
	p := FailPayload{Message: "step failed on purpose"}
	if len(s.Payload) > 0 {
		if err := json.Unmarshal(s.Payload, &p); err != nil {
			return nil, dispatch.Permanent(fmt.Errorf("fail payload %s: %w", s.Payload, err))
		}
	}
	if p.FailAttempts > 0 && s.Attempt > p.FailAttempts {
		return json.RawMessage(fmt.Sprintf(`{"succeeded_on_attempt":%d}`, s.Attempt)), nil
	}
	if p.Retryable != nil && !*p.Retryable {
		return nil, dispatch.Permanent(errors.New(p.Message))
	}
	return nil, errors.New(p.Message)
}

// panicking panics with the payload's text.
func panicking(_ context.Context, s *dispatch.StepMessage) (json.RawMessage, error) {
	panic(fmt.Sprintf("panic handler: %s", s.Payload))
}
