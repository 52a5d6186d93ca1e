package dispatch

import (
	"math"
	"sync/atomic"
	"time"
)

// The watchdog enforces handler deadlines for the whole service with one
// goroutine and one timer, instead of a runtime timer per step (which, with
// its heap insert and the stack growth it forces in each fresh handler
// goroutine, was the single largest cost of dispatch). A step only stores its
// deadline and compares it with the watchdog's next wake-up; it wakes the
// watchdog only when its deadline is earlier, which with a uniform handler
// timeout almost never happens.

// noWake means the watchdog is scanning or idle: every new step notifies it.
const noWake = math.MaxInt64

// monoEpoch is the origin of the monotonic offsets deadlines are kept in.
var monoEpoch = time.Now()

// monoNow is the monotonic clock as an offset from monoEpoch.
func monoNow() int64 { return int64(time.Since(monoEpoch)) }

// armDeadline registers st's deadline (a monoEpoch offset, > 0) with the
// watchdog.
func (s *HandlerDispatchService) armDeadline(st *stepState, deadline int64) {
	st.ctx.deadline.Store(deadline)
	if deadline < s.nextWake.Load() {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// watchdog expires steps whose deadline has passed until stop is closed.
func (s *HandlerDispatchService) watchdog(stop <-chan struct{}) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		// Anyone arming a deadline while we scan notifies us, so a slot we
		// already passed cannot be missed.
		s.nextWake.Store(noWake)
		now := monoNow()
		next := int64(noWake)
		for i := range s.slots {
			st := s.slots[i].Load()
			if st == nil {
				continue
			}
			d := st.ctx.deadline.Load()
			switch {
			case st.state.Load() != stepRunning:
				// Done with: drop it, so an idle service does not keep the
				// last step of every permit (and its payload) alive. The
				// loop may have put a newer step there meanwhile; keep that.
				s.slots[i].CompareAndSwap(st, nil)
			case d == 0: // handed to its goroutine, not started yet
			case d <= now:
				go s.expire(st)
			default:
				next = min(next, d)
			}
		}
		s.nextWake.Store(next)
		wait := time.Duration(math.MaxInt64)
		if next != noWake {
			wait = time.Duration(next - now)
		}
		t.Reset(wait)
		select {
		case <-t.C:
		case <-s.wake:
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		case <-stop:
			return
		}
	}
}

// deadlineWatch is embedded in the service: the watchdog's shared state.
type deadlineWatch struct {
	nextWake atomic.Int64
	wake     chan struct{}
}
