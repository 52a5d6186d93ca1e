package handlers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
)

func run(t *testing.T, name, payload string, attempt int) (string, error) {
	t.Helper()
	r := dispatch.NewRegistry()
	if err := Register(r); err != nil {
		t.Fatal(err)
	}
	h, ok := r.Lookup(name)
	if !ok {
		t.Fatalf("%s not registered", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := h.Handle(ctx, &dispatch.StepMessage{Handler: name, Payload: []byte(payload), Attempt: attempt})
	return string(out), err
}

func permanent(err error) bool {
	var se *dispatch.StepError
	return errors.As(err, &se) && !se.Retryable
}

func TestBuiltins(t *testing.T) {
	if out, err := run(t, Echo, `{"a":1}`, 1); err != nil || out != `{"a":1}` {
		t.Errorf("echo: %q %v", out, err)
	}
	if out, err := run(t, Sleep, `{"ms":5}`, 1); err != nil || out != `{"slept_ms":5}` {
		t.Errorf("sleep object: %q %v", out, err)
	}
	if out, err := run(t, Sleep, `3`, 1); err != nil || out != `{"slept_ms":3}` {
		t.Errorf("sleep number: %q %v", out, err)
	}
	for _, bad := range []string{`"soon"`, `{"ms":-1}`} {
		if _, err := run(t, Sleep, bad, 1); !permanent(err) {
			t.Errorf("sleep %s: want a permanent error, got %v", bad, err)
		}
	}
	if _, err := run(t, Fail, `{}`, 1); err == nil || permanent(err) {
		t.Errorf("fail: want a retryable error, got %v", err)
	}
	if _, err := run(t, Fail, `{"retryable":false,"message":"bad"}`, 1); !permanent(err) || err.Error() != "bad" {
		t.Errorf("fail permanent: %v", err)
	}
	if _, err := run(t, Fail, `{"fail_attempts":2}`, 2); err == nil {
		t.Error("fail_attempts=2 succeeded on attempt 2")
	}
	if out, err := run(t, Fail, `{"fail_attempts":2}`, 3); err != nil || !strings.Contains(out, `"succeeded_on_attempt":3`) {
		t.Errorf("fail_attempts=2 on attempt 3: %q %v", out, err)
	}
	defer func() {
		if p := recover(); p == nil || !strings.Contains(p.(string), "boom") {
			t.Errorf("panic handler: %v", p)
		}
	}()
	_, _ = run(t, Panic, `"boom"`, 1)
}

func TestSleepHonoursCancellation(t *testing.T) {
	r := dispatch.NewRegistry()
	if err := Register(r); err != nil {
		t.Fatal(err)
	}
	h, _ := r.Lookup(Sleep)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := h.Handle(ctx, &dispatch.StepMessage{Payload: []byte(`{"ms":60000}`)}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("sleep ignored cancellation: %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("sleep did not stop at cancellation")
	}
}
