package dispatch

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// Default load-shedding thresholds, in percent of permits in use.
const (
	DefaultCapacityWarningPercent = 70
	DefaultCapacityRefusePercent  = 80
)

// CapacityChecker tells the intake whether to claim more work. It watches the
// same semaphore the dispatch service acquires (upstream's checker watched a
// semaphore nobody used, so it never refused). Claims are accepted only while
// usage is below the refuse threshold; a refused claim simply stays in the
// queue for this or another worker.
type CapacityChecker struct {
	sem           *Semaphore
	warnPercent   float64
	refusePercent float64
	lastWarn      atomic.Int64
	overCalls     atomic.Uint64
	log           logr.Logger
}

// NewCapacityChecker watches sem. Percentages outside (0,100] fall back to
// the defaults; warning is clamped to at most refuse.
func NewCapacityChecker(sem *Semaphore, warnPercent, refusePercent float64, log logr.Logger) *CapacityChecker {
	if refusePercent <= 0 || refusePercent > 100 {
		refusePercent = DefaultCapacityRefusePercent
	}
	if warnPercent <= 0 || warnPercent > refusePercent {
		warnPercent = min(DefaultCapacityWarningPercent, refusePercent)
	}
	return &CapacityChecker{sem: sem, warnPercent: warnPercent, refusePercent: refusePercent, log: log}
}

// UsagePercent is in_use / max * 100.
func (c *CapacityChecker) UsagePercent() float64 {
	return float64(c.sem.InUse()) / float64(c.sem.Capacity()) * 100
}

// CanAccept reports whether new work may be claimed now (usage below the
// refuse threshold), warning at most every 10 s while usage is at or above
// the warning threshold.
func (c *CapacityChecker) CanAccept() bool {
	u := c.UsagePercent()
	// Reading the clock on every call would dominate a hot intake loop, so
	// the rate limit is consulted on every 256th call above the threshold.
	if u >= c.warnPercent && c.overCalls.Add(1)%256 == 1 {
		now := time.Now().UnixNano()
		last := c.lastWarn.Load()
		if now-last >= int64(10*time.Second) && c.lastWarn.CompareAndSwap(last, now) {
			c.log.Info("handler capacity high", "usagePercent", u, "warningPercent", c.warnPercent, "refusePercent", c.refusePercent)
		}
	}
	return u < c.refusePercent
}

// Headroom is how many more permits may be taken before usage reaches the
// refuse threshold; the intake claims at most this many steps.
func (c *CapacityChecker) Headroom() int {
	limit := int(math.Ceil(c.refusePercent*float64(c.sem.Capacity())/100 - 1e-9))
	return max(0, limit-c.sem.InUse())
}
