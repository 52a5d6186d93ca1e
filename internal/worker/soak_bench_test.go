package worker

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
)

// BenchmarkRetentionSoak runs b.N steps (at least 2 000 000 for the figures in
// docs/benchmarks.md) through one worker with retention on, and samples the
// queue table and the throughput every SOAK_SAMPLE_S seconds (default 10), to
// show that the table stays bounded and throughput does not degrade as
// millions of steps pass. hack/soak-retention.sh runs it:
//
//	go test -run '^$' -bench '^BenchmarkRetentionSoak$' -benchtime 2000000x -timeout 60m ./internal/worker/
//
// The producer keeps at most SOAK_BACKLOG (default 20 000) steps enqueued and
// not yet run, so the table holds what retention keeps (the steps completed
// in the last SOAK_RETAIN_MS, default 10 000 ms) plus that backlog; without
// retention (SOAK_RETENTION=0) it holds every step ever run. Retention passes
// run every second, in batches of 5000 rows. Other settings are benchConfig's.
func BenchmarkRetentionSoak(b *testing.B) {
	cfg := benchConfig("bench-soak")
	rc := &cfg.Worker.Queue.Retention
	rc.Enabled = os.Getenv("SOAK_RETENTION") != "0"
	rc.CompletedAfterMS = int64(envInt("SOAK_RETAIN_MS", 10000))
	rc.IntervalMS = 1000
	rc.BatchSize = 5000
	backlog := int64(envInt("SOAK_BACKLOG", 20000))
	sample := time.Duration(envInt("SOAK_SAMPLE_S", 10)) * time.Second
	reg, ran := countingNoop()
	w, e, stop, errs := benchWorker(b, cfg, reg)
	n := int64(b.N)
	ctx := context.Background()

	type point struct {
		at          time.Duration
		ran         int64
		rows, dead  int64
		bytes       int64
		deletedRows float64
	}
	var points []point
	read := func(at time.Duration) point {
		p := point{at: at, ran: ran.Load()}
		if err := e.pool.QueryRow(ctx, `SELECT n_live_tup, n_dead_tup, pg_total_relation_size('tasker_steps')
			FROM pg_stat_user_tables WHERE relname = 'tasker_steps'`).Scan(&p.rows, &p.dead, &p.bytes); err != nil {
			b.Fatal(err)
		}
		p.deletedRows = retentionDeleted(b, w)
		return p
	}

	b.ResetTimer()
	start := time.Now()
	points = append(points, read(0))
	prodErr := make(chan error, 1)
	go func() {
		batch := make([]queue.NewStep, benchProducerBatch)
		for i := range batch {
			batch[i] = queue.NewStep{Queue: "default", Handler: "noop", Payload: benchPayload}
		}
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for sent := int64(0); sent < n; {
			if sent-ran.Load() >= backlog {
				<-tick.C
				continue
			}
			k := min(int64(len(batch)), n-sent)
			if _, err := e.q.Enqueue(ctx, batch[:k]); err != nil {
				prodErr <- err
				return
			}
			sent += k
		}
		prodErr <- nil
	}()
	every := time.NewTicker(sample)
	defer every.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for ran.Load() < n || w.claims.len() > 0 {
		select {
		case <-every.C:
			points = append(points, read(time.Since(start)))
		case <-poll.C:
		}
	}
	elapsed := time.Since(start)
	points = append(points, read(elapsed))
	b.StopTimer()
	if err := <-prodErr; err != nil {
		b.Fatal(err)
	}
	stop()
	errs.report(b)

	var table strings.Builder
	fmt.Fprintf(&table, "\n| t (s) | steps run | steps/s in window | live rows | dead rows | table+indexes MiB | deleted by retention |\n|---|---|---|---|---|---|---|\n")
	var maxRows, maxBytes int64
	var rates []float64
	for i, p := range points {
		rate := 0.0
		if i > 0 {
			rate = float64(p.ran-points[i-1].ran) / (p.at - points[i-1].at).Seconds()
			rates = append(rates, rate)
		}
		maxRows, maxBytes = max(maxRows, p.rows), max(maxBytes, p.bytes)
		fmt.Fprintf(&table, "| %.0f | %d | %.0f | %d | %d | %.1f | %.0f |\n", p.at.Seconds(), p.ran, rate, p.rows, p.dead, float64(p.bytes)/(1<<20), p.deletedRows)
	}
	b.Logf("soak: retention=%v retain=%dms backlog<=%d config: %s%s", rc.Enabled, rc.CompletedAfterMS, backlog, benchConfigSummary(cfg), table.String())
	b.ReportMetric(float64(n)/elapsed.Seconds(), "steps/s")
	b.ReportMetric(float64(maxRows), "max_live_rows")
	b.ReportMetric(float64(maxBytes)/(1<<20), "max_table_MiB")
	b.ReportMetric(float64(points[len(points)-1].bytes)/(1<<20), "final_table_MiB")
	// Throughput of the last full sample window against the second (the
	// first includes the start-up): below 1 means it degraded.
	if len(rates) >= 3 {
		b.ReportMetric(rates[len(rates)-2]/rates[1], "late/early_rate")
	}
}

// retentionDeleted sums tasker_queue_retention_deleted_total over states.
func retentionDeleted(tb testing.TB, w *Worker) float64 {
	tb.Helper()
	fams, err := w.Registry().Gather()
	if err != nil {
		tb.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() == "tasker_queue_retention_deleted_total" {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
