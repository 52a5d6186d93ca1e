package lograte

import (
	"testing"
	"time"
)

// A flood is cut to the burst per period, and the next allowed line learns
// how many were held back.
func TestLimiterCutsAFloodAndCountsWhatItHeldBack(t *testing.T) {
	l := New(3, time.Hour)
	allowed := 0
	for range 100 {
		if l.Allow() {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("allowed %d of 100 within one period, want 3", allowed)
	}
	// A new period: the first line is allowed and reports the 97 held back.
	l.start = l.start.Add(-2 * time.Hour)
	if !l.Allow() {
		t.Fatal("first line of a new period refused")
	}
	if got := l.Suppressed(); got != 97 {
		t.Fatalf("suppressed %d, want 97", got)
	}
	if !l.Allow() || l.Suppressed() != 0 {
		t.Fatalf("second line: suppressed %d, want 0", l.Suppressed())
	}
	var none *Limiter
	if !none.Allow() || none.Suppressed() != 0 {
		t.Fatal("a nil limiter must allow everything")
	}
}
