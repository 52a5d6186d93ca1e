package bindings_test

// This file drives the Python (unittest) and Ruby (minitest) suites of the
// bindings from `go test`, so `make test` runs them against the real
// libtaskerworker.so and a throwaway PostgreSQL:
//
//   - TestMain starts the PostgreSQL server (internal/pgtest) and finds the
//     library ($TASKERWORKER_LIB, which `make test` exports) and the
//     tasker-worker binary ($TASKER_WORKER_BIN), building either into a
//     temporary directory when unset.
//   - Each suite gets its own fresh database (DATABASE_URL); inside a suite
//     every test case uses its own queue namespace, so cases never see each
//     other's steps.
//   - Foreign tests enqueue with `tasker-worker enqueue` and read counts with
//     `tasker-worker stats --json`. For per-step state (attempts, last error)
//     they run this test binary itself as a helper: `$TASKERWORKER_TEST_HELPER
//     steps QUEUE` prints the queue's steps as JSON (see helperMain); the
//     product gains no command for it.
//   - A suite fails the Go test with its whole output, and must have run at
//     least one test.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/seed-a17b38e7/workerpool-operator/internal/pgtest"
)

var (
	repoRoot  string // the module root, where the foreign suites run
	libPath   string // libtaskerworker.so
	workerBin string // tasker-worker
	helperBin string // this test binary, for `steps`
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "steps" {
		os.Exit(helperMain(os.Args[2:]))
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if repoRoot, err = filepath.Abs(".."); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if helperBin, err = os.Executable(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "bindings-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	if libPath, err = artifact("TASKERWORKER_LIB", filepath.Join(tmp, "libtaskerworker.so"),
		"build", "-buildmode=c-shared", "-o", filepath.Join(tmp, "libtaskerworker.so"), "./cmd/libtaskerworker"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if workerBin, err = artifact("TASKER_WORKER_BIN", filepath.Join(tmp, "tasker-worker"),
		"build", "-o", filepath.Join(tmp, "tasker-worker"), "./cmd/tasker-worker"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return pgtest.Run(m, pgtest.Options{})
}

// artifact returns $env if set (made absolute; a relative path may be
// relative to this package or to the module root), else builds it with go
// args.
func artifact(env, out string, args ...string) (string, error) {
	if p := os.Getenv(env); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil && !filepath.IsAbs(p) {
			abs = filepath.Join(repoRoot, p)
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("%s=%s: %w (run `make build`, or unset it to build here)", env, p, err)
		}
		return abs, nil
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, b)
	}
	return out, nil
}

// helperMain is `steps QUEUE` with DATABASE_URL set: the queue's steps as a
// JSON array, oldest first, for assertions the stats counts cannot make.
func helperMain(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: steps QUEUE (with DATABASE_URL set)")
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer conn.Close(context.Background())
	var out []byte
	err = conn.QueryRow(ctx, `
SELECT coalesce(json_agg(json_build_object(
	'id', id, 'step_uuid', step_uuid, 'handler', handler, 'payload', payload, 'state', state,
	'attempts', attempts, 'max_attempts', max_attempts, 'result', result, 'last_error', last_error,
	'claimed_by', claimed_by) ORDER BY id), '[]'::json)
FROM tasker_steps WHERE queue = $1`, args[0]).Scan(&out)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	os.Stdout.Write(append(out, '\n'))
	return 0
}

// suiteEnv is the environment of a foreign suite: its own database, the
// library, the worker binary and the helper.
func suiteEnv(t *testing.T) []string {
	t.Helper()
	env := append(os.Environ(),
		"DATABASE_URL="+pgtest.NewDatabase(t),
		"TASKERWORKER_LIB="+libPath,
		"TASKER_WORKER_BIN="+workerBin,
		"TASKERWORKER_TEST_HELPER="+helperBin,
	)
	if os.Getenv("TASKER_LOG_LEVEL") == "" {
		// The worker logs JSON to stderr; keep suites readable unless asked.
		env = append(env, "TASKER_LOG_LEVEL=warn")
	}
	return env
}

// runSuite runs a foreign test command from the repository root and returns
// its combined output, failing the test with that output if it fails.
func runSuite(t *testing.T, timeout time.Duration, env []string, name string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found on PATH: the %s binding suite cannot run (make test-deps installs ruby; python3 must be on PATH): %v",
			name, t.Name(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = repoRoot
	cmd.Env = env
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	took := time.Since(start).Round(time.Millisecond)
	if ctx.Err() != nil {
		t.Fatalf("%s suite timed out after %v; output:\n%s", name, timeout, out.String())
	}
	if err != nil {
		t.Fatalf("%s suite failed (%v) after %v; output:\n%s", name, err, took, out.String())
	}
	if testing.Verbose() {
		t.Logf("%s suite output:\n%s", name, out.String())
	}
	t.Logf("%s suite passed in %v", name, took)
	return out.String()
}

var (
	pythonRan     = regexp.MustCompile(`(?m)^Ran (\d+) tests? in [\d.]+s$`)
	rubySummaryRE = regexp.MustCompile(`(?m)^(\d+) runs, (\d+) assertions, (\d+) failures, (\d+) errors, (\d+) skips`)
)

func TestPython(t *testing.T) {
	env := append(suiteEnv(t), "PYTHONPATH="+filepath.Join(repoRoot, "bindings", "python"), "PYTHONDONTWRITEBYTECODE=1")
	out := runSuite(t, 3*time.Minute, env, "python3",
		"-m", "unittest", "discover", "-s", "bindings/python/tests", "-v")
	m := pythonRan.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf(`python suite output has no "Ran N tests" summary:\n%s`, out)
	}
	if n, _ := strconv.Atoi(m[1]); n == 0 {
		t.Fatalf("python suite ran no tests:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^OK\b`).MatchString(out) {
		t.Fatalf("python suite exited 0 without reporting OK:\n%s", out)
	}
	// Everything the suite needs is provided here, so nothing may be skipped.
	if sk := regexp.MustCompile(`(?m)^OK \(.*skipped=(\d+)`).FindStringSubmatch(out); sk != nil {
		t.Fatalf("python suite skipped %s tests:\n%s", sk[1], out)
	}
	t.Logf("python: Ran %s tests, OK", m[1])
}

func TestRuby(t *testing.T) {
	env := suiteEnv(t)
	out := runSuite(t, 3*time.Minute, env, "ruby",
		"-Ibindings/ruby/lib", "-Ibindings/ruby/test",
		"-e", `Dir[File.join("bindings/ruby/test", "*_test.rb")].sort.each { |f| require File.expand_path(f) }`,
		"--", "--verbose")
	m := rubySummaryRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf(`ruby suite output has no "N runs, M assertions, ..." summary:\n%s`, out)
	}
	if m[1] == "0" {
		t.Fatalf("ruby suite ran no tests:\n%s", out)
	}
	if m[3] != "0" || m[4] != "0" || m[5] != "0" {
		t.Fatalf("ruby suite: %s failures, %s errors, %s skips (nothing may be skipped here):\n%s", m[3], m[4], m[5], out)
	}
	t.Logf("ruby: %s", m[0])
}

// stepsJSON is what the helper prints; decoded here only to check the helper
// works (the foreign suites are its users).
func TestHelperSteps(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	run := func(bin string, args ...string) []byte {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", bin, args, err, out)
		}
		return out
	}
	run(workerBin, "migrate")
	run(workerBin, "enqueue", "--queue", "helper", "--handler", "noop", "--count", "3", "--max-attempts", "2")
	var steps []struct {
		State       string `json:"state"`
		Attempts    int    `json:"attempts"`
		MaxAttempts int    `json:"max_attempts"`
		Handler     string `json:"handler"`
	}
	if err := json.Unmarshal(run(helperBin, "steps", "helper"), &steps); err != nil {
		t.Fatal(err)
	}
	if len(steps) != 3 || steps[0].State != "ready" || steps[0].MaxAttempts != 2 || steps[0].Handler != "noop" {
		t.Fatalf("helper steps: %+v", steps)
	}
}
