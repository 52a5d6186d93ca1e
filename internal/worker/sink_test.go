package worker

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
)

// The sink's fast path must store what json.Marshal would (as JSON values;
// PostgreSQL keeps jsonb, so whitespace does not matter), and must decline
// every result it cannot write exactly.
func TestAppendSuccessJSONMatchesMarshal(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 600700800, time.UTC)
	base := func() dispatch.StepExecutionResult {
		r := dispatch.SuccessResult("0b6f3c8e-6a36-4d0e-9a4b-5f0c1e2d3a4b", nil, 1500*time.Millisecond)
		r.Metadata.CompletedAt = at
		r.Metadata.WorkerID = "pod-1"
		return r
	}
	fast := map[string]func(*dispatch.StepExecutionResult){
		"nil result": func(*dispatch.StepExecutionResult) {},
		"object result": func(r *dispatch.StepExecutionResult) {
			r.Result = json.RawMessage(`{"a": [1, 2, {"b": "<x>"}], "c": null}`)
		},
		"string result":       func(r *dispatch.StepExecutionResult) { r.Result = json.RawMessage(`"h\u00e9llo \"q\""`) },
		"no worker id":        func(r *dispatch.StepExecutionResult) { r.Metadata.WorkerID = "" },
		"whole second":        func(r *dispatch.StepExecutionResult) { r.Metadata.CompletedAt = at.Truncate(time.Second) },
		"retryable metadata":  func(r *dispatch.StepExecutionResult) { r.Metadata.Retryable = true },
		"empty metadata maps": func(r *dispatch.StepExecutionResult) { r.Metadata.Context = map[string]any{} },
	}
	for name, mutate := range fast {
		r := base()
		mutate(&r)
		got, ok := appendSuccessJSON([]byte("prefix"), &r)
		if !ok {
			t.Errorf("%s: fast path declined", name)
			continue
		}
		want, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		if string(got[:6]) != "prefix" {
			t.Fatalf("%s: prefix overwritten: %s", name, got)
		}
		var g, w any
		if err := json.Unmarshal(got[6:], &g); err != nil {
			t.Fatalf("%s: invalid JSON %s: %v", name, got[6:], err)
		}
		_ = json.Unmarshal(want, &w)
		if !reflect.DeepEqual(g, w) {
			t.Errorf("%s:\n got  %s\n want %s", name, got[6:], want)
		}
	}

	slow := map[string]func(*dispatch.StepExecutionResult){
		"failure": func(r *dispatch.StepExecutionResult) {
			*r = dispatch.FailureResult("x", "boom", "handler_error", true, 0, nil)
		},
		"error block":    func(r *dispatch.StepExecutionResult) { r.Error = &dispatch.StepError{Message: "m"} },
		"context":        func(r *dispatch.StepExecutionResult) { r.Metadata.Context = map[string]any{"k": 1} },
		"custom":         func(r *dispatch.StepExecutionResult) { r.Metadata.Custom = map[string]any{"k": 1} },
		"error code":     func(r *dispatch.StepExecutionResult) { r.Metadata.ErrorCode = "E1" },
		"quote in uuid":  func(r *dispatch.StepExecutionResult) { r.StepUUID = `a"b` },
		"html in worker": func(r *dispatch.StepExecutionResult) { r.Metadata.WorkerID = "a<b" },
		"unicode status": func(r *dispatch.StepExecutionResult) { r.Status = "compl\u00e9ted" },
		"invalid result": func(r *dispatch.StepExecutionResult) { r.Result = json.RawMessage(`{"a":`) },
		"year 10000": func(r *dispatch.StepExecutionResult) {
			r.Metadata.CompletedAt = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
		},
		"control in uuid": func(r *dispatch.StepExecutionResult) { r.StepUUID = "a\nb" },
	}
	for name, mutate := range slow {
		r := base()
		mutate(&r)
		if got, ok := appendSuccessJSON([]byte("prefix"), &r); ok || string(got) != "prefix" {
			t.Errorf("%s: fast path accepted it (ok=%v, %s)", name, ok, got)
		}
	}
}
