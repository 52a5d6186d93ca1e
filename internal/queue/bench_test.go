package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"
)

// Benchmarks run against the package's shared server. For production-like
// numbers keep PostgreSQL's durability defaults:
//
//	PGTEST_DURABLE=1 go test -run '^$' -bench . ./internal/queue/

const benchBatch = 100

func benchSteps(queue string, n int) []NewStep {
	payload := json.RawMessage(`{"order_id":12345,"amount":1200,"currency":"EUR"}`)
	steps := make([]NewStep, n)
	for i := range steps {
		steps[i] = NewStep{Queue: queue, Handler: "bench", Payload: payload}
	}
	return steps
}

// BenchmarkEnqueueBatch measures Enqueue of 100 steps per call (one round
// trip: INSERT over unnest + NOTIFY).
func BenchmarkEnqueueBatch(b *testing.B) {
	env := newEnv(b, Options{})
	ctx := ctxT(b)
	steps := benchSteps("bench", benchBatch)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for j := range steps {
			steps[j].StepUUID = UUID{} // fresh ids each round
		}
		if _, err := env.q.Enqueue(ctx, steps); err != nil {
			b.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N*benchBatch)/elapsed.Seconds(), "steps/s")
}

// BenchmarkClaimCompleteBatch measures the worker's side: Claim 100, then
// Complete those 100 as successes, per iteration.
func BenchmarkClaimCompleteBatch(b *testing.B) {
	env := newEnv(b, Options{})
	ctx := ctxT(b)
	total := b.N * benchBatch
	for done := 0; done < total; done += 1000 {
		if _, err := env.q.Enqueue(ctx, benchSteps("bench", min(1000, total-done))); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := env.pool.Exec(ctx, `VACUUM ANALYZE tasker_steps`); err != nil {
		b.Fatal(err)
	}
	completions := make([]Completion, 0, benchBatch)
	result := json.RawMessage(`{"success":true,"status":"completed"}`)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		claimed, err := env.q.Claim(ctx, []string{"bench"}, "bench-worker", benchBatch, time.Minute)
		if err != nil {
			b.Fatal(err)
		}
		if len(claimed) != benchBatch {
			b.Fatalf("claimed %d, want %d", len(claimed), benchBatch)
		}
		completions = completions[:0]
		for _, s := range claimed {
			completions = append(completions, Completion{Claim: s.Claim(), Outcome: Success, Result: result})
		}
		res, err := env.q.Complete(ctx, completions)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if !r.Applied {
				b.Fatalf("not applied: %+v", r)
			}
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(total)/elapsed.Seconds(), "steps/s")
}

// BenchmarkReadBacklog reads one queue's backlog at 200 000 and at 10 million
// claimable steps (rows inserted with one INSERT … SELECT, then VACUUM
// ANALYZE, as a long-lived queue table would be): the count stops at
// BacklogLimit and the oldest step is one index lookup, so both sizes should
// cost about the same. Setting up 10 million rows takes a minute or two.
func BenchmarkReadBacklog(b *testing.B) {
	for _, rows := range []int{200_000, 10_000_000} {
		b.Run(fmt.Sprintf("rows=%d", rows), func(b *testing.B) {
			env := newEnv(b, Options{})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
			defer cancel()
			if _, err := env.pool.Exec(ctx, `INSERT INTO tasker_steps (queue, handler, visible_at)
				SELECT 'deep', 'h', now() - (g || ' ms')::interval FROM generate_series(1, $1) g`, rows); err != nil {
				b.Fatal(err)
			}
			if _, err := env.pool.Exec(ctx, `VACUUM ANALYZE tasker_steps`); err != nil {
				b.Fatal(err)
			}
			var got Backlog
			b.ResetTimer()
			for b.Loop() {
				bl, err := ReadBacklog(ctx, env.pool, []string{"deep"}, 0)
				if err != nil {
					b.Fatal(err)
				}
				got = bl["deep"]
			}
			b.StopTimer()
			if got.Ready != BacklogLimit || !got.Capped || got.OldestReady < time.Duration(rows)*time.Millisecond {
				b.Fatalf("backlog of %d rows read as %+v", rows, got)
			}
		})
	}
}
