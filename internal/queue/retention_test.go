package queue

import (
	"context"
	"testing"
	"time"
)

// finishSteps enqueues n steps on queue and settles them with outcome.
func finishSteps(t *testing.T, env *testEnv, queue string, n int, outcome Outcome) []int64 {
	t.Helper()
	steps := make([]NewStep, n)
	for i := range steps {
		steps[i] = NewStep{Queue: queue, Handler: "h"}
	}
	mustEnqueue(t, env.q, steps...)
	claimed := mustClaim(t, env.q, []string{queue}, n, time.Hour)
	cs := make([]Completion, len(claimed))
	ids := make([]int64, len(claimed))
	for i, c := range claimed {
		cs[i], ids[i] = Completion{Claim: c.Claim(), Outcome: outcome}, c.ID
	}
	mustComplete(t, env.q, cs...)
	return ids
}

// ageSteps moves the completion time of the given steps into the past.
func ageSteps(t *testing.T, env *testEnv, ids []int64, by time.Duration) {
	t.Helper()
	if _, err := env.pool.Exec(ctxT(t), `UPDATE tasker_steps SET completed_at = completed_at - $2::bigint * interval '1 microsecond'
		WHERE id = ANY($1)`, ids, by.Microseconds()); err != nil {
		t.Fatal(err)
	}
}

// Retention deletes completed and dead steps past their own ages, in batches
// of at most BatchSize rows, and leaves everything else alone.
func TestRetentionDeletesFinishedStepsInBatches(t *testing.T) {
	env := newEnv(t, Options{})
	oldDone := finishSteps(t, env, "r", 25, Success)
	ageSteps(t, env, oldDone, 2*time.Hour)
	freshDone := finishSteps(t, env, "r", 3, Success)
	oldDead := finishSteps(t, env, "r", 4, PermanentFailure)
	ageSteps(t, env, oldDead, 2*time.Hour) // dead, but younger than DeadAfter
	veryOldDead := finishSteps(t, env, "r", 2, PermanentFailure)
	ageSteps(t, env, veryOldDead, 48*time.Hour)
	mustEnqueue(t, env.q, NewStep{Queue: "r", Handler: "h"}, NewStep{Queue: "r", Handler: "h"})
	held := mustClaim(t, env.q, []string{"r"}, 1, time.Hour)
	if _, err := env.pool.Exec(ctxT(t), `UPDATE tasker_steps SET enqueued_at = enqueued_at - interval '3 days'`); err != nil {
		t.Fatal(err)
	}

	policy := RetentionPolicy{CompletedAfter: time.Hour, DeadAfter: 24 * time.Hour, BatchSize: 10, MaxBatches: 2}
	res, err := env.q.RunRetention(ctxT(t), policy)
	if err != nil {
		t.Fatal(err)
	}
	// Two batches of 10 completed (MaxBatches), then one batch of dead.
	if res.Skipped || res.Completed != 20 || res.Dead != 2 || res.Batches != 3 {
		t.Fatalf("first pass: %+v, want 20 completed and 2 dead in 3 batches", res)
	}
	res, err = env.q.RunRetention(ctxT(t), policy)
	if err != nil || res.Completed != 5 || res.Dead != 0 {
		t.Fatalf("second pass: %+v %v, want the remaining 5 completed", res, err)
	}
	stats, err := env.q.Stats(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if s := stats["r"]; s.Completed != int64(len(freshDone)) || s.Dead != int64(len(oldDead)) || s.Ready != 1 || s.Claimed != 1 {
		t.Fatalf("after retention: %+v; want the 3 fresh completed, the 4 younger dead, the ready and the claimed step", s)
	}
	if st := mustGet(t, env.q, held[0].ID); st.State != StateClaimed {
		t.Fatalf("claimed step touched: %s", st.State)
	}
	if v := metricValue(t, env.reg, "tasker_queue_retention_deleted_total", "state", "completed"); v != 25 {
		t.Fatalf("retention_deleted_total{completed} = %v", v)
	}
	if v := metricValue(t, env.reg, "tasker_queue_retention_deleted_total", "state", "dead"); v != 2 {
		t.Fatalf("retention_deleted_total{dead} = %v", v)
	}
}

// One retention pass at a time: while another session holds the retention
// lock, a pass is skipped and deletes nothing.
func TestRetentionSkipsWhileAnotherWorkerHoldsTheLock(t *testing.T) {
	env := newEnv(t, Options{})
	ids := finishSteps(t, env, "l", 5, Success)
	ageSteps(t, env, ids, time.Hour)
	conn, err := env.pool.Acquire(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctxT(t), `SELECT pg_advisory_lock($1)`, retentionLockKey); err != nil {
		t.Fatal(err)
	}
	policy := RetentionPolicy{CompletedAfter: time.Minute, DeadAfter: time.Minute, BatchSize: 100, MaxBatches: 1}
	res, err := env.q.RunRetention(ctxT(t), policy)
	if err != nil || !res.Skipped || res.Completed != 0 {
		t.Fatalf("pass while locked elsewhere: %+v %v, want skipped", res, err)
	}
	if _, err := conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, retentionLockKey); err != nil {
		t.Fatal(err)
	}
	res, err = env.q.RunRetention(ctxT(t), policy)
	if err != nil || res.Skipped || res.Completed != 5 {
		t.Fatalf("pass after unlock: %+v %v, want 5 completed deleted", res, err)
	}
	// The pass released its lock: it can be taken again.
	var ok bool
	if err := conn.QueryRow(ctxT(t), `SELECT pg_try_advisory_lock($1)`, retentionLockKey).Scan(&ok); err != nil || !ok {
		t.Fatalf("retention lock still held after the pass: %v %v", ok, err)
	}
	if _, err := conn.Exec(ctxT(t), `SELECT pg_advisory_unlock($1)`, retentionLockKey); err != nil {
		t.Fatal(err)
	}
}

// Purge refuses states retention never deletes.
func TestPurgeRefusesUnfinishedStates(t *testing.T) {
	env := newEnv(t, Options{})
	for _, st := range []State{StateReady, StateClaimed} {
		if _, err := env.q.Purge(ctxT(t), st, 0, 10); err == nil {
			t.Fatalf("Purge(%s) accepted", st)
		}
	}
}

// Migration 4 makes autovacuum keep up with the queue's churn: a fixed
// threshold instead of a fraction of the table, and no cost delay.
func TestQueueTableIsVacuumedAtAFixedThreshold(t *testing.T) {
	env := newEnv(t, Options{})
	var opts []string
	if err := env.pool.QueryRow(ctxT(t), `SELECT reloptions FROM pg_class WHERE relname = 'tasker_steps'`).Scan(&opts); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, o := range opts {
		got[o] = true
	}
	for _, want := range []string{"autovacuum_vacuum_scale_factor=0", "autovacuum_vacuum_threshold=10000", "autovacuum_vacuum_cost_delay=0"} {
		if !got[want] {
			t.Errorf("tasker_steps reloptions %v lack %s", opts, want)
		}
	}
}
