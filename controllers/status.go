package controllers

import (
	"cmp"
	"errors"
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
	"k8s.io/utils/ptr"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// This file holds the pure functions that turn what the reconciler observed
// into the pool's status, conditions and events. They touch no client and no
// clock, so each rule is unit-tested on its own. docs/operator.md has the
// table of conditions they produce.

// maxPodsInStatus bounds status.pods (the CRD's MaxItems).
const maxPodsInStatus = 20

// Hysteresis: a condition that is True leaves that state only once the
// measure is clearly back, so a pool hovering at a threshold does not
// alternate between warning and cleared on every pass.
const (
	// backpressureMargin: Backpressure (or its Critical reason) clears only
	// below its threshold minus this many percentage points.
	backpressureMargin = 10
	// starvingClearRatio: Starving clears only once every waiting FFI event
	// is younger than this share of the threshold.
	starvingClearRatio = 0.8
)

// podSample is what one pod's /metrics reported, in the worker's units.
type podSample struct {
	InFlight             float64
	Capacity             float64
	CompletionSaturation float64 // 0..1
	PendingEvents        float64
	OldestPendingAgeMs   float64
	StarvingEvents       float64
	UnpolledEvents       float64
	OldestUnpolledAgeMs  float64
	LastPollAgeMs        float64 // since the pollers last polled
	CallbackTimeouts     float64
	SemaphoreFailures    float64
}

// podProblem is what keeps a pod from running: a Stalled reason and a
// message that names the pod and the cause. The zero value is no problem.
type podProblem struct {
	Reason  string
	Message string
}

// podObservation is one pod of the pool.
type podObservation struct {
	Name  string
	Ready bool
	// Running: not ready, but its containers run, so it is scraped too. A
	// worker that lost its database, or whose foreign pollers stopped,
	// fails its readiness probe while it still holds steps: its figures are
	// the ones that matter then.
	Running bool
	// Current: the pod runs the pool's current pod template.
	Current bool
	// Problem is what blocks the pod, from its status (diagnosePod).
	Problem podProblem
	// Sample is the pod's figures: read in the last scrape, or (Stale) its
	// last good sample when the last scrape of it failed and that sample is
	// recent. Nil when there is none.
	Sample *podSample
	Stale  bool
	// SampleAge is how old Sample is.
	SampleAge time.Duration
	// Err is why the last scrape of the pod failed, if it did.
	Err error

	template     string // the pod's template hash (Current compares it)
	deletionCost string // its pod-deletion-cost annotation, "" when unset
}

// observation is everything a status pass looked at.
type observation struct {
	// SpecErr is set when the spec cannot be rendered into a worker.toml
	// the worker accepts; children are then left as they were.
	SpecErr error
	// Blocked is set when a child cannot be written until something
	// changes (an object of its name that is not the pool's, RBAC, quota,
	// admission, or an object the API server finds invalid).
	Blocked *blockedError
	// ApplyErr is set when writing or reading children failed in a way
	// that may pass; the pass is retried.
	ApplyErr error
	// Deployment is the pool's Deployment as written in this pass, or read
	// unchanged; nil before it exists.
	Deployment *appsv1.Deployment
	// Pods are the pool's pods that are not terminating.
	Pods []podObservation
	// ScrapedAt is when the pods' metrics were last read (zero: never).
	ScrapedAt metav1.Time
	// Now is when the pass began.
	Now metav1.Time
	// Replicas is the pod count the pass asks for: spec.replicas, the
	// autoscaler's, or none while suspended.
	Replicas int32
	// Queue is the pool's queues as measured; nil when the operator does
	// not read queues.
	Queue *queueObservation
	// Scale is the autoscaler's decision; nil without spec.autoscaling or
	// while suspended.
	Scale *scaleDecision
}

// failed records an error that may pass (nil is ignored).
func (o *observation) failed(err error) {
	if err != nil {
		o.ApplyErr = errors.Join(o.ApplyErr, err)
	}
}

// markCurrentPods marks the pods that run the Deployment's current template.
func (o *observation) markCurrentPods() {
	template := ""
	if o.Deployment != nil {
		template = o.Deployment.Spec.Template.Annotations[v1.TemplateHashAnnotation]
	}
	for i := range o.Pods {
		o.Pods[i].Current = template != "" && o.Pods[i].template == template
	}
}

// computeStatus returns the status the pool should have. It starts from the
// current status so that conditions keep their lastTransitionTime when
// their status does not change, and so that Backpressure and Starving can
// apply hysteresis and never clear on missing data.
func computeStatus(pool *v1.WorkerPool, obs observation) v1.WorkerPoolStatus {
	st := *pool.Status.DeepCopy()
	prev := pool.Status.Conditions
	gen := pool.Generation
	st.ObservedGeneration = gen
	st.Selector = labels.SelectorFromSet(selectorLabels(pool)).String()
	if d := obs.Deployment; d != nil {
		st.Replicas, st.ReadyReplicas, st.UpdatedReplicas = d.Status.Replicas, d.Status.ReadyReplicas, d.Status.UpdatedReplicas
	} else if obs.ApplyErr == nil {
		st.Replicas, st.ReadyReplicas, st.UpdatedReplicas = 0, 0, 0
	} // else: the Deployment could not be read; keep the last figures

	agg := aggregate(obs.Pods)
	st.Dispatch = v1.DispatchStatus{InFlight: agg.inFlight, Capacity: agg.capacity, CompletionSaturationPercent: agg.maxSaturation}
	st.FFI = v1.FFIStatus{PendingEvents: agg.pending, StarvingEvents: agg.starving, UnpolledEvents: agg.unpolled}
	if agg.measured() {
		st.FFI.OldestPendingAge = formatAge(agg.oldestMs)
		st.FFI.OldestUnpolledAge = formatAge(agg.oldestUnpolledMs)
	}
	if !obs.ScrapedAt.IsZero() {
		st.LastScrapeTime = obs.ScrapedAt.DeepCopy()
	}
	st.CallbackTimeouts, st.SemaphoreAcquisitionFailures = agg.callbackTimeouts, agg.semaphoreFailures
	st.Pods = podList(obs.Pods)

	set := func(c metav1.Condition) {
		c.ObservedGeneration = gen
		meta.SetStatusCondition(&st.Conditions, c)
	}
	st.Queue = queueStatus(pool.Status.Queue, obs.Queue)
	st.Autoscaling = autoscalingStatus(pool, obs)

	rollout := rolloutOf(obs)
	stalled := stalledCondition(obs, rollout)
	available := availableCondition(pool, obs.Replicas, obs.Deployment)
	metrics := metricsCondition(agg)
	set(readyCondition(pool, obs, stalled, rollout, available, metrics))
	set(reconcilingCondition(pool, obs, stalled, rollout))
	set(stalled)
	set(available)
	set(progressingCondition(obs.Deployment, rollout))
	set(metrics)
	set(starvingCondition(pool, agg, meta.FindStatusCondition(prev, v1.ConditionStarving)))
	set(backpressureCondition(pool, agg, meta.FindStatusCondition(prev, v1.ConditionBackpressure)))
	if pool.Spec.Autoscaling != nil {
		set(scalingActiveCondition(pool, obs))
		set(scalingLimitedCondition(pool, obs))
	} else {
		meta.RemoveStatusCondition(&st.Conditions, v1.ConditionScalingActive)
		meta.RemoveStatusCondition(&st.Conditions, v1.ConditionScalingLimited)
	}
	return st
}

// queueStatus is the pool's queues as last measured: a failed read keeps the
// last good figures (their measuredAt says how old they are).
func queueStatus(prev *v1.QueueStatus, q *queueObservation) *v1.QueueStatus {
	switch {
	case q == nil:
		return nil
	case q.Err != nil:
		return prev
	}
	return &v1.QueueStatus{Backlog: q.Backlog, BacklogCapped: q.Capped,
		OldestReadyAge: formatAge(float64(q.OldestReady.Milliseconds())), MeasuredAt: ptr.To(metav1.NewTime(q.At))}
}

// autoscalingStatus is the autoscaler's state after this pass.
func autoscalingStatus(pool *v1.WorkerPool, obs observation) *v1.AutoscalingStatus {
	if pool.Spec.Autoscaling == nil {
		return nil
	}
	st := &v1.AutoscalingStatus{}
	if pool.Status.Autoscaling != nil {
		st = pool.Status.Autoscaling.DeepCopy()
	}
	st.DesiredReplicas = obs.Replicas
	if obs.Scale != nil && obs.Scale.Reason != "" {
		st.LastDecision, st.LastScaleTime = obs.Scale.Reason, obs.Now.DeepCopy()
	}
	return st
}

// scalingActiveCondition: True while the autoscaler can read what it scales
// on; False keeps the count as it is, saying why.
func scalingActiveCondition(pool *v1.WorkerPool, obs observation) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionScalingActive, Status: metav1.ConditionFalse, Reason: v1.ReasonBacklogUnavailable}
	switch q := obs.Queue; {
	case pool.Spec.Suspend:
		c.Reason, c.Message = v1.ReasonSuspended, "suspended (spec.suspend): the autoscaler takes over again when the pool resumes"
	case q == nil:
		c.Message = fmt.Sprintf("the operator does not read queues (--read-queues=false): keeping %d replicas", obs.Replicas)
	case q.Err != nil:
		c.Message = truncate(fmt.Sprintf("%v: keeping %d replicas", q.Err, obs.Replicas), 1000)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonScalingActive
		c.Message = fmt.Sprintf("backlog %d, oldest ready step waited %s", q.Backlog, q.OldestReady.Round(100*time.Millisecond))
		if q.Capped {
			c.Message = fmt.Sprintf("backlog at least %d, oldest ready step waited %s", q.Backlog, q.OldestReady.Round(100*time.Millisecond))
		}
	}
	return c
}

// scalingLimitedCondition: True when the count the targets ask for is held
// back, by what.
func scalingLimitedCondition(pool *v1.WorkerPool, obs observation) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionScalingLimited, Status: metav1.ConditionFalse, Reason: v1.ReasonDesiredWithinRange}
	a := pool.Spec.Autoscaling
	minR := int32(1)
	if a.MinReplicas != nil {
		minR = *a.MinReplicas
	}
	c.Message = fmt.Sprintf("%d replicas, within [%d, %d]", obs.Replicas, minR, a.MaxReplicas)
	if d := obs.Scale; d != nil && d.Limit != "" {
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, d.Limit, truncate(d.LimitMessage, 1000)
	}
	return c
}

// aggregation sums or takes the worst of the pods' samples: every ready
// pod's (fresh, or stale within its age limit), and the fresh samples of
// running pods that are not ready. Capacity and coverage count ready pods
// only.
type aggregation struct {
	ready, fresh, unready               int      // unready: not-ready pods with a fresh sample
	stale, missing                      []string // ready pods read from a recent sample, or not at all, with why
	inFlight, capacity, maxSaturation   int32
	pending, starving, unpolled         int32
	oldestMs, oldestUnpolledMs          float64
	unpolledPodLastPollMs               float64 // the last poll's age on unpolledPod
	oldestPod, unpolledPod, saturPod    string
	callbackTimeouts, semaphoreFailures int64
}

// covered is how many ready pods the figures include.
func (a aggregation) covered() int { return a.fresh + len(a.stale) }

// measured says whether the figures include any pod at all.
func (a aggregation) measured() bool { return a.covered()+a.unready > 0 }

// coverage describes which ready pods the figures come from.
func (a aggregation) coverage() string {
	s := fmt.Sprintf("read %d of %d ready pods", a.fresh, a.ready)
	if len(a.stale) > 0 {
		s += fmt.Sprintf("; %d stale, counted with their last sample: %s", len(a.stale), strings.Join(a.stale, "; "))
	}
	if len(a.missing) > 0 {
		s += fmt.Sprintf("; %d unreadable: %s", len(a.missing), strings.Join(a.missing, "; "))
	}
	return s
}

func aggregate(pods []podObservation) aggregation {
	var a aggregation
	for _, p := range pods {
		if !p.Ready {
			if p.Sample == nil || p.Stale {
				continue
			}
			a.unready++
		} else {
			a.ready++
			why := "no sample yet"
			if p.Err != nil {
				why = p.Err.Error()
			}
			switch {
			case p.Sample == nil:
				a.missing = append(a.missing, fmt.Sprintf("%s (%s)", p.Name, why))
				continue
			case p.Stale:
				a.stale = append(a.stale, fmt.Sprintf("%s (read %s ago; now: %s)", p.Name, p.SampleAge.Round(time.Second), why))
			default:
				a.fresh++
			}
			a.capacity += count32(p.Sample.Capacity)
		}
		s := p.Sample
		a.inFlight += count32(s.InFlight)
		a.pending += count32(s.PendingEvents)
		a.starving += count32(s.StarvingEvents)
		a.unpolled += count32(s.UnpolledEvents)
		a.callbackTimeouts += int64(math.Max(0, s.CallbackTimeouts))
		a.semaphoreFailures += int64(math.Max(0, s.SemaphoreFailures))
		if pct := percent(s.CompletionSaturation); pct > a.maxSaturation || a.saturPod == "" {
			a.maxSaturation, a.saturPod = pct, p.Name
		}
		if s.OldestPendingAgeMs > a.oldestMs || a.oldestPod == "" {
			a.oldestMs, a.oldestPod = math.Max(0, s.OldestPendingAgeMs), p.Name
		}
		if s.OldestUnpolledAgeMs > a.oldestUnpolledMs || a.unpolledPod == "" {
			a.oldestUnpolledMs, a.unpolledPod, a.unpolledPodLastPollMs = math.Max(0, s.OldestUnpolledAgeMs), p.Name, s.LastPollAgeMs
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

// podList is the pods worst first: blocked, not ready or unreadable, then
// the oldest waiting event, then the fullest completion channel, then the
// busiest.
func podList(pods []podObservation) []v1.PodMetrics {
	out := make([]v1.PodMetrics, 0, len(pods))
	for _, p := range pods {
		m := v1.PodMetrics{Name: p.Name, Ready: p.Ready, Problem: truncate(p.Problem.Message, 300)}
		if p.Sample != nil {
			m.InFlight, m.PendingEvents = count32(p.Sample.InFlight), count32(p.Sample.PendingEvents)
			m.OldestPendingAge = formatAge(p.Sample.OldestPendingAgeMs)
			if p.Sample.OldestUnpolledAgeMs > 0 {
				m.OldestUnpolledAge = formatAge(p.Sample.OldestUnpolledAgeMs)
			}
			m.CompletionSaturationPercent = percent(p.Sample.CompletionSaturation)
		}
		if p.Ready && p.Err != nil {
			m.ScrapeError = truncate(p.Err.Error(), 200)
		}
		out = append(out, m)
	}
	age := func(m v1.PodMetrics) time.Duration {
		a, _ := time.ParseDuration(m.OldestPendingAge)
		b, _ := time.ParseDuration(m.OldestUnpolledAge)
		return max(a, b)
	}
	healthy := func(m v1.PodMetrics) bool { return m.Ready && m.ScrapeError == "" && m.Problem == "" }
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

// Waiting reasons of a container that mean it cannot start until someone
// changes something.
var (
	imagePullReasons   = []string{"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"}
	configErrorReasons = []string{"CreateContainerConfigError", "CreateContainerError"}
)

// problemOrder ranks pod problems: the first is reported when pods differ.
var problemOrder = []string{v1.ReasonConfigError, v1.ReasonImagePullFailed, v1.ReasonCrashLoop, v1.ReasonUnschedulable}

// diagnosePod says what keeps a pod from running, from what the scheduler
// and the kubelet wrote into its status: no node to run on, an image that
// cannot be pulled, a container that cannot be created from its
// configuration (a missing Secret or key), or a container that keeps exiting.
func diagnosePod(p *corev1.Pod) podProblem {
	var found []podProblem
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			found = append(found, podProblem{v1.ReasonUnschedulable, fmt.Sprintf("pod %s cannot be scheduled: %s", p.Name, c.Message)})
		}
	}
	statuses := slices.Concat(p.Status.InitContainerStatuses, p.Status.ContainerStatuses)
	for _, cs := range statuses {
		w := cs.State.Waiting
		if w == nil {
			continue
		}
		detail := w.Reason
		if w.Message != "" {
			detail += ": " + w.Message
		}
		switch {
		case slices.Contains(imagePullReasons, w.Reason):
			found = append(found, podProblem{v1.ReasonImagePullFailed,
				fmt.Sprintf("pod %s: container %s: image %q cannot be pulled (%s)", p.Name, cs.Name, cs.Image, detail)})
		case slices.Contains(configErrorReasons, w.Reason):
			found = append(found, podProblem{v1.ReasonConfigError,
				fmt.Sprintf("pod %s: container %s cannot be created (%s)", p.Name, cs.Name, detail)})
		case w.Reason == "CrashLoopBackOff":
			last := "no exit recorded"
			if t := cs.LastTerminationState.Terminated; t != nil {
				last = fmt.Sprintf("last exit code %d", t.ExitCode)
				if t.Reason != "" {
					last += ", reason " + t.Reason
				}
				if t.Message != "" {
					last += ": " + strings.TrimSpace(t.Message)
				}
			}
			found = append(found, podProblem{v1.ReasonCrashLoop,
				fmt.Sprintf("pod %s: container %s keeps exiting (restarted %d times; %s)", p.Name, cs.Name, cs.RestartCount, last)})
		}
	}
	if len(found) == 0 {
		return podProblem{}
	}
	return slices.MinFunc(found, func(a, b podProblem) int {
		return cmp.Compare(slices.Index(problemOrder, a.Reason), slices.Index(problemOrder, b.Reason))
	})
}

// rollout is where the pool's template rollout stands.
type rollout struct {
	// Known: there is a Deployment to judge from.
	Known bool
	// Done: every pod runs the current template, the Deployment keeps no
	// pods of an older one, and it reports its latest rollout complete.
	Done bool
	// Current and Total count the pods (not terminating) on the current
	// template and in all.
	Current, Total int
	// Observed: the Deployment controller has seen the Deployment as
	// written (its observedGeneration caught up with its generation).
	Observed bool
	// Waiting is what the Deployment says while its rollout is incomplete
	// although every pod is on the current template.
	Waiting string
}

// newReplicaSetAvailable is the reason of a Deployment's Progressing
// condition once its latest rollout completed. The Deployment controller
// keeps it through later changes of replica count and replaces it as soon
// as a new template is rolled out.
const newReplicaSetAvailable = "NewReplicaSetAvailable"

// rolloutOf judges the rollout from the pods' template hash and the
// Deployment as written in this pass. A change of replica count alone adds
// or removes pods of the current template, so it is never a rollout.
func rolloutOf(obs observation) rollout {
	d := obs.Deployment
	if d == nil {
		return rollout{}
	}
	r := rollout{Known: true, Total: len(obs.Pods), Observed: d.Status.ObservedGeneration >= d.Generation}
	for _, p := range obs.Pods {
		if p.Current {
			r.Current++
		}
	}
	switch pc := deploymentCondition(d, appsv1.DeploymentProgressing); {
	case r.Observed && d.Status.Replicas > d.Status.UpdatedReplicas:
		// Pods of an older template the Deployment keeps (for example after
		// someone else changed the template).
		r.Waiting = fmt.Sprintf("the Deployment still keeps %d pods of an older template", d.Status.Replicas-d.Status.UpdatedReplicas)
	case pc != nil && pc.Reason != newReplicaSetAvailable:
		r.Waiting = fmt.Sprintf("the Deployment reports its rollout incomplete (%s: %s)", pc.Reason, pc.Message)
	}
	r.Done = r.Current == r.Total && r.Waiting == ""
	return r
}

// deploymentProgressFailed returns the Deployment's own verdict that its
// rollout stopped making progress, or nil.
func deploymentProgressFailed(d *appsv1.Deployment) *appsv1.DeploymentCondition {
	if d == nil {
		return nil
	}
	c := deploymentCondition(d, appsv1.DeploymentProgressing)
	if c != nil && c.Status == corev1.ConditionFalse && c.Reason == "ProgressDeadlineExceeded" {
		return c
	}
	return nil
}

// stalledCondition is True when something blocks the pool that will not
// pass on its own: the spec, a child that cannot be written, a ReplicaSet
// that may not create pods, a current-template pod that cannot run, or a
// rollout past its deadline.
func stalledCondition(obs observation, r rollout) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionStalled, Status: metav1.ConditionTrue}
	blocked := func(reason, msg string) metav1.Condition {
		c.Reason, c.Message = reason, truncate(msg, 1000)
		return c
	}
	switch {
	case obs.SpecErr != nil:
		return blocked(v1.ReasonInvalidSpec, obs.SpecErr.Error())
	case obs.Blocked != nil:
		return blocked(obs.Blocked.Reason, obs.Blocked.Message)
	}
	if d := obs.Deployment; d != nil {
		if rf := deploymentCondition(d, appsv1.DeploymentReplicaFailure); rf != nil && rf.Status == corev1.ConditionTrue {
			return blocked(v1.ReasonForbidden, fmt.Sprintf("Deployment %s cannot create pods: %s", d.Name, rf.Message))
		}
	}
	var problems []podProblem
	for _, p := range obs.Pods {
		// Pods of an older template are being replaced: what ails them no
		// longer blocks the pool.
		if p.Problem.Reason != "" && (p.Current || !r.Known) {
			problems = append(problems, p.Problem)
		}
	}
	if len(problems) > 0 {
		worst := slices.MinFunc(problems, func(a, b podProblem) int {
			return cmp.Compare(slices.Index(problemOrder, a.Reason), slices.Index(problemOrder, b.Reason))
		})
		msg := worst.Message
		if n := len(problems) - 1; n > 0 {
			msg += fmt.Sprintf(" (and %d more %s)", n, plural(n, "pod", "pods"))
		}
		return blocked(worst.Reason, msg)
	}
	if pd := deploymentProgressFailed(obs.Deployment); pd != nil {
		return blocked(v1.ReasonProgressDeadlineExceeded, "the rollout made no progress within its deadline: "+pd.Message)
	}
	c.Status, c.Reason, c.Message = metav1.ConditionFalse, v1.ReasonNotStalled, "nothing blocks the pool"
	return c
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// availableCondition: enough replicas are available for the pool's
// disruption budget (all but one of two or more; the one of a single).
func availableCondition(pool *v1.WorkerPool, want int32, d *appsv1.Deployment) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionAvailable, Status: metav1.ConditionFalse, Reason: v1.ReasonMinimumReplicasUnavailable}
	if d == nil {
		c.Message = "the pool's Deployment does not exist yet"
		return c
	}
	need := neededAvailable(pool, want)
	if d.Status.AvailableReplicas >= need {
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonMinimumReplicasAvailable
	}
	c.Message = fmt.Sprintf("%d of %d replicas available (at least %d needed)", d.Status.AvailableReplicas, want, need)
	return c
}

// progressingCondition is about the pod template only: True while pods of
// an older template remain.
func progressingCondition(d *appsv1.Deployment, r rollout) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionProgressing, Status: metav1.ConditionTrue, Reason: v1.ReasonRollingOut}
	switch {
	case !r.Known:
		c.Message = "the pool's Deployment does not exist yet"
	case deploymentProgressFailed(d) != nil && !r.Done:
		c.Status, c.Reason = metav1.ConditionFalse, v1.ReasonProgressDeadlineExceeded
		c.Message = "the rollout made no progress within its deadline: " + deploymentProgressFailed(d).Message
	case r.Current < r.Total:
		c.Message = fmt.Sprintf("%d of %d pods run the current template", r.Current, r.Total)
	case !r.Done:
		c.Message = r.Waiting
	default:
		c.Status, c.Reason = metav1.ConditionFalse, v1.ReasonRolledOut
		c.Message = fmt.Sprintf("all %d pods run the current template", r.Total)
	}
	return c
}

// reconcilingCondition is True while the spec is not realised yet: a child
// write to retry, a rollout, or a replica count the pods have not reached.
// It is False while Stalled is True (kstatus reads the first True of the
// two, and a blocked pool is not making progress).
func reconcilingCondition(pool *v1.WorkerPool, obs observation, stalled metav1.Condition, r rollout) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionReconciling, Status: metav1.ConditionTrue}
	d := obs.Deployment
	want := obs.Replicas
	switch {
	case stalled.Status == metav1.ConditionTrue:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, v1.ReasonStalled, "progress is blocked: see the Stalled condition"
	case obs.ApplyErr != nil:
		c.Reason, c.Message = v1.ReasonApplyFailed, truncate(obs.ApplyErr.Error(), 1000)
	case d == nil:
		c.Reason, c.Message = v1.ReasonScaling, "creating the pool's Deployment"
	case !r.Done:
		p := progressingCondition(d, r)
		c.Reason, c.Message = p.Reason, p.Message
	case !r.Observed:
		c.Reason, c.Message = v1.ReasonScaling, "the Deployment controller has not seen the latest spec yet"
	case pool.Spec.Suspend && d.Status.Replicas == 0:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, v1.ReasonSuspended, suspendedMessage(obs)
	case d.Status.Replicas != want || d.Status.AvailableReplicas < want:
		c.Reason = v1.ReasonScaling
		c.Message = fmt.Sprintf("%d of %d replicas available, %d running", d.Status.AvailableReplicas, want, d.Status.Replicas)
	default:
		c.Status, c.Reason = metav1.ConditionFalse, v1.ReasonReconciled
		c.Message = fmt.Sprintf("%d replicas available on the current template", want)
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

// metricsCondition reports coverage: True when the figures include at
// least half of the ready pods (all of them read in the last pass:
// Scraped; some from recent samples or left out: PartialScrape, naming
// them), False below that.
func metricsCondition(a aggregation) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionMetricsAvailable}
	switch {
	case a.ready == 0:
		c.Status, c.Reason, c.Message = metav1.ConditionUnknown, v1.ReasonNoReadyPods, "no ready pod to read metrics from"
	case a.fresh == a.ready:
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonScraped
		c.Message = fmt.Sprintf("read metrics from all %d ready pods", a.ready)
	case 2*a.covered() >= a.ready:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, v1.ReasonPartialScrape, truncate(a.coverage(), 1000)
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, v1.ReasonScrapeFailed, truncate(a.coverage(), 1000)
	}
	return c
}

// starvationThreshold is the pool's starvation warning threshold.
func starvationThreshold(pool *v1.WorkerPool) time.Duration {
	if d, err := time.ParseDuration(string(pool.Spec.FFI.StarvationWarningThreshold)); err == nil && d > 0 {
		return d
	}
	return 10 * time.Second
}

// starvingCondition is True when an FFI event has waited past the
// threshold: polled and not completed (the handlers are slow), or waiting
// to be polled (the pollers stopped polling). Once True it clears only when
// every pod's events are younger than starvingClearRatio of the threshold,
// and never on missing data.
func starvingCondition(pool *v1.WorkerPool, a aggregation, prev *metav1.Condition) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionStarving}
	threshold := starvationThreshold(pool)
	if !pool.Spec.FFI.Enabled {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, v1.ReasonFFIDisabled, "the pool runs no foreign handlers"
		return c
	}
	if !a.measured() {
		return unmeasured(c, a, prev)
	}
	wasTrue := prev != nil && prev.Status == metav1.ConditionTrue
	limit := float64(threshold.Milliseconds())
	if wasTrue {
		limit *= starvingClearRatio
	}
	switch {
	case a.oldestUnpolledMs > limit && a.oldestUnpolledMs >= a.oldestMs:
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonEventsStarving
		noPoll := a.oldestUnpolledMs
		if a.unpolledPodLastPollMs > 0 {
			noPoll = min(noPoll, a.unpolledPodLastPollMs) // a poll that left this event behind still polled
		}
		c.Message = fmt.Sprintf("no poll for %s on pod %s, %d events waiting across the pool (threshold %s)",
			formatAge(noPoll), a.unpolledPod, a.unpolled, threshold)
	case a.oldestMs > limit:
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonEventsStarving
		c.Message = fmt.Sprintf("oldest pending FFI event has waited %s on pod %s (threshold %s); %d events starving across the pool",
			formatAge(a.oldestMs), a.oldestPod, threshold, a.starving)
	default:
		c.Status, c.Reason = metav1.ConditionFalse, v1.ReasonPollingKeepsUp
		c.Message = fmt.Sprintf("oldest pending FFI event %s, oldest waiting to be polled %s (threshold %s)",
			formatAge(a.oldestMs), formatAge(a.oldestUnpolledMs), threshold)
		if wasTrue {
			c.Message += fmt.Sprintf("; cleared below %s", formatAge(limit))
		}
	}
	return keepUnlessCovered(c, a, prev)
}

// backpressureCondition is True when a pod's completion channel is at or
// above the warning percent (reason Critical at or above the critical
// percent). Once True, a state is left only below its threshold minus
// backpressureMargin points, and never on missing data.
func backpressureCondition(pool *v1.WorkerPool, a aggregation, prev *metav1.Condition) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionBackpressure}
	warn, crit := pool.Spec.Dispatch.SaturationWarningPercent, saturationCritical(pool)
	if warn <= 0 {
		warn = 80
	}
	if !a.measured() {
		return unmeasured(c, a, prev)
	}
	warnAt, critAt := warn, crit
	if prev != nil && prev.Status == metav1.ConditionTrue {
		warnAt = max(0, warn-backpressureMargin)
		if prev.Reason == v1.ReasonSaturationCritical {
			critAt = max(warn, crit-backpressureMargin)
		}
	}
	c.Message = fmt.Sprintf("completion channel %d%% full on pod %s (warning at %d%%, critical at %d%%)", a.maxSaturation, a.saturPod, warn, crit)
	switch {
	case a.maxSaturation >= critAt:
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonSaturationCritical
	case a.maxSaturation >= warnAt:
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonSaturationWarning
	default:
		c.Status, c.Reason = metav1.ConditionFalse, v1.ReasonSaturationNormal
	}
	if c.Status == metav1.ConditionTrue {
		c.Message += fmt.Sprintf("; clears below %d%%", max(0, warn-backpressureMargin))
	}
	return keepUnlessCovered(c, a, prev)
}

// saturationCritical is the pool's critical completion saturation, in percent.
func saturationCritical(pool *v1.WorkerPool) int32 {
	if c := pool.Spec.Dispatch.SaturationCriticalPercent; c > 0 {
		return c
	}
	return 95
}

// unmeasured is a metric condition when no pod's figures are usable: the
// last known state is kept (a problem does not clear because it cannot be
// seen), or Unknown when there is none.
func unmeasured(c metav1.Condition, a aggregation, prev *metav1.Condition) metav1.Condition {
	reason := v1.ReasonScrapeFailed
	if a.ready == 0 {
		reason = v1.ReasonNoReadyPods
	}
	if prev != nil && prev.Status == metav1.ConditionTrue {
		c.Status, c.Reason = prev.Status, prev.Reason
		c.Message = truncate(fmt.Sprintf("%s (kept: no pod's metrics could be read: %s)", strings.SplitN(prev.Message, " (kept:", 2)[0], reason), 1000)
		return c
	}
	c.Status, c.Reason, c.Message = metav1.ConditionUnknown, reason, "no pod's metrics could be read"
	return c
}

// keepUnlessCovered refuses to clear a True condition on partial figures:
// the pod that was the cause may be among those not read.
func keepUnlessCovered(c metav1.Condition, a aggregation, prev *metav1.Condition) metav1.Condition {
	if c.Status == metav1.ConditionTrue || prev == nil || prev.Status != metav1.ConditionTrue || a.covered() == a.ready {
		return c
	}
	c.Status, c.Reason = prev.Status, prev.Reason
	c.Message = truncate(fmt.Sprintf("%s; not cleared while %d of %d ready pods are unread", c.Message, a.ready-a.covered(), a.ready), 1000)
	return c
}

// readyCondition is the summary kstatus and kubectl wait read: True when
// nothing blocks the pool, the current template is rolled out, enough
// replicas are available for the disruption budget and its metrics are
// readable. Starving and Backpressure are reported on their own (and
// alerted on); they do not make a running pool un-ready.
func readyCondition(pool *v1.WorkerPool, obs observation, stalled metav1.Condition, r rollout, available, metrics metav1.Condition) metav1.Condition {
	c := metav1.Condition{Type: v1.ConditionReady, Status: metav1.ConditionFalse}
	switch {
	case stalled.Status == metav1.ConditionTrue:
		c.Reason, c.Message = stalled.Reason, stalled.Message
	case obs.ApplyErr != nil:
		c.Reason, c.Message = v1.ReasonApplyFailed, truncate(obs.ApplyErr.Error(), 1000)
	case pool.Spec.Suspend:
		// What the spec asks for: no pods. Those still there are draining.
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, v1.ReasonSuspended, suspendedMessage(obs)
	case !r.Known || !r.Done:
		p := progressingCondition(obs.Deployment, r)
		c.Reason, c.Message = p.Reason, p.Message
	case available.Status != metav1.ConditionTrue:
		c.Reason, c.Message = available.Reason, available.Message
	case metrics.Status == metav1.ConditionFalse:
		c.Reason, c.Message = metrics.Reason, metrics.Message
	default:
		c.Status, c.Reason = metav1.ConditionTrue, v1.ReasonPoolReady
		c.Message = available.Message + "; template rolled out; metrics: " + metrics.Message
	}
	return c
}

func suspendedMessage(obs observation) string {
	msg := "suspended (spec.suspend): scaled to zero pods; configuration and children kept"
	if n := len(obs.Pods); n > 0 {
		msg += fmt.Sprintf("; %d %s still running", n, plural(n, "pod", "pods"))
	}
	return msg
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

// statusEvents are the events a status change is worth: one per condition
// transition and one per change of the autoscaler's count.
func statusEvents(old, next v1.WorkerPoolStatus) []conditionEvent {
	out := transitionEvents(old.Conditions, next.Conditions)
	if a := next.Autoscaling; a != nil && old.Autoscaling != nil && a.DesiredReplicas != old.Autoscaling.DesiredReplicas {
		ev := conditionEvent{Type: corev1.EventTypeNormal, Reason: "ScaledUp", Message: a.LastDecision}
		if a.DesiredReplicas < old.Autoscaling.DesiredReplicas {
			ev.Reason = "ScaledDown"
		}
		out = append(out, ev)
	}
	return out
}

// transitionEvents returns one event per change of Stalled, Starving or
// Backpressure (status, or reason while True), so kubectl describe tells
// when a pool got blocked or started struggling, and when it recovered.
// Changes to or from Unknown (no metrics) are not events: MetricsAvailable
// tells that story.
func transitionEvents(old, next []metav1.Condition) []conditionEvent {
	var out []conditionEvent
	for _, t := range []string{v1.ConditionStalled, v1.ConditionStarving, v1.ConditionBackpressure} {
		n := meta.FindStatusCondition(next, t)
		if n == nil || n.Status == metav1.ConditionUnknown {
			continue
		}
		o := meta.FindStatusCondition(old, t)
		if o != nil && o.Status == metav1.ConditionUnknown {
			o = nil // Unknown remembers nothing: compare as if from scratch
		}
		if o != nil && o.Status == n.Status && (o.Reason == n.Reason || n.Status == metav1.ConditionFalse) {
			continue
		}
		if (o == nil || o.Status == metav1.ConditionFalse) && n.Status == metav1.ConditionFalse {
			continue // a pool that starts (or comes back) healthy is not news
		}
		ev := conditionEvent{Type: corev1.EventTypeNormal, Message: n.Message}
		switch {
		case n.Status == metav1.ConditionTrue && t == v1.ConditionStalled:
			ev.Type, ev.Reason = corev1.EventTypeWarning, n.Reason // ImagePullFailed, CrashLoop, …
		case n.Status == metav1.ConditionTrue && t == v1.ConditionBackpressure:
			ev.Type, ev.Reason = corev1.EventTypeWarning, t+n.Reason // BackpressureWarning, BackpressureCritical
		case n.Status == metav1.ConditionTrue:
			ev.Type, ev.Reason = corev1.EventTypeWarning, t // Starving
		default:
			ev.Reason = t + "Cleared" // StalledCleared, StarvingCleared, BackpressureCleared
		}
		out = append(out, ev)
	}
	return out
}
