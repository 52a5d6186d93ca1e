// Package lograte limits how often a kind of log line is written, so that a
// flood of the same event (every step of a batch failing, every result of a
// stalled database undelivered) cannot drown the log or cost the worker its
// throughput in logging. What is held back is counted and reported with the
// next line that is written.
package lograte

import (
	"sync"
	"time"
)

// Limiter allows up to burst lines per period. It is safe for concurrent
// use; a nil Limiter allows everything.
type Limiter struct {
	mu         sync.Mutex
	burst      int
	period     time.Duration
	start      time.Time // of the current period
	used       int       // lines allowed in the current period
	suppressed int64     // lines refused since the last allowed one
	taken      int64     // suppressed count handed to the last allowed line
}

// New returns a limiter of burst lines per period.
func New(burst int, period time.Duration) *Limiter {
	return &Limiter{burst: max(burst, 1), period: period}
}

// Allow reports whether a line may be written now. When it returns true,
// Suppressed tells how many lines were held back before this one.
func (l *Limiter) Allow() bool {
	if l == nil {
		return true
	}
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= l.period {
		l.start, l.used = now, 0
	}
	if l.used >= l.burst {
		l.suppressed++
		return false
	}
	l.used++
	l.taken, l.suppressed = l.suppressed, 0
	return true
}

// Suppressed is how many lines were held back before the line Allow last
// allowed, for that line to report ("suppressedSinceLast").
func (l *Limiter) Suppressed() int64 {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.taken
}
