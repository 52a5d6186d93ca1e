package pgtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

var (
	sharedMu sync.Mutex
	shared   *Server
)

// Main is a whole TestMain: it starts one server for the package, runs the
// tests and benchmarks, stops the server and exits with the tests' status.
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// With PGTEST_DURABLE=1 in the environment the server keeps PostgreSQL's
// durability defaults, for benchmarks that should reflect production.
// PGTEST_SETTINGS adds server settings as whitespace-separated key=value
// pairs (for profiling, e.g.
// PGTEST_SETTINGS="shared_preload_libraries=pg_stat_statements").
func Main(m *testing.M) {
	opts := Options{Durable: os.Getenv("PGTEST_DURABLE") == "1"}
	settings, err := ParseSettings(os.Getenv("PGTEST_SETTINGS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	opts.Settings = settings
	os.Exit(Run(m, opts))
}

// ParseSettings reads whitespace-separated key=value pairs (the format of
// PGTEST_SETTINGS) into Options.Settings; empty input gives nil.
func ParseSettings(s string) (map[string]string, error) {
	var out map[string]string
	for _, kv := range strings.Fields(s) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("pgtest: PGTEST_SETTINGS entry %q: want key=value", kv)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out, nil
}

// Run is Main without the exit, for a TestMain that does more around the
// run. It returns the exit code: the tests' status, or 1 if the server could
// not be started (printing why, since there is no test to fail yet).
func Run(m *testing.M, opts Options) int {
	s, err := StartServer(context.Background(), opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sharedMu.Lock()
	shared = s
	sharedMu.Unlock()

	code := m.Run()

	sharedMu.Lock()
	shared = nil
	sharedMu.Unlock()
	if err := s.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Shared returns the server started by Main or Run. It fails the test if the
// package's TestMain does not use them, naming the fix.
func Shared(tb testing.TB) *Server {
	tb.Helper()
	sharedMu.Lock()
	s := shared
	sharedMu.Unlock()
	if s == nil {
		tb.Fatalf("pgtest: no shared server; add `func TestMain(m *testing.M) { pgtest.Main(m) }` to the package, or use pgtest.Start")
	}
	return s
}

// NewDatabase creates a fresh database on the shared server and returns its
// DSN; it is dropped when the test ends. Use one per test for isolation.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	return Shared(tb).NewDatabase(tb)
}
