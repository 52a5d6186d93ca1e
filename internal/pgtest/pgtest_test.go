package pgtest

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func TestSharedServerSettings(t *testing.T) {
	s := Shared(t)
	conn := connect(t, s.DSN())
	ctx := context.Background()

	var db, fsync, maxConns string
	if err := conn.QueryRow(ctx, `SELECT current_database(), current_setting('fsync'), current_setting('max_connections')`).
		Scan(&db, &fsync, &maxConns); err != nil {
		t.Fatal(err)
	}
	if db != s.Database {
		t.Errorf("current_database = %q, want %q", db, s.Database)
	}
	wantFsync := "off"
	if s.Durable {
		wantFsync = "on"
	}
	if fsync != wantFsync {
		t.Errorf("fsync = %s, want %s", fsync, wantFsync)
	}
	if maxConns != "300" {
		t.Errorf("max_connections = %s, want 300", maxConns)
	}
	if !strings.HasPrefix(s.DSN(), "postgres://postgres@127.0.0.1:") || !strings.HasSuffix(s.DSN(), "sslmode=disable") {
		t.Errorf("unexpected DSN %s", s.DSN())
	}
}

func TestUnixSocket(t *testing.T) {
	s := Shared(t)
	conn := connect(t, s.SocketDSN(s.Database))
	var one int
	if err := conn.QueryRow(context.Background(), `SELECT 1`).Scan(&one); err != nil || one != 1 {
		t.Fatalf("query over unix socket: %v (%d)", err, one)
	}
	if _, err := os.Stat(s.SocketDir); err != nil {
		t.Fatal(err)
	}
}

func TestNewDatabaseIsolatedAndDropped(t *testing.T) {
	s := Shared(t)
	var names [2]string
	t.Run("a", func(t *testing.T) {
		conn := connect(t, NewDatabase(t))
		if _, err := conn.Exec(context.Background(), `CREATE TABLE only_here (x int)`); err != nil {
			t.Fatal(err)
		}
		_ = conn.QueryRow(context.Background(), `SELECT current_database()`).Scan(&names[0])
	})
	t.Run("b", func(t *testing.T) {
		conn := connect(t, NewDatabase(t))
		var n int
		if err := conn.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_tables WHERE tablename = 'only_here'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("table from another test's database is visible")
		}
		_ = conn.QueryRow(context.Background(), `SELECT current_database()`).Scan(&names[1])
	})
	if names[0] == "" || names[0] == names[1] {
		t.Fatalf("databases not distinct: %q", names)
	}
	admin := connect(t, s.DSN())
	var n int
	if err := admin.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_database WHERE datname = ANY($1)`, names[:]).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d per-test databases left after cleanup", n)
	}
}

func TestNewDatabaseConcurrent(t *testing.T) {
	s := Shared(t)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			name := databaseName(t.Name(), s.dbSeq.Add(1))
			if _, err := s.CreateDatabase(ctx, name); err != nil {
				t.Error(err)
				return
			}
			if err := s.DropDatabase(ctx, name); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
}

func TestStartPrivateServerAndStop(t *testing.T) {
	s := StartWith(t, Options{Database: "private", Durable: true})
	conn, err := pgx.Connect(context.Background(), s.DSN())
	if err != nil {
		t.Fatal(err)
	}
	var fsync string
	if err := conn.QueryRow(context.Background(), `SELECT current_setting('fsync')`).Scan(&fsync); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(context.Background())
	if fsync != "on" {
		t.Errorf("durable server has fsync=%s", fsync)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil { // idempotent
		t.Fatal(err)
	}
	if _, err := os.Stat(s.BaseDir); !os.IsNotExist(err) {
		t.Errorf("base dir %s still exists after Stop (err=%v)", s.BaseDir, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if c, err := pgx.Connect(ctx, s.DSN()); err == nil {
		_ = c.Close(context.Background())
		t.Errorf("server still accepts connections after Stop")
	}
}

func TestMissingBinariesError(t *testing.T) {
	_, err := StartServer(context.Background(), Options{BinDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "install postgresql-15") {
		t.Fatalf("want an install hint, got %v", err)
	}
	t.Setenv("PG_BINDIR", t.TempDir())
	if _, err := FindBinDir(); err == nil || !strings.Contains(err.Error(), "install postgresql-15") {
		t.Fatalf("want an install hint from PG_BINDIR, got %v", err)
	}
}

func TestDatabaseName(t *testing.T) {
	long := strings.Repeat("TestVeryLongName/sub test#", 10)
	name := databaseName(long, 12345)
	if len(name) > 63 {
		t.Errorf("name too long: %d", len(name))
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			t.Fatalf("bad char %q in %s", r, name)
		}
	}
}

func TestParseSettings(t *testing.T) {
	got, err := ParseSettings("  shared_preload_libraries=pg_stat_statements\ttrack_io_timing=on\nwork_mem=64MB ")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"shared_preload_libraries": "pg_stat_statements", "track_io_timing": "on", "work_mem": "64MB"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if got, err := ParseSettings(""); err != nil || got != nil {
		t.Fatalf("empty: %v %v", got, err)
	}
	for _, bad := range []string{"fsync", "=on", "a=1 b"} {
		if _, err := ParseSettings(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
