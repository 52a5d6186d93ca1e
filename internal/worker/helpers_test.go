package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/seed-a17b38e7/workerpool-operator/internal/config"
	"github.com/seed-a17b38e7/workerpool-operator/internal/dispatch"
	"github.com/seed-a17b38e7/workerpool-operator/internal/handlers"
	"github.com/seed-a17b38e7/workerpool-operator/internal/pgtest"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue/queuetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// env is one test's database with the queue schema applied.
type env struct {
	dsn  string
	pool *pgxpool.Pool
	q    *queue.Queue
}

func newEnv(t testing.TB) *env {
	t.Helper()
	db := queuetest.New(t)
	return &env{dsn: db.DSN, pool: db.Pool, q: db.Queue}
}

// testConfig is a worker.toml tuned for fast tests.
func testConfig(id string) config.Config {
	c := config.Default()
	c.Worker.WorkerID = id
	c.Worker.Queue.Namespaces = []string{"default"}
	c.Worker.Queue.PollIntervalMS = 50
	c.Worker.Queue.BatchSize = 50
	c.Worker.Drain.TimeoutMS = 5000
	return c
}

// ffiConfig is testConfig with the FFI dispatch channel enabled and its
// starvation threshold and completion timeout set.
func ffiConfig(id string, starvationMS, completionMS int64) config.Config {
	c := testConfig(id)
	fc := &c.Worker.MPSCChannels.FFIDispatch
	fc.Enabled, fc.StarvationWarningThresholdMS, fc.CompletionTimeoutMS = true, starvationMS, completionMS
	return c
}

// running is a worker started by startWorker.
type running struct {
	w      *Worker
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned, after err is set
	err    error
}

// stop cancels the worker (as SIGTERM would) and returns Run's error. It
// may be called from any goroutine and more than once.
func (r *running) stop() error {
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(60 * time.Second):
		return errors.New("worker did not stop within 60s")
	}
}

func (r *running) url(path string) string { return "http://" + r.w.Addr().String() + path }

func startWorker(t *testing.T, e *env, cfg config.Config, reg *dispatch.Registry) *running {
	t.Helper()
	return startWorkerOpts(t, e.dsn, cfg, reg, testr.NewWithOptions(t, testr.Options{Verbosity: 0}), nil)
}

// startWorkerOpts starts a worker on the database at dsn with the given
// logger and post-handler callback, and waits until it is ready.
func startWorkerOpts(t *testing.T, dsn string, cfg config.Config, reg *dispatch.Registry, log logr.Logger, cb dispatch.PostHandlerCallback) *running {
	t.Helper()
	if reg == nil {
		reg = dispatch.NewRegistry()
		if err := handlers.Register(reg); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	w, err := New(ctx, Options{Config: cfg, DatabaseURL: dsn, Handlers: reg, Listener: ln, Logger: log, Callback: cb, Version: "test",
		Backoff: []time.Duration{20 * time.Millisecond, 40 * time.Millisecond}, Jitter: queue.NoJitter})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	r := &running{w: w, cancel: cancel, done: make(chan struct{})}
	go func() { r.err = w.Run(rctx); close(r.done) }()
	t.Cleanup(func() { _ = r.stop() })
	eventually(t, "worker ready", 30*time.Second, func() bool { return httpStatus(r.url("/readyz")) == 200 })
	return r
}

func eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func httpBody(t testing.TB, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func enqueue(t testing.TB, q *queue.Queue, n int, handler string, payload string, mutate func(*queue.NewStep)) []queue.EnqueuedStep {
	t.Helper()
	var out []queue.EnqueuedStep
	for i := 0; i < n; i += 2000 {
		batch := make([]queue.NewStep, 0, min(2000, n-i))
		for range min(2000, n-i) {
			s := queue.NewStep{Queue: "default", Handler: handler, Payload: json.RawMessage(payload)}
			if mutate != nil {
				mutate(&s)
			}
			batch = append(batch, s)
		}
		res, err := q.Enqueue(context.Background(), batch)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, res...)
	}
	return out
}

// counts reads step counts by state from the database.
func counts(t testing.TB, e *env) map[queue.State]int {
	t.Helper()
	c, err := e.q.CountByState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// runCounter is a handler that counts executions per step.
type runCounter struct {
	mu   sync.Mutex
	runs map[string]int
}

func newRunCounter() *runCounter { return &runCounter{runs: map[string]int{}} }

func (c *runCounter) Handle(_ context.Context, s *dispatch.StepMessage) (json.RawMessage, error) {
	c.mu.Lock()
	c.runs[s.StepUUID]++
	c.mu.Unlock()
	return nil, nil
}

func (c *runCounter) duplicates() (distinct, dup int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.runs {
		if n > 1 {
			dup++
		}
	}
	return len(c.runs), dup
}

func metricLine(t testing.TB, body, name string) string {
	t.Helper()
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, name+" ") || strings.HasPrefix(l, name+"{") {
			return l
		}
	}
	t.Fatalf("metric %s not exported", name)
	return ""
}

// logEntry is one captured log line.
type logEntry struct {
	err bool // written with Error
	msg string
	kv  map[string]any
}

// logCapture is a logr sink that keeps every line (info at V(0) and errors)
// for tests that assert on what the worker logs.
type logCapture struct {
	mu      *sync.Mutex
	entries *[]logEntry
	values  []any
}

func newLogCapture() logCapture { return logCapture{mu: &sync.Mutex{}, entries: &[]logEntry{}} }

func (l logCapture) Init(logr.RuntimeInfo)  {}
func (l logCapture) Enabled(level int) bool { return level == 0 }
func (l logCapture) Info(_ int, msg string, kv ...any) {
	l.add(logEntry{msg: msg}, kv)
}
func (l logCapture) Error(err error, msg string, kv ...any) {
	if err != nil {
		kv = append(kv, "error", err.Error())
	}
	l.add(logEntry{err: true, msg: msg}, kv)
}
func (l logCapture) WithValues(kv ...any) logr.LogSink {
	l.values = append(append([]any(nil), l.values...), kv...)
	return l
}
func (l logCapture) WithName(string) logr.LogSink { return l }

func (l logCapture) add(e logEntry, kv []any) {
	e.kv = map[string]any{}
	all := append(append([]any(nil), l.values...), kv...)
	for i := 0; i+1 < len(all); i += 2 {
		e.kv[fmt.Sprint(all[i])] = all[i+1]
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	*l.entries = append(*l.entries, e)
}

// find returns the captured lines whose message contains msg.
func (l logCapture) find(msg string) []logEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logEntry
	for _, e := range *l.entries {
		if strings.Contains(e.msg, msg) {
			out = append(out, e)
		}
	}
	return out
}

// startWorkerWith is startWorker with a logger of the caller's.
func startWorkerWith(t *testing.T, e *env, cfg config.Config, reg *dispatch.Registry, log logr.Logger, cb dispatch.PostHandlerCallback) *running {
	t.Helper()
	return startWorkerOpts(t, e.dsn, cfg, reg, log, cb)
}

// freezableProxy forwards TCP connections to a PostgreSQL server until it is
// frozen: then it stops moving bytes either way and holds new connections
// without answering, like a network partition or a hung server, which is
// worse for a client than a refused connection.
type freezableProxy struct {
	ln       net.Listener
	upstream string
	mu       sync.Mutex
	thawed   chan struct{} // closed while not frozen
}

func newFreezableProxy(t *testing.T, upstream string) *freezableProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezableProxy{ln: ln, upstream: upstream, thawed: make(chan struct{})}
	close(p.thawed)
	t.Cleanup(func() { p.thaw(); ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *freezableProxy) gate() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.thawed
}

func (p *freezableProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
		p.thawed = make(chan struct{})
	default:
	}
}

func (p *freezableProxy) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
	default:
		close(p.thawed)
	}
}

func (p *freezableProxy) serve(c net.Conn) {
	defer c.Close()
	<-p.gate()
	u, err := net.Dial("tcp", p.upstream)
	if err != nil {
		return
	}
	defer u.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				<-p.gate() // frozen: the bytes go nowhere until thawed
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	go pipe(u, c)
	go pipe(c, u)
	<-done
}

// dsn is the database URL dsn rewritten to go through the proxy.
func (p *freezableProxy) dsn(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.ln.Addr().String()
	return u.String()
}

// countingNoop is a registry whose "noop" handler counts its runs.
func countingNoop() (*dispatch.Registry, *atomic.Int64) {
	ran := &atomic.Int64{}
	reg := dispatch.NewRegistry()
	reg.MustRegister("noop", dispatch.HandlerFunc(func(context.Context, *dispatch.StepMessage) (json.RawMessage, error) {
		ran.Add(1)
		return nil, nil
	}))
	return reg, ran
}
