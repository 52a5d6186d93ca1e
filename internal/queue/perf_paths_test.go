package queue

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Enqueue without caller-chosen step_uuids takes the plain INSERT path: ids
// follow input order (so claims do too) and every step is reported new.
func TestEnqueueGeneratedUUIDsKeepsInputOrder(t *testing.T) {
	env := newEnv(t, Options{})
	steps := make([]NewStep, 1200)
	for i := range steps {
		steps[i] = NewStep{Queue: "fast", Handler: "h", Payload: json.RawMessage(`{"i":` + strconv.Itoa(i) + `}`)}
	}
	enq := mustEnqueue(t, env.q, steps...)
	seen := map[UUID]bool{}
	for i, e := range enq {
		if e.ID == 0 || e.Duplicate || e.EnqueuedAt.IsZero() || e.StepUUID.IsZero() || e.Queue != "fast" || seen[e.StepUUID] {
			t.Fatalf("step %d: %+v", i, e)
		}
		seen[e.StepUUID] = true
		if i > 0 && e.ID <= enq[i-1].ID {
			t.Fatalf("ids not in input order at %d: %d after %d", i, e.ID, enq[i-1].ID)
		}
	}
	claimed := mustClaim(t, env.q, []string{"fast"}, 2000, time.Minute)
	if len(claimed) != len(steps) {
		t.Fatalf("claimed %d, want %d", len(claimed), len(steps))
	}
	for i, c := range claimed {
		if c.ID != enq[i].ID || c.StepUUID != enq[i].StepUUID || string(c.Payload) != `{"i": `+strconv.Itoa(i)+`}` {
			t.Fatalf("claim %d: %+v, want step %+v", i, c, enq[i])
		}
	}
	if v := metricValue(t, env.reg, "tasker_queue_enqueued_total"); v != float64(len(steps)) {
		t.Fatalf("enqueued_total %v", v)
	}
}

// A batch mixing caller-chosen and generated step_uuids takes the ON
// CONFLICT path: duplicates are reported with the existing row, the rest
// inserted.
func TestEnqueueMixedBatchReportsDuplicates(t *testing.T) {
	env := newEnv(t, Options{})
	first := mustEnqueue(t, env.q, NewStep{Queue: "q", Handler: "h"}, NewStep{Queue: "q", Handler: "h"})
	again := mustEnqueue(t, env.q,
		NewStep{Queue: "q", Handler: "h"},
		NewStep{Queue: "q", Handler: "h", StepUUID: first[1].StepUUID},
		NewStep{Queue: "q", Handler: "h", StepUUID: NewUUID()})
	if again[0].Duplicate || again[2].Duplicate || again[0].ID <= first[1].ID || again[2].ID <= again[0].ID {
		t.Fatalf("new steps: %+v", again)
	}
	if d := again[1]; !d.Duplicate || d.ID != first[1].ID || !d.EnqueuedAt.Equal(first[1].EnqueuedAt) {
		t.Fatalf("duplicate: %+v, want id %d", d, first[1].ID)
	}
}

// Complete sends absent results and errors as NULL: a success without a
// result stores NULL, a failure without details stores the default error.
func TestCompleteEmptyResultAndError(t *testing.T) {
	env := newEnv(t, Options{})
	mustEnqueue(t, env.q, NewStep{Queue: "q", Handler: "h"}, NewStep{Queue: "q", Handler: "h"})
	c := mustClaim(t, env.q, []string{"q"}, 2, time.Minute)
	res := mustComplete(t, env.q,
		Completion{Claim: c[0].Claim(), Outcome: Success},
		Completion{Claim: c[1].Claim(), Outcome: PermanentFailure})
	if !res[0].Applied || !res[1].Applied || res[1].State != StateDead {
		t.Fatalf("results %+v", res)
	}
	if s := mustGet(t, env.q, c[0].ID); s.State != StateCompleted || s.Result != nil {
		t.Fatalf("success without result: state %s result %q", s.State, s.Result)
	}
	if s := mustGet(t, env.q, c[1].ID); !strings.Contains(string(s.LastError), "no error details reported") || s.Result != nil {
		t.Fatalf("failure without details: last_error %s result %q", s.LastError, s.Result)
	}
}

// Migration 2 turns off planner statistics for the jsonb columns.
func TestJSONBColumnsHaveNoStatistics(t *testing.T) {
	env := newEnv(t, Options{})
	rows, err := env.pool.Query(ctxT(t), `
SELECT attname, attstattarget FROM pg_attribute
WHERE attrelid = 'tasker_steps'::regclass AND attname IN ('payload', 'result', 'last_error', 'queue')`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]int{}
	for rows.Next() {
		var name string
		var target int
		if err := rows.Scan(&name, &target); err != nil {
			t.Fatal(err)
		}
		got[name] = target
	}
	if got["payload"] != 0 || got["result"] != 0 || got["last_error"] != 0 || got["queue"] != -1 {
		t.Fatalf("statistics targets %v, want 0 for the jsonb columns and the default (-1) elsewhere", got)
	}
}
