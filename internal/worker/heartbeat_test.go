package worker

import (
	"testing"
	"time"
)

func TestHeartbeatMinAgeStaysInsideVisibility(t *testing.T) {
	for _, tc := range []struct{ interval, visibility, want time.Duration }{
		{10 * time.Second, 30 * time.Second, time.Second},                       // defaults
		{100 * time.Millisecond, 500 * time.Millisecond, 25 * time.Millisecond}, // a quarter of the interval
		{999 * time.Millisecond, time.Second, 500 * time.Microsecond},           // little slack: half of it
		{time.Second, time.Second, 0},
	} {
		got := heartbeatMinAge(tc.interval, tc.visibility)
		if got != tc.want {
			t.Errorf("heartbeatMinAge(%v, %v) = %v, want %v", tc.interval, tc.visibility, got, tc.want)
		}
		if tc.interval+got > tc.visibility {
			t.Errorf("interval %v + min age %v passes visibility %v", tc.interval, got, tc.visibility)
		}
	}
}
