package dispatch

import (
	"context"
	"errors"
	"sync"
)

// ErrSemaphoreClosed is returned by Acquire once the semaphore is closed. The
// dispatch service turns it into a semaphore_acquisition_failed result (seed
// risk 1) rather than dropping the step.
var ErrSemaphoreClosed = errors.New("semaphore closed")

// Permit is a held concurrency permit. Permits are numbered 0..capacity-1 so
// the holder can index per-permit state (the dispatch service keeps each
// running step in its permit's slot) without a shared map.
type Permit int32

// Semaphore bounds how many handlers run at once. It is a buffered channel of
// free permit numbers, so InUse is a cheap len() that load shedding and the
// in-flight gauge read without locks, and it can be closed to refuse every
// later acquisition.
type Semaphore struct {
	free      chan Permit
	closed    chan struct{}
	closeOnce sync.Once
}

// NewSemaphore returns a semaphore with n permits (n < 1 is treated as 1).
func NewSemaphore(n int) *Semaphore {
	n = max(n, 1)
	s := &Semaphore{free: make(chan Permit, n), closed: make(chan struct{})}
	for i := range n {
		s.free <- Permit(i)
	}
	return s
}

// Acquire waits for a permit until ctx ends or the semaphore is closed.
func (s *Semaphore) Acquire(ctx context.Context) (Permit, error) {
	p, err := s.acquire(ctx.Done())
	if errors.Is(err, errStopped) {
		err = ctx.Err()
	}
	return p, err
}

var errStopped = errors.New("stopped while waiting for a permit")

// acquireOr is the dispatch loop's acquire: it waits on two channels only.
// interrupt must be closed whenever the semaphore is closed (as well as on
// shutdown); it then reports which of the two happened.
func (s *Semaphore) acquireOr(interrupt <-chan struct{}) (Permit, error) {
	select {
	case <-s.closed:
		return -1, ErrSemaphoreClosed
	default:
	}
	select {
	case p := <-s.free:
		return p, nil
	default:
	}
	select {
	case p := <-s.free:
		return p, nil
	case <-interrupt:
		select {
		case <-s.closed:
			return -1, ErrSemaphoreClosed
		default:
			return -1, errStopped
		}
	}
}

// acquire waits for a permit until stop is closed (errStopped) or the
// semaphore is closed.
func (s *Semaphore) acquire(stop <-chan struct{}) (Permit, error) {
	select {
	case <-s.closed:
		return -1, ErrSemaphoreClosed
	default:
	}
	select {
	case p := <-s.free:
		return p, nil
	default:
	}
	select {
	case p := <-s.free:
		return p, nil
	case <-s.closed:
		return -1, ErrSemaphoreClosed
	case <-stop:
		return -1, errStopped
	}
}

// TryAcquire takes a permit only if one is free right now.
func (s *Semaphore) TryAcquire() (Permit, bool) {
	select {
	case <-s.closed:
		return -1, false
	default:
	}
	select {
	case p := <-s.free:
		return p, true
	default:
		return -1, false
	}
}

// Release returns a permit. Releasing more than was acquired is a bug and panics.
func (s *Semaphore) Release(p Permit) {
	select {
	case s.free <- p:
	default:
		panic("dispatch: semaphore released without a matching acquire")
	}
}

// Close makes every later Acquire fail with ErrSemaphoreClosed. Permits
// already held stay valid and may still be released.
func (s *Semaphore) Close() { s.closeOnce.Do(func() { close(s.closed) }) }

// InUse is the number of permits currently held.
func (s *Semaphore) InUse() int { return cap(s.free) - len(s.free) }

// Capacity is the total number of permits.
func (s *Semaphore) Capacity() int { return cap(s.free) }
