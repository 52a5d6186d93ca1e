package queue

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/seed-a17b38e7/workerpool-operator/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testEnv is one isolated database with a migrated queue and its own
// metrics registry.
type testEnv struct {
	q    *Queue
	pool *pgxpool.Pool
	reg  *prometheus.Registry
}

func newPool(tb testing.TB, dsn string) *pgxpool.Pool {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	cfg.MaxConns = 12
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func newEnv(tb testing.TB, opts Options) *testEnv {
	tb.Helper()
	pool := newPool(tb, pgtest.NewDatabase(tb))
	if err := Migrate(context.Background(), pool); err != nil {
		tb.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	q, err := New(pool, opts, reg)
	if err != nil {
		tb.Fatal(err)
	}
	return &testEnv{q: q, pool: pool, reg: reg}
}

func ctxT(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

// eventually polls cond every few milliseconds until it is true or the
// deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func mustEnqueue(t *testing.T, q *Queue, steps ...NewStep) []EnqueuedStep {
	t.Helper()
	out, err := q.Enqueue(ctxT(t), steps)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustClaim(t *testing.T, q *Queue, queues []string, limit int, vis time.Duration) []ClaimedStep {
	t.Helper()
	out, err := q.Claim(ctxT(t), queues, "worker-test", limit, vis)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustComplete(t *testing.T, q *Queue, cs ...Completion) []CompletionResult {
	t.Helper()
	out, err := q.Complete(ctxT(t), cs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustGet(t *testing.T, q *Queue, id int64) Step {
	t.Helper()
	s, err := q.Get(ctxT(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dbNow reads the database clock, which is what visible_at is computed from.
func dbNow(t *testing.T, pool *pgxpool.Pool) time.Time {
	t.Helper()
	var now time.Time
	if err := pool.QueryRow(ctxT(t), `SELECT clock_timestamp()`).Scan(&now); err != nil {
		t.Fatal(err)
	}
	return now
}

// metricValue returns a counter or gauge value (or a histogram's sample
// count) from a registry; labels are name/value pairs.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !hasLabel(m, labels[i], labels[i+1]) {
					continue metrics
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	t.Fatalf("metric %s%v not found", name, labels)
	return 0
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}
