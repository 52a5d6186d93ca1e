package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Listener turns NOTIFY tasker_steps into wake-ups for a worker's claim loop,
// so a step is picked up within milliseconds instead of a poll interval. It
// holds one dedicated connection (outside the pool, so it never starves
// Claim/Complete of connections) and reconnects with backoff when it drops.
//
// Notifications are hints, not a delivery mechanism: they can be missed while
// the connection is down, so callers must still poll at their poll interval.
// After every reconnection the Listener sends one wake-up to cover what it
// may have missed.
type Listener struct {
	queues map[string]bool // empty: every queue
	idle   time.Duration
	wake   chan struct{}
	ready  chan struct{}
	done   chan struct{}
	cancel context.CancelFunc
	q      *Queue

	readyOnce sync.Once
	pings     atomic.Int64 // idle-timeout pings that succeeded (tests watch it)
}

// listenerIdle bounds each wait for a notification; on expiry the
// connection is pinged so a silently dead TCP connection is noticed. A
// variable so tests can shorten it.
var listenerIdle = 30 * time.Second

// Listen starts a Listener for the given queues (none means all) that runs
// until ctx ends or Close is called.
func (q *Queue) Listen(ctx context.Context, queues []string) *Listener {
	ctx, cancel := context.WithCancel(ctx)
	l := &Listener{
		queues: make(map[string]bool, len(queues)),
		idle:   listenerIdle,
		wake:   make(chan struct{}, 1),
		ready:  make(chan struct{}),
		done:   make(chan struct{}),
		cancel: cancel,
		q:      q,
	}
	for _, name := range queues {
		l.queues[name] = true
	}
	go l.run(ctx)
	return l
}

// C delivers a value when one of the listened queues may have new work.
// Wake-ups coalesce: many notifications while the caller is busy become one.
func (l *Listener) C() <-chan struct{} { return l.wake }

// Ready is closed once the first LISTEN is in place; a notification sent
// after that is guaranteed to reach C (while the connection stays up).
func (l *Listener) Ready() <-chan struct{} { return l.ready }

// Close stops the Listener and waits for its connection to close.
func (l *Listener) Close() {
	l.cancel()
	<-l.done
}

func (l *Listener) signal() {
	select {
	case l.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// deliver handles one notification payload (a queue name; empty = all).
func (l *Listener) deliver(payload string) {
	if payload == "" || len(l.queues) == 0 || l.queues[payload] {
		l.signal()
	}
}

func (l *Listener) run(ctx context.Context) {
	defer close(l.done)
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	connectedBefore := false
	for {
		connected, err := l.session(ctx, connectedBefore)
		if ctx.Err() != nil {
			return
		}
		if connected {
			connectedBefore = true
			backoff = minBackoff
		}
		l.q.m.reconnects.Inc()
		l.q.log.Error(err, "queue listener connection lost; reconnecting", "channel", NotifyChannel, "retryIn", backoff)
		timer := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// session connects, listens and relays notifications until an error. It
// reports whether LISTEN succeeded.
func (l *Listener) session(ctx context.Context, reconnect bool) (bool, error) {
	cfg := l.q.pool.Config().ConnConfig
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		return false, fmt.Errorf("listen: %w", err)
	}
	if reconnect {
		l.signal() // notifications sent while we were away are lost
	}
	l.readyOnce.Do(func() { close(l.ready) })

	for {
		waitCtx, cancel := context.WithTimeout(ctx, l.idle)
		n, err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case err == nil:
			l.deliver(n.Payload)
		case ctx.Err() != nil:
			return true, ctx.Err()
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = conn.Ping(pingCtx)
			cancel()
			if err != nil {
				return true, fmt.Errorf("ping: %w", err)
			}
			l.pings.Add(1)
		default:
			return true, fmt.Errorf("wait for notification: %w", err)
		}
	}
}
