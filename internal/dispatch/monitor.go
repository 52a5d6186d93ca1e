package dispatch

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// ChannelHealth grades a channel's saturation for logs and readiness.
type ChannelHealth int

// Saturation grades, from the seed: Degraded at >= the warning threshold,
// Critical at >= the critical threshold.
const (
	ChannelHealthy ChannelHealth = iota
	ChannelDegraded
	ChannelCritical
)

// String names the grade in logs.
func (h ChannelHealth) String() string {
	switch h {
	case ChannelDegraded:
		return "degraded"
	case ChannelCritical:
		return "critical"
	default:
		return "healthy"
	}
}

// Default saturation thresholds (fractions of capacity).
const (
	DefaultSaturationWarning  = 0.80
	DefaultSaturationCritical = 0.95
)

// ChannelMonitor watches one bounded channel. Upstream Tasker monitored
// neither the dispatch nor the completion channel; here both export their
// saturation, and a periodic check logs (rate-limited) when a channel is
// Degraded or Critical, which is the early warning that the consumer is
// falling behind. Upstream sampled on every Nth send; a ticker gives the same
// warning without putting a shared counter on the hot path.
type ChannelMonitor struct {
	name      string
	length    func() int
	capacity  int
	warning   float64
	critical  float64
	lastWarn  atomic.Int64
	warnEvery time.Duration
	log       logr.Logger
}

// NewChannelMonitor watches a channel through its length function (e.g.
// func() int { return len(ch) }) and capacity. Thresholds outside (0,1] fall
// back to the defaults.
func NewChannelMonitor(name string, length func() int, capacity int, warning, critical float64, log logr.Logger) *ChannelMonitor {
	if warning <= 0 || warning > 1 {
		warning = DefaultSaturationWarning
	}
	if critical <= 0 || critical > 1 || critical < warning {
		critical = max(DefaultSaturationCritical, warning)
	}
	return &ChannelMonitor{
		name: name, length: length, capacity: capacity,
		warning: warning, critical: critical,
		warnEvery: 10 * time.Second, log: log.WithValues("channel", name),
	}
}

// Saturation is fill / capacity in 0..1 (0 for an unbuffered channel).
func (m *ChannelMonitor) Saturation() float64 {
	if m.capacity <= 0 {
		return 0
	}
	return float64(m.length()) / float64(m.capacity)
}

// Health grades the current saturation.
func (m *ChannelMonitor) Health() ChannelHealth { return m.grade(m.Saturation()) }

func (m *ChannelMonitor) grade(s float64) ChannelHealth {
	switch {
	case s >= m.critical:
		return ChannelCritical
	case s >= m.warning:
		return ChannelDegraded
	default:
		return ChannelHealthy
	}
}

// DefaultMonitorInterval is how often Watch checks saturation.
const DefaultMonitorInterval = 250 * time.Millisecond

// Watch checks saturation every interval until ctx ends, logging a
// rate-limited warning while the channel is Degraded or Critical.
func (m *ChannelMonitor) Watch(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultMonitorInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			m.check()
		case <-ctx.Done():
			return
		}
	}
}

// check logs a rate-limited warning when the channel is not healthy.
func (m *ChannelMonitor) check() ChannelHealth {
	s := m.Saturation()
	h := m.grade(s)
	if h == ChannelHealthy {
		return h
	}
	now := time.Now().UnixNano()
	last := m.lastWarn.Load()
	if now-last < int64(m.warnEvery) || !m.lastWarn.CompareAndSwap(last, now) {
		return h
	}
	m.log.Info("channel saturation "+h.String(), "saturation", s, "capacity", m.capacity,
		"warningThreshold", m.warning, "criticalThreshold", m.critical)
	return h
}

// Register exports tasker_channel_<name>_saturation (0..1), read at scrape
// time so the send path pays nothing for it.
func (m *ChannelMonitor) Register(reg prometheus.Registerer) error {
	return reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tasker_channel_" + m.name + "_saturation",
		Help: "Fill of the " + m.name + " channel as a fraction of its capacity (0..1).",
	}, m.Saturation))
}
