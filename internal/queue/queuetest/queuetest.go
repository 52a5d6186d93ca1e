// Package queuetest gives a test a queue of its own: a throwaway database on
// the shared test PostgreSQL server (internal/pgtest), migrated, with a
// connection pool closed when the test ends.
package queuetest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/seed-a17b38e7/workerpool-operator/internal/pgtest"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
)

// DB is one test's queue database.
type DB struct {
	DSN   string
	Pool  *pgxpool.Pool
	Queue *queue.Queue
}

// New makes a fresh database with the queue schema applied. The test
// binary's TestMain must run pgtest.Main.
func New(tb testing.TB) *DB {
	tb.Helper()
	dsn := pgtest.NewDatabase(tb)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	if err := queue.Migrate(ctx, pool); err != nil {
		tb.Fatal(err)
	}
	q, err := queue.New(pool, queue.Options{}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return &DB{DSN: dsn, Pool: pool, Queue: q}
}
