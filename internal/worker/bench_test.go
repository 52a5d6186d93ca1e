package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/seed-a17b38e7/workerpool-operator/internal/config"
	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
	"github.com/seed-a17b38e7/workerpool-operator/internal/pgtest"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
)

// Worker runtime benchmarks: docs/benchmarks.md, section "Worker runtime
// (PostgreSQL queue)"; hack/bench-worker.sh runs them for `make bench`.
// They use the package's throwaway server, which is non-durable (fsync,
// synchronous_commit and full_page_writes off) unless PGTEST_DURABLE=1.
// b.N is a number of steps, so run them with -benchtime=Nx:
//
//	go test -run '^$' -bench '^BenchmarkEndToEnd$' -benchtime 200000x ./internal/worker/
//	go test -run '^$' -bench '^BenchmarkNotifyLatency$' -benchtime 5000x ./internal/worker/
//	go test -run '^$' -bench '^BenchmarkWorkerRSS$' -benchtime 200000x ./internal/worker/
//
// BenchmarkEndToEnd reports its throughput next to the same server's pgbench
// TPS, measured once per test binary run (BENCH_PGBENCH_SECONDS sets -T,
// default 10; BENCH_SKIP_PGBENCH=1 skips it for quick experiments, and the
// ratio is then meaningless). BenchmarkNotifyLatency reports the bare
// NOTIFY → claim round trip of the same server next to the worker's figure.
//
// Knobs for exploring (defaults are the documented configuration):
// BENCH_BATCH_SIZE, BENCH_MAX_CONCURRENT, BENCH_DISPATCH_BUFFER,
// BENCH_COMPLETION_BUFFER, BENCH_NOTIFY_RATE; BENCH_CPUPROFILE and
// BENCH_MEMPROFILE profile only the measured section; BENCH_PGSS=1 logs
// pg_stat_statements (start the server with
// PGTEST_SETTINGS=shared_preload_libraries=pg_stat_statements).

// benchProducerBatch is how many steps the producer enqueues per call.
const benchProducerBatch = 500

// benchPayload is a small, realistic step input.
var benchPayload = json.RawMessage(`{"order_id":12345,"amount":1200,"currency":"EUR"}`)

// benchConfig is the worker.toml the benchmarks run with. Only keys a pool
// sets in its worker.toml are changed; the poll interval keeps its 500 ms
// default, so wake-ups come from NOTIFY.
//
//   - batch_size 1000: one claim statement per 1000 steps.
//   - max_concurrent_handlers 5000: load shedding lets at most 80 % of the
//     permits be claimed and unsettled at once, so 4000 claims may be in
//     flight: one batch being claimed, one dispatched, two being settled.
//   - dispatch and completion buffers 2000: two claim batches each.
func benchConfig(id string) config.Config {
	c := config.Default()
	c.Worker.WorkerID = id
	c.Worker.Queue.Namespaces = []string{"default"}
	c.Worker.Queue.BatchSize = envInt("BENCH_BATCH_SIZE", 1000)
	hd := &c.Worker.MPSCChannels.HandlerDispatch
	hd.MaxConcurrentHandlers = envInt("BENCH_MAX_CONCURRENT", 5000)
	hd.DispatchBufferSize = envInt("BENCH_DISPATCH_BUFFER", 2000)
	hd.CompletionBufferSize = envInt("BENCH_COMPLETION_BUFFER", 2000)
	return c
}

// benchConfigSummary describes benchConfig for the report.
func benchConfigSummary(c config.Config) string {
	hd := c.Worker.MPSCChannels.HandlerDispatch
	return fmt.Sprintf("batch_size=%d max_concurrent_handlers=%d dispatch_buffer_size=%d completion_buffer_size=%d poll_interval_ms=%d",
		c.Worker.Queue.BatchSize, hd.MaxConcurrentHandlers, hd.DispatchBufferSize, hd.CompletionBufferSize, c.Worker.Queue.PollIntervalMS)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// errorLog is a logr sink that drops info logs and counts errors, so a
// benchmark notices (and reports) failures such as persist retries or failed
// heartbeats instead of measuring through them silently.
type errorLog struct {
	n     atomic.Int64
	mu    sync.Mutex
	first []string
}

func (l *errorLog) Init(logr.RuntimeInfo)          {}
func (l *errorLog) Enabled(int) bool               { return false }
func (l *errorLog) Info(int, string, ...any)       {}
func (l *errorLog) WithValues(...any) logr.LogSink { return l }
func (l *errorLog) WithName(string) logr.LogSink   { return l }
func (l *errorLog) Error(err error, msg string, _ ...any) {
	l.n.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.first) < 3 {
		l.first = append(l.first, fmt.Sprintf("%s: %v", msg, err))
	}
}

// report adds the worker_errors metric and logs the first errors.
func (l *errorLog) report(b *testing.B) {
	b.ReportMetric(float64(l.n.Load()), "worker_errors")
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.first {
		b.Logf("worker error: %s", e)
	}
}

// benchWorker starts an in-process worker on a fresh database and returns it
// with the database (whose queue the producer uses), a stop function, and
// the worker's error log.
func benchWorker(b *testing.B, cfg config.Config, reg *dispatch.Registry) (*Worker, *env, func(), *errorLog) {
	b.Helper()
	e := newEnv(b)
	errs := &errorLog{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	w, err := New(context.Background(), Options{Config: cfg, DatabaseURL: e.dsn, Handlers: reg, Listener: ln,
		Logger: logr.New(errs), Version: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	eventually(b, "worker running", 30*time.Second, func() bool { return w.started.Load() })
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				b.Errorf("worker drain: %v", err)
			}
		})
	}
	b.Cleanup(stop)
	return w, e, stop, errs
}

// produce enqueues n steps in batches of benchProducerBatch from one
// goroutine, as fast as the database takes them.
func produce(ctx context.Context, q *queue.Queue, n int) error {
	batch := make([]queue.NewStep, 0, benchProducerBatch)
	for i := 0; i < n; {
		batch = batch[:0]
		for ; i < n && len(batch) < benchProducerBatch; i++ {
			batch = append(batch, queue.NewStep{Queue: "default", Handler: "noop", Payload: benchPayload})
		}
		if _, err := q.Enqueue(ctx, batch); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkEndToEnd measures steps/s through the real worker runtime
// (worker.New + Run, in process): a producer goroutine enqueues b.N steps in
// batches of 500 while the worker claims them, runs a no-op handler and
// settles each result in the queue. The clock runs from the first Enqueue
// until the last result is durable. It also reports the same server's
// pgbench TPS and the ratio, and the CPU time PostgreSQL and this process
// spent per step.
func BenchmarkEndToEnd(b *testing.B) {
	pgb := pgbenchTPS(b)
	cfg := benchConfig("bench-e2e")
	reg, ran := countingNoop()
	w, e, stop, errs := benchWorker(b, cfg, reg)
	n := b.N
	ctx := context.Background()
	prof := startProfile(b)
	pgss := startPgss(b, e)
	cpu0 := readCPU(b)
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)

	b.ResetTimer()
	start := time.Now()
	prodErr := make(chan error, 1)
	var producedIn atomic.Int64
	go func() {
		err := produce(ctx, e.q, n)
		producedIn.Store(int64(time.Since(start)))
		prodErr <- err
	}()
	// Done when every step's handler has run and no claim is left unsettled:
	// a claim leaves the set only after Complete returned, i.e. once the
	// result is durable in the queue.
	deadline := time.Now().Add(10*time.Minute + time.Duration(n)*time.Millisecond)
	for ran.Load() < int64(n) || w.claims.len() > 0 {
		if time.Now().After(deadline) {
			b.Fatalf("timed out: %d/%d handlers ran, %d claims unsettled", ran.Load(), n, w.claims.len())
		}
		time.Sleep(500 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()

	cpu := readCPU(b).sub(cpu0)
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	goroutines := runtime.NumGoroutine()
	prof()
	pgss()
	if err := <-prodErr; err != nil {
		b.Fatal(err)
	}
	stop()
	if c := counts(b, e); c["completed"] != n {
		b.Fatalf("states after run: %v, want %d completed", c, n)
	}
	var upd, hot, seqScans, seqRows int64
	if err := e.pool.QueryRow(ctx, `SELECT n_tup_upd, n_tup_hot_upd, seq_scan, seq_tup_read FROM pg_stat_user_tables WHERE relname = 'tasker_steps'`).
		Scan(&upd, &hot, &seqScans, &seqRows); err != nil {
		b.Fatal(err)
	}
	errs.report(b)
	rate := float64(n) / elapsed.Seconds()
	produced := time.Duration(producedIn.Load())
	b.ReportMetric(rate, "steps/s")
	b.ReportMetric(pgb, "pgbench_tps")
	b.ReportMetric(rate/pgb, "steps/pgbench_tx")
	b.ReportMetric(float64(n)/produced.Seconds(), "enqueued/s")
	b.ReportMetric(float64((elapsed - produced).Milliseconds()), "drain_lag_ms")
	b.ReportMetric(cpu.pg.Seconds()*1e6/float64(n), "pg_cpu_us/step")
	b.ReportMetric(cpu.self.Seconds()*1e6/float64(n), "go_cpu_us/step")
	b.Logf("n=%d elapsed=%v steps/s=%.0f pgbench_tps=%.0f ratio=%.2f durable=%v pool=%d config: %s",
		n, elapsed.Round(time.Millisecond), rate, pgb, rate/pgb, pgtest.Shared(b).Durable, w.pool.Config().MaxConns, benchConfigSummary(cfg))
	b.Logf("goroutines=%d gc_cycles=%d alloc/step=%dB row updates=%d of which HOT=%d; sequential scans of tasker_steps=%d reading %d rows",
		goroutines, ms1.NumGC-ms0.NumGC, (ms1.TotalAlloc-ms0.TotalAlloc)/uint64(n), upd, hot, seqScans, seqRows)
}

// ---- latency ----

// BenchmarkNotifyLatency measures enqueue → handler-start latency at a
// moderate, steady arrival rate (BENCH_NOTIFY_RATE steps/s, default 500),
// one step per Enqueue call, with the default 500 ms poll interval so that
// the figure reflects LISTEN/NOTIFY. The enqueue wall time travels in the
// payload and the handler records now − that time. b.N is the number of
// steps. Before the worker starts, the same server's bare mechanism is
// measured at the same rate: Enqueue, LISTEN wake-up, Claim, with no
// worker around it (the floor_* metrics).
func BenchmarkNotifyLatency(b *testing.B) {
	rate := envInt("BENCH_NOTIFY_RATE", 500)
	cfg := benchConfig("bench-latency")
	if cfg.Worker.Queue.PollIntervalMS != 500 {
		b.Fatalf("poll interval %d ms, want the 500 ms default", cfg.Worker.Queue.PollIntervalMS)
	}
	n := b.N
	floor := notifyFloor(b, min(n, 2000), rate)

	lat := make([]int64, n)
	var ran atomic.Int64
	reg := dispatch.NewRegistry()
	reg.MustRegister("stamp", dispatch.HandlerFunc(func(_ context.Context, s *dispatch.StepMessage) (json.RawMessage, error) {
		now := time.Now().UnixNano()
		var p stampPayload
		if err := json.Unmarshal(s.Payload, &p); err != nil {
			return nil, dispatch.Permanent(err)
		}
		lat[p.I] = now - p.T
		ran.Add(1)
		return nil, nil
	}))
	reg.MustRegister("noop", dispatch.HandlerFunc(func(context.Context, *dispatch.StepMessage) (json.RawMessage, error) { return nil, nil }))
	w, e, _, errs := benchWorker(b, cfg, reg)
	ctx := context.Background()
	// Warm up connections and statement caches.
	if _, err := e.q.Enqueue(ctx, []queue.NewStep{{Queue: "default", Handler: "noop"}}); err != nil {
		b.Fatal(err)
	}
	eventually(b, "warm-up step settled", 30*time.Second, func() bool { return counts(b, e)["completed"] == 1 })
	pgss := startPgss(b, e)

	b.ResetTimer()
	if err := paced(n, rate, func(i int) error {
		payload := fmt.Appendf(nil, `{"i":%d,"t":%d}`, i, time.Now().UnixNano())
		_, err := e.q.Enqueue(ctx, []queue.NewStep{{Queue: "default", Handler: "stamp", Payload: payload}})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	eventually(b, "all handlers ran", time.Minute, func() bool { return ran.Load() == int64(n) })
	b.StopTimer()
	pgss()
	errs.report(b)

	slices.Sort(lat)
	b.ReportMetric(pctMS(lat, 0.50), "p50_ms")
	b.ReportMetric(pctMS(lat, 0.95), "p95_ms")
	b.ReportMetric(pctMS(lat, 0.99), "p99_ms")
	b.ReportMetric(pctMS(lat, 1), "max_ms")
	b.ReportMetric(pctMS(floor, 0.50), "floor_p50_ms")
	b.ReportMetric(pctMS(floor, 0.95), "floor_p95_ms")
	b.ReportMetric(pctMS(floor, 0.99), "floor_p99_ms")
	b.Logf("n=%d rate=%d/s p50=%.2fms p95=%.2fms p99=%.2fms max=%.2fms; bare enqueue→NOTIFY→claim p50=%.2fms p95=%.2fms p99=%.2fms; claim round trips: %s; durable=%v config: %s",
		n, rate, pctMS(lat, 0.5), pctMS(lat, 0.95), pctMS(lat, 0.99), pctMS(lat, 1),
		pctMS(floor, 0.5), pctMS(floor, 0.95), pctMS(floor, 0.99), claimHistogram(w), pgtest.Shared(b).Durable, benchConfigSummary(cfg))
}

type stampPayload struct {
	I int   `json:"i"`
	T int64 `json:"t"`
}

// paced calls f(0..n-1) at rate calls per second, on schedule (a late call
// does not push the later ones back).
func paced(n, rate int, f func(i int) error) error {
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		if err := f(i); err != nil {
			return err
		}
	}
	return nil
}

// notifyFloor is the latency floor the worker builds on, measured on a fresh
// database of the same server: steps enqueued one per call at rate, and a
// goroutine that waits for the Listener's wake-up (or a 500 ms poll) and
// claims. It returns, sorted, claim-return time − enqueue time per step.
func notifyFloor(b *testing.B, n, rate int) []int64 {
	b.Helper()
	e := newEnv(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := e.q.Listen(ctx, []string{"default"})
	defer l.Close()
	<-l.Ready()
	lat := make([]int64, 0, n)
	done := make(chan error, 1)
	go func() {
		poll := time.NewTicker(500 * time.Millisecond)
		defer poll.Stop()
		for len(lat) < n {
			select {
			case <-l.C():
			case <-poll.C:
			case <-ctx.Done():
				done <- ctx.Err()
				return
			}
			steps, err := e.q.Claim(ctx, []string{"default"}, "floor", 100, time.Minute)
			if err != nil {
				done <- err
				return
			}
			now := time.Now().UnixNano()
			for _, s := range steps {
				var p stampPayload
				if err := json.Unmarshal(s.Payload, &p); err != nil {
					done <- err
					return
				}
				lat = append(lat, now-p.T)
			}
		}
		done <- nil
	}()
	if err := paced(n, rate, func(i int) error {
		payload := fmt.Appendf(nil, `{"i":%d,"t":%d}`, i, time.Now().UnixNano())
		_, err := e.q.Enqueue(ctx, []queue.NewStep{{Queue: "default", Handler: "stamp", Payload: payload}})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			b.Fatal(err)
		}
	case <-time.After(time.Minute):
		b.Fatalf("floor: only %d of %d steps claimed", len(lat), n)
	}
	slices.Sort(lat)
	return lat
}

// pctMS is the p-quantile of sorted nanosecond samples, in milliseconds.
func pctMS(sorted []int64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]) / 1e6
}

// claimHistogram summarises tasker_queue_claim_duration_seconds: how many
// claim round trips took at most 1, 5 and 10 ms.
func claimHistogram(w *Worker) string {
	fams, err := w.reg.Gather()
	if err != nil {
		return err.Error()
	}
	for _, f := range fams {
		if f.GetName() != "tasker_queue_claim_duration_seconds" || len(f.GetMetric()) == 0 {
			continue
		}
		h := f.GetMetric()[0].GetHistogram()
		parts := []string{fmt.Sprintf("%d claims", h.GetSampleCount())}
		for _, bk := range h.GetBucket() {
			if ub := bk.GetUpperBound(); ub == 0.001 || ub == 0.005 || ub == 0.01 {
				parts = append(parts, fmt.Sprintf("<=%gms: %.1f%%", ub*1000, 100*float64(bk.GetCumulativeCount())/float64(max(h.GetSampleCount(), 1))))
			}
		}
		return strings.Join(parts, ", ")
	}
	return "none"
}

// ---- RSS of the real binary ----

// BenchmarkWorkerRSS runs the real tasker-worker binary (built here) against
// a fresh database with benchConfig, reads VmRSS from /proc/PID/status once
// it is ready and idle, then pushes b.N noop steps through it with the same
// producer as BenchmarkEndToEnd and reports the peak (VmHWM, the high-water
// mark of the resident set) and the binary's steps/s.
func BenchmarkWorkerRSS(b *testing.B) {
	dir := b.TempDir()
	bin := filepath.Join(dir, "tasker-worker")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/seed-a17b38e7/workerpool-operator/cmd/tasker-worker").CombinedOutput(); err != nil {
		b.Fatalf("build tasker-worker: %v\n%s", err, out)
	}
	e := newEnv(b)
	cfg := benchConfig("bench-rss")
	addr := freeAddr(b)
	cfg.Worker.HTTP.ListenAddress = addr
	cfgPath := filepath.Join(dir, "worker.toml")
	if err := os.WriteFile(cfgPath, []byte(renderTOML(cfg)), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", cfgPath, "--log-level", "warn")
	cmd.Env = append(os.Environ(), config.EnvDatabaseURL+"="+e.dsn)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	pid := cmd.Process.Pid
	eventually(b, "tasker-worker ready", 60*time.Second, func() bool { return httpStatus("http://"+addr+"/readyz") == 200 })
	time.Sleep(2 * time.Second) // idle: started, connected, nothing to do
	idle := procStatusKB(b, pid, "VmRSS")

	n := b.N
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	if err := produce(ctx, e.q, n); err != nil {
		b.Fatal(err)
	}
	// Nothing claimable or claimed left means every step is settled; this
	// asks the partial claim index, so polling it stays cheap.
	eventually(b, "all steps settled", 10*time.Minute, func() bool {
		var left bool
		if err := e.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tasker_steps WHERE state IN ('ready', 'claimed'))`).Scan(&left); err != nil {
			b.Fatal(err)
		}
		return !left
	})
	elapsed := time.Since(start)
	b.StopTimer()
	peak := procStatusKB(b, pid, "VmHWM")
	after := procStatusKB(b, pid, "VmRSS")
	if c := counts(b, e); c["completed"] != n {
		b.Fatalf("states after run: %v, want %d completed", c, n)
	}
	b.ReportMetric(float64(idle)/1024, "rss_idle_MiB")
	b.ReportMetric(float64(peak)/1024, "rss_peak_MiB")
	b.ReportMetric(float64(after)/1024, "rss_after_MiB")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "steps/s")
	b.Logf("n=%d idle=%.1fMiB peak=%.1fMiB after=%.1fMiB steps/s=%.0f durable=%v config: %s",
		n, float64(idle)/1024, float64(peak)/1024, float64(after)/1024, float64(n)/elapsed.Seconds(),
		pgtest.Shared(b).Durable, benchConfigSummary(cfg))
}

func freeAddr(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// renderTOML writes the keys benchConfig sets; the rest keep their defaults.
func renderTOML(c config.Config) string {
	hd := c.Worker.MPSCChannels.HandlerDispatch
	return fmt.Sprintf(`[worker]
worker_id = %q

[worker.mpsc_channels.handler_dispatch]
dispatch_buffer_size = %d
completion_buffer_size = %d
max_concurrent_handlers = %d

[worker.queue]
namespaces = ["default"]
batch_size = %d
poll_interval_ms = %d

[worker.http]
listen_address = %q
`, c.Worker.WorkerID, hd.DispatchBufferSize, hd.CompletionBufferSize, hd.MaxConcurrentHandlers,
		c.Worker.Queue.BatchSize, c.Worker.Queue.PollIntervalMS, c.Worker.HTTP.ListenAddress)
}

// procStatusKB reads one "Key: N kB" line of /proc/PID/status.
func procStatusKB(b *testing.B, pid int, key string) int64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			v, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return v
		}
	}
	b.Fatalf("%s not in /proc/%d/status", key, pid)
	return 0
}

// ---- pgbench baseline ----

var (
	pgbenchOnce   sync.Once
	pgbenchResult float64
	pgbenchErr    error
)

var tpsLine = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)

// pgbenchTPS runs pgbench once per test binary against the package's server
// (same settings, same run as the benchmarks): `pgbench -i -s 10` into a
// scratch database, then `pgbench -c 4 -j 2 -T 10 -N` over TCP like the
// worker, and returns the TPS. The scratch database is dropped afterwards.
func pgbenchTPS(b *testing.B) float64 {
	b.Helper()
	srv := pgtest.Shared(b)
	if os.Getenv("BENCH_SKIP_PGBENCH") == "1" {
		return 1
	}
	pgbenchOnce.Do(func() {
		pgbenchResult, pgbenchErr = runPgbench(srv, envInt("BENCH_PGBENCH_SECONDS", 10))
		if pgbenchErr == nil {
			fmt.Fprintf(os.Stderr, "pgbench -c 4 -j 2 -N: %.0f tps (durable=%v)\n", pgbenchResult, srv.Durable)
		}
	})
	if pgbenchErr != nil {
		b.Fatal(pgbenchErr)
	}
	return pgbenchResult
}

func runPgbench(srv *pgtest.Server, seconds int) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const db = "pgbench_baseline"
	if _, err := srv.CreateDatabase(ctx, db); err != nil {
		return 0, err
	}
	defer func() { _ = srv.DropDatabase(context.Background(), db) }()
	bin := filepath.Join(srv.BinDir, "pgbench")
	conn := []string{"-h", srv.Host, "-p", strconv.Itoa(srv.Port), "-U", srv.User}
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, bin, append(append(slices.Clone(conn), args...), db)...)
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s %s: %w\n%s", bin, strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	if _, err := run("-i", "-s", "10", "-q"); err != nil {
		return 0, err
	}
	out, err := run("-c", "4", "-j", "2", "-T", strconv.Itoa(seconds), "-N")
	if err != nil {
		return 0, err
	}
	m := tpsLine.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pgbench: no tps line in output:\n%s", out)
	}
	return strconv.ParseFloat(m[1], 64)
}

// ---- measurement helpers ----

// cpuTimes is CPU time used so far by this process (worker and producer)
// and by the PostgreSQL server (postmaster, its live children, and the
// children it has reaped, such as finished autovacuum workers).
type cpuTimes struct{ self, pg time.Duration }

func (c cpuTimes) sub(o cpuTimes) cpuTimes { return cpuTimes{c.self - o.self, c.pg - o.pg} }

// readCPU reads cpuTimes from /proc. CPU per step says more than steps/s on
// a machine shared with other work.
func readCPU(b *testing.B) cpuTimes {
	b.Helper()
	ticks := func(fields []string, idx ...int) time.Duration {
		var t int64
		for _, i := range idx {
			v, _ := strconv.ParseInt(fields[i], 10, 64)
			t += v
		}
		return time.Duration(t) * 10 * time.Millisecond // USER_HZ is 100 on Linux
	}
	// stat returns the fields after the parenthesised command name: [0] is
	// the state, [1] the parent pid, [11..14] utime, stime, cutime, cstime.
	stat := func(pid string) []string {
		raw, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return nil
		}
		s := string(raw)
		return strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	}
	var c cpuTimes
	if f := stat("self"); f != nil {
		c.self = ticks(f, 11, 12)
	}
	raw, err := os.ReadFile(filepath.Join(pgtest.Shared(b).DataDir, "postmaster.pid"))
	if err != nil {
		return c
	}
	pm := strings.TrimSpace(strings.SplitN(string(raw), "\n", 2)[0])
	if f := stat(pm); f != nil {
		c.pg = ticks(f, 11, 12, 13, 14)
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if f := stat(e.Name()); f != nil && f[1] == pm && e.Name() != pm {
			c.pg += ticks(f, 11, 12)
		}
	}
	return c
}

// startProfile writes a CPU profile ($BENCH_CPUPROFILE) or an allocation
// profile ($BENCH_MEMPROFILE) of the measured section only (go test's own
// flags would include set-up and pgbench); call the result to finish it.
func startProfile(b *testing.B) func() {
	if path := os.Getenv("BENCH_MEMPROFILE"); path != "" {
		runtime.MemProfileRate = 4096
		return func() {
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
				b.Fatal(err)
			}
		}
	}
	path := os.Getenv("BENCH_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}

// startPgss resets pg_stat_statements when BENCH_PGSS=1; the returned
// function logs the statements that took the most time since.
func startPgss(b *testing.B, e *env) func() {
	if os.Getenv("BENCH_PGSS") != "1" {
		return func() {}
	}
	ctx := context.Background()
	if _, err := e.pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		b.Fatalf("%v (start the server with PGTEST_SETTINGS=shared_preload_libraries=pg_stat_statements)", err)
	}
	if _, err := e.pool.Exec(ctx, `SELECT pg_stat_statements_reset()`); err != nil {
		b.Fatal(err)
	}
	return func() {
		rows, err := e.pool.Query(ctx, `
SELECT calls, rows, round(total_exec_time)::bigint, round(mean_exec_time::numeric, 3)::float8,
       round(max_exec_time::numeric, 3)::float8, shared_blks_hit, wal_records,
       left(regexp_replace(query, '\s+', ' ', 'g'), 90)
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC LIMIT 8`)
		if err != nil {
			b.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var calls, nrows, total, hits, wal int64
			var mean, maxT float64
			var q string
			if err := rows.Scan(&calls, &nrows, &total, &mean, &maxT, &hits, &wal, &q); err != nil {
				b.Fatal(err)
			}
			b.Logf("pgss calls=%d rows=%d total_ms=%d mean_ms=%.3f max_ms=%.3f blks_hit/row=%.1f wal_records/row=%.1f %s",
				calls, nrows, total, mean, maxT, float64(hits)/float64(max(nrows, 1)), float64(wal)/float64(max(nrows, 1)), q)
		}
	}
}
