package dispatch

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestFailureResultWireFormat(t *testing.T) {
	r := FailureResult("s-1", "boom", ErrorTypeHandlerError, true, 1500e6, map[string]any{"k": "v"})
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	md := m["metadata"].(map[string]any)
	e := m["error"].(map[string]any)
	if m["step_uuid"] != "s-1" || m["success"] != false || m["status"] != "failed" || m["result"] != nil {
		t.Errorf("top level %v", m)
	}
	if md["retryable"] != true || e["retryable"] != true || md["error_type"] != "handler_error" || e["error_type"] != "handler_error" {
		t.Errorf("retryable/error_type not mirrored: %v %v", md, e)
	}
	if md["execution_time_ms"] != float64(1500) || md["completed_at"] == nil {
		t.Errorf("metadata %v", md)
	}
}

func TestNormalize(t *testing.T) {
	decode := func(s string) StepExecutionResult {
		var r StepExecutionResult
		if err := json.Unmarshal([]byte(s), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := decode(`{"step_uuid":"a","success":false,"metadata":{"retryable":true},"error":{"message":"x","retryable":false}}`)
	if err := r.Normalize(); err != nil {
		t.Fatal(err)
	}
	if r.Metadata.Retryable || r.Outcome() != OutcomePermanentFailure || r.Status != StatusFailed || r.Error.ErrorType != ErrorTypeHandlerError {
		t.Errorf("error.retryable must win and be mirrored: %+v %+v", r.Metadata, r.Error)
	}
	r = decode(`{"step_uuid":"a","success":false,"status":"error","metadata":{"retryable":true,"error_type":"x_err"}}`)
	if err := r.Normalize(); err != nil {
		t.Fatal(err)
	}
	if r.Error == nil || !r.Error.Retryable || r.Error.ErrorType != "x_err" || r.Outcome() != OutcomeRetryableFailure {
		t.Errorf("missing error block not synthesised: %+v", r.Error)
	}
	r = decode(`{"step_uuid":"a","success":true,"result":{"v":1}}`)
	if err := r.Normalize(); err != nil || r.Status != StatusCompleted || r.Metadata.CompletedAt.IsZero() {
		t.Errorf("success normalise: %v %+v", err, r)
	}
	for _, bad := range []struct{ in, want string }{
		{`{"success":true}`, "step_uuid"},
		{`{"step_uuid":"a","success":true,"error":{"message":"x"}}`, "success=true and an error block"},
		{`{"step_uuid":"a","success":true,"status":"failed"}`, `status "failed" with success=true`},
		{`{"step_uuid":"a","success":false,"status":"done"}`, `status "done" with success=false`},
	} {
		r := decode(bad.in)
		if err := r.Normalize(); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want mention of %q", bad.in, err, bad.want)
		}
	}
}

func TestStepErrorFromHandler(t *testing.T) {
	var se *StepError
	if err := Permanent(errors.New("nope")); !errors.As(err, &se) || se.Retryable || se.Message != "nope" {
		t.Fatalf("Permanent: %+v", se)
	}
	m := msg(1, "x")
	var r StepExecutionResult
	fillResult(&r, &m, nil, &StepError{Message: "rate limited", ErrorType: "rate_limited", ErrorCode: "429", Retryable: true}, nil, 0, time.Now())
	if r.Error.ErrorType != "rate_limited" || r.Metadata.ErrorCode != "429" || !r.Metadata.Retryable {
		t.Fatalf("custom StepError not carried: %+v %+v", r.Error, r.Metadata)
	}
}
