package dispatch

import (
	"testing"
	"time"
)

// Finished steps are left in their permit's slot for the loop to overwrite;
// the watchdog clears them, so an idle service does not keep the last step
// of every permit (and its payload) alive.
func TestWatchdogClearsFinishedSlots(t *testing.T) {
	h := newHarness(t, ServiceConfig{MaxConcurrentHandlers: 3, HandlerTimeout: 50 * time.Millisecond}, 8, 8,
		map[string]Handler{"noop": noop})
	for i := range 6 {
		h.dispatch <- msg(i, "noop")
	}
	for range 6 {
		recv(t, h.completion, 5*time.Second)
	}
	waitFor(t, "finished steps cleared from their slots", 5*time.Second, func() bool {
		for i := range h.svc.slots {
			if h.svc.slots[i].Load() != nil {
				return false
			}
		}
		return true
	})
}
