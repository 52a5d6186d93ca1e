package bindings_test

// This file drives the Python (unittest) and Ruby (minitest) suites of the
// bindings from `go test`, so `make test` runs them against the packages users
// install and a throwaway PostgreSQL:
//
//   - TestMain starts the PostgreSQL server (internal/pgtest) and finds the
//     library ($TASKERWORKER_LIB, which `make test` exports), the
//     tasker-worker binary ($TASKER_WORKER_BIN) and the packages
//     ($TASKERWORKER_PACKAGES: the wheel and the gem `make packages` built),
//     building any that is unset into a temporary directory (the packages with
//     hack/packages/build.sh around that library).
//   - Each suite runs from its package installed into a clean virtualenv or
//     GEM_HOME, outside the checkout and without $TASKERWORKER_LIB, after a
//     check that the package, not the source tree, is what gets imported and
//     that the library comes from inside it.
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
	"syscall"
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
	wheel     string // the Python package, libtaskerworker.so inside
	gemFile   string // the Ruby package, libtaskerworker.so inside
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
	if wheel, gemFile, err = packages(filepath.Join(tmp, "packages")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return pgtest.Run(m, pgtest.Options{})
}

// packages returns the wheel and the gem in $TASKERWORKER_PACKAGES, or
// builds them into dir around libPath.
func packages(dir string) (whl, gem string, err error) {
	if d := os.Getenv("TASKERWORKER_PACKAGES"); d != "" {
		if dir, err = filepath.Abs(d); err != nil {
			return "", "", err
		}
	} else {
		cmd := exec.Command("bash", "hack/packages/build.sh")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "LIB="+libPath, "OUT="+dir)
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("hack/packages/build.sh: %w\n%s", err, b)
		}
	}
	one := func(pattern string) (string, error) {
		m, _ := filepath.Glob(filepath.Join(dir, pattern))
		if len(m) != 1 {
			return "", fmt.Errorf("want one %s in %s (run `make packages`), found %v", pattern, dir, m)
		}
		return m[0], nil
	}
	if whl, err = one("taskerworker-*.whl"); err != nil {
		return "", "", err
	}
	gem, err = one("taskerworker-*.gem")
	return whl, gem, err
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

// suiteEnv is the environment of a foreign suite or example: its own
// database, the worker binary and the helper; nothing that could point it at
// the source tree or at a library outside its package.
func suiteEnv(t *testing.T) []string {
	t.Helper()
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "TASKERWORKER_LIB", "PYTHONPATH", "PYTHONHOME", "RUBYLIB", "RUBYOPT", "GEM_HOME", "GEM_PATH", "BUNDLE_GEMFILE", "VIRTUAL_ENV":
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"DATABASE_URL="+pgtest.NewDatabase(t),
		"TASKER_WORKER_BIN="+workerBin,
		"TASKERWORKER_TEST_HELPER="+helperBin,
		"PYTHONDONTWRITEBYTECODE=1",
	)
	if os.Getenv("TASKER_LOG_LEVEL") == "" {
		// The worker logs JSON to stderr; keep suites readable unless asked.
		env = append(env, "TASKER_LOG_LEVEL=warn")
	}
	return env
}

// installWheel installs the wheel into a new virtualenv, offline, and
// returns the virtualenv's python.
func installWheel(t *testing.T) string {
	t.Helper()
	venv := filepath.Join(t.TempDir(), "venv")
	must(t, "", nil, "python3", "-m", "venv", venv)
	py := filepath.Join(venv, "bin", "python")
	must(t, "", nil, py, "-m", "pip", "install", "--quiet", "--no-index", "--disable-pip-version-check", wheel)
	return py
}

// installGem installs the gem into a new, empty GEM_HOME, offline (its ffi
// dependency comes from the system's gems), and returns the GEM_HOME.
func installGem(t *testing.T) string {
	t.Helper()
	home := filepath.Join(t.TempDir(), "gems")
	must(t, "", []string{"GEM_HOME=" + home}, "gem", "install", "--local", "--no-document", gemFile)
	return home
}

// packageVersion is the version in a wheel's or gem's file name (the
// versions hack/packages/version.sh derives have no "-").
func packageVersion(file string) string {
	return strings.SplitN(strings.TrimPrefix(filepath.Base(file), "taskerworker-"), "-", 2)[0]
}

// must runs a command (in dir, with env added to this process's) and
// returns its stdout, failing the test with its output if it fails.
func must(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// fromPackage checks what a suite will import: the installed package (under
// root), its version (the package file's), and the library inside it.
func fromPackage(t *testing.T, env []string, root, version string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 {
		t.Fatalf("want package path, library path and version, got:\n%s", out)
	}
	pkg, lib, got := lines[0], lines[1], lines[2]
	if !strings.HasPrefix(pkg, root+"/") || strings.HasPrefix(pkg, repoRoot+"/") {
		t.Fatalf("the package is imported from %s, want the installed one under %s", pkg, root)
	}
	if !strings.HasPrefix(lib, root+"/") || filepath.Base(lib) != "libtaskerworker.so" {
		t.Fatalf("the library is loaded from %s, want the one inside the installed package under %s", lib, root)
	}
	if got != version {
		t.Fatalf("installed version %s, want the package's %s", got, version)
	}
	t.Logf("package %s, library %s, version %s", pkg, lib, got)
}

// runSuite runs a foreign test command in dir and returns
// its combined output, failing the test with that output if it fails.
func runSuite(t *testing.T, timeout time.Duration, env []string, dir, name string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found on PATH: the %s binding suite cannot run (make test-deps installs ruby; python3 must be on PATH): %v",
			name, t.Name(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
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
	py := installWheel(t)
	env := suiteEnv(t)
	fromPackage(t, env, filepath.Dir(filepath.Dir(py)), packageVersion(wheel), py, "-c",
		"import taskerworker; print(taskerworker.__file__); print(taskerworker.Worker().lib.path); print(taskerworker.__version__)")
	tests := filepath.Join(repoRoot, "bindings", "python", "tests")
	out := runSuite(t, 3*time.Minute, env, t.TempDir(), py, "-m", "unittest", "discover", "-s", tests, "-t", tests, "-v")
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
	home := installGem(t)
	env := append(suiteEnv(t), "GEM_HOME="+home)
	fromPackage(t, env, home, packageVersion(gemFile), "ruby", "-e",
		`require "taskerworker"; puts Gem.loaded_specs["taskerworker"].full_gem_path + "/lib/taskerworker.rb", TaskerWorker::Native.load.path, TaskerWorker::VERSION`)
	tests := filepath.Join(repoRoot, "bindings", "ruby", "test")
	out := runSuite(t, 3*time.Minute, env, t.TempDir(), "ruby", "-I"+tests,
		"-e", `Dir[File.join(ARGV.shift, "*_test.rb")].sort.each { |f| require f }`, tests, "--verbose")
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

// TestExamples runs examples/python/worker.py and examples/ruby/worker.rb
// as a user would after installing the wheel or the gem in a clean
// virtualenv or GEM_HOME: their handlers complete steps (a retryable failure
// retried, bad input dead at once), the library comes from the package, and
// SIGTERM drains and exits 0.
func TestExamples(t *testing.T) {
	for _, lang := range []string{"python", "ruby"} {
		t.Run(lang, func(t *testing.T) {
			t.Parallel()
			env := suiteEnv(t)
			var root string
			var cmd []string
			if lang == "python" {
				py := installWheel(t)
				root = filepath.Dir(filepath.Dir(py))
				cmd = []string{py, filepath.Join(repoRoot, "examples", "python", "worker.py")}
			} else {
				root = installGem(t)
				env = append(env, "GEM_HOME="+root)
				cmd = []string{"ruby", filepath.Join(repoRoot, "examples", "ruby", "worker.rb")}
			}
			queue := "example_" + lang
			dir := t.TempDir()
			conf := filepath.Join(dir, "worker.toml")
			// The examples' own configs listen on fixed ports; this one on a free one.
			if err := os.WriteFile(conf, []byte(fmt.Sprintf("[worker.queue]\nnamespaces = [%q]\npoll_interval_ms = 50\n"+
				"[worker.http]\nlisten_address = \"127.0.0.1:0\"\n", queue)), 0o644); err != nil {
				t.Fatal(err)
			}
			env = append(env, "TASKER_CONFIG_PATH="+conf)
			dsn := envValue(env, "DATABASE_URL")

			var out bytes.Buffer
			c := exec.Command(cmd[0], cmd[1:]...)
			c.Dir, c.Env, c.Stdout, c.Stderr = dir, env, &out, &out
			if err := c.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- c.Wait() }()
			t.Cleanup(func() {
				_ = c.Process.Kill()
				<-exited
			})
			tw := func(args ...string) string { return must(t, dir, []string{"DATABASE_URL=" + dsn}, workerBin, args...) }
			tw("migrate") // the example migrates too, when it starts
			tw("enqueue", "--queue", queue, "--handler", "greet", "--payload", `{"name":"Ada"}`, "--count", "3")
			tw("enqueue", "--queue", queue, "--handler", "sum", "--payload", `{"numbers":[1,2,3],"fail_first_attempt":true}`)
			tw("enqueue", "--queue", queue, "--handler", "greet", "--payload", `{}`)
			var steps []struct {
				Handler  string `json:"handler"`
				State    string `json:"state"`
				Attempts int    `json:"attempts"`
				Result   struct {
					Result json.RawMessage `json:"result"`
				} `json:"result"`
				LastError struct {
					Error struct {
						ErrorType string `json:"error_type"`
					} `json:"error"`
				} `json:"last_error"`
			}
			deadline := time.Now().Add(90 * time.Second)
			for {
				if err := json.Unmarshal([]byte(must(t, dir, []string{"DATABASE_URL=" + dsn}, helperBin, "steps", queue)), &steps); err != nil {
					t.Fatal(err)
				}
				done := 0
				for _, s := range steps {
					if s.State == "completed" || s.State == "dead" {
						done++
					}
				}
				if done == len(steps) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("steps not finished within 90 s: %+v\n%s", steps, out.String())
				}
				time.Sleep(100 * time.Millisecond)
			}
			var got []string
			for _, s := range steps {
				var v any // PostgreSQL's json spacing and key order, made canonical
				_ = json.Unmarshal(s.Result.Result, &v)
				outcome, _ := json.Marshal(v)
				if s.State == "dead" {
					outcome = []byte(s.LastError.Error.ErrorType)
				}
				got = append(got, fmt.Sprintf("%s %s %d %s", s.Handler, s.State, s.Attempts, outcome))
			}
			want := []string{
				`greet completed 1 {"greeting":"Hello, Ada!"}`, `greet completed 1 {"greeting":"Hello, Ada!"}`,
				`greet completed 1 {"greeting":"Hello, Ada!"}`, `sum completed 2 {"count":3,"sum":6}`,
				"greet dead 1 PermanentError",
			}
			if lang == "ruby" {
				want[4] = "greet dead 1 TaskerWorker::PermanentError"
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if err := c.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-exited:
				exited <- err // for the cleanup
				if err != nil {
					t.Fatalf("after SIGTERM: %v\n%s", err, out.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("still running 30 s after SIGTERM:\n%s", out.String())
			}
			lib := filepath.Join(root, "/") // the library must come from inside the installed package
			if !regexp.MustCompile(`libtaskerworker \S+ from ` + regexp.QuoteMeta(lib) + `\S*/libtaskerworker\.so`).MatchString(out.String()) {
				t.Errorf("the example did not load the library from the package under %s:\n%s", root, out.String())
			}
		})
	}
}

// envValue is the value of name in env (the last entry wins, as for exec).
func envValue(env []string, name string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val
		}
	}
	return v
}

// TestPackageVersions: hack/packages/version.sh turns each form of the
// project's VERSION (git describe) into a version pip and RubyGems accept
// and order as the commits are ordered: a tag, builds after it, the next tag.
func TestPackageVersions(t *testing.T) {
	derive := func(flavour, version string) string {
		return strings.TrimSpace(must(t, repoRoot, nil, "bash", "hack/packages/version.sh", flavour, version))
	}
	for _, c := range []struct{ in, python, ruby string }{
		{"v0.2.0", "0.2.0", "0.2.0"},
		{"v0.2.0-dirty", "0.2.0+dirty", "0.2.0.dirty"},
		{"v0.2.0-5-gabc1234", "0.2.1.dev5+gabc1234", "0.2.1.pre.5.gabc1234"},
		{"v0.2.0-5-gabc1234-dirty", "0.2.1.dev5+gabc1234.dirty", "0.2.1.pre.5.gabc1234.dirty"},
		{"Dev/Build_1", "0.1.0.dev0+dev.build.1", "0.1.0.pre.0.dev.build.1"},
	} {
		if p, r := derive("python", c.in), derive("ruby", c.in); p != c.python || r != c.ruby {
			t.Errorf("%s: python %s ruby %s, want %s and %s", c.in, p, r, c.python, c.ruby)
		}
	}
	// Before the first tag: the chart's appVersion, the commit count, the commit.
	count := strings.TrimSpace(must(t, repoRoot, nil, "git", "rev-list", "--count", "HEAD"))
	if p := derive("python", "abc1234"); p != "0.1.0.dev"+count+"+gabc1234" {
		t.Errorf("untagged: python %s", p)
	}

	// Ascending, as the commits are.
	order := []string{"v0.1.0-3-gabc1234", "v0.1.0-12-gdef5678", "v0.1.1", "v0.1.1-1-g0123456", "v0.2.0"}
	var py, rb []string
	for _, v := range order {
		py, rb = append(py, derive("python", v)), append(rb, derive("ruby", v))
	}
	venvPython := installWheel(t) // a pip, whose vendored packaging is what pip itself applies
	must(t, "", nil, venvPython, append([]string{"-c", `
import sys
from pip._vendor.packaging.version import Version
vs = [Version(v) for v in sys.argv[1:]]  # raises for an invalid version
assert [str(v) for v in vs] == sys.argv[1:], ("not normalised", vs)
assert vs == sorted(vs), ("out of order", vs)
`}, py...)...)
	must(t, "", nil, "ruby", append([]string{"-e", `
vs = ARGV.map { |v| Gem::Version.new(v) } # raises for an invalid version
raise "out of order: #{vs}" unless vs == vs.sort
`}, rb...)...)
}
