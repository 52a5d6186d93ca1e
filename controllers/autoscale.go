package controllers

import (
	"fmt"
	"math"
	"slices"
	"time"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// This file holds the built-in autoscaler's decision: a pure function from
// what the reconciler measured (the queue's backlog and oldest wait, the
// handlers' utilisation) and the pool's recent history to the replica count.
// It follows the HPA's model, which users know: a proportional proposal per
// target with a 10 % tolerance, the largest proposal wins, stabilisation
// windows and step limits per direction, plus scale to zero and wake-up.

// scaleTolerance: a target within this share of its goal proposes no change.
const scaleTolerance = 0.1

// Defaults of spec.autoscaling.behavior (docs/autoscaling.md).
var (
	defaultScaleUp = scaleRules{window: 0, policies: []scalePolicy{
		{percent: true, value: 100, period: 15 * time.Second}, {value: 4, period: 15 * time.Second}}}
	defaultScaleDown = scaleRules{window: 2 * time.Minute, policies: []scalePolicy{
		{percent: true, value: 50, period: 30 * time.Second}}}
	defaultScaleToZeroAfter = 5 * time.Minute
)

// scaleInputs is what one decision looks at.
type scaleInputs struct {
	// Current is the replica count the pool runs at (its Deployment's).
	Current int32
	// BacklogKnown: the queue could be read; else the count is kept.
	BacklogKnown bool
	Backlog      int64
	OldestReady  time.Duration
	// UtilKnown: at least one ready pod's in-flight and capacity were read.
	UtilKnown          bool
	InFlight, Capacity int32
	// Critical names a pod whose completion channel is at its critical
	// saturation, "" when none.
	Critical string
	Now      time.Time
}

// scaleDecision is the count to run at and why.
type scaleDecision struct {
	// From is the count the pool ran at, Desired the one it should.
	From, Desired int32
	// Reason says what drove the count, e.g. "oldest ready step waited 12s,
	// target 5s: 2 → 4"; "" when it did not change.
	Reason string
	// Active is False when the queue could not be read (the count is kept).
	Active bool
	// Limit is the ScalingLimited reason when the targets' count is held
	// back ("" when not), with LimitMessage saying by what.
	Limit, LimitMessage string
}

// scaleHistory is one pool's recent decisions, kept by the reconciler.
type scaleHistory struct {
	recs      []scalePoint // counts the targets asked for, oldest first
	changes   []scalePoint // count changes applied (value: the change)
	idleSince time.Time    // since when nothing was waiting or in flight; zero when busy
}

type scalePoint struct {
	at time.Time
	n  int32
}

type scaleRules struct {
	window   time.Duration
	policies []scalePolicy
}

type scalePolicy struct {
	percent bool
	value   int32
	period  time.Duration
}

// decideReplicas returns the count a pool with autoscaling spec a should run
// at, and records the decision in h.
func decideReplicas(a v1.AutoscalingSpec, in scaleInputs, h *scaleHistory) scaleDecision {
	minR, maxR := int32(1), a.MaxReplicas
	if a.MinReplicas != nil {
		minR = *a.MinReplicas
	}
	up, down, toZero := behavior(a.Behavior)
	cur := in.Current
	d := scaleDecision{From: cur, Desired: cur, Active: in.BacklogKnown}
	if !in.BacklogKnown {
		return d // keep the count: a guess could scale a busy pool to zero
	}
	if len(h.recs) == 0 && cur > 0 {
		// No history (a new pool, or the operator restarted): the current
		// count stands for the window just before now, so nothing scales in
		// at once.
		h.recs = append(h.recs, scalePoint{in.Now.Add(-time.Nanosecond), cur})
	}

	// What each target asks for; the largest wins.
	rec, why := cur, "no target asks for a change"
	propose := func(n int32, reason string) {
		if n > rec || why == "no target asks for a change" && n != cur {
			rec, why = n, reason
		}
	}
	if t := parseDuration(a.TargetOldestReadyAge); t > 0 {
		ratio := float64(in.OldestReady) / float64(t)
		if n, ok := proportional(cur, ratio); ok {
			propose(n, fmt.Sprintf("oldest ready step waited %s, target %s", in.OldestReady.Round(100*time.Millisecond), t))
		}
	}
	if t := a.TargetBacklogPerReplica; t != nil && *t > 0 {
		want := int32(min(math.Ceil(float64(in.Backlog)/float64(*t)), math.MaxInt32))
		if cur == 0 || math.Abs(float64(want)/float64(max(cur, 1))-1) > scaleTolerance {
			propose(want, fmt.Sprintf("backlog %d, target %d per replica", in.Backlog, *t))
		}
	}
	util := 0.0
	if in.UtilKnown && in.Capacity > 0 {
		util = 100 * float64(in.InFlight) / float64(in.Capacity)
	}
	if t := a.TargetUtilizationPercent; t != nil && in.UtilKnown && in.Capacity > 0 {
		if n, ok := proportional(cur, util/float64(*t)); ok {
			propose(n, fmt.Sprintf("handlers %.0f%% busy, target %d%%", util, *t))
		}
	}

	// Idle pools go to zero after a while; work at zero wakes the pool.
	idle := in.Backlog == 0 && in.InFlight == 0
	switch {
	case !idle:
		h.idleSince = time.Time{}
	case h.idleSince.IsZero():
		h.idleSince = in.Now
	}
	floor := minR
	if minR == 0 {
		switch {
		case !idle && rec < 1:
			rec, why = 1, fmt.Sprintf("%d steps ready", in.Backlog)
		case idle && cur > 0 && in.Now.Sub(h.idleSince) < toZero:
			floor = 1 // idle, but not for long enough yet
		case idle && cur > 0:
			rec, why = 0, fmt.Sprintf("idle for %s", in.Now.Sub(h.idleSince).Round(time.Second))
		}
	}
	limit := func(reason, msg string) {
		if d.Limit == "" {
			d.Limit, d.LimitMessage = reason, msg
		}
	}
	switch {
	case rec > maxR:
		limit(v1.ReasonTooManyReplicas, fmt.Sprintf("%s asks for %d, held at maxReplicas %d", why, rec, maxR))
		rec = maxR
	case rec < floor:
		if floor == minR {
			limit(v1.ReasonTooFewReplicas, fmt.Sprintf("held at minReplicas %d", minR))
		}
		rec = floor
	}
	// Never scale in while a pod is saturated or the handlers are busier
	// than their target: the pods are needed, whatever the queue says.
	if rec < cur {
		switch t := a.TargetUtilizationPercent; {
		case in.Critical != "":
			limit(v1.ReasonHeldByBackpressure, fmt.Sprintf("not scaling in: pod %s is at critical completion saturation", in.Critical))
			rec = cur
		case t != nil && in.UtilKnown && util > float64(*t):
			limit(v1.ReasonHeldByBackpressure, fmt.Sprintf("not scaling in: handlers %.0f%% busy, above the %d%% target", util, *t))
			rec = cur
		}
	}

	// Stabilise: up to the least, down to the most asked for in the window.
	// Going to zero has waited scaleToZeroAfter already: no window, no step.
	h.recs = append(h.recs, scalePoint{in.Now, rec})
	desired := rec
	switch {
	case rec == 0 && minR == 0:
	case rec > cur:
		desired = min(rec, extreme(h.recs, in.Now, up.window, false))
	case rec < cur:
		desired = max(rec, extreme(h.recs, in.Now, down.window, true))
	}
	// Step limits: the policy allowing the largest change applies.
	switch {
	case desired > cur:
		allowed := int32(0)
		for _, p := range up.policies {
			start := cur - changed(h.changes, in.Now, p.period, true)
			if p.percent {
				allowed = max(allowed, int32(math.Ceil(float64(start)*(1+float64(p.value)/100))))
			} else {
				allowed = max(allowed, start+p.value)
			}
		}
		desired = min(desired, max(allowed, cur))
	case desired < cur && desired > 0:
		allowed := cur
		for _, p := range down.policies {
			start := cur + changed(h.changes, in.Now, p.period, false)
			if p.percent {
				allowed = min(allowed, int32(math.Floor(float64(start)*(1-float64(p.value)/100))))
			} else {
				allowed = min(allowed, start-p.value)
			}
		}
		desired = max(desired, min(allowed, cur))
	}
	if desired != rec && (rec != cur) {
		limit(v1.ReasonScaleStepLimited, fmt.Sprintf("%s asks for %d; the behavior's window and step limits allow %d now", why, rec, desired))
	}
	d.Desired = desired
	if desired != cur {
		h.changes = append(h.changes, scalePoint{in.Now, desired - cur})
		d.Reason = fmt.Sprintf("%s: %d → %d", why, cur, desired)
	}
	h.prune(in.Now, max(up.window, down.window), max(longestPeriod(up), longestPeriod(down)))
	return d
}

// proportional is the HPA's rule: the count scaled by how far the measure is
// from its target, unless within the tolerance.
func proportional(cur int32, ratio float64) (int32, bool) {
	if math.Abs(ratio-1) <= scaleTolerance || cur == 0 {
		return cur, false
	}
	return int32(min(math.Ceil(float64(cur)*ratio), math.MaxInt32)), true
}

// extreme is the largest (or smallest) recommendation within window.
func extreme(recs []scalePoint, now time.Time, window time.Duration, largest bool) int32 {
	var out int32
	first := true
	for _, r := range recs {
		if now.Sub(r.at) > window {
			continue
		}
		if first || largest && r.n > out || !largest && r.n < out {
			out, first = r.n, false
		}
	}
	return out
}

// changed adds up the changes in one direction within the last period: the
// count at the period's start is the current one less what was added (or
// plus what was removed) since.
func changed(changes []scalePoint, now time.Time, period time.Duration, up bool) int32 {
	var sum int32
	for _, c := range changes {
		if now.Sub(c.at) > period {
			continue
		}
		if up && c.n > 0 {
			sum += c.n
		}
		if !up && c.n < 0 {
			sum -= c.n
		}
	}
	return sum
}

func longestPeriod(r scaleRules) time.Duration {
	var p time.Duration
	for _, pol := range r.policies {
		p = max(p, pol.period)
	}
	return p
}

func (h *scaleHistory) prune(now time.Time, window, period time.Duration) {
	h.recs = slices.DeleteFunc(h.recs, func(p scalePoint) bool { return now.Sub(p.at) > window })
	h.changes = slices.DeleteFunc(h.changes, func(p scalePoint) bool { return now.Sub(p.at) > period })
}

// behavior is spec.autoscaling.behavior with its defaults.
func behavior(b *v1.AutoscalingBehavior) (up, down scaleRules, toZero time.Duration) {
	up, down, toZero = defaultScaleUp, defaultScaleDown, defaultScaleToZeroAfter
	if b == nil {
		return
	}
	rules := func(r *v1.ScalingRules, def scaleRules) scaleRules {
		if r == nil {
			return def
		}
		out := def
		if r.StabilizationWindow != "" {
			out.window = parseDuration(r.StabilizationWindow)
		}
		if len(r.Policies) > 0 {
			out.policies = nil
			for _, p := range r.Policies {
				out.policies = append(out.policies, scalePolicy{percent: p.Type == "Percent", value: p.Value, period: parseDuration(p.Period)})
			}
		}
		return out
	}
	up, down = rules(b.ScaleUp, up), rules(b.ScaleDown, down)
	if b.ScaleToZeroAfter != "" {
		toZero = parseDuration(b.ScaleToZeroAfter)
	}
	return
}

// parseDuration reads a duration the schema already validated (0 if not).
func parseDuration(d v1.Duration) time.Duration {
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return 0
	}
	return v
}
