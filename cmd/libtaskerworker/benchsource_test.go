//go:build ffibench

package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// go test -race -tags ffibench ./cmd/libtaskerworker/
func TestBenchSourceDeliversEveryEvent(t *testing.T) {
	const n = 300
	if err := benchStart(n); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop(0) })
	if err := benchStart(n); codeOf(err) != codeAlreadyStarted {
		t.Fatalf("second start: %v", err)
	}
	inst, err := current()
	if err != nil {
		t.Fatal(err)
	}
	for done := 0; done < n; {
		out, got, err := pollBatch(inst, 64)
		if err != nil {
			t.Fatal(err)
		}
		if got == 0 {
			continue
		}
		var evs []struct {
			EventID  string          `json:"event_id"`
			StepUUID string          `json:"step_uuid"`
			Payload  json.RawMessage `json:"payload"`
		}
		if err := json.Unmarshal(out, &evs); err != nil {
			t.Fatal(err)
		}
		ids := make([]string, len(evs))
		res := make([]string, len(evs))
		for i, e := range evs {
			ids[i] = e.EventID
			res[i] = `{"step_uuid":"` + e.StepUUID + `","success":true}`
		}
		if done == 0 && (evs[0].EventID != "1.1" || evs[0].StepUUID != "00000000-0000-4000-8000-000000000001" || string(evs[0].Payload) != `{"n":1}`) {
			t.Fatalf("first event: %+v", evs[0])
		}
		if o, err := completeBatch(inst, strings.Join(ids, "\n"), []byte("["+strings.Join(res, ",")+"]")); err != nil {
			t.Fatalf("%v %s", err, o)
		}
		done += got
	}
	delivered, err := benchStop()
	if err != nil || delivered != n || running.Load() != nil {
		t.Fatalf("stop: delivered %d, %v", delivered, err)
	}
	if _, err := benchStop(); codeOf(err) != codeNotStarted {
		t.Fatalf("second stop: %v", err)
	}
	// taskerworker_stop stops an (endless) bench source too.
	if err := benchStart(0); err != nil {
		t.Fatal(err)
	}
	if err := stop(0); err != nil || running.Load() != nil {
		t.Fatalf("stop on a bench source: %v", err)
	}
}
