package dispatch

import (
	"context"
	"github.com/go-logr/logr/funcr"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestSaturationBoundaries(t *testing.T) {
	n := 0
	m := NewChannelMonitor("completion", func() int { return n }, 100, 0.80, 0.95, testLogger(t))
	for _, tc := range []struct {
		fill int
		want ChannelHealth
	}{{0, ChannelHealthy}, {79, ChannelHealthy}, {80, ChannelDegraded}, {94, ChannelDegraded}, {95, ChannelCritical}, {100, ChannelCritical}} {
		n = tc.fill
		if got := m.Health(); got != tc.want {
			t.Errorf("fill %d: %v, want %v", tc.fill, got, tc.want)
		}
		if got := m.Saturation(); got != float64(tc.fill)/100 {
			t.Errorf("fill %d: saturation %v", tc.fill, got)
		}
	}
	custom := NewChannelMonitor("dispatch", func() int { return n }, 10, 0.5, 0.7, testLogger(t))
	for fill, want := range map[int]ChannelHealth{4: ChannelHealthy, 5: ChannelDegraded, 6: ChannelDegraded, 7: ChannelCritical} {
		n = fill
		if got := custom.Health(); got != want {
			t.Errorf("custom fill %d: %v want %v", fill, got, want)
		}
	}
	zero := NewChannelMonitor("unbuffered", func() int { return 0 }, 0, 0, 0, testLogger(t))
	if zero.Saturation() != 0 {
		t.Error("unbuffered channel saturation must be 0")
	}
}

func TestMonitorWarnsAndExportsGauge(t *testing.T) {
	ch := make(chan int, 200)
	warnings := make(chan string, 16)
	log := funcr.New(func(_, args string) {
		select {
		case warnings <- args:
		default:
		}
	}, funcr.Options{})
	m := NewChannelMonitor("completion", func() int { return len(ch) }, cap(ch), 0, 0, log)
	for range 190 {
		ch <- 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go m.Watch(ctx, time.Millisecond)
	select {
	case w := <-warnings:
		if !strings.Contains(w, "channel saturation critical") || !strings.Contains(w, `"saturation"=0.95`) {
			t.Fatalf("warning %s", w)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no saturation warning")
	}
	// Rate limited: many more checks, no second warning within the interval.
	for range 100 {
		m.check()
	}
	if len(warnings) != 0 {
		t.Fatalf("warning not rate-limited: %d more", len(warnings))
	}
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "tasker_channel_completion_saturation"); err != nil || n != 1 {
		t.Fatalf("gauge count %d %v", n, err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP tasker_channel_completion_saturation Fill of the completion channel as a fraction of its capacity (0..1).
# TYPE tasker_channel_completion_saturation gauge
tasker_channel_completion_saturation 0.95
`), "tasker_channel_completion_saturation"); err != nil {
		t.Fatal(err)
	}
}

func TestLoadSheddingBoundaries(t *testing.T) {
	sem := NewSemaphore(10)
	c := NewCapacityChecker(sem, 70, 80, testLogger(t))
	for inUse, want := range []struct {
		accept   bool
		headroom int
	}{{true, 8}, {true, 7}, {true, 6}, {true, 5}, {true, 4}, {true, 3}, {true, 2}, {true, 1}, {false, 0}, {false, 0}, {false, 0}} {
		if got := c.CanAccept(); got != want.accept {
			t.Errorf("%d in use (%.0f%%): accept %v, want %v", inUse, c.UsagePercent(), got, want.accept)
		}
		if got := c.Headroom(); got != want.headroom {
			t.Errorf("%d in use: headroom %d, want %d", inUse, got, want.headroom)
		}
		if inUse < 10 {
			sem.TryAcquire()
		}
	}
	// Odd capacity: 3 permits, refuse at 80 % → accept at 2 (66.7 %), refuse at 3.
	sem3 := NewSemaphore(3)
	c3 := NewCapacityChecker(sem3, 70, 80, testLogger(t))
	sem3.TryAcquire()
	_, _ = sem3.TryAcquire()
	if !c3.CanAccept() || c3.Headroom() != 1 {
		t.Errorf("3 permits, 2 in use: accept %v headroom %d", c3.CanAccept(), c3.Headroom())
	}
	sem3.TryAcquire()
	if c3.CanAccept() || c3.Headroom() != 0 {
		t.Errorf("3 permits, 3 in use: accept %v headroom %d", c3.CanAccept(), c3.Headroom())
	}
	// Configurable thresholds.
	c50 := NewCapacityChecker(NewSemaphore(4), 25, 50, testLogger(t))
	if c50.Headroom() != 2 {
		t.Errorf("refuse at 50%% of 4: headroom %d", c50.Headroom())
	}
}
