package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
)

// QueueReader measures the pools' queues for their status and the
// autoscaler: once per database and queue however many pools consume it,
// also when a pool has no pods. It reads a pool's database URL from the
// Secret the pool names (only those Secrets, one GET each, cached briefly:
// the operator keeps no cache of Secrets), and keeps one small connection
// pool per database.
type QueueReader struct {
	// Secrets reads the Secrets pools name: the manager's API reader.
	Secrets client.Reader
	// MaxAge is how long a measurement of a queue is reused.
	MaxAge time.Duration
	// Timeout bounds reading a Secret and querying a database.
	Timeout time.Duration
	// Now is the clock (time.Now unless a test replaces it).
	Now func() time.Time

	mu      sync.Mutex
	dbs     map[string]*queueDB
	secrets map[types.NamespacedName]secretValue
}

// How long a Secret's value is reused (a rotated password is picked up
// within this), and how long a database nobody asked about keeps its
// connections.
const (
	secretMaxAge = time.Minute
	idleDBClose  = 10 * time.Minute
	// queueDBConns bounds the operator's connections to one database.
	queueDBConns = 2
)

type queueDB struct {
	mu       sync.Mutex // one query at a time; the others reuse its result
	pool     *pgxpool.Pool
	used     time.Time
	readings map[string]queueReading
}

type queueReading struct {
	at      time.Time
	backlog queue.Backlog
}

type secretValue struct {
	at  time.Time
	url string
	err error
}

// queueObservation is a pool's queues as measured: the sum of the
// backlogs, the longest wait.
type queueObservation struct {
	Backlog     int64
	Capped      bool
	OldestReady time.Duration
	At          time.Time
	Err         error // the queue could not be read; the figures are unset
}

// Read measures the pool's queues, reusing measurements younger than MaxAge.
func (q *QueueReader) Read(ctx context.Context, pool *v1.WorkerPool) queueObservation {
	now := q.now()
	ctx, cancel := context.WithTimeout(ctx, q.Timeout)
	defer cancel()
	url, err := q.databaseURL(ctx, pool, now)
	if err != nil {
		return queueObservation{Err: err, At: now}
	}
	db, err := q.database(url, now)
	if err != nil {
		return queueObservation{Err: err, At: now}
	}
	names := make([]string, len(pool.Spec.Queue.Namespaces))
	for i, n := range pool.Spec.Queue.Namespaces {
		names[i] = string(n)
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	var stale []string
	for _, n := range names {
		if r, ok := db.readings[n]; !ok || now.Sub(r.at) >= q.MaxAge {
			stale = append(stale, n)
		}
	}
	if len(stale) > 0 {
		got, err := queue.ReadBacklog(ctx, db.pool, stale, 0)
		if err != nil {
			return queueObservation{Err: fmt.Errorf("the database of spec.queue.databaseSecretRef: %w", err), At: now}
		}
		for n, b := range got {
			db.readings[n] = queueReading{at: now, backlog: b}
		}
	}
	obs := queueObservation{At: now}
	for _, n := range names {
		r := db.readings[n]
		obs.Backlog += r.backlog.Ready
		obs.Capped = obs.Capped || r.backlog.Capped
		obs.OldestReady = max(obs.OldestReady, r.backlog.OldestReady)
		if r.at.Before(obs.At) {
			obs.At = r.at
		}
	}
	return obs
}

// databaseURL is the value of the pool's databaseSecretRef.
func (q *QueueReader) databaseURL(ctx context.Context, pool *v1.WorkerPool, now time.Time) (string, error) {
	ref := pool.Spec.Queue.DatabaseSecretRef
	key := types.NamespacedName{Namespace: pool.Namespace, Name: ref.Name}
	q.mu.Lock()
	cached, ok := q.secrets[key]
	q.mu.Unlock()
	if !ok || now.Sub(cached.at) >= secretMaxAge {
		secret := &corev1.Secret{}
		cached = secretValue{at: now}
		switch err := q.Secrets.Get(ctx, key, secret); {
		case apierrors.IsNotFound(err):
			cached.err = fmt.Errorf("Secret %s (spec.queue.databaseSecretRef) not found", key)
		case apierrors.IsForbidden(err):
			cached.err = fmt.Errorf("the operator may not read Secret %s (spec.queue.databaseSecretRef): reading queues needs get on secrets", key)
		case err != nil:
			return "", fmt.Errorf("read Secret %s: %w", key, err) // not cached: may pass
		default:
			v, found := secret.Data[ref.Key]
			if !found || len(v) == 0 {
				cached.err = fmt.Errorf("Secret %s has no key %q (spec.queue.databaseSecretRef.key)", key, ref.Key)
			}
			cached.url = string(v)
		}
		q.mu.Lock()
		if q.secrets == nil {
			q.secrets = map[types.NamespacedName]secretValue{}
		}
		q.secrets[key] = cached
		q.mu.Unlock()
	}
	return cached.url, cached.err
}

// database is the connection pool for url, created on first use; pools no
// pool asked about for idleDBClose are closed.
func (q *QueueReader) database(url string, now time.Time) (*queueDB, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for u, db := range q.dbs {
		if u != url && now.Sub(db.used) > idleDBClose {
			db.pool.Close()
			delete(q.dbs, u)
		}
	}
	for k, s := range q.secrets {
		if now.Sub(s.at) > idleDBClose {
			delete(q.secrets, k) // a pool that is gone, or reads another Secret now
		}
	}
	if db, ok := q.dbs[url]; ok {
		db.used = now
		return db, nil
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parser's message may quote the URL, password included.
		return nil, errors.New("the database URL in spec.queue.databaseSecretRef does not parse as a PostgreSQL URL")
	}
	cfg.MaxConns, cfg.MinConns = queueDBConns, 0
	cfg.MaxConnIdleTime = time.Minute
	cfg.ConnConfig.ConnectTimeout = q.Timeout
	cfg.ConnConfig.RuntimeParams["application_name"] = "workerpool-operator"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg) // connects lazily
	if err != nil {
		return nil, fmt.Errorf("database of spec.queue.databaseSecretRef: %w", err)
	}
	if q.dbs == nil {
		q.dbs = map[string]*queueDB{}
	}
	db := &queueDB{pool: pool, used: now, readings: map[string]queueReading{}}
	q.dbs[url] = db
	return db, nil
}

// Close closes every database connection pool.
func (q *QueueReader) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for u, db := range q.dbs {
		db.pool.Close()
		delete(q.dbs, u)
	}
}

func (q *QueueReader) now() time.Time {
	if q.Now != nil {
		return q.Now()
	}
	return time.Now()
}
