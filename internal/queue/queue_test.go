package queue

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/seed-a17b38e7/workerpool-operator/internal/pgtest"
)

func TestMigrateTwiceAndConcurrently(t *testing.T) {
	env := newEnv(t, Options{}) // migrated once already
	ctx := ctxT(t)
	if err := Migrate(ctx, env.pool); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}

	// A fresh database migrated by 4 workers starting at once, while the
	// already-migrated one is migrated again by 4 more.
	fresh := newPool(t, pgtest.NewDatabase(t))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 4; i++ {
		for _, p := range []*pgxpool.Pool{fresh, env.pool} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- Migrate(ctx, p)
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Migrate: %v", err)
		}
	}
	for _, p := range []*pgxpool.Pool{fresh, env.pool} {
		var n, maxV int
		if err := p.QueryRow(ctx, `SELECT count(*), max(version) FROM tasker_schema_migrations`).Scan(&n, &maxV); err != nil {
			t.Fatal(err)
		}
		if n != len(migrations) || maxV != LatestSchemaVersion {
			t.Fatalf("migrations recorded: %d (max %d), want %d (max %d)", n, maxV, len(migrations), LatestSchemaVersion)
		}
		var idx int
		if err := p.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE indexname = 'tasker_steps_claimable_idx'`).Scan(&idx); err != nil || idx != 1 {
			t.Fatalf("claim index missing: %d %v", idx, err)
		}
	}
}

func TestEnqueueClaimCompleteHappyPath(t *testing.T) {
	env := newEnv(t, Options{MaxAttempts: 4})
	q := env.q
	corr := NewUUID()
	task := NewUUID()
	in := []NewStep{
		{Queue: "orders", Handler: "reserve", Payload: json.RawMessage(`{"sku":"A-1","qty":2}`),
			TaskUUID: task, CorrelationID: corr, Timeout: 1500 * time.Microsecond},
		{Queue: "orders", Handler: "charge", MaxAttempts: 7},
	}
	enq := mustEnqueue(t, q, in...)
	if len(enq) != 2 || enq[0].ID == 0 || enq[1].ID <= enq[0].ID || enq[0].Duplicate {
		t.Fatalf("unexpected enqueue result %+v", enq)
	}
	if enq[0].StepUUID.IsZero() || enq[0].EnqueuedAt.IsZero() || enq[0].Queue != "orders" {
		t.Fatalf("enqueue did not fill step uuid / enqueued_at: %+v", enq[0])
	}

	if got := mustClaim(t, q, []string{"other"}, 10, time.Minute); len(got) != 0 {
		t.Fatalf("claimed %d steps from an empty queue", len(got))
	}
	claimed := mustClaim(t, q, []string{"orders"}, 10, time.Minute)
	if len(claimed) != 2 {
		t.Fatalf("claimed %d, want 2", len(claimed))
	}
	a, b := claimed[0], claimed[1]
	if a.ID != enq[0].ID || a.StepUUID != enq[0].StepUUID || a.TaskUUID != task || a.CorrelationID != corr ||
		a.Handler != "reserve" || a.Queue != "orders" || a.Attempt != 1 || a.MaxAttempts != 4 ||
		a.Timeout != 2*time.Millisecond || a.Token != 1 || a.Redelivered || !a.EnqueuedAt.Equal(enq[0].EnqueuedAt) {
		t.Fatalf("claimed step A wrong: %+v", a)
	}
	var payload map[string]any
	if err := json.Unmarshal(a.Payload, &payload); err != nil || payload["sku"] != "A-1" {
		t.Fatalf("payload %s (%v)", a.Payload, err)
	}
	if b.MaxAttempts != 7 || b.Timeout != 0 || !b.CorrelationID.IsZero() || string(b.Payload) != "{}" || b.TaskUUID.IsZero() {
		t.Fatalf("claimed step B wrong: %+v", b)
	}
	if got := mustClaim(t, q, []string{"orders"}, 10, time.Minute); len(got) != 0 {
		t.Fatalf("claimed steps are claimable again before visibility expired: %d", len(got))
	}
	st := mustGet(t, q, a.ID)
	if st.State != StateClaimed || st.ClaimedBy != "worker-test" || st.ClaimedAt.IsZero() || st.Attempts != 1 {
		t.Fatalf("row after claim: %+v", st)
	}

	res := mustComplete(t, q,
		Completion{Claim: a.Claim(), Outcome: Success, Result: json.RawMessage(`{"step_uuid":"x","success":true}`)},
		Completion{Claim: b.Claim(), Outcome: Success},
	)
	for i, r := range res {
		if !r.Applied || r.State != StateCompleted || r.Err != nil {
			t.Fatalf("completion %d: %+v", i, r)
		}
	}
	st = mustGet(t, q, a.ID)
	if st.State != StateCompleted || st.CompletedAt.IsZero() || !strings.Contains(string(st.Result), `"success": true`) {
		t.Fatalf("row after complete: %+v result=%s", st, st.Result)
	}
	if got := mustClaim(t, q, []string{"orders"}, 10, time.Nanosecond); len(got) != 0 {
		t.Fatalf("completed steps claimable: %d", len(got))
	}
	// Acknowledging twice is fenced, not an error.
	res = mustComplete(t, q, Completion{Claim: a.Claim(), Outcome: Success})
	if res[0].Applied || res[0].Err != nil {
		t.Fatalf("second completion applied: %+v", res[0])
	}

	// Re-enqueueing the same step_uuid is a reported no-op.
	again := mustEnqueue(t, q, NewStep{Queue: "orders", Handler: "reserve", StepUUID: enq[0].StepUUID},
		NewStep{Queue: "orders", Handler: "new"})
	if !again[0].Duplicate || again[0].ID != enq[0].ID || !again[0].EnqueuedAt.Equal(enq[0].EnqueuedAt) || again[1].Duplicate {
		t.Fatalf("duplicate enqueue: %+v", again)
	}
	stats, err := q.Stats(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if s := stats["orders"]; s.Completed != 2 || s.Ready != 1 || s.Claimed != 0 || s.Dead != 0 {
		t.Fatalf("stats %+v", s)
	}
	if _, err := q.Get(ctxT(t), 1<<40); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get missing: %v", err)
	}
}

func TestEnqueueValidation(t *testing.T) {
	env := newEnv(t, Options{})
	u := NewUUID()
	cases := map[string][]NewStep{
		"no queue":       {{Handler: "h"}},
		"no handler":     {{Queue: "q"}},
		"bad payload":    {{Queue: "q", Handler: "h", Payload: json.RawMessage(`{nope`)}},
		"negative delay": {{Queue: "q", Handler: "h", Delay: -time.Second}},
		"dup in batch":   {{Queue: "q", Handler: "h", StepUUID: u}, {Queue: "q", Handler: "h", StepUUID: u}},
	}
	for name, steps := range cases {
		if _, err := env.q.Enqueue(ctxT(t), steps); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	stats, err := env.q.Stats(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 0 {
		t.Fatalf("rejected batches stored rows: %+v", stats)
	}
}

func TestEnqueueDelay(t *testing.T) {
	env := newEnv(t, Options{})
	enq := mustEnqueue(t, env.q, NewStep{Queue: "d", Handler: "h", Delay: time.Hour})
	if got := mustClaim(t, env.q, []string{"d"}, 1, time.Minute); len(got) != 0 {
		t.Fatal("delayed step claimed early")
	}
	st := mustGet(t, env.q, enq[0].ID)
	if d := st.VisibleAt.Sub(st.EnqueuedAt); d != time.Hour {
		t.Fatalf("visible_at - enqueued_at = %v, want 1h", d)
	}
	stats, _ := env.q.Stats(ctxT(t))
	if stats["d"].Scheduled != 1 || stats["d"].Ready != 0 {
		t.Fatalf("stats %+v", stats["d"])
	}
}

func TestClaimAcrossQueuesOldestFirst(t *testing.T) {
	env := newEnv(t, Options{})
	a := mustEnqueue(t, env.q, NewStep{Queue: "q1", Handler: "h"})
	b := mustEnqueue(t, env.q, NewStep{Queue: "q2", Handler: "h"})
	mustEnqueue(t, env.q, NewStep{Queue: "q1", Handler: "h"}, NewStep{Queue: "q3", Handler: "h"})
	got := mustClaim(t, env.q, []string{"q1", "q2"}, 2, time.Minute)
	if len(got) != 2 || got[0].ID != a[0].ID || got[1].ID != b[0].ID {
		t.Fatalf("want oldest two across q1,q2 (%d,%d), got %+v", a[0].ID, b[0].ID, got)
	}
	got = mustClaim(t, env.q, []string{"q1", "q2"}, 10, time.Minute)
	if len(got) != 1 || got[0].Queue != "q1" {
		t.Fatalf("want the remaining q1 step only, got %+v", got)
	}
}

func TestClaimSkipLockedDisjoint(t *testing.T) {
	env := newEnv(t, Options{})
	const total, claimers, batch = 2000, 4, 25
	steps := make([]NewStep, total)
	for i := range steps {
		steps[i] = NewStep{Queue: "bulk", Handler: "h"}
	}
	enq := mustEnqueue(t, env.q, steps...)
	want := make(map[int64]bool, total)
	for _, e := range enq {
		want[e.ID] = true
	}

	ctx := ctxT(t)
	var claimedCount atomic.Int64
	results := make([][]int64, claimers)
	var wg sync.WaitGroup
	for w := 0; w < claimers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for claimedCount.Load() < total && ctx.Err() == nil {
				got, err := env.q.Claim(ctx, []string{"bulk"}, "w", batch, time.Hour)
				if err != nil {
					t.Error(err)
					return
				}
				for _, s := range got {
					results[w] = append(results[w], s.ID)
				}
				claimedCount.Add(int64(len(got)))
			}
		}()
	}
	wg.Wait()

	seen := make(map[int64]int, total)
	for w, ids := range results {
		for _, id := range ids {
			if prev, dup := seen[id]; dup {
				t.Fatalf("step %d claimed by both claimer %d and %d", id, prev, w)
			}
			seen[id] = w
		}
		t.Logf("claimer %d got %d steps", w, len(ids))
	}
	if len(seen) != total {
		t.Fatalf("claimed %d distinct steps, want %d", len(seen), total)
	}
	for id := range want {
		if _, ok := seen[id]; !ok {
			t.Fatalf("step %d never claimed", id)
		}
	}
	if v := metricValue(t, env.reg, "tasker_queue_claimed_total"); v != total {
		t.Fatalf("tasker_queue_claimed_total = %v, want %d", v, total)
	}
}

func TestVisibilityExpiryRedeliversAndFencesOldToken(t *testing.T) {
	env := newEnv(t, Options{})
	q := env.q
	enq := mustEnqueue(t, q, NewStep{Queue: "v", Handler: "slow"})
	first := mustClaim(t, q, []string{"v"}, 1, 100*time.Millisecond)
	if len(first) != 1 {
		t.Fatal("no claim")
	}

	// The worker "dies": nobody extends. Another worker gets it after expiry.
	var second []ClaimedStep
	eventually(t, 10*time.Second, "redelivery after visibility expiry", func() bool {
		second = mustClaim(t, q, []string{"v"}, 1, time.Minute)
		return len(second) == 1
	})
	s2 := second[0]
	if s2.ID != enq[0].ID || s2.Token != first[0].Token+1 || s2.Attempt != 2 || !s2.Redelivered {
		t.Fatalf("redelivered claim: %+v (first %+v)", s2, first[0])
	}

	// The stalled first worker finally reports: fenced out, and it must not
	// block the other items in the same batch - not even the current claim
	// of the very same step.
	if st := mustGet(t, q, enq[0].ID); st.ClaimToken != s2.Token {
		t.Fatalf("row token %d, want %d", st.ClaimToken, s2.Token)
	}
	mustEnqueue(t, q, NewStep{Queue: "v2", Handler: "h"})
	oc := mustClaim(t, q, []string{"v2"}, 1, time.Minute)
	res := mustComplete(t, q,
		Completion{Claim: first[0].Claim(), Outcome: Success, Result: json.RawMessage(`"stale"`)},
		Completion{Claim: oc[0].Claim(), Outcome: Success},
		Completion{Claim: s2.Claim(), Outcome: Success, Result: json.RawMessage(`"fresh"`)},
	)
	if res[0].Applied || res[0].Err != nil || !res[1].Applied || !res[2].Applied || res[2].State != StateCompleted {
		t.Fatalf("want stale fenced, others applied: %+v", res)
	}
	if st := mustGet(t, q, enq[0].ID); st.State != StateCompleted || string(st.Result) != `"fresh"` {
		t.Fatalf("row: %+v result=%s", st, st.Result)
	}
	// And on its own, later: still fenced, never an error.
	res = mustComplete(t, q, Completion{Claim: first[0].Claim(), Outcome: RetryableFailure})
	if res[0].Applied || res[0].Err != nil {
		t.Fatalf("late stale completion: %+v", res[0])
	}
	if v := metricValue(t, env.reg, "tasker_queue_redelivered_total"); v != 1 {
		t.Fatalf("redelivered_total = %v", v)
	}
	if v := metricValue(t, env.reg, "tasker_queue_fenced_total"); v != 2 {
		t.Fatalf("fenced_total = %v", v)
	}
}

func TestExpiredFinalAttemptBecomesDead(t *testing.T) {
	env := newEnv(t, Options{FinalAttemptGrace: time.Millisecond})
	enq := mustEnqueue(t, env.q, NewStep{Queue: "p", Handler: "poison", MaxAttempts: 1})
	if got := mustClaim(t, env.q, []string{"p"}, 1, 50*time.Millisecond); len(got) != 1 {
		t.Fatal("no claim")
	}
	eventually(t, 10*time.Second, "expired final claim to turn dead", func() bool {
		if got := mustClaim(t, env.q, []string{"p"}, 1, time.Minute); len(got) != 0 {
			t.Fatalf("step on its final attempt was redelivered: %+v", got)
		}
		return mustGet(t, env.q, enq[0].ID).State == StateDead
	})
	st := mustGet(t, env.q, enq[0].ID)
	if st.Attempts != 1 || st.ClaimedBy != "worker-test" {
		t.Fatalf("dead row: %+v last_error=%s", st, st.LastError)
	}
	// The same shape as a handler's failure: the cause under "error", the
	// details under "metadata".
	var le struct {
		Success  bool
		Status   string
		Metadata struct {
			ErrorType string `json:"error_type"`
			WorkerID  string `json:"worker_id"`
			Context   struct {
				Attempt     int `json:"attempt"`
				MaxAttempts int `json:"max_attempts"`
			}
		}
		Error struct {
			Message   string
			ErrorType string `json:"error_type"`
			Retryable *bool
		}
	}
	if err := json.Unmarshal(st.LastError, &le); err != nil {
		t.Fatal(err)
	}
	if le.Success || le.Status != "failed" || le.Error.ErrorType != ErrorTypeClaimExpired || le.Error.Retryable == nil || *le.Error.Retryable ||
		!strings.Contains(le.Error.Message, "expired on final attempt 1 of 1") || le.Metadata.ErrorType != ErrorTypeClaimExpired ||
		le.Metadata.WorkerID != "worker-test" || le.Metadata.Context.Attempt != 1 || le.Metadata.Context.MaxAttempts != 1 {
		t.Fatalf("claim_expired last_error: %s", st.LastError)
	}
	if v := metricValue(t, env.reg, "tasker_queue_dead_total"); v != 1 {
		t.Fatalf("dead_total = %v", v)
	}
}

// retryAndCheckDelay fails the claimed step retryably and checks that its new
// visible_at is exactly want after the Complete statement's clock.
func retryAndCheckDelay(t *testing.T, env *testEnv, c ClaimedStep, errJSON string, want time.Duration) CompletionResult {
	t.Helper()
	before := dbNow(t, env.pool)
	res := mustComplete(t, env.q, Completion{Claim: c.Claim(), Outcome: RetryableFailure, Error: json.RawMessage(errJSON)})
	after := dbNow(t, env.pool)
	if !res[0].Applied {
		t.Fatalf("retry not applied: %+v", res[0])
	}
	if res[0].State == StateReady {
		st := mustGet(t, env.q, c.ID)
		if st.VisibleAt.Before(before.Add(want)) || st.VisibleAt.After(after.Add(want)) {
			t.Fatalf("attempt %d: visible_at %v not within [%v, %v] (+%v)", c.Attempt, st.VisibleAt,
				before.Add(want), after.Add(want), want)
		}
	}
	return res[0]
}

func TestRetryScheduleThenDead(t *testing.T) {
	schedule := []time.Duration{20 * time.Millisecond, 40 * time.Millisecond}
	env := newEnv(t, Options{Backoff: schedule, Jitter: NoJitter})
	q := env.q
	enq := mustEnqueue(t, q, NewStep{Queue: "r", Handler: "flaky", MaxAttempts: 4})

	// Attempts 1..3 fail retryably: delays 20ms, 40ms, then 40ms (capped).
	wantDelays := []time.Duration{20 * time.Millisecond, 40 * time.Millisecond, 40 * time.Millisecond}
	var c ClaimedStep
	for attempt := 1; attempt <= 4; attempt++ {
		eventually(t, 10*time.Second, "retry to become visible", func() bool {
			got := mustClaim(t, q, []string{"r"}, 1, time.Minute)
			if len(got) == 1 {
				c = got[0]
			}
			return len(got) == 1
		})
		if c.ID != enq[0].ID || c.Attempt != attempt || c.Redelivered {
			t.Fatalf("claim %d: %+v", attempt, c)
		}
		errJSON := `{"message":"boom ` + string(rune('0'+attempt)) + `","error_type":"handler_error","retryable":true}`
		if attempt < 4 {
			r := retryAndCheckDelay(t, env, c, errJSON, wantDelays[attempt-1])
			if r.State != StateReady {
				t.Fatalf("attempt %d: state %s, want ready", attempt, r.State)
			}
			st := mustGet(t, q, c.ID)
			if !strings.Contains(string(st.LastError), "boom") || !st.CompletedAt.IsZero() {
				t.Fatalf("after retry: %+v", st)
			}
			continue
		}
		r := retryAndCheckDelay(t, env, c, errJSON, 0)
		if r.State != StateDead {
			t.Fatalf("final attempt: state %s, want dead", r.State)
		}
	}
	st := mustGet(t, q, enq[0].ID)
	if st.State != StateDead || st.Attempts != 4 || st.CompletedAt.IsZero() || !strings.Contains(string(st.LastError), "boom 4") {
		t.Fatalf("dead row: %+v last_error=%s", st, st.LastError)
	}
	if got := mustClaim(t, q, []string{"r"}, 1, time.Minute); len(got) != 0 {
		t.Fatal("dead step claimed")
	}
	if v := metricValue(t, env.reg, "tasker_queue_acknowledged_total", "outcome", "retryable_failure"); v != 4 {
		t.Fatalf("acknowledged{retryable_failure} = %v", v)
	}
	if v := metricValue(t, env.reg, "tasker_queue_dead_total"); v != 1 {
		t.Fatalf("dead_total = %v", v)
	}
}

func TestRetryJitterIsApplied(t *testing.T) {
	env := newEnv(t, Options{Backoff: []time.Duration{time.Hour}, Jitter: func() float64 { return 1.2 }})
	mustEnqueue(t, env.q, NewStep{Queue: "j", Handler: "h"})
	c := mustClaim(t, env.q, []string{"j"}, 1, time.Minute)
	retryAndCheckDelay(t, env, c[0], `{"message":"x"}`, 72*time.Minute)

	lo, hi := 2.0, 0.0
	j := UniformJitter(0.2)
	for i := 0; i < 10000; i++ {
		v := j()
		lo, hi = min(lo, v), max(hi, v)
	}
	if lo < 0.8 || hi >= 1.2 || lo > 0.82 || hi < 1.18 {
		t.Fatalf("UniformJitter(0.2) range [%v, %v]", lo, hi)
	}
	if NoJitter() != 1 {
		t.Fatal("NoJitter")
	}
}

func TestDefaultBackoffSchedule(t *testing.T) {
	want := []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second, time.Minute}
	got := DefaultBackoff()
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("DefaultBackoff()[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	env := newEnv(t, Options{Jitter: NoJitter})
	mustEnqueue(t, env.q, NewStep{Queue: "b", Handler: "h", MaxAttempts: 9})
	c := mustClaim(t, env.q, []string{"b"}, 1, time.Minute)
	retryAndCheckDelay(t, env, c[0], `{"message":"x"}`, time.Second)
	// Jump to attempt 7 (beyond the schedule) by making it visible and
	// bumping attempts directly: the delay must be capped at 60s.
	if _, err := env.pool.Exec(ctxT(t), `UPDATE tasker_steps SET visible_at = now(), attempts = 6`); err != nil {
		t.Fatal(err)
	}
	c = mustClaim(t, env.q, []string{"b"}, 1, time.Minute)
	if c[0].Attempt != 7 {
		t.Fatalf("attempt %d", c[0].Attempt)
	}
	retryAndCheckDelay(t, env, c[0], `{"message":"x"}`, time.Minute)
}

func TestPermanentFailureDeadAtOnce(t *testing.T) {
	env := newEnv(t, Options{})
	enq := mustEnqueue(t, env.q, NewStep{Queue: "pf", Handler: "missing", MaxAttempts: 5})
	c := mustClaim(t, env.q, []string{"pf"}, 1, time.Minute)
	res := mustComplete(t, env.q, Completion{Claim: c[0].Claim(), Outcome: PermanentFailure,
		Error: json.RawMessage(`{"message":"Handler not found: missing","error_type":"handler_not_found","retryable":false}`)})
	if !res[0].Applied || res[0].State != StateDead {
		t.Fatalf("%+v", res[0])
	}
	st := mustGet(t, env.q, enq[0].ID)
	if st.State != StateDead || st.Attempts != 1 || st.CompletedAt.IsZero() || !strings.Contains(string(st.LastError), "handler_not_found") {
		t.Fatalf("row %+v last_error=%s", st, st.LastError)
	}
	if got := mustClaim(t, env.q, []string{"pf"}, 1, time.Minute); len(got) != 0 {
		t.Fatal("dead step claimed")
	}
	stats, _ := env.q.Stats(ctxT(t))
	if stats["pf"].Dead != 1 {
		t.Fatalf("stats %+v", stats["pf"])
	}
}

func TestCompleteBatchRejectsBadItemsOnly(t *testing.T) {
	env := newEnv(t, Options{})
	mustEnqueue(t, env.q, NewStep{Queue: "m", Handler: "h"}, NewStep{Queue: "m", Handler: "h"},
		NewStep{Queue: "m", Handler: "h"}, NewStep{Queue: "m", Handler: "h"})
	c := mustClaim(t, env.q, []string{"m"}, 4, time.Minute)
	res := mustComplete(t, env.q,
		Completion{Claim: c[0].Claim(), Outcome: "exploded"},
		Completion{Claim: c[1].Claim(), Outcome: Success, Result: json.RawMessage(`{bad`)},
		Completion{Claim: c[2].Claim(), Outcome: Success},
		Completion{Claim: c[2].Claim(), Outcome: Success},
		Completion{Claim: c[3].Claim(), Outcome: PermanentFailure}, // no error details: default object
	)
	if res[0].Err == nil || res[1].Err == nil || res[3].Err == nil {
		t.Fatalf("bad items not rejected: %+v", res)
	}
	if !res[2].Applied || !res[4].Applied || res[4].State != StateDead {
		t.Fatalf("good items not applied: %+v", res)
	}
	if st := mustGet(t, env.q, c[3].ID); !strings.Contains(string(st.LastError), "no error details") {
		t.Fatalf("default last_error: %s", st.LastError)
	}
	if st := mustGet(t, env.q, c[0].ID); st.State != StateClaimed {
		t.Fatalf("rejected item changed: %+v", st)
	}
	if res, err := env.q.Complete(ctxT(t), nil); err != nil || len(res) != 0 {
		t.Fatalf("empty complete: %v %v", res, err)
	}
}

func TestHeartbeatExtendPreventsRedelivery(t *testing.T) {
	env := newEnv(t, Options{})
	q := env.q
	mustEnqueue(t, q, NewStep{Queue: "hb", Handler: "long"}, NewStep{Queue: "hb", Handler: "control"})
	got := mustClaim(t, q, []string{"hb"}, 2, 300*time.Millisecond)
	if len(got) != 2 {
		t.Fatal("want 2 claims")
	}
	long, control := got[0], got[1]

	lost, err := q.Extend(ctxT(t), []Claim{long.Claim()}, time.Hour)
	if err != nil || len(lost) != 0 {
		t.Fatalf("extend: lost=%v err=%v", lost, err)
	}

	// Both had the same original visibility. Wait until the control step
	// (not extended) is redelivered: by then the original visibility has
	// passed, and the extended step must not have come back.
	var redelivered ClaimedStep
	eventually(t, 10*time.Second, "control step redelivery", func() bool {
		for _, s := range mustClaim(t, q, []string{"hb"}, 2, time.Hour) {
			if s.ID == long.ID {
				t.Fatalf("extended step was redelivered: %+v", s)
			}
			redelivered = s
		}
		return redelivered.ID == control.ID
	})
	if again := mustClaim(t, q, []string{"hb"}, 2, time.Hour); len(again) != 0 {
		t.Fatalf("claimable after extension: %+v", again)
	}

	// The control's old claim is lost; the long one still held; an
	// acknowledged one is lost too.
	lost, err = q.Extend(ctxT(t), []Claim{long.Claim(), control.Claim(), redelivered.Claim()}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(lost) != 1 || lost[0] != control.Claim() {
		t.Fatalf("lost = %+v, want only the control's old claim", lost)
	}
	mustComplete(t, q, Completion{Claim: long.Claim(), Outcome: Success})
	lost, err = q.Extend(ctxT(t), []Claim{long.Claim()}, time.Hour)
	if err != nil || len(lost) != 1 {
		t.Fatalf("extend after complete: lost=%v err=%v", lost, err)
	}
	if v := metricValue(t, env.reg, "tasker_queue_claims_lost_total"); v != 2 {
		t.Fatalf("claims_lost_total = %v", v)
	}
	if _, err := q.Extend(ctxT(t), []Claim{long.Claim()}, 0); err == nil {
		t.Fatal("zero visibility accepted")
	}
}

func TestReleaseMakesStepsClaimableAndRestoresAttempts(t *testing.T) {
	env := newEnv(t, Options{})
	q := env.q
	mustEnqueue(t, q, NewStep{Queue: "rel", Handler: "h"}, NewStep{Queue: "rel", Handler: "h"}, NewStep{Queue: "rel", Handler: "h"})
	got := mustClaim(t, q, []string{"rel"}, 3, time.Hour)
	if len(got) != 3 {
		t.Fatal("want 3")
	}
	lost, err := q.Release(ctxT(t), []Claim{got[0].Claim(), got[1].Claim()})
	if err != nil || len(lost) != 0 {
		t.Fatalf("release: %v %v", lost, err)
	}
	st := mustGet(t, q, got[0].ID)
	if st.State != StateReady || st.Attempts != 0 || st.ClaimedBy != "" {
		t.Fatalf("released row %+v", st)
	}
	// Claimable at once, as first attempts, with new tokens.
	again := mustClaim(t, q, []string{"rel"}, 3, time.Hour)
	if len(again) != 2 {
		t.Fatalf("reclaimed %d, want 2", len(again))
	}
	for i, s := range again {
		if s.ID != got[i].ID || s.Attempt != 1 || s.Token != got[i].Token+1 || s.Redelivered {
			t.Fatalf("reclaimed %+v (was %+v)", s, got[i])
		}
	}
	// The released (old) claims are now stale everywhere.
	lost, err = q.Release(ctxT(t), []Claim{got[0].Claim(), got[2].Claim()})
	if err != nil || len(lost) != 1 || lost[0] != got[0].Claim() {
		t.Fatalf("release stale: lost=%v err=%v", lost, err)
	}
	res := mustComplete(t, q, Completion{Claim: got[1].Claim(), Outcome: Success})
	if res[0].Applied {
		t.Fatal("completion with a released claim's token applied")
	}
	if v := metricValue(t, env.reg, "tasker_queue_released_total"); v != 3 {
		t.Fatalf("released_total = %v", v)
	}
}

func TestListenerWakesOnEnqueue(t *testing.T) {
	env := newEnv(t, Options{})
	ctx := ctxT(t)
	l := env.q.Listen(ctx, []string{"wake"})
	defer l.Close()
	select {
	case <-l.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("listener not ready")
	}
	drain(l)

	start := time.Now()
	mustEnqueue(t, env.q, NewStep{Queue: "wake", Handler: "h"})
	select {
	case <-l.C():
		t.Logf("woken %v after Enqueue returned", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up within 5s of Enqueue")
	}

	// A plain-SQL producer (any language) wakes it too.
	if _, err := env.pool.Exec(ctx, `INSERT INTO tasker_steps (queue, handler) VALUES ('wake', 'sql');
		NOTIFY tasker_steps, 'wake'`); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.C():
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up from a plain SQL NOTIFY")
	}

	// Kill the listener's backend: it reconnects, wakes the caller (it may
	// have missed notifications) and keeps working.
	tag, err := env.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("terminate listener backend: %v (%d rows)", err, tag.RowsAffected())
	}
	select {
	case <-l.C():
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up after reconnect")
	}
	eventually(t, 10*time.Second, "listener to LISTEN again", func() bool {
		var n int
		_ = env.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&n)
		return n == 1
	})
	drain(l)
	mustEnqueue(t, env.q, NewStep{Queue: "wake", Handler: "h"})
	select {
	case <-l.C():
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up after reconnection")
	}
	if v := metricValue(t, env.reg, "tasker_queue_listener_reconnects_total"); v != 1 {
		t.Fatalf("reconnects = %v", v)
	}
}

func TestListenerSurvivesIdleTimeouts(t *testing.T) {
	env := newEnv(t, Options{})
	saved := listenerIdle
	listenerIdle = 20 * time.Millisecond // many wait timeouts + pings
	l := env.q.Listen(ctxT(t), nil)      // all queues
	listenerIdle = saved
	defer l.Close()
	select {
	case <-l.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("listener not ready")
	}
	// Let several idle periods end (each in a ping) before notifying.
	eventually(t, 10*time.Second, "3 idle pings", func() bool { return l.pings.Load() >= 3 })
	drain(l)
	mustEnqueue(t, env.q, NewStep{Queue: "any", Handler: "h"})
	select {
	case <-l.C():
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up after idle timeouts")
	}
	if v := metricValue(t, env.reg, "tasker_queue_listener_reconnects_total"); v != 0 {
		t.Fatalf("idle timeouts caused %v reconnects", v)
	}
}

func drain(l *Listener) {
	for {
		select {
		case <-l.C():
		default:
			return
		}
	}
}

func TestListenerFiltersQueues(t *testing.T) {
	l := &Listener{queues: map[string]bool{"a": true}, wake: make(chan struct{}, 1)}
	l.deliver("b")
	select {
	case <-l.C():
		t.Fatal("woken for another queue")
	default:
	}
	for _, p := range []string{"a", ""} {
		l.deliver(p)
		l.deliver(p) // coalesces, never blocks
		select {
		case <-l.C():
		default:
			t.Fatalf("not woken for payload %q", p)
		}
	}
	all := &Listener{queues: map[string]bool{}, wake: make(chan struct{}, 1)}
	all.deliver("anything")
	select {
	case <-all.C():
	default:
		t.Fatal("listener for all queues not woken")
	}
}

// The backlog is what Claim could take now: ready and visible steps and
// expired claims, not delayed ones, not live claims, not finished ones;
// every queue asked for is answered, and the count stops at its limit.
func TestReadBacklog(t *testing.T) {
	env := newEnv(t, Options{Backoff: []time.Duration{time.Hour}, Jitter: NoJitter})
	q := env.q
	read := func(limit int) map[string]Backlog {
		t.Helper()
		b, err := ReadBacklog(ctxT(t), env.pool, []string{"bq", "idle"}, limit)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if b := read(0); b["bq"] != (Backlog{}) || b["idle"] != (Backlog{}) || len(b) != 2 {
		t.Fatalf("empty queues read as %+v", b)
	}
	steps := make([]NewStep, 8)
	for i := range steps {
		steps[i] = NewStep{Queue: "bq", Handler: "h"}
	}
	mustEnqueue(t, q, steps...)
	mustEnqueue(t, q, NewStep{Queue: "bq", Handler: "later", Delay: time.Hour})
	// Live claims leave the backlog, an expired claim comes back to it, a
	// completed or retried (an hour's backoff) step does not.
	mustClaim(t, q, []string{"bq"}, 2, time.Hour)
	expired := mustClaim(t, q, []string{"bq"}, 1, time.Millisecond)
	done := mustClaim(t, q, []string{"bq"}, 2, time.Hour)
	mustComplete(t, q, Completion{Claim: done[0].Claim(), Outcome: Success}, Completion{Claim: done[1].Claim(), Outcome: RetryableFailure})
	var b Backlog
	eventually(t, 10*time.Second, "the expired claim back in the backlog", func() bool { b = read(0)["bq"]; return b.Ready == 4 })
	if b.Capped || b.OldestReady <= 0 || b.OldestReady > time.Minute {
		t.Errorf("backlog %+v (expired claim %d)", b, expired[0].ID)
	}
	if b := read(3)["bq"]; b.Ready != 3 || !b.Capped {
		t.Errorf("a count stopped at 3 read as %+v", b)
	}
}

func TestMetricsAfterOperations(t *testing.T) {
	env := newEnv(t, Options{Queues: []string{"mq", "idle"}, Backoff: []time.Duration{time.Hour}, Jitter: NoJitter})
	q := env.q
	for _, name := range []string{"tasker_queue_claimed_total", "tasker_queue_redelivered_total", "tasker_queue_dead_total"} {
		if v := metricValue(t, env.reg, name); v != 0 {
			t.Fatalf("%s starts at %v", name, v)
		}
	}
	steps := make([]NewStep, 6)
	for i := range steps {
		steps[i] = NewStep{Queue: "mq", Handler: "h"}
	}
	mustEnqueue(t, q, steps...)

	c := mustClaim(t, q, []string{"mq"}, 5, time.Hour)
	mustComplete(t, q,
		Completion{Claim: c[0].Claim(), Outcome: Success},
		Completion{Claim: c[1].Claim(), Outcome: Success},
		Completion{Claim: c[2].Claim(), Outcome: RetryableFailure},
		Completion{Claim: c[3].Claim(), Outcome: PermanentFailure},
		Completion{Claim: Claim{ID: c[4].ID, Token: c[4].Token + 99}, Outcome: Success}, // fenced
	)
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"tasker_queue_enqueued_total", nil, 6},
		{"tasker_queue_claimed_total", nil, 5},
		{"tasker_queue_acknowledged_total", []string{"outcome", "success"}, 2},
		{"tasker_queue_acknowledged_total", []string{"outcome", "retryable_failure"}, 1},
		{"tasker_queue_acknowledged_total", []string{"outcome", "permanent_failure"}, 1},
		{"tasker_queue_dead_total", nil, 1},
		{"tasker_queue_fenced_total", nil, 1},
		{"tasker_queue_redelivered_total", nil, 0},
		{"tasker_queue_claim_duration_seconds", nil, 1}, // sample count
	}
	for _, c := range checks {
		if v := metricValue(t, env.reg, c.name, c.labels...); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}

	// Registering a second queue's metrics on the same registry fails loudly.
	if _, err := New(env.pool, Options{}, env.reg); err == nil {
		t.Fatal("double registration not reported")
	}
	// nil registerer is allowed.
	if _, err := New(env.pool, Options{}, nil); err != nil {
		t.Fatal(err)
	}
	// Never the global registry.
	if _, err := New(env.pool, Options{}, prometheus.NewRegistry()); err != nil {
		t.Fatal(err)
	}
}

func TestUUID(t *testing.T) {
	u := NewUUID()
	if u.IsZero() || u[6]>>4 != 4 || u[8]&0xc0 != 0x80 {
		t.Fatalf("not a v4 UUID: %s", u)
	}
	for _, s := range []string{u.String(), "{" + u.String() + "}", strings.ReplaceAll(u.String(), "-", ""), strings.ToUpper(u.String())} {
		p, err := ParseUUID(s)
		if err != nil || p != u {
			t.Fatalf("ParseUUID(%q) = %s, %v", s, p, err)
		}
	}
	for _, bad := range []string{"", "xyz", strings.Replace(u.String(), "-", "x", 1), strings.Repeat("g", 32)} {
		if _, err := ParseUUID(bad); err == nil {
			t.Fatalf("ParseUUID(%q) accepted", bad)
		}
	}
	b, _ := json.Marshal(struct{ ID UUID }{u})
	var back struct{ ID UUID }
	if err := json.Unmarshal(b, &back); err != nil || back.ID != u || !strings.Contains(string(b), u.String()) {
		t.Fatalf("JSON round trip %s: %v", b, err)
	}
}

func TestNewValidatesOptions(t *testing.T) {
	env := newEnv(t, Options{})
	if _, err := New(nil, Options{}, nil); err == nil {
		t.Error("nil pool accepted")
	}
	if _, err := New(env.pool, Options{MaxAttempts: -1}, nil); err == nil {
		t.Error("negative MaxAttempts accepted")
	}
	if _, err := New(env.pool, Options{Backoff: []time.Duration{-1}}, nil); err == nil {
		t.Error("negative backoff accepted")
	}
	if _, err := env.q.Claim(ctxT(t), []string{"x"}, "w", 1, 0); err == nil {
		t.Error("zero visibility accepted")
	}
}

func TestMigrationsAreOrdered(t *testing.T) {
	for i, m := range migrations {
		if m.version != i+1 || m.name == "" || m.sql == "" {
			t.Fatalf("migration %d: %+v", i, m)
		}
	}
	if LatestSchemaVersion != migrations[len(migrations)-1].version {
		t.Fatalf("LatestSchemaVersion %d, last migration %d", LatestSchemaVersion, migrations[len(migrations)-1].version)
	}
}

// A claim on the final attempt whose owner is only late with its heartbeat
// is not dead-lettered by another claimer within the grace: the owner's late
// Extend still holds it and its result is applied.
func TestLateHeartbeatOnFinalAttemptWithinGrace(t *testing.T) {
	env := newEnv(t, Options{FinalAttemptGrace: time.Hour})
	enq := mustEnqueue(t, env.q, NewStep{Queue: "g", Handler: "slow", MaxAttempts: 1})
	c := mustClaim(t, env.q, []string{"g"}, 1, 50*time.Millisecond)
	if len(c) != 1 {
		t.Fatal("no claim")
	}
	eventually(t, 10*time.Second, "the claim's visibility to pass", func() bool {
		return dbNow(t, env.pool).After(mustGet(t, env.q, enq[0].ID).VisibleAt)
	})
	if got := mustClaim(t, env.q, []string{"g"}, 1, time.Minute); len(got) != 0 {
		t.Fatalf("an expired final-attempt claim was redelivered within the grace: %+v", got)
	}
	if st := mustGet(t, env.q, enq[0].ID); st.State != StateClaimed {
		t.Fatalf("within the grace the step is %s, want claimed (last_error %s)", st.State, st.LastError)
	}
	lost, err := env.q.Extend(ctxT(t), []Claim{c[0].Claim()}, time.Minute)
	if err != nil || len(lost) != 0 {
		t.Fatalf("late heartbeat: lost %v, %v", lost, err)
	}
	res := mustComplete(t, env.q, Completion{Claim: c[0].Claim(), Outcome: Success})
	if !res[0].Applied || res[0].State != StateCompleted {
		t.Fatalf("the owner's result after a late heartbeat: %+v", res[0])
	}
}
