package controllers

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// This file holds the pure functions that turn what the reconciler observed
// into the pool's status, conditions and events. They touch no client and no
// clock, so each rule is unit-tested on its own.

// maxPodsInStatus bounds status.pods (the CRD's MaxItems).
const maxPodsInStatus = 20

// podSample is what one pod's /metrics reported, in the worker's units.
type podSample struct {
	InFlight             float64
	Capacity             float64
	CompletionSaturation float64 // 0..1
	PendingEvents        float64
	OldestPendingAgeMs   float64
	StarvingEvents       float64
	CallbackTimeouts     float64
	SemaphoreFailures    float64
}

// podObservation is one pod of the pool: its readiness and, for a ready
// pod, either its sample or why it could not be read.
type podObservation struct {
	Name   string
	Ready  bool
	Sample *podSample
	Err    error
}

// observation is everything a status pass looked at.
type observation struct {
	// ConfigErr is set when the spec cannot be rendered into a worker.toml
	// the worker accepts; children are then left as they were.
	ConfigErr error
	// Deployment is the pool's Deployment, nil before it exists.
	Deployment *appsv1.Deployment
	// Pods are the pool's pods, ready or not.
	Pods []podObservation
	// Now is when the pods were scraped.
	Now metav1.Time
}

// computeStatus returns the status the pool should have. It starts from the
// current status so that conditions keep their lastTransitionTime when
// their status does not change.
func computeStatus(pool *v1.WorkerPool, obs observation) v1.WorkerPoolStatus {
	st := *pool.Status.DeepCopy()
	gen := pool.Generation
	st.ObservedGeneration = gen
	st.Selector = labels.SelectorFromSet(selectorLabels(pool)).String()
	st.Replicas, st.ReadyReplicas, st.UpdatedReplicas = 0, 0, 0
	if d := obs.Deployment; d != nil {
		st.Replicas, st.ReadyReplicas, st.UpdatedReplicas = d.Status.Replicas, d.Status.ReadyReplicas, d.Status.UpdatedReplicas
	}

	agg := aggregate(obs.Pods)
	st.Dispatch = v1.DispatchStatus{InFlight: agg.inFlight, Capacity: agg.capacity, CompletionSaturationPercent: agg.maxSaturation}
	st.FFI = v1.FFIStatus{PendingEvents: agg.pending, StarvingEvents: agg.starving}
	if agg.scraped > 0 {
		st.FFI.OldestPendingAge = formatAge(agg.oldestMs)
		st.LastScrapeTime = obs.Now.DeepCopy()
	}
	st.CallbackTimeouts, st.SemaphoreAcquisitionFailures = agg.callbackTimeouts, agg.semaphoreFailures
	st.Pods = podList(obs.Pods)

	set := func(c metav1.Condition) {
		c.ObservedGeneration = gen
		meta.SetStatusCondition(&st.Conditions, c)
	}
	available := availableCondition(pool, obs.Deployment)
	progressing := progressingCondition(pool, obs.Deployment)
	metrics := metricsCondition(agg)
	set(available)
	set(progressing)
	set(metrics)
	set(starvingCondition(pool, agg))
	set(backpressureCondition(pool, agg))
	set(readyCondition(obs.ConfigErr, available, progressing, metrics))
	return st
}

// aggregation sums or takes the worst of the ready pods' samples.
type aggregation struct {
	ready, scraped                      int
	failed                              []string // ready pods whose scrape failed, with why
	inFlight, capacity, maxSaturation   int32
	pending, starving                   int32
	oldestMs                            float64
	oldestPod, saturatedPod             string
	callbackTimeouts, semaphoreFailures int64
}

func aggregate(pods []podObservation) aggregation {
	var a aggregation
	for _, p := range pods {
		if !p.Ready {
			continue
		}
		a.ready++
		if p.Sample == nil {
			reason := "no sample"
			if p.Err != nil {
				reason = p.Err.Error()
			}
			a.failed = append(a.failed, fmt.Sprintf("%s (%s)", p.Name, reason))
			continue
		}
		s := p.Sample
		a.scraped++
		a.inFlight += count32(s.InFlight)
		a.capacity += count32(s.Capacity)
		a.pending += count32(s.PendingEvents)
		a.starving += count32(s.StarvingEvents)
		a.callbackTimeouts += int64(math.Max(0, s.CallbackTimeouts))
		a.semaphoreFailures += int64(math.Max(0, s.SemaphoreFailures))
		if pct := percent(s.CompletionSaturation); pct > a.maxSaturation || a.saturatedPod == "" {
			a.maxSaturation, a.saturatedPod = pct, p.Name
		}
		if s.OldestPendingAgeMs > a.oldestMs || a.oldestPod == "" {
			a.oldestMs, a.oldestPod = math.Max(0, s.OldestPendingAgeMs), p.Name
		}
	}
	return a
}

// percent turns a 0..1 fill into a whole percent, rounding down so that a
// pod shows 80 only once it is at 80 % (the tiny epsilon absorbs float
// error such as 0.29*100 = 28.999999999999996).
func percent(fill float64) int32 {
	return int32(math.Max(0, math.Min(100, math.Floor(fill*100+1e-9))))
}

func count32(v float64) int32 {
	if v <= 0 || math.IsNaN(v) {
		return 0
	}
	return int32(math.Min(v, math.MaxInt32))
}

// formatAge renders milliseconds as a Go duration string ("2.5s"), rounded
// to 100 ms: finer digits would only churn the status.
func formatAge(ms float64) string {
	return (time.Duration(ms * float64(time.Millisecond))).Round(100 * time.Millisecond).String()
}

// podList is the pods worst first: not ready or unreadable, then the oldest
// pending event, then the fullest completion channel, then the busiest.
func podList(pods []podObservation) []v1.PodMetrics {
	out := make([]v1.PodMetrics, 0, len(pods))
	for _, p := range pods {
		m := v1.PodMetrics{Name: p.Name, Ready: p.Ready}
		if p.Sample != nil {
			m.InFlight, m.PendingEvents = count32(p.Sample.InFlight), count32(p.Sample.PendingEvents)
			m.OldestPendingAge = formatAge(p.Sample.OldestPendingAgeMs)
			m.CompletionSaturationPercent = percent(p.Sample.CompletionSaturation)
		} else if p.Ready && p.Err != nil {
			m.ScrapeError = truncate(p.Err.Error(), 200)
		}
		out = append(out, m)
	}
	age := func(m v1.PodMetrics) time.Duration { d, _ := time.ParseDuration(m.OldestPendingAge); return d }
	healthy := func(m v1.PodMetrics) bool { return m.Ready && m.ScrapeError == "" }
	slices.SortFunc(out, func(a, b v1.PodMetrics) int {
		if ha, hb := healthy(a), healthy(b); ha != hb {
			if hb {
				return -1
			}
			return 1
		}
		return cmp.Or(
			cmp.Compare(age(b), age(a)),
			cmp.Compare(b.CompletionSaturationPercent, a.CompletionSaturationPercent),
			cmp.Compare(b.InFlight, a.InFlight),
			strings.Compare(a.Name, b.Name),
		)
	})
	if len(out) > maxPodsInStatus {
		out = out[:maxPodsInStatus]
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func availableCondition(pool *v1.WorkerPool, d *appsv1.Deployment) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionAvailable, Status: metav1.ConditionFalse, Reason: v1.ReasonMinimumReplicasUnavailable}
	if d == nil {
		c.Message = "the pool's Deployment does not exist yet"
		return c
	}
	want := replicas(pool)
	if dc := deploymentCondition(d, appsv1.DeploymentAvailable); dc != nil && dc.Status == corev1.ConditionTrue {
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonMinimumReplicasAvailable
	}
	c.Message = fmt.Sprintf("%d of %d replicas available", d.Status.AvailableReplicas, want)
	return c
}

func progressingCondition(pool *v1.WorkerPool, d *appsv1.Deployment) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionProgressing, Status: metav1.ConditionTrue, Reason: v1.ReasonRollingOut}
	if d == nil {
		c.Message = "creating the pool's Deployment"
		return c
	}
	if dc := deploymentCondition(d, appsv1.DeploymentProgressing); dc != nil && dc.Reason == "ProgressDeadlineExceeded" {
		c.Status, c.Reason = metav1.ConditionFalse, v1.ReasonProgressDeadlineExceeded
		c.Message = "rollout stalled: " + dc.Message
		return c
	}
	want := replicas(pool)
	s := d.Status
	switch {
	case s.ObservedGeneration < d.Generation:
		c.Message = "the Deployment controller has not seen the latest template yet"
	case s.UpdatedReplicas < want:
		c.Message = fmt.Sprintf("%d of %d replicas updated", s.UpdatedReplicas, want)
	case s.Replicas > s.UpdatedReplicas:
		c.Message = fmt.Sprintf("%d old replicas terminating", s.Replicas-s.UpdatedReplicas)
	case s.AvailableReplicas < s.UpdatedReplicas:
		c.Message = fmt.Sprintf("%d of %d updated replicas available", s.AvailableReplicas, s.UpdatedReplicas)
	default:
		c.Status, c.Reason = metav1.ConditionFalse, v1.ReasonRolledOut
		c.Message = fmt.Sprintf("all %d replicas run the current template", want)
	}
	return c
}

func deploymentCondition(d *appsv1.Deployment, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == t {
			return &d.Status.Conditions[i]
		}
	}
	return nil
}

func metricsCondition(a aggregation) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionMetricsAvailable}
	switch {
	case a.ready == 0:
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, v1.ReasonNoReadyPods, "no ready pod to read metrics from"
	case len(a.failed) > 0:
		c.Status, c.Reason = metav1.ConditionFalse, v1.ReasonScrapeFailed
		c.Message = truncate(fmt.Sprintf("%d of %d ready pods could not be read: %s", len(a.failed), a.ready, strings.Join(a.failed, "; ")), 1000)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonScraped
		c.Message = fmt.Sprintf("read metrics from all %d ready pods", a.ready)
	}
	return c
}

func starvingCondition(pool *v1.WorkerPool, a aggregation) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionStarving}
	threshold := 10 * time.Second
	if d, err := time.ParseDuration(string(pool.Spec.FFI.StarvationWarningThreshold)); err == nil && d > 0 {
		threshold = d
	}
	switch {
	case !pool.Spec.FFI.Enabled:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, v1.ReasonFFIDisabled, "the pool runs no foreign handlers"
	case a.scraped == 0:
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, noSampleReason(a), "no pod's metrics could be read"
	case a.oldestMs > float64(threshold.Milliseconds()):
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonEventsStarving
		c.Message = fmt.Sprintf("oldest pending FFI event has waited %s on pod %s (threshold %s); %d events starving across the pool",
			formatAge(a.oldestMs), a.oldestPod, threshold, a.starving)
	default:
		c.Status, c.Reason = metav1.ConditionFalse, v1.ReasonPollingKeepsUp
		c.Message = fmt.Sprintf("oldest pending FFI event %s (threshold %s)", formatAge(a.oldestMs), threshold)
	}
	return c
}

func backpressureCondition(pool *v1.WorkerPool, a aggregation) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionBackpressure}
	warn, crit := pool.Spec.Dispatch.SaturationWarningPercent, pool.Spec.Dispatch.SaturationCriticalPercent
	if warn <= 0 {
		warn = 80
	}
	if crit <= 0 {
		crit = 95
	}
	if a.scraped == 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, noSampleReason(a), "no pod's metrics could be read"
		return c
	}
	c.Message = fmt.Sprintf("completion channel %d%% full on pod %s (warning at %d%%, critical at %d%%)", a.maxSaturation, a.saturatedPod, warn, crit)
	switch {
	case a.maxSaturation >= crit:
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonSaturationCritical
	case a.maxSaturation >= warn:
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonSaturationWarning
	default:
		c.Status, c.Reason = metav1.ConditionFalse, v1.ReasonSaturationNormal
	}
	return c
}

func noSampleReason(a aggregation) string {
	if a.ready == 0 {
		return v1.ReasonNoReadyPods
	}
	return v1.ReasonScrapeFailed
}

// readyCondition is the kstatus-style summary: True when the spec is
// valid, the pool is available and rolled out, and its metrics are
// readable. Starving and Backpressure are reported on their own (and
// alerted on); they do not make a running pool un-ready.
func readyCondition(configErr error, available, progressing, metrics metav1.Condition) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionReady, Status: metav1.ConditionFalse}
	switch {
	case configErr != nil:
		c.Reason, c.Message = v1.ReasonInvalidSpec, truncate(configErr.Error(), 1000)
	case available.Status != metav1.ConditionTrue:
		c.Reason, c.Message = available.Reason, available.Message
	case progressing.Status == metav1.ConditionTrue || progressing.Reason == v1.ReasonProgressDeadlineExceeded:
		c.Reason, c.Message = progressing.Reason, progressing.Message
	case metrics.Status == metav1.ConditionFalse:
		c.Reason, c.Message = metrics.Reason, metrics.Message
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, v1.ReasonPoolReady, "available, rolled out and measured"
	}
	return c
}

// statusHeartbeat bounds how stale lastScrapeTime may get: a status whose
// figures did not change is rewritten only this often, so an idle pool
// costs the API server little while readers can still tell the operator is alive.
const statusHeartbeat = 5 * time.Minute

// statusNeedsWrite says whether the new status differs from the stored one
// in anything but lastScrapeTime, or lastScrapeTime is older than the heartbeat.
func statusNeedsWrite(old, next v1.WorkerPoolStatus) bool {
	a, b := old.DeepCopy(), next.DeepCopy()
	a.LastScrapeTime, b.LastScrapeTime = nil, nil
	if !equality.Semantic.DeepEqual(a, b) {
		return true
	}
	if (old.LastScrapeTime == nil) != (next.LastScrapeTime == nil) {
		return true
	}
	return old.LastScrapeTime != nil && next.LastScrapeTime.Sub(old.LastScrapeTime.Time) >= statusHeartbeat
}

// conditionEvent is a Kubernetes event to emit for a condition transition.
type conditionEvent struct {
	Type, Reason, Message string
}

// transitionEvents returns one event per change of Starving or
// Backpressure (status, or Backpressure's Warning/Critical reason), so
// kubectl describe tells when a pool started and stopped struggling.
// Changes to or from Unknown (no metrics) are not events: MetricsAvailable
// tells that story.
func transitionEvents(old, next []metav1.Condition) []conditionEvent {
	var out []conditionEvent
	for _, t := range []string{v1.ConditionStarving, v1.ConditionBackpressure} {
		n := meta.FindStatusCondition(next, t)
		if n == nil || n.Status == metav1.ConditionUnknown {
			continue
		}
		o := meta.FindStatusCondition(old, t)
		if o != nil && o.Status == metav1.ConditionUnknown {
			o = nil // Unknown remembers nothing: compare as if from scratch
		}
		if o != nil && o.Status == n.Status && o.Reason == n.Reason {
			continue
		}
		if o == nil && n.Status == metav1.ConditionFalse {
			continue // a pool that starts (or comes back) healthy is not news
		}
		ev := conditionEvent{Type: corev1.EventTypeNormal, Message: n.Message}
		switch {
		case n.Status == metav1.ConditionTrue:
			ev.Type, ev.Reason = corev1.EventTypeWarning, t // Starving
			if t == v1.ConditionBackpressure {
				ev.Reason = t + n.Reason // BackpressureWarning, BackpressureCritical
			}
		default:
			ev.Reason = t + "Cleared"
		}
		out = append(out, ev)
	}
	return out
}
