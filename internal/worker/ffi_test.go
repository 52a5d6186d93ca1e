package worker

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
	"github.com/seed-a17b38e7/workerpool-operator/internal/ffi"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
)

// In FFI mode foreign pollers consume: steps polled and completed through the
// channel are settled in the queue; a step nobody completes becomes an
// ffi_timeout failure that reaches the queue and is retried.
func TestFFIModeCompletesAndTimesOut(t *testing.T) {
	e := newEnv(t)
	r := startWorker(t, e, ffiConfig("ffi", 100, 300), nil)
	ch := r.w.FFI()
	if ch == nil {
		t.Fatal("FFI channel missing with ffi_dispatch.enabled")
	}
	enqueue(t, e.q, 5, "py_echo", `{"n":1}`, nil)
	ignored := enqueue(t, e.q, 1, "py_ignored", `{}`, func(s *queue.NewStep) { s.MaxAttempts = 2 })[0]

	done := 0
	eventually(t, "5 echo steps completed by the poller", 30*time.Second, func() bool {
		m, ok := ch.Poll()
		if !ok {
			return done == 5
		}
		if m.Handler == "py_ignored" {
			return false // a foreign handler that hangs: never completed
		}
		res := dispatch.StepExecutionResult{StepUUID: m.StepUUID, Success: true, Result: m.Payload}
		if st, err := ch.Complete(m.EventID, res); st != ffi.Completed {
			t.Fatalf("complete: %v %v", st, err)
		}
		done++
		return false
	})
	eventually(t, "echo results settled", 10*time.Second, func() bool { return counts(t, e)["completed"] == 5 })
	// The ignored step times out, is retried (it becomes visible again after
	// the 20 ms test backoff), is polled and ignored again, and is dead after
	// its 2 attempts, with the ffi_timeout error kept.
	eventually(t, "ignored step dead after ffi timeouts", 30*time.Second, func() bool {
		ch.Poll() // take the redelivery and hang again
		s, err := e.q.Get(context.Background(), ignored.ID)
		return err == nil && s.State == queue.StateDead
	})
	s, err := e.q.Get(context.Background(), ignored.ID)
	if err != nil {
		t.Fatal(err)
	}
	var res dispatch.StepExecutionResult
	if err := json.Unmarshal(s.LastError, &res); err != nil {
		t.Fatal(err)
	}
	if s.Attempts != 2 || res.Error == nil || res.Error.ErrorType != dispatch.ErrorTypeFFITimeout || !res.Error.Retryable {
		t.Fatalf("ignored step: attempts %d last error %s", s.Attempts, s.LastError)
	}
	body := httpBody(t, r.url("/metrics"))
	for _, name := range []string{"tasker_ffi_pending_events", "tasker_ffi_oldest_event_age_ms", "tasker_ffi_starving_events", "tasker_ffi_timeouts_total 2"} {
		if !strings.Contains(body, name) {
			t.Errorf("metrics lack %s", name)
		}
	}
}

// SIGTERM in FFI mode: unpolled steps go back to the queue at once, pending
// ones may still be completed during the drain.
func TestFFIModeDrain(t *testing.T) {
	e := newEnv(t)
	r := startWorker(t, e, ffiConfig("ffi-drain", 10000, 30000), nil)
	ch := r.w.FFI()
	enqueue(t, e.q, 5, "py", `{}`, nil)
	var m dispatch.StepMessage
	eventually(t, "a step polled", 30*time.Second, func() bool {
		var ok bool
		m, ok = ch.Poll()
		return ok
	})
	eventually(t, "all 5 claimed", 30*time.Second, func() bool { return counts(t, e)["claimed"] == 5 })
	stopped := make(chan error, 1)
	go func() { stopped <- r.stop() }()
	eventually(t, "the 4 unpolled steps returned to the queue", 10*time.Second, func() bool { return counts(t, e)["ready"] == 4 })
	if st, err := ch.Complete(m.EventID, dispatch.StepExecutionResult{StepUUID: m.StepUUID, Success: true}); st != ffi.Completed {
		t.Fatalf("complete during drain: %v %v", st, err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("drain: %v", err)
	}
	c := counts(t, e)
	if c["completed"] != 1 || c["ready"] != 4 || c["claimed"] != 0 {
		t.Fatalf("after drain: %v", c)
	}
}
