package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/seed-a17b38e7/workerpool-operator/internal/pgtest"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue/queuetest"
)

// These tests run the real tasker-worker binary as separate processes, so
// that kill -9 and SIGTERM are the real thing. The binary comes from
// $TASKER_WORKER_BIN (make test builds it) or is built here.

var workerBin string

func TestMain(m *testing.M) {
	workerBin = os.Getenv("TASKER_WORKER_BIN")
	if workerBin == "" {
		dir, err := os.MkdirTemp("", "tasker-worker-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		workerBin = filepath.Join(dir, "tasker-worker")
		if out, err := exec.Command("go", "build", "-race", "-o", workerBin, ".").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build tasker-worker: %v\n%s", err, out)
			os.Exit(1)
		}
		defer os.RemoveAll(dir)
	}
	code := pgtest.Run(m, pgtest.Options{})
	os.Exit(code)
}

type env struct {
	dsn  string
	pool *pgxpool.Pool
	q    *queue.Queue
	dir  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db := queuetest.New(t)
	return &env{dsn: db.DSN, pool: db.Pool, q: db.Queue, dir: t.TempDir()}
}

// proc is a running worker process.
type proc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startProc runs `tasker-worker run` with a worker.toml made of toml.
func startProc(t *testing.T, e *env, name, toml string, sysattr *syscall.SysProcAttr) *proc {
	t.Helper()
	return startProcArgs(t, e, name, toml, sysattr)
}

// startProcArgs is startProc with extra `run` flags.
func startProcArgs(t *testing.T, e *env, name, toml string, sysattr *syscall.SysProcAttr, args ...string) *proc {
	t.Helper()
	path := filepath.Join(e.dir, name+".toml")
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(workerBin, append([]string{"run"}, args...)...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+e.dsn, "TASKER_CONFIG_PATH="+path, "POD_NAME="+name)
	p := &proc{cmd: cmd, out: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = sysattr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

// wait returns the process's exit error, failing the test after timeout.
func (p *proc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err // keep it for cleanup
		return err
	case <-time.After(timeout):
		t.Fatalf("process did not exit within %v", timeout)
		return nil
	}
}

func workerTOML(extra string) string {
	return `
[worker.mpsc_channels.handler_dispatch]
max_concurrent_handlers = 8
[worker.queue]
namespaces = ["default"]
visibility_timeout_ms = 1500
heartbeat_interval_ms = 300
batch_size = 20
poll_interval_ms = 50
[worker.drain]
timeout_ms = 20000
[worker.http]
listen_address = "127.0.0.1:0"
` + extra
}

func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// stateCounts reads step counts by state (queue.CountByState).
func stateCounts(t *testing.T, e *env) map[queue.State]int {
	t.Helper()
	c, err := e.q.CountByState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func enqueueSleeps(t *testing.T, e *env, n int, ms int) {
	t.Helper()
	steps := make([]queue.NewStep, n)
	for i := range steps {
		steps[i] = queue.NewStep{Queue: "default", Handler: "sleep", Payload: []byte(fmt.Sprintf(`{"ms":%d}`, ms)), MaxAttempts: 5}
	}
	if _, err := e.q.Enqueue(context.Background(), steps); err != nil {
		t.Fatal(err)
	}
}

func maxAttempts(t *testing.T, e *env) (maxA, redelivered int) {
	t.Helper()
	if err := e.pool.QueryRow(context.Background(),
		`SELECT coalesce(max(attempts),0), count(*) FILTER (WHERE attempts > 1) FROM tasker_steps`).Scan(&maxA, &redelivered); err != nil {
		t.Fatal(err)
	}
	return maxA, redelivered
}

// kill -9 a worker in the middle of a run, start another: every step
// completes, none is lost or dead.
func TestKill9MidRunLosesNothing(t *testing.T) {
	e := newEnv(t)
	const n = 200
	enqueueSleeps(t, e, n, 100)
	a := startProc(t, e, "worker-a", workerTOML(""), nil)
	eventually(t, "worker-a to complete some steps while holding others", 60*time.Second, func() bool {
		c := stateCounts(t, e)
		return c["completed"] >= 20 && c["claimed"] > 0
	})
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = a.wait(t, 10*time.Second)
	// A statement the killed worker had already sent (say a COMMIT of
	// results) still runs to its end in its server backend: count the held
	// claims only once no other backend of this database is active, or a
	// claim counted as held may complete without a redelivery.
	eventually(t, "worker-a's statements to finish", 10*time.Second, func() bool {
		var active int
		err := e.pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND state NOT IN ('idle')`).Scan(&active)
		return err == nil && active == 0
	})
	held := stateCounts(t, e)["claimed"]
	if held == 0 {
		t.Fatal("worker-a held no claims when killed; the test proves nothing")
	}
	startProc(t, e, "worker-b", workerTOML(""), nil)
	eventually(t, "every step completed after the crash", 2*time.Minute, func() bool { return stateCounts(t, e)["completed"] == n })
	_, redelivered := maxAttempts(t, e)
	if redelivered < held {
		t.Fatalf("%d steps redelivered, but worker-a held %d when killed", redelivered, held)
	}
	t.Logf("killed with %d claims held; all %d steps completed; %d redelivered", held, n, redelivered)
}

// SIGTERM drains: the worker stops claiming, finishes what runs, exits 0, and
// no step is ever redelivered.
func TestSIGTERMDrainRedeliversNothing(t *testing.T) {
	e := newEnv(t)
	const n = 100
	enqueueSleeps(t, e, n, 300)
	a := startProc(t, e, "worker-a", workerTOML(""), nil)
	eventually(t, "steps in flight", 60*time.Second, func() bool { return stateCounts(t, e)["claimed"] > 0 })
	start := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := a.wait(t, 30*time.Second); err != nil {
		t.Fatalf("worker-a exited with %v after SIGTERM, want exit 0", err)
	}
	took := time.Since(start)
	if c := stateCounts(t, e); c["claimed"] != 0 {
		t.Fatalf("%d steps still claimed after a clean drain", c["claimed"])
	}
	if !strings.Contains(a.out.String(), `"drained"`) {
		t.Fatal("no drain log line")
	}
	startProc(t, e, "worker-b", workerTOML(""), nil)
	eventually(t, "all steps completed", 2*time.Minute, func() bool { return stateCounts(t, e)["completed"] == n })
	if maxA, redelivered := maxAttempts(t, e); maxA != 1 || redelivered != 0 {
		t.Fatalf("max attempts %d, %d redelivered: the drain lost or re-ran work", maxA, redelivered)
	}
	t.Logf("drained and exited 0 in %v", took.Round(time.Millisecond))
}

// As PID 1 of its own PID namespace (as in a container), the worker still
// handles SIGTERM itself and exits 0.
func TestSIGTERMAsPID1(t *testing.T) {
	e := newEnv(t)
	p := startProc(t, e, "pid1", workerTOML(""), &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID})
	eventually(t, "worker running", 60*time.Second, func() bool { return strings.Contains(p.out.String(), "worker running") })
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatalf("PID 1 worker exited with %v after SIGTERM", err)
	}
}

func TestConfigValidateNamesTheKey(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[worker.queue]\nbatch_size = 0\nbogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(workerBin, "config", "validate", bad).CombinedOutput()
	if err == nil {
		t.Fatalf("invalid config accepted:\n%s", out)
	}
	for _, want := range []string{"worker.queue.bogus", "worker.queue.batch_size = 0", "between 1 and 10000"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("error output lacks %q:\n%s", want, out)
		}
	}
	good := filepath.Join(dir, "good.toml")
	if err := os.WriteFile(good, []byte(workerTOML("")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(workerBin, "config", "validate", good).CombinedOutput(); err != nil {
		t.Fatalf("valid config refused: %v\n%s", err, out)
	}
}

func TestEnqueueAndStatsCommands(t *testing.T) {
	e := newEnv(t)
	run := func(args ...string) string {
		cmd := exec.Command(workerBin, args...)
		cmd.Env = append(os.Environ(), "DATABASE_URL="+e.dsn)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := run("migrate"); !strings.Contains(out, "queue schema at version") {
		t.Fatalf("migrate: %s", out)
	}
	if out := run("enqueue", "--queue", "payments", "--handler", "echo", "--payload", `{"x":1}`, "--count", "25"); !strings.Contains(out, "enqueued 25 steps") {
		t.Fatalf("enqueue: %s", out)
	}
	lines := filepath.Join(e.dir, "steps.jsonl")
	if err := os.WriteFile(lines, []byte(`{"queue":"payments","handler":"sleep","payload":{"ms":1},"timeout_ms":5000}`+"\n"+`{"handler":"noop"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out := run("enqueue", "--file", lines); !strings.Contains(out, "enqueued 2 steps") {
		t.Fatalf("enqueue --file: %s", out)
	}
	out := run("stats")
	if !strings.Contains(out, "payments") || !strings.Contains(out, "26") || !strings.Contains(out, "default") {
		t.Fatalf("stats:\n%s", out)
	}
}

// A database no worker has migrated yet: enqueue and stats say what to run
// instead of PostgreSQL's "relation does not exist", and work after it.
func TestCommandsOnAnUnmigratedDatabaseNameTheFix(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	run := func(args ...string) (string, error) {
		cmd := exec.Command(workerBin, args...)
		cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, args := range [][]string{
		{"enqueue", "--queue", "payments", "--handler", "noop"},
		{"stats"},
	} {
		out, err := run(args...)
		if err == nil {
			t.Fatalf("%v on an unmigrated database succeeded:\n%s", args, out)
		}
		want := fmt.Sprintf("queue schema at version 0, this tasker-worker needs %d: run `tasker-worker migrate`", queue.LatestSchemaVersion)
		if !strings.Contains(out, want) || strings.Contains(out, "does not exist") {
			t.Fatalf("%v: want an error containing %q, got:\n%s", args, want, out)
		}
	}
	if out, err := run("migrate"); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	if out, err := run("enqueue", "--queue", "payments", "--handler", "noop"); err != nil || !strings.Contains(out, "enqueued 1 steps") {
		t.Fatalf("enqueue after migrate: %v\n%s", err, out)
	}
}

// ffiTOML enables the FFI dispatch channel with a short starvation threshold,
// so that the built-in poller's hold makes its events starve.
const ffiTOML = `
[worker.mpsc_channels.ffi_dispatch]
enabled = true
starvation_warning_threshold_ms = 200
`

// slowPollerArgs run two built-in FFI pollers that hold each event 600ms:
// three times the starvation threshold.
var slowPollerArgs = []string{"--ffi-pollers", "2", "--ffi-poll-hold", "600ms"}

func enqueueNoops(t *testing.T, e *env, n int) {
	t.Helper()
	steps := make([]queue.NewStep, n)
	for i := range steps {
		steps[i] = queue.NewStep{Queue: "default", Handler: "noop", MaxAttempts: 5}
	}
	if _, err := e.q.Enqueue(context.Background(), steps); err != nil {
		t.Fatal(err)
	}
}

// listenAddr reads the address the worker's HTTP server bound (it listens on
// 127.0.0.1:0) from its "worker running" log line.
func listenAddr(t *testing.T, p *proc) string {
	t.Helper()
	var addr string
	eventually(t, "the worker running log line", 60*time.Second, func() bool {
		for _, line := range strings.Split(p.out.String(), "\n") {
			var l struct {
				Msg    string `json:"msg"`
				Listen string `json:"listen"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "worker running" && l.Listen != "" {
				addr = l.Listen
				return true
			}
		}
		return false
	})
	return addr
}

var scrapeClient = &http.Client{Timeout: 2 * time.Second}

// scrape reads the worker's /metrics into sample name (with labels) → value.
func scrape(addr string) (map[string]float64, error) {
	resp, err := scrapeClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// The stock binary with a slow built-in FFI poller: its events age past the
// starvation threshold and /metrics reports them starving; once the queue is
// empty every step is completed and the starving gauge is back to 0.
func TestFFIPollerStarvesAndRecovers(t *testing.T) {
	e := newEnv(t)
	const n = 12
	enqueueNoops(t, e, n)
	p := startProcArgs(t, e, "ffi-slow", workerTOML(ffiTOML), nil, slowPollerArgs...)
	addr := listenAddr(t, p)
	var seen map[string]float64
	eventually(t, "tasker_ffi_starving_events > 0 and tasker_ffi_oldest_event_age_ms > 200", 60*time.Second, func() bool {
		m, err := scrape(addr)
		if err != nil {
			return false
		}
		seen = m
		return m["tasker_ffi_starving_events"] > 0 && m["tasker_ffi_oldest_event_age_ms"] > 200
	})
	t.Logf("starving: pending %v, starving %v, oldest %vms", seen["tasker_ffi_pending_events"],
		seen["tasker_ffi_starving_events"], seen["tasker_ffi_oldest_event_age_ms"])
	eventually(t, "every step completed", 2*time.Minute, func() bool { return stateCounts(t, e)["completed"] == n })
	eventually(t, "the starving gauge back to 0 with nothing pending", 30*time.Second, func() bool {
		m, err := scrape(addr)
		if err != nil {
			return false
		}
		seen = m
		return m["tasker_ffi_starving_events"] == 0 && m["tasker_ffi_pending_events"] == 0 && m["tasker_ffi_oldest_event_age_ms"] == 0
	})
	if got := seen[`tasker_ffi_complete_calls_total{status="completed"}`]; got != n {
		t.Errorf("%v completed Complete calls, want %d (each step through the FFI channel once)", got, n)
	}
	if got := seen[`tasker_steps_completed_total{outcome="success"}`]; got != n {
		t.Errorf("%v successful steps, want %d", got, n)
	}
	if !strings.Contains(p.out.String(), "slow polling detected") {
		t.Error("no starvation warning in the worker's log")
	}
	if maxA, redelivered := maxAttempts(t, e); maxA != 1 || redelivered != 0 {
		t.Errorf("max attempts %d, %d redelivered: a slow poller must not cost attempts", maxA, redelivered)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t, 30*time.Second); err != nil {
		t.Fatalf("exited with %v after SIGTERM, want exit 0", err)
	}
}

// SIGTERM while the slow poller holds events: the drain waits for the events
// it holds (the poller keeps completing them), returns the unpolled ones to
// the queue, exits 0, and no step is lost or run twice.
func TestFFIPollerSIGTERMDrainLosesNothing(t *testing.T) {
	e := newEnv(t)
	const n = 40
	enqueueNoops(t, e, n)
	a := startProcArgs(t, e, "ffi-a", workerTOML(ffiTOML), nil, slowPollerArgs...)
	addr := listenAddr(t, a)
	eventually(t, "steps completed and FFI events pending", 60*time.Second, func() bool {
		if stateCounts(t, e)["completed"] < 2 {
			return false
		}
		m, err := scrape(addr)
		return err == nil && m["tasker_ffi_pending_events"] > 0
	})
	start := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := a.wait(t, 30*time.Second); err != nil {
		t.Fatalf("ffi-a exited with %v after SIGTERM, want exit 0", err)
	}
	took := time.Since(start)
	c := stateCounts(t, e)
	if c["claimed"] != 0 {
		t.Fatalf("%d steps still claimed after a clean drain", c["claimed"])
	}
	out := a.out.String()
	if !strings.Contains(out, `"drained"`) {
		t.Fatal("no drain log line")
	}
	if strings.Contains(out, "completion not accepted") {
		t.Fatal("a poller's completion was refused during the drain: the poller stopped before the worker")
	}
	if c["completed"] == n {
		t.Log("every step completed before the drain ended; nothing was returned")
	}
	startProc(t, e, "worker-b", workerTOML(""), nil)
	eventually(t, "all steps completed", 2*time.Minute, func() bool { return stateCounts(t, e)["completed"] == n })
	if maxA, redelivered := maxAttempts(t, e); maxA != 1 || redelivered != 0 {
		t.Fatalf("max attempts %d, %d redelivered: the drain lost or re-ran work", maxA, redelivered)
	}
	t.Logf("drained and exited 0 in %v; %d of %d completed by ffi-a", took.Round(time.Millisecond), c["completed"], n)
}
