package queue

import (
	"context"
	"encoding/json"
	"slices"
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

// The heartbeat must probe the primary key even when the statistics were
// taken while nothing was claimed: such statistics made the planner scan the
// whole table and compare every claimed row with every array element.
func TestExtendUsesThePrimaryKeyWithStaleStatistics(t *testing.T) {
	env := newEnv(t, Options{})
	ctx := ctxT(t)
	for i := 0; i < 20000; i += 2000 {
		mustEnqueue(t, env.q, benchSteps("q", 2000)...)
	}
	if _, err := env.pool.Exec(ctx, `ANALYZE tasker_steps`); err != nil { // no step claimed yet
		t.Fatal(err)
	}
	claimed := mustClaim(t, env.q, []string{"q"}, 1000, time.Minute)
	claims := make([]Claim, len(claimed))
	for i, c := range claimed {
		claims[len(claims)-1-i] = c.Claim() // reversed: the statements must not depend on input order
	}
	ids, tokens := claimArrays(claims)
	if !slices.IsSorted(ids) {
		t.Fatal("claimArrays did not sort by id")
	}
	stmts := map[string][]any{
		"extend": {extendSQL, ids, tokens, int64(time.Minute / time.Microsecond)},
	}
	check := func(fresh bool) {
		for name, args := range stmts {
			rows, err := env.pool.Query(ctx, "EXPLAIN "+args[0].(string), args[1:]...)
			if err != nil {
				t.Fatal(err)
			}
			var plan strings.Builder
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan.WriteString(line + "\n")
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			p := plan.String()
			// Never the quadratic shape (every row of one side compared with
			// every row of the other).
			if strings.Contains(p, "Join Filter") {
				t.Fatalf("%s plan (fresh statistics: %v) compares rows in a nested loop:\n%s", name, fresh, p)
			}
			// With statistics that saw no claimed step, the primary key, not
			// a scan of the whole table. (With fresh ones the planner may
			// rightly scan a table this small.)
			if !fresh && (strings.Contains(p, "Seq Scan on tasker_steps") || !strings.Contains(p, "tasker_steps_pkey")) {
				t.Fatalf("%s plan does not probe the primary key:\n%s", name, p)
			}
		}
	}
	check(false)
	if _, err := env.pool.Exec(ctx, `ANALYZE tasker_steps`); err != nil {
		t.Fatal(err)
	}
	check(true)
}

// The heartbeat never waits for a row lock: a claim whose row is locked (its
// result being settled) is skipped and still counts as held, the others are
// extended. Waiting deadlocked against concurrent settles.
func TestExtendSkipsLockedClaims(t *testing.T) {
	env := newEnv(t, Options{})
	ctx := ctxT(t)
	mustEnqueue(t, env.q, NewStep{Queue: "q", Handler: "h"}, NewStep{Queue: "q", Handler: "h"}, NewStep{Queue: "q", Handler: "h"})
	c := mustClaim(t, env.q, []string{"q"}, 3, time.Minute)
	// A settle of c[1] in progress: its row is locked until tx ends.
	tx, err := env.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `UPDATE tasker_steps SET result = '{}' WHERE id = $1`, c[1].ID); err != nil {
		t.Fatal(err)
	}
	// One claim no longer held: completed with its token.
	mustComplete(t, env.q, Completion{Claim: c[2].Claim(), Outcome: Success})

	before := mustGet(t, env.q, c[0].ID).VisibleAt
	lockedBefore := mustGet(t, env.q, c[1].ID).VisibleAt
	extendCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	lost, err := env.q.Extend(extendCtx, []Claim{c[2].Claim(), c[1].Claim(), c[0].Claim()}, time.Hour)
	if err != nil {
		t.Fatalf("Extend blocked or failed with a locked row: %v", err)
	}
	if len(lost) != 1 || lost[0] != c[2].Claim() {
		t.Fatalf("lost %v, want only the completed claim %v", lost, c[2].Claim())
	}
	if after := mustGet(t, env.q, c[0].ID).VisibleAt; !after.After(before.Add(30 * time.Minute)) {
		t.Fatalf("unlocked claim not extended: %v -> %v", before, after)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if v := mustGet(t, env.q, c[1].ID).VisibleAt; !v.Equal(lockedBefore) {
		t.Fatalf("locked claim was changed: %v -> %v", lockedBefore, v)
	}
}
