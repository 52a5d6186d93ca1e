package pgtest

import (
	"context"
	"fmt"
	"os"
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
func Main(m *testing.M) {
	opts := Options{Durable: os.Getenv("PGTEST_DURABLE") == "1"}
	os.Exit(Run(m, opts))
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
