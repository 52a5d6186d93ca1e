package controllers

import (
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func TestDecideReplicas(t *testing.T) {
	ageTarget := v1.AutoscalingSpec{MaxReplicas: 10, TargetOldestReadyAge: "5s"}
	backlogTarget := v1.AutoscalingSpec{MaxReplicas: 4, TargetBacklogPerReplica: ptr.To(int32(500))}
	utilTarget := v1.AutoscalingSpec{MaxReplicas: 10, TargetUtilizationPercent: ptr.To(int32(50))}
	toZero := v1.AutoscalingSpec{MinReplicas: ptr.To(int32(0)), MaxReplicas: 4, TargetBacklogPerReplica: ptr.To(int32(100))}
	for _, tc := range []struct {
		name    string
		spec    v1.AutoscalingSpec
		in      scaleInputs
		history []scalePoint // earlier recommendations (seconds before t0, count)
		desired int32
		reason  string // part of the decision's reason
		limit   string
	}{
		{name: "oldest wait over its target scales up in proportion", spec: ageTarget,
			in:      scaleInputs{Current: 2, BacklogKnown: true, Backlog: 40, OldestReady: 12 * time.Second},
			desired: 5, reason: "oldest ready step waited 12s, target 5s: 2 → 5"},
		{name: "within the tolerance nothing moves", spec: ageTarget,
			in:      scaleInputs{Current: 2, BacklogKnown: true, Backlog: 40, OldestReady: 5400 * time.Millisecond},
			desired: 2},
		{name: "backlog per replica, step-limited to double or +4 per 15s, then held at max", spec: backlogTarget,
			in:      scaleInputs{Current: 1, BacklogKnown: true, Backlog: 20000},
			desired: 4, reason: "backlog 20000, target 500 per replica: 1 → 4", limit: v1.ReasonTooManyReplicas},
		{name: "utilisation over its target", spec: utilTarget,
			in:      scaleInputs{Current: 4, BacklogKnown: true, Backlog: 10, UtilKnown: true, InFlight: 30, Capacity: 40},
			desired: 6, reason: "handlers 75% busy, target 50%: 4 → 6"},
		{name: "the largest target wins", spec: v1.AutoscalingSpec{MaxReplicas: 10, TargetOldestReadyAge: "5s", TargetUtilizationPercent: ptr.To(int32(50))},
			in:      scaleInputs{Current: 2, BacklogKnown: true, Backlog: 5, OldestReady: 6 * time.Second, UtilKnown: true, InFlight: 20, Capacity: 20},
			desired: 4, reason: "handlers 100% busy, target 50%: 2 → 4"},
		{name: "scale-in waits for the window's largest request", spec: utilTarget,
			in:      scaleInputs{Current: 6, BacklogKnown: true, UtilKnown: true, InFlight: 6, Capacity: 60},
			history: []scalePoint{{at: t0.Add(-60 * time.Second), n: 6}}, desired: 6, limit: v1.ReasonScaleStepLimited},
		{name: "after the window, at most halve per 30s", spec: utilTarget,
			in:      scaleInputs{Current: 6, BacklogKnown: true, UtilKnown: true, InFlight: 6, Capacity: 60},
			history: []scalePoint{{at: t0.Add(-3 * time.Minute), n: 6}}, desired: 3, reason: "handlers 10% busy, target 50%: 6 → 3", limit: v1.ReasonScaleStepLimited},
		{name: "never scale in while a pod is at critical saturation", spec: utilTarget,
			in:      scaleInputs{Current: 6, BacklogKnown: true, UtilKnown: true, InFlight: 6, Capacity: 60, Critical: "pool-abc"},
			history: []scalePoint{{at: t0.Add(-3 * time.Minute), n: 6}}, desired: 6, limit: v1.ReasonHeldByBackpressure},
		{name: "never scale in while the handlers are busier than their target", spec: v1.AutoscalingSpec{MaxReplicas: 10,
			TargetBacklogPerReplica: ptr.To(int32(100)), TargetUtilizationPercent: ptr.To(int32(50))},
			in:      scaleInputs{Current: 6, BacklogKnown: true, Backlog: 50, UtilKnown: true, InFlight: 28, Capacity: 54},
			history: []scalePoint{{at: t0.Add(-3 * time.Minute), n: 6}}, desired: 6, limit: v1.ReasonHeldByBackpressure},
		{name: "held at minReplicas", spec: v1.AutoscalingSpec{MinReplicas: ptr.To(int32(2)), MaxReplicas: 4, TargetBacklogPerReplica: ptr.To(int32(100))},
			in:      scaleInputs{Current: 2, BacklogKnown: true},
			desired: 2, limit: v1.ReasonTooFewReplicas},
		{name: "a database that cannot be read keeps the count", spec: backlogTarget,
			in: scaleInputs{Current: 3, BacklogKnown: false}, desired: 3},
		{name: "a restarted operator does not scale in at once", spec: utilTarget,
			in:      scaleInputs{Current: 6, BacklogKnown: true, UtilKnown: true, InFlight: 1, Capacity: 60},
			desired: 6, limit: v1.ReasonScaleStepLimited},
		{name: "a step at zero wakes the pool", spec: toZero,
			in:      scaleInputs{Current: 0, BacklogKnown: true, Backlog: 3, OldestReady: time.Second},
			desired: 1, reason: "backlog 3, target 100 per replica: 0 → 1"},
		{name: "work at zero with only an age target wakes the pool", spec: v1.AutoscalingSpec{MinReplicas: ptr.To(int32(0)), MaxReplicas: 4, TargetOldestReadyAge: "5s"},
			in:      scaleInputs{Current: 0, BacklogKnown: true, Backlog: 1, OldestReady: time.Second},
			desired: 1, reason: "1 steps ready: 0 → 1"},
		{name: "nothing at zero stays at zero", spec: toZero,
			in: scaleInputs{Current: 0, BacklogKnown: true}, desired: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Now = t0
			h := &scaleHistory{recs: tc.history}
			d := decideReplicas(tc.spec, tc.in, h)
			if d.Desired != tc.desired || !strings.Contains(d.Reason, tc.reason) || d.Limit != tc.limit {
				t.Fatalf("decision %+v, want %d (%q, limit %q)", d, tc.desired, tc.reason, tc.limit)
			}
			if tc.reason == "" && d.Reason != "" {
				t.Errorf("a reason for no change: %q", d.Reason)
			}
			if d.Active != tc.in.BacklogKnown {
				t.Errorf("active %v with backlog known %v", d.Active, tc.in.BacklogKnown)
			}
		})
	}
}

// An idle pool with minReplicas 0 goes to zero after scaleToZeroAfter, not
// before, and without a further scale-down window.
func TestScaleToZeroAfterIdle(t *testing.T) {
	spec := v1.AutoscalingSpec{MinReplicas: ptr.To(int32(0)), MaxReplicas: 4, TargetBacklogPerReplica: ptr.To(int32(100)),
		Behavior: &v1.AutoscalingBehavior{ScaleToZeroAfter: "1m"}}
	h := &scaleHistory{}
	at := func(s int) scaleInputs {
		return scaleInputs{Current: 1, BacklogKnown: true, Now: t0.Add(time.Duration(s) * time.Second)}
	}
	for s := 0; s < 60; s += 15 {
		if d := decideReplicas(spec, at(s), h); d.Desired != 1 {
			t.Fatalf("at %ds idle: %+v", s, d)
		}
	}
	d := decideReplicas(spec, at(61), h)
	if d.Desired != 0 || d.Reason != "idle for 1m1s: 1 → 0" {
		t.Fatalf("after the idle period: %+v", d)
	}
	// Busy again in between resets the clock.
	h = &scaleHistory{}
	decideReplicas(spec, at(0), h)
	busy := at(30)
	busy.Backlog = 5
	decideReplicas(spec, busy, h)
	if d := decideReplicas(spec, at(61), h); d.Desired != 1 {
		t.Fatalf("idle only since 61s went to zero: %+v", d)
	}
}

// Steady load around a target for minutes changes the count at most once:
// the tolerance and the scale-down window absorb the noise.
func TestSteadyLoadDoesNotFlap(t *testing.T) {
	spec := v1.AutoscalingSpec{MaxReplicas: 8, TargetUtilizationPercent: ptr.To(int32(60))}
	h := &scaleHistory{}
	cur, changes := int32(4), 0
	for s := 0; s <= 180; s += 2 {
		// About half the target, with noise: 24–36 % busy.
		busy := []int32{12, 18, 14, 16, 13, 17}[(s/2)%6]
		d := decideReplicas(spec, scaleInputs{Current: cur, BacklogKnown: true, UtilKnown: true, InFlight: busy * cur / 4, Capacity: 10 * cur,
			Now: t0.Add(time.Duration(s) * time.Second)}, h)
		if d.Desired != cur {
			changes++
			cur = d.Desired
		}
	}
	if changes > 1 {
		t.Fatalf("%d changes in 3 minutes of steady load", changes)
	}
}
