package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
	"github.com/seed-a17b38e7/workerpool-operator/internal/pgtest"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
)

// 10 000 steps through 4 concurrent workers: all complete, each handler ran
// exactly once, and no result was settled twice.
func TestTenThousandStepsFourWorkers(t *testing.T) {
	e := newEnv(t)
	const n = 10000
	enqueue(t, e.q, n, "count", `{}`, nil)
	counter := newRunCounter()
	for i := range 4 {
		reg := dispatch.NewRegistry()
		reg.MustRegister("count", counter)
		cfg := testConfig(fmt.Sprintf("w%d", i))
		cfg.Worker.MPSCChannels.HandlerDispatch.MaxConcurrentHandlers = 32
		startWorker(t, e, cfg, reg)
	}
	eventually(t, "all steps completed", 3*time.Minute, func() bool { return counts(t, e)["completed"] == n })
	distinct, dup := counter.duplicates()
	if distinct != n || dup != 0 {
		t.Fatalf("handlers ran for %d distinct steps (want %d), %d ran more than once", distinct, n, dup)
	}
	var attempts int
	if err := e.pool.QueryRow(context.Background(), `SELECT max(attempts) FROM tasker_steps`).Scan(&attempts); err != nil {
		t.Fatal(err)
	}
	if attempts != 1 {
		t.Fatalf("max attempts %d: some step was redelivered", attempts)
	}
}

func TestRetryScheduleThenDead(t *testing.T) {
	e := newEnv(t)
	r := startWorker(t, e, testConfig("retry"), nil)
	dead := enqueue(t, e.q, 1, "fail", `{"message":"always"}`, func(s *queue.NewStep) { s.MaxAttempts = 3 })[0]
	recovers := enqueue(t, e.q, 1, "fail", `{"fail_attempts":2}`, func(s *queue.NewStep) { s.MaxAttempts = 3 })[0]
	permanent := enqueue(t, e.q, 1, "fail", `{"retryable":false,"message":"bad input"}`, func(s *queue.NewStep) { s.MaxAttempts = 3 })[0]
	panics := enqueue(t, e.q, 1, "panic", `"boom"`, nil)[0]
	get := func(id int64) queue.Step {
		s, err := e.q.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	eventually(t, "all four settled", time.Minute, func() bool {
		return get(dead.ID).State == queue.StateDead && get(recovers.ID).State == queue.StateCompleted &&
			get(permanent.ID).State == queue.StateDead && get(panics.ID).State == queue.StateDead
	})
	checkDead := func(name string, s queue.Step, attempts int, errorType, msg string) {
		t.Helper()
		if s.Attempts != attempts {
			t.Errorf("%s: attempts %d, want %d", name, s.Attempts, attempts)
		}
		var res dispatch.StepExecutionResult
		if err := json.Unmarshal(s.LastError, &res); err != nil {
			t.Fatalf("%s: last_error %s: %v", name, s.LastError, err)
		}
		if res.Error == nil || res.Error.ErrorType != errorType || !strings.Contains(res.Error.Message, msg) || res.Metadata.WorkerID != "retry" {
			t.Errorf("%s: last error %s", name, s.LastError)
		}
	}
	checkDead("retryable until max_attempts", get(dead.ID), 3, dispatch.ErrorTypeHandlerError, "always")
	checkDead("permanent", get(permanent.ID), 1, dispatch.ErrorTypeHandlerError, "bad input")
	checkDead("panic", get(panics.ID), 1, dispatch.ErrorTypeHandlerPanic, "Handler panicked")
	if s := get(recovers.ID); s.Attempts != 3 || !strings.Contains(string(s.Result), "succeeded_on_attempt") {
		t.Errorf("recovering step: attempts %d result %s", s.Attempts, s.Result)
	}
	// 3 + 2 retryable failures, the permanent failure and the panic, one success.
	for _, want := range []string{`tasker_steps_completed_total{outcome="retryable_failure"} 5`,
		`tasker_steps_completed_total{outcome="permanent_failure"} 2`, `tasker_steps_completed_total{outcome="success"} 1`} {
		eventually(t, want, 10*time.Second, func() bool { return strings.Contains(httpBody(t, r.url("/metrics")), want) })
	}
}

// A step that runs three times longer than the visibility timeout is kept by
// heartbeats: a second worker polling all along never gets it.
func TestHeartbeatKeepsLongStep(t *testing.T) {
	e := newEnv(t)
	var runs atomic.Int32
	reg := dispatch.NewRegistry()
	reg.MustRegister("long", dispatch.HandlerFunc(func(ctx context.Context, _ *dispatch.StepMessage) (json.RawMessage, error) {
		runs.Add(1)
		select {
		case <-time.After(1500 * time.Millisecond):
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}))
	for i := range 2 {
		cfg := testConfig(fmt.Sprintf("hb%d", i))
		cfg.Worker.Queue.VisibilityTimeoutMS = 500
		cfg.Worker.Queue.HeartbeatIntervalMS = 100
		startWorker(t, e, cfg, reg)
	}
	s := enqueue(t, e.q, 1, "long", `{}`, nil)[0]
	eventually(t, "long step completed", 30*time.Second, func() bool { return counts(t, e)["completed"] == 1 })
	st, err := e.q.Get(context.Background(), s.ID)
	if err != nil {
		t.Fatal(err)
	}
	if runs.Load() != 1 || st.Attempts != 1 {
		t.Fatalf("handler ran %d times, attempts %d: the step was redelivered despite heartbeats", runs.Load(), st.Attempts)
	}
}

// Load shedding: with 10 permits and refusal at 80 %, no more than 8 steps
// are ever claimed or running while handlers are busy.
func TestLoadSheddingStopsClaimingAt80Percent(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	var running, maxRunning atomic.Int32
	reg := dispatch.NewRegistry()
	reg.MustRegister("block", dispatch.HandlerFunc(func(ctx context.Context, _ *dispatch.StepMessage) (json.RawMessage, error) {
		n := running.Add(1)
		for {
			m := maxRunning.Load()
			if n <= m || maxRunning.CompareAndSwap(m, n) {
				break
			}
		}
		defer running.Add(-1)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	}))
	cfg := testConfig("shed")
	cfg.Worker.MPSCChannels.HandlerDispatch.MaxConcurrentHandlers = 10
	enqueue(t, e.q, 30, "block", `{}`, nil)
	r := startWorker(t, e, cfg, reg)
	eventually(t, "8 handlers running", 30*time.Second, func() bool { return running.Load() == 8 })
	// Over several poll intervals (50 ms), still only 8 claimed.
	tick := time.NewTicker(60 * time.Millisecond)
	defer tick.Stop()
	for range 6 {
		<-tick.C
		c := counts(t, e)
		if c["claimed"] != 8 || running.Load() != 8 {
			t.Fatalf("claimed %d running %d, want 8/8 (refuse at 80%% of 10)", c["claimed"], running.Load())
		}
	}
	if !strings.Contains(httpBody(t, r.url("/metrics")), "tasker_dispatch_in_flight 8") {
		t.Error("in-flight gauge is not 8")
	}
	close(release)
	eventually(t, "all 30 completed", time.Minute, func() bool { return counts(t, e)["completed"] == 30 })
	if maxRunning.Load() != 8 {
		t.Fatalf("max concurrent %d, want 8", maxRunning.Load())
	}
}

func TestMetricsAndProbes(t *testing.T) {
	e := newEnv(t)
	r := startWorker(t, e, testConfig("probe"), nil)
	enqueue(t, e.q, 20, "noop", `{}`, nil)
	eventually(t, "completed", 30*time.Second, func() bool { return counts(t, e)["completed"] == 20 })
	if httpStatus(r.url("/healthz")) != 200 || httpStatus(r.url("/readyz")) != 200 {
		t.Fatal("probes not OK on a healthy worker")
	}
	body := httpBody(t, r.url("/metrics"))
	for _, name := range []string{
		"tasker_channel_completion_saturation", "tasker_channel_dispatch_saturation", "tasker_dispatch_in_flight",
		"tasker_dispatch_capacity", "tasker_callback_timeouts_total", "tasker_semaphore_acquisition_failures_total",
		"tasker_steps_completed_total", "tasker_queue_claimed_total", "tasker_queue_acknowledged_total",
		"tasker_queue_redelivered_total", "tasker_queue_dead_total", "tasker_queue_claim_duration_seconds_bucket",
		"process_resident_memory_bytes", "tasker_worker_info",
	} {
		metricLine(t, body, name)
	}
	if l := metricLine(t, body, "tasker_dispatch_capacity"); l != "tasker_dispatch_capacity 10" {
		t.Errorf("capacity line %q", l)
	}
	if l := metricLine(t, body, `tasker_steps_completed_total{outcome="success"}`); l != `tasker_steps_completed_total{outcome="success"} 20` {
		t.Errorf("completed line %q", l)
	}
}

// /readyz turns 503 when the database is unreachable.
func TestReadyzFailsWhenDatabaseUnreachable(t *testing.T) {
	e := newEnv(t)
	r := startWorker(t, e, testConfig("db"), nil)
	// From another database: forbid new connections and end the worker's.
	ctx := context.Background()
	var db string
	if err := e.pool.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	admin, err := pgxpool.New(ctx, pgtest.Shared(t).DSNFor("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	e.pool.Close()
	if _, err := admin.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %q WITH ALLOW_CONNECTIONS false`, db)); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, db); err != nil {
		t.Fatal(err)
	}
	eventually(t, "readyz 503", 30*time.Second, func() bool { return httpStatus(r.url("/readyz")) == 503 })
	if httpStatus(r.url("/healthz")) != 200 {
		t.Fatal("healthz must stay 200: the process is alive")
	}
	if _, err := admin.Exec(ctx, fmt.Sprintf(`ALTER DATABASE %q WITH ALLOW_CONNECTIONS true`, db)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "readyz 200 again", 30*time.Second, func() bool { return httpStatus(r.url("/readyz")) == 200 })
}
