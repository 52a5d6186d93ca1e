// Package pgtest runs a throwaway PostgreSQL server for tests and benchmarks.
//
// The queue's guarantees (SKIP LOCKED claims, fencing tokens, LISTEN/NOTIFY)
// only mean something against a real server, so tests start one instead of
// mocking it. A server is initdb'd into a temporary directory, listens on
// 127.0.0.1 on a free port and on a unix socket inside that directory, and
// is stopped and removed when the test (or the package's TestMain) ends.
//
// Typical use shares one server per package and gives each test its own
// database:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		dsn := pgtest.NewDatabase(t) // fresh database, dropped at cleanup
//		...
//	}
//
// A single test that wants its own server calls [Start].
//
// Binaries are found through $PG_BINDIR, then the newest
// /usr/lib/postgresql/*/bin (Debian/Ubuntu layout), then $PATH. On a fresh
// Debian machine `apt-get install postgresql-15` is all that is needed.
// PostgreSQL refuses to run as root, so when the test runs as root the server
// runs as the `postgres` user (falling back to `nobody`).
//
// By default the server trades durability for speed (fsync, synchronous_commit
// and full_page_writes off), which is right for tests. Set Options.Durable, or
// PGTEST_DURABLE=1 for servers started by [Main], to keep PostgreSQL's
// durability defaults when measuring performance. PGTEST_SETTINGS adds
// settings to servers started by [Main] (whitespace-separated key=value
// pairs, e.g. shared_preload_libraries=pg_stat_statements for profiling).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// SuperUser is the bootstrap superuser initdb creates. It is fixed so DSNs are
// predictable regardless of which OS user the server runs as.
const SuperUser = "postgres"

// Options tune a server. The zero value is a fast, non-durable server with a
// database named "pgtest", which is what tests want.
type Options struct {
	// BinDir holds initdb and postgres. Empty means: $PG_BINDIR, the newest
	// /usr/lib/postgresql/*/bin, then $PATH.
	BinDir string
	// Durable keeps PostgreSQL's durability defaults (fsync,
	// synchronous_commit, full_page_writes) so benchmarks measure what
	// production would see. Tests leave it false for speed.
	Durable bool
	// Settings are extra server settings passed as `-c key=value`; they win
	// over the harness's own.
	Settings map[string]string
	// Database is created after start and used by DSN. Default "pgtest".
	Database string
	// StartTimeout bounds initdb plus server start-up. Default 120s (a
	// loaded 2-core CI machine can take tens of seconds for initdb).
	StartTimeout time.Duration
	// RunAs is the OS user the server runs as when the test runs as root.
	// Default "postgres", then "nobody". Ignored when not root.
	RunAs string
	// MaxConnections is the server's max_connections. Default 300, enough
	// for many parallel tests each holding a small pool.
	MaxConnections int
}

// Server is a running throwaway PostgreSQL. Its fields are read-only.
type Server struct {
	// BinDir is where initdb and postgres were found.
	BinDir string
	// BaseDir is the temporary directory holding everything; removed on Stop.
	BaseDir string
	// DataDir is the cluster's data directory (inside BaseDir).
	DataDir string
	// SocketDir is the unix socket directory (inside BaseDir).
	SocketDir string
	// Host is the TCP address the server listens on.
	Host string
	// Port is the TCP port (also used in the unix socket's name).
	Port int
	// User is the superuser to connect as.
	User string
	// Database is the database created at start; DSN points at it.
	Database string
	// Durable reports whether durability defaults were kept.
	Durable bool

	cmd      *exec.Cmd
	exited   chan struct{}
	waitErr  error
	logPath  string
	stopOnce sync.Once
	stopErr  error
	dbSeq    atomic.Int64
}

// StartServer initialises a cluster in a new temporary directory, starts
// postgres on a free port, waits until it accepts connections and creates
// opts.Database. The caller must call Stop. Tests should prefer Start or
// Main, which register the cleanup themselves.
func StartServer(ctx context.Context, opts Options) (*Server, error) {
	if opts.Database == "" {
		opts.Database = "pgtest"
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 120 * time.Second
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = 300
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	binDir := opts.BinDir
	if binDir == "" {
		var err error
		if binDir, err = FindBinDir(); err != nil {
			return nil, err
		}
	} else if err := checkBinDir(binDir); err != nil {
		return nil, err
	}

	cred, err := serverCredential(opts.RunAs)
	if err != nil {
		return nil, err
	}

	base, err := makeBaseDir(cred)
	if err != nil {
		return nil, err
	}
	s := &Server{
		BinDir:    binDir,
		BaseDir:   base,
		DataDir:   filepath.Join(base, "data"),
		SocketDir: filepath.Join(base, "sock"),
		Host:      "127.0.0.1",
		User:      SuperUser,
		Database:  opts.Database,
		Durable:   opts.Durable,
		logPath:   filepath.Join(base, "postgres.log"),
	}
	ok := false
	defer func() {
		if !ok {
			_ = s.Stop()
		}
	}()

	if err := os.Mkdir(s.SocketDir, 0o700); err != nil {
		return nil, fmt.Errorf("pgtest: create socket dir: %w", err)
	}
	if cred != nil {
		if err := os.Chown(s.SocketDir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgtest: chown socket dir: %w", err)
		}
	}

	if err := s.initdb(ctx, cred); err != nil {
		return nil, err
	}

	// A free port is only free until someone else binds it; retry with a new
	// one if the server lost that race.
	var startErr error
	for try := 0; try < 5; try++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s.Port = port
		startErr = s.start(ctx, cred, opts)
		if startErr == nil {
			break
		}
		if !strings.Contains(startErr.Error(), "could not bind") &&
			!strings.Contains(startErr.Error(), "already in use") {
			return nil, startErr
		}
	}
	if startErr != nil {
		return nil, startErr
	}

	if _, err := s.CreateDatabase(ctx, s.Database); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// Start starts a private server for one test (or benchmark) with default
// options and stops it in tb.Cleanup. It fails the test, with the reason, if
// PostgreSQL cannot be started.
func Start(tb testing.TB) *Server {
	tb.Helper()
	return StartWith(tb, Options{})
}

// StartWith is Start with explicit options.
func StartWith(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s, err := StartServer(context.Background(), opts)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		if err := s.Stop(); err != nil {
			tb.Errorf("pgtest: stop server: %v", err)
		}
	})
	return s
}

// DSN is a URL for Server.Database over TCP, usable by pgx and psql.
func (s *Server) DSN() string { return s.DSNFor(s.Database) }

// DSNFor is a TCP URL for the named database on this server.
func (s *Server) DSNFor(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(s.User),
		Host:     net.JoinHostPort(s.Host, strconv.Itoa(s.Port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// SocketDSN is a keyword/value DSN for the named database over the unix
// socket; it avoids TCP overhead where that matters (benchmarks).
func (s *Server) SocketDSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", s.SocketDir, s.Port, s.User, db)
}

// CreateDatabase creates a database and returns its DSN.
func (s *Server) CreateDatabase(ctx context.Context, name string) (string, error) {
	if err := s.admin(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("pgtest: create database %q: %w", name, err)
	}
	return s.DSNFor(name), nil
}

// DropDatabase drops a database, terminating any sessions still using it, so
// a test that forgot to close a pool cannot make cleanup fail.
func (s *Server) DropDatabase(ctx context.Context, name string) error {
	if err := s.admin(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("pgtest: drop database %q: %w", name, err)
	}
	return nil
}

// NewDatabase creates a fresh database named after the test, returns its DSN
// and drops it in tb.Cleanup. Tests sharing one server stay isolated this way
// at a cost of milliseconds instead of a server start.
func (s *Server) NewDatabase(tb testing.TB) string {
	tb.Helper()
	name := databaseName(tb.Name(), s.dbSeq.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dsn, err := s.CreateDatabase(ctx, name)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.DropDatabase(ctx, name); err != nil {
			tb.Errorf("%v", err)
		}
	})
	return dsn
}

// Log returns the tail of the server's log, for failure messages.
func (s *Server) Log() string {
	f, err := os.Open(s.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 8 << 10
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// Stop shuts the server down (fast shutdown, escalating to immediate and then
// SIGKILL if it hangs) and removes its directory. It is safe to call more
// than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		var errs []error
		if s.cmd != nil && s.cmd.Process != nil {
			if err := s.terminate(); err != nil {
				errs = append(errs, err)
			}
		}
		if s.BaseDir != "" {
			if err := os.RemoveAll(s.BaseDir); err != nil {
				errs = append(errs, fmt.Errorf("pgtest: remove %s: %w", s.BaseDir, err))
			}
		}
		s.stopErr = errors.Join(errs...)
	})
	return s.stopErr
}

func (s *Server) terminate() error {
	steps := []struct {
		sig  syscall.Signal
		wait time.Duration
	}{
		{syscall.SIGINT, 15 * time.Second}, // fast shutdown
		{syscall.SIGQUIT, 5 * time.Second}, // immediate shutdown
		{syscall.SIGKILL, 5 * time.Second},
	}
	for _, st := range steps {
		select {
		case <-s.exited:
			return nil
		default:
		}
		_ = s.cmd.Process.Signal(st.sig)
		timer := time.NewTimer(st.wait)
		select {
		case <-s.exited:
			timer.Stop()
			return nil
		case <-timer.C:
		}
	}
	return fmt.Errorf("pgtest: postgres (pid %d) did not exit after SIGKILL", s.cmd.Process.Pid)
}

func (s *Server) initdb(ctx context.Context, cred *syscall.Credential) error {
	cmd := exec.CommandContext(ctx, filepath.Join(s.BinDir, "initdb"),
		"-D", s.DataDir,
		"-U", SuperUser,
		"-A", "trust",
		"-E", "UTF8",
		"--locale=C",
		"--no-sync",
	)
	cmd.Dir = s.BaseDir
	cmd.Env = serverEnv(s.BaseDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: initdb in %s: %w\n%s", s.DataDir, err, out)
	}
	return nil
}

func (s *Server) start(ctx context.Context, cred *syscall.Credential, opts Options) error {
	settings := map[string]string{
		"listen_addresses":        s.Host,
		"port":                    strconv.Itoa(s.Port),
		"unix_socket_directories": s.SocketDir,
		"max_connections":         strconv.Itoa(opts.MaxConnections),
		"logging_collector":       "off",
		"log_min_messages":        "warning",
		"log_min_error_statement": "panic",
		"shared_buffers":          "128MB",
	}
	if !opts.Durable {
		settings["fsync"] = "off"
		settings["synchronous_commit"] = "off"
		settings["full_page_writes"] = "off"
		settings["max_parallel_workers_per_gather"] = "0"
		settings["autovacuum_naptime"] = "5s"
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := []string{"-D", s.DataDir}
	for _, k := range keys {
		args = append(args, "-c", k+"="+settings[k])
	}

	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: open server log: %w", err)
	}
	defer logf.Close() // the child keeps its own descriptor

	// Not CommandContext: the server must outlive the start-up context.
	cmd := exec.Command(filepath.Join(s.BinDir, "postgres"), args...)
	cmd.Dir = s.BaseDir
	cmd.Env = serverEnv(s.BaseDir)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: cred,
		Setpgid:    true, // keep ^C in the terminal from reaching it before Stop runs
		// If the test binary dies without cleanup (timeout panic, SIGKILL),
		// take the server down with it instead of leaking it. SIGQUIT is
		// PostgreSQL's immediate shutdown.
		Pdeathsig: syscall.SIGQUIT,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	exited := make(chan struct{})
	s.cmd = cmd
	s.exited = exited
	go func() {
		s.waitErr = cmd.Wait()
		close(exited)
	}()

	if err := s.waitReady(ctx); err != nil {
		_ = s.terminate()
		return err
	}
	return nil
}

// waitReady polls until the server accepts a connection, the server exits,
// or ctx ends.
func (s *Server) waitReady(ctx context.Context) error {
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		attemptCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(attemptCtx, s.DSNFor("postgres"))
		cancel()
		if err == nil {
			_ = conn.Close(context.Background())
			return nil
		}
		lastErr = err
		select {
		case <-s.exited:
			return fmt.Errorf("pgtest: postgres exited during start-up (%v); log:\n%s", s.waitErr, s.Log())
		case <-ctx.Done():
			return fmt.Errorf("pgtest: postgres not accepting connections on port %d: %w (last error: %v); log:\n%s",
				s.Port, ctx.Err(), lastErr, s.Log())
		case <-tick.C:
		}
	}
}

func (s *Server) admin(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, s.DSNFor("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// FindBinDir locates a directory holding initdb and postgres: $PG_BINDIR,
// else the newest /usr/lib/postgresql/*/bin, else $PATH. The error says how
// to fix a machine without PostgreSQL.
func FindBinDir() (string, error) {
	if dir := os.Getenv("PG_BINDIR"); dir != "" {
		if err := checkBinDir(dir); err != nil {
			return "", fmt.Errorf("%w (from PG_BINDIR)", err)
		}
		return dir, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, dir := range dirs {
		if checkBinDir(dir) == nil {
			return dir, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		dir := filepath.Dir(p)
		if checkBinDir(dir) == nil {
			return dir, nil
		}
	}
	return "", errors.New("pgtest: PostgreSQL server binaries (initdb, postgres) not found in $PG_BINDIR, " +
		"/usr/lib/postgresql/*/bin or $PATH: install postgresql-15 (apt-get install postgresql-15) " +
		"or set PG_BINDIR to the directory holding initdb and postgres")
}

func checkBinDir(dir string) error {
	for _, name := range []string{"initdb", "postgres"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("pgtest: %s not found or not executable in %s: install postgresql-15 or set PG_BINDIR", name, dir)
		}
	}
	return nil
}

// versionOf extracts the major version from /usr/lib/postgresql/<v>/bin.
func versionOf(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}

// serverCredential picks the OS user the server runs as: nil (the current
// user) unless we are root, which PostgreSQL refuses.
func serverCredential(runAs string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	candidates := []string{"postgres", "nobody"}
	if runAs != "" {
		candidates = []string{runAs}
	}
	for _, name := range candidates {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("pgtest: running as root and none of the users %v exists to run postgres as "+
		"(PostgreSQL refuses to run as root); create one, e.g. `useradd --system postgres`", candidates)
}

// makeBaseDir creates the temporary directory and hands it to the server's
// user. When running as root, the parent must be searchable by that user, so
// a private $TMPDIR falls back to /tmp.
func makeBaseDir(cred *syscall.Credential) (string, error) {
	parent := os.TempDir()
	if cred != nil && !worldSearchable(parent) {
		parent = "/tmp"
	}
	// Short names keep the unix socket path well under its ~107 byte limit.
	dir, err := os.MkdirTemp(parent, "pgtest-")
	if err != nil {
		return "", fmt.Errorf("pgtest: create temp dir: %w", err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("pgtest: chown %s: %w", dir, err)
		}
	}
	return dir, nil
}

func worldSearchable(dir string) bool {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil || st.Mode().Perm()&0o001 == 0 {
			return false
		}
		if d == "/" || d == "." {
			return true
		}
	}
}

// serverEnv is the environment for initdb/postgres: the caller's, minus PG*
// variables that would redirect them, with a C locale and a usable HOME.
func serverEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "LANG=C", "HOME="+home)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pgtest: find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var unsafeIdent = regexp.MustCompile(`[^a-z0-9_]+`)

// databaseName makes a valid, unique, <=63 byte identifier from a test name.
func databaseName(testName string, seq int64) string {
	base := unsafeIdent.ReplaceAllString(strings.ToLower(testName), "_")
	base = strings.Trim(base, "_")
	suffix := "_" + strconv.FormatInt(seq, 10) + "_" + strconv.Itoa(os.Getpid())
	if max := 63 - len(suffix) - 2; len(base) > max {
		base = base[:max]
	}
	return "t_" + base + suffix
}
