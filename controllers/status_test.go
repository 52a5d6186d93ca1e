package controllers

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

func testPool() *v1.WorkerPool {
	return &v1.WorkerPool{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1.GroupVersion.String(), Kind: "WorkerPool"},
		ObjectMeta: metav1.ObjectMeta{Name: "payments", Namespace: "shop", Generation: 4},
		Spec: v1.WorkerPoolSpec{
			Replicas: ptr.To(int32(2)),
			Dispatch: v1.DispatchSpec{SaturationWarningPercent: 80, SaturationCriticalPercent: 95},
			FFI:      v1.FFISpec{Enabled: true, StarvationWarningThreshold: "10s", CompletionTimeout: "30s"},
		},
	}
}

// rolledOut is a Deployment whose latest rollout finished with n available
// pods, as the Deployment controller reports it.
func rolledOut(n int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "payments", Generation: 3},
		Spec:       appsv1.DeploymentSpec{Replicas: ptr.To(n)},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
			Conditions: []appsv1.DeploymentCondition{
				{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable"},
				{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: newReplicaSetAvailable},
			}},
	}
}

func sample(inFlight, sat, pending, oldestMs float64) *podSample {
	return &podSample{InFlight: inFlight, Capacity: 10, CompletionSaturation: sat, PendingEvents: pending, OldestPendingAgeMs: oldestMs}
}

// readyPods are n ready pods on the current template, each with s.
func readyPods(n int, s *podSample) []podObservation {
	out := make([]podObservation, n)
	for i := range out {
		out[i] = podObservation{Name: fmt.Sprintf("pod-%d", i), Ready: true, Current: true, Sample: s}
	}
	return out
}

func cond(t *testing.T, st v1.WorkerPoolStatus, typ string) metav1.Condition {
	t.Helper()
	c := meta.FindStatusCondition(st.Conditions, typ)
	if c == nil {
		t.Fatalf("no %s condition in %+v", typ, st.Conditions)
	}
	return *c
}

// withReplicas is obs with the pool's spec replica count, as the reconciler
// sets it for a pool without an autoscaler.
func withReplicas(pool *v1.WorkerPool, obs observation) observation {
	obs.Replicas = specReplicas(pool)
	return obs
}

// kstatusOf is what kstatus (cli-utils), as Flux, Argo CD and kpt use it,
// computes for the pool with this status.
func kstatusOf(t *testing.T, pool *v1.WorkerPool, st v1.WorkerPoolStatus) kstatus.Status {
	t.Helper()
	p := pool.DeepCopy()
	p.Status = st
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		t.Fatal(err)
	}
	res, err := kstatus.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		t.Fatal(err)
	}
	return res.Status
}

var now = metav1.NewTime(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))

func TestComputeStatusAggregatesReadyPods(t *testing.T) {
	pool := testPool()
	st := computeStatus(pool, observation{Replicas: specReplicas(pool), Deployment: rolledOut(2), ScrapedAt: now, Pods: []podObservation{
		{Name: "a", Ready: true, Current: true, Sample: &podSample{InFlight: 3, Capacity: 10, CompletionSaturation: 0.12, PendingEvents: 4,
			OldestPendingAgeMs: 2500, StarvingEvents: 0, UnpolledEvents: 2, OldestUnpolledAgeMs: 700, CallbackTimeouts: 2, SemaphoreFailures: 1}},
		{Name: "b", Ready: true, Current: true, Sample: &podSample{InFlight: 5, Capacity: 10, CompletionSaturation: 0.29, PendingEvents: 1,
			OldestPendingAgeMs: 900, UnpolledEvents: 1, OldestUnpolledAgeMs: 1200, CallbackTimeouts: 3}},
		{Name: "c", Ready: false, Current: true}, // not ready: listed, not counted
	}})
	if st.ObservedGeneration != 4 || st.Replicas != 2 || st.ReadyReplicas != 2 || st.UpdatedReplicas != 2 ||
		st.Selector != "workers.tasker.dev/pool=payments" {
		t.Fatalf("replica fields %+v", st)
	}
	if st.Dispatch != (v1.DispatchStatus{InFlight: 8, Capacity: 20, CompletionSaturationPercent: 29}) {
		t.Fatalf("dispatch %+v", st.Dispatch)
	}
	if st.FFI != (v1.FFIStatus{PendingEvents: 5, OldestPendingAge: "2.5s", UnpolledEvents: 3, OldestUnpolledAge: "1.2s"}) ||
		st.CallbackTimeouts != 5 || st.SemaphoreAcquisitionFailures != 1 {
		t.Fatalf("ffi %+v callbacks %d semaphore %d", st.FFI, st.CallbackTimeouts, st.SemaphoreAcquisitionFailures)
	}
	if st.LastScrapeTime == nil || !st.LastScrapeTime.Equal(&now) {
		t.Fatalf("lastScrapeTime %v", st.LastScrapeTime)
	}
	names := []string{}
	for _, p := range st.Pods {
		names = append(names, p.Name)
	}
	if strings.Join(names, ",") != "c,a,b" {
		t.Fatalf("pods not worst first: %v", names)
	}
	for _, c := range st.Conditions {
		if c.ObservedGeneration != 4 {
			t.Errorf("%s has observedGeneration %d", c.Type, c.ObservedGeneration)
		}
	}
	for typ, want := range map[string]string{v1.ConditionReady: "True/PoolReady", v1.ConditionReconciling: "False/Reconciled",
		v1.ConditionStalled: "False/NotStalled", v1.ConditionAvailable: "True/MinimumReplicasAvailable",
		v1.ConditionProgressing: "False/RolledOut", v1.ConditionMetricsAvailable: "True/Scraped"} {
		if c := cond(t, st, typ); string(c.Status)+"/"+c.Reason != want {
			t.Errorf("%s %+v, want %s", typ, c, want)
		}
	}
	if c := cond(t, st, v1.ConditionMetricsAvailable); c.Message != "read metrics from all 2 ready pods" {
		t.Errorf("MetricsAvailable %+v", c)
	}
	if got := kstatusOf(t, pool, st); got != kstatus.CurrentStatus {
		t.Errorf("kstatus %s for a ready pool, want Current", got)
	}
}

func TestStarvingFollowsTheThreshold(t *testing.T) {
	for _, tc := range []struct {
		name       string
		enabled    bool
		oldestMs   float64
		unpolledMs float64
		status     metav1.ConditionStatus
		reason     string
		message    string
	}{
		{"under", true, 9999, 0, metav1.ConditionFalse, v1.ReasonPollingKeepsUp, ""},
		{"at the threshold is not over it", true, 10000, 10000, metav1.ConditionFalse, v1.ReasonPollingKeepsUp, ""},
		{"polled events over", true, 12000, 0, metav1.ConditionTrue, v1.ReasonEventsStarving, "12s on pod slow-pod (threshold 10s)"},
		{"nobody polls", true, 0, 40000, metav1.ConditionTrue, v1.ReasonEventsStarving, "no poll for 40s on pod slow-pod, 12 events waiting across the pool (threshold 10s)"},
		{"FFI disabled", false, 12000, 40000, metav1.ConditionFalse, v1.ReasonFFIDisabled, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := testPool()
			pool.Spec.FFI.Enabled = tc.enabled
			s := sample(0, 0, 3, tc.oldestMs)
			s.UnpolledEvents, s.OldestUnpolledAgeMs = 12, tc.unpolledMs
			st := computeStatus(pool, observation{Replicas: specReplicas(pool), Deployment: rolledOut(1),
				Pods: []podObservation{{Name: "slow-pod", Ready: true, Current: true, Sample: s}}})
			c := cond(t, st, v1.ConditionStarving)
			if c.Status != tc.status || c.Reason != tc.reason {
				t.Fatalf("Starving %+v", c)
			}
			if !strings.Contains(c.Message, tc.message) {
				t.Errorf("message %q does not say %q", c.Message, tc.message)
			}
		})
	}
}

func TestBackpressureWarningThenCritical(t *testing.T) {
	for _, tc := range []struct {
		sat    float64
		status metav1.ConditionStatus
		reason string
	}{
		{0.79, metav1.ConditionFalse, v1.ReasonSaturationNormal},
		{0.80, metav1.ConditionTrue, v1.ReasonSaturationWarning},
		{0.949, metav1.ConditionTrue, v1.ReasonSaturationWarning},
		{0.95, metav1.ConditionTrue, v1.ReasonSaturationCritical},
		{1, metav1.ConditionTrue, v1.ReasonSaturationCritical},
	} {
		st := computeStatus(testPool(), observation{Replicas: specReplicas(testPool()), Deployment: rolledOut(2), Pods: []podObservation{
			{Name: "calm", Ready: true, Current: true, Sample: sample(0, 0.1, 0, 0)},
			{Name: "busy", Ready: true, Current: true, Sample: sample(0, tc.sat, 0, 0)}}})
		c := cond(t, st, v1.ConditionBackpressure)
		if c.Status != tc.status || c.Reason != tc.reason {
			t.Errorf("saturation %v: Backpressure %s/%s, want %s/%s", tc.sat, c.Status, c.Reason, tc.status, tc.reason)
		}
		if !strings.Contains(c.Message, "on pod busy") {
			t.Errorf("message does not name the fullest pod: %q", c.Message)
		}
	}
}

// A pool hovering at a threshold does not alternate: once True, a state is
// left only clearly below its threshold.
func TestHysteresis(t *testing.T) {
	pass := func(pool *v1.WorkerPool, s *podSample) metav1.Condition {
		pool.Status = computeStatus(pool, observation{Replicas: specReplicas(pool), Deployment: rolledOut(2), Pods: readyPods(2, s)})
		return cond(t, pool.Status, v1.ConditionBackpressure)
	}
	pool := testPool()
	for i, step := range []struct {
		sat  float64
		want string
	}{
		{0.79, "False/Normal"}, {0.81, "True/Warning"}, {0.79, "True/Warning"}, {0.71, "True/Warning"}, {0.70, "True/Warning"},
		{0.69, "False/Normal"}, {0.79, "False/Normal"}, {0.96, "True/Critical"}, {0.90, "True/Critical"}, {0.85, "True/Critical"},
		{0.84, "True/Warning"}, {0.94, "True/Warning"}, {0.5, "False/Normal"},
	} {
		if c := pass(pool, sample(0, step.sat, 0, 0)); string(c.Status)+"/"+c.Reason != step.want {
			t.Fatalf("step %d, saturation %v: Backpressure %s/%s (%s), want %s", i, step.sat, c.Status, c.Reason, c.Message, step.want)
		}
	}

	starving := func(pool *v1.WorkerPool, ageMs float64) metav1.ConditionStatus {
		pool.Status = computeStatus(pool, observation{Replicas: specReplicas(pool), Deployment: rolledOut(2), Pods: readyPods(2, sample(0, 0, 1, ageMs))})
		return cond(t, pool.Status, v1.ConditionStarving).Status
	}
	pool = testPool()
	for i, step := range []struct {
		ageMs float64
		want  metav1.ConditionStatus
	}{{9000, "False"}, {11000, "True"}, {9000, "True"}, {8100, "True"}, {7900, "False"}, {9900, "False"}} {
		if got := starving(pool, step.ageMs); got != step.want {
			t.Fatalf("step %d, oldest %vms: Starving %s, want %s", i, step.ageMs, got, step.want)
		}
	}
}

// A pod whose scrape failed counts with its recent sample; figures say how
// much of the pool they cover; a problem never clears on missing data; and a
// few unreadable pods do not make the pool not Ready.
func TestPartialScrapes(t *testing.T) {
	refused := errors.New("connection refused")
	pool := testPool()
	pool.Spec.Replicas = ptr.To(int32(4))
	pods := readyPods(4, sample(1, 0.1, 0, 0))
	pods[3].Sample = sample(2, 0.97, 0, 0)
	pool.Status = computeStatus(pool, observation{Replicas: specReplicas(pool), Deployment: rolledOut(4), Pods: pods})
	if c := cond(t, pool.Status, v1.ConditionBackpressure); c.Reason != v1.ReasonSaturationCritical {
		t.Fatalf("Backpressure %+v", c)
	}

	// The saturated pod times out: its recent sample still counts.
	pods[3].Stale, pods[3].SampleAge, pods[3].Err = true, 20*time.Second, errors.New("no answer within 2s")
	st := computeStatus(pool, observation{Replicas: specReplicas(pool), Deployment: rolledOut(4), Pods: pods})
	if c := cond(t, st, v1.ConditionBackpressure); c.Reason != v1.ReasonSaturationCritical || !strings.Contains(c.Message, "pod-3") {
		t.Errorf("Backpressure from the stale pod's sample %+v", c)
	}
	mc := cond(t, st, v1.ConditionMetricsAvailable)
	if mc.Status != metav1.ConditionTrue || mc.Reason != v1.ReasonPartialScrape ||
		mc.Message != "read 3 of 4 ready pods; 1 stale, counted with their last sample: pod-3 (read 20s ago; now: no answer within 2s)" {
		t.Errorf("MetricsAvailable %+v", mc)
	}
	if st.Dispatch.InFlight != 5 || st.Dispatch.Capacity != 40 {
		t.Errorf("figures leave out the stale pod: %+v", st.Dispatch)
	}
	if c := cond(t, st, v1.ConditionReady); c.Status != metav1.ConditionTrue {
		t.Errorf("Ready with one stale pod of four %+v", c)
	}

	// Its sample is too old to count: the others say "fine", but the pool
	// does not clear on their word.
	pods[3].Sample, pods[3].Stale = nil, false
	st = computeStatus(pool, observation{Replicas: specReplicas(pool), Deployment: rolledOut(4), Pods: pods})
	if c := cond(t, st, v1.ConditionBackpressure); c.Status != metav1.ConditionTrue || c.Reason != v1.ReasonSaturationCritical ||
		!strings.Contains(c.Message, "not cleared while 1 of 4 ready pods are unread") {
		t.Errorf("Backpressure cleared on partial data %+v", c)
	}
	if events := transitionEvents(pool.Status.Conditions, st.Conditions); len(events) != 0 {
		t.Errorf("events on partial data: %+v", events)
	}
	if c := cond(t, st, v1.ConditionReady); c.Status != metav1.ConditionTrue {
		t.Errorf("Ready with one unreadable pod of four %+v", c)
	}

	// Nothing readable at all: the last state is kept.
	for i := range pods {
		pods[i].Sample, pods[i].Err = nil, refused
	}
	st = computeStatus(pool, observation{Replicas: specReplicas(pool), Deployment: rolledOut(4), Pods: pods})
	if c := cond(t, st, v1.ConditionBackpressure); c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "kept: no pod's metrics could be read") {
		t.Errorf("Backpressure with no data %+v", c)
	}
	if c := cond(t, st, v1.ConditionMetricsAvailable); c.Status != metav1.ConditionFalse || c.Reason != v1.ReasonScrapeFailed ||
		!strings.Contains(c.Message, "read 0 of 4 ready pods; 4 unreadable: pod-0 (connection refused)") {
		t.Errorf("MetricsAvailable %+v", c)
	}
	if c := cond(t, st, v1.ConditionReady); c.Status != metav1.ConditionFalse || c.Reason != v1.ReasonScrapeFailed {
		t.Errorf("Ready with no pod readable %+v", c)
	}
	// ... and with no last state, Unknown rather than a guess.
	fresh := testPool()
	st = computeStatus(fresh, observation{Replicas: specReplicas(fresh), Deployment: rolledOut(2), Pods: pods[:2]})
	for _, typ := range []string{v1.ConditionStarving, v1.ConditionBackpressure} {
		if c := cond(t, st, typ); c.Status != metav1.ConditionUnknown || c.Reason != v1.ReasonScrapeFailed {
			t.Errorf("%s %+v", typ, c)
		}
	}
	if st.LastScrapeTime != nil || st.FFI.OldestPendingAge != "" {
		t.Errorf("a pass that read nothing set figures: %+v", st)
	}
}

// A pod that is not ready but runs (a worker that lost its database, or
// whose pollers stopped polling, fails its readiness probe) still shows in
// Backpressure, Starving and in-flight work; capacity and coverage count
// ready pods only.
func TestRunningPodsThatAreNotReadyStillCount(t *testing.T) {
	pool := testPool()
	stuck := sample(8, 1, 0, 0)
	stuck.UnpolledEvents, stuck.OldestUnpolledAgeMs = 12, 40000
	pods := append(readyPods(1, sample(1, 0.1, 0, 0)),
		podObservation{Name: "stuck", Running: true, Current: true, Sample: stuck},
		podObservation{Name: "starting", Running: true, Current: true, Err: errors.New("connection refused")})
	st := computeStatus(pool, observation{Replicas: specReplicas(pool), Deployment: rolledOut(2), Pods: pods})
	if c := cond(t, st, v1.ConditionBackpressure); c.Reason != v1.ReasonSaturationCritical || !strings.Contains(c.Message, "on pod stuck") {
		t.Errorf("Backpressure %+v", c)
	}
	if c := cond(t, st, v1.ConditionStarving); c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "no poll for 40s on pod stuck") {
		t.Errorf("Starving %+v", c)
	}
	if st.Dispatch.InFlight != 9 || st.Dispatch.Capacity != 10 {
		t.Errorf("dispatch %+v", st.Dispatch)
	}
	if c := cond(t, st, v1.ConditionMetricsAvailable); c.Reason != v1.ReasonScraped {
		t.Errorf("MetricsAvailable %+v", c)
	}
	// With no ready pod at all, the running pod's figures still decide.
	st = computeStatus(testPool(), observation{Replicas: specReplicas(testPool()), Deployment: rolledOut(2), Pods: pods[1:]})
	if c := cond(t, st, v1.ConditionBackpressure); c.Reason != v1.ReasonSaturationCritical {
		t.Errorf("Backpressure from a not-ready pod alone %+v", c)
	}
}

// A change of replica count is scaling, not a rollout: Ready stays True as
// long as the budget's replicas are available. A template change is a
// rollout until every pod runs it, whatever a stale Deployment status says.
func TestRolloutIsNotScaling(t *testing.T) {
	pool := testPool()
	pool.Spec.Replicas = ptr.To(int32(4))
	type want struct{ ready, reconciling, progressing string }
	check := func(name string, obs observation, w want, ks kstatus.Status) {
		t.Helper()
		st := computeStatus(pool, withReplicas(pool, obs))
		got := want{
			string(cond(t, st, v1.ConditionReady).Status) + "/" + cond(t, st, v1.ConditionReady).Reason,
			string(cond(t, st, v1.ConditionReconciling).Status) + "/" + cond(t, st, v1.ConditionReconciling).Reason,
			string(cond(t, st, v1.ConditionProgressing).Status) + "/" + cond(t, st, v1.ConditionProgressing).Reason,
		}
		if got != w {
			t.Errorf("%s: Ready, Reconciling, Progressing = %v, want %v\n%+v", name, got, w, st.Conditions)
		}
		if k := kstatusOf(t, pool, st); k != ks {
			t.Errorf("%s: kstatus %s, want %s", name, k, ks)
		}
	}
	// Scaled from 3 to 4; the Deployment controller has not seen it yet.
	dep := rolledOut(3)
	dep.Generation, dep.Spec.Replicas = 4, ptr.To(int32(4))
	check("scale not yet seen", observation{Deployment: dep, Pods: readyPods(3, sample(0, 0, 0, 0))},
		want{"True/PoolReady", "True/Scaling", "False/RolledOut"}, kstatus.InProgressStatus)
	// Seen: a fourth pod on the current template is starting.
	dep.Status.ObservedGeneration, dep.Status.Replicas, dep.Status.UpdatedReplicas = 4, 4, 4
	pods := append(readyPods(3, sample(0, 0, 0, 0)), podObservation{Name: "new", Current: true})
	check("scaling up", observation{Deployment: dep, Pods: pods}, want{"True/PoolReady", "True/Scaling", "False/RolledOut"}, kstatus.InProgressStatus)
	// All four available.
	dep.Status.AvailableReplicas, dep.Status.ReadyReplicas = 4, 4
	check("scaled", observation{Deployment: dep, Pods: readyPods(4, sample(0, 0, 0, 0))},
		want{"True/PoolReady", "False/Reconciled", "False/RolledOut"}, kstatus.CurrentStatus)
	// Scaling from 1 to 4 leaves more pods missing than the budget allows.
	dep1 := rolledOut(1)
	dep1.Generation, dep1.Status.ObservedGeneration = 4, 4
	check("scale far up", observation{Deployment: dep1, Pods: readyPods(1, sample(0, 0, 0, 0))},
		want{"False/MinimumReplicasUnavailable", "True/Scaling", "False/RolledOut"}, kstatus.InProgressStatus)

	// A template change written in this pass: the Deployment as written has
	// a new generation; its status (from before) still says all is rolled
	// out, and the pods run the old template. Not Ready.
	changed := rolledOut(4)
	changed.Generation = 4
	old := readyPods(4, sample(0, 0, 0, 0))
	for i := range old {
		old[i].Current = false
	}
	check("template change not yet seen", observation{Deployment: changed, Pods: old},
		want{"False/RollingOut", "True/RollingOut", "True/RollingOut"}, kstatus.InProgressStatus)
	// Halfway.
	changed.Status.ObservedGeneration = 4
	old[0].Current, old[1].Current = true, true
	check("rolling", observation{Deployment: changed, Pods: old}, want{"False/RollingOut", "True/RollingOut", "True/RollingOut"}, kstatus.InProgressStatus)
	// Every pod is new but the Deployment does not report the rollout
	// complete yet.
	changed.Status.Conditions[1].Reason = "ReplicaSetUpdated"
	check("last pods becoming available", observation{Deployment: changed, Pods: readyPods(4, sample(0, 0, 0, 0))},
		want{"False/RollingOut", "True/RollingOut", "True/RollingOut"}, kstatus.InProgressStatus)
	// Someone else changed the template (kubectl rollout restart): the
	// Deployment keeps old pods although ours all look current.
	changed.Status.Conditions[1].Reason = newReplicaSetAvailable
	changed.Status.Replicas, changed.Status.UpdatedReplicas = 5, 2
	check("restarted by someone else", observation{Deployment: changed, Pods: readyPods(4, sample(0, 0, 0, 0))},
		want{"False/RollingOut", "True/RollingOut", "True/RollingOut"}, kstatus.InProgressStatus)
}

// pod builds a pod of the pool with the given container status.
func pod(name string, cs corev1.ContainerStatus, conds ...corev1.PodCondition) *corev1.Pod {
	cs.Name, cs.Image = "worker", "registry.example/tasker-worker:v9"
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
		Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: conds, ContainerStatuses: []corev1.ContainerStatus{cs}}}
}

func waiting(reason, msg string) corev1.ContainerStatus {
	return corev1.ContainerStatus{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}
}

// Each way a pool can be blocked is Stalled with the pod or object and the
// cause named, Ready False for the same reason, Reconciling False, and
// kstatus Failed; the cause going away clears it.
func TestStalledNamesTheCause(t *testing.T) {
	oom := waiting("CrashLoopBackOff", "back-off 40s restarting failed container=worker")
	oom.RestartCount = 3
	oom.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}
	deadline := rolledOut(2)
	deadline.Status.Conditions[1] = appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse,
		Reason: "ProgressDeadlineExceeded", Message: `ReplicaSet "payments-7c9" has timed out progressing.`}
	quota := rolledOut(2)
	quota.Status.Conditions = append(quota.Status.Conditions, appsv1.DeploymentCondition{Type: appsv1.DeploymentReplicaFailure,
		Status: corev1.ConditionTrue, Reason: "FailedCreate", Message: `pods "payments-7c9-x" is forbidden: exceeded quota: compute, requested: cpu=2, used: cpu=8, limited: cpu=9`})

	for _, tc := range []struct {
		name    string
		obs     observation
		reason  string
		message string
	}{
		{"image never pulled", observation{Deployment: rolledOut(2), Pods: problemPods(pod("payments-a",
			waiting("ErrImageNeverPull", `Container image "registry.example/tasker-worker:v9" is not present with pull policy of Never`)))},
			v1.ReasonImagePullFailed, `pod payments-a: container worker: image "registry.example/tasker-worker:v9" cannot be pulled (ErrImageNeverPull: Container image`},
		{"image pull back-off", observation{Deployment: rolledOut(2), Pods: problemPods(pod("payments-a", waiting("ImagePullBackOff", "Back-off pulling image")))},
			v1.ReasonImagePullFailed, "cannot be pulled (ImagePullBackOff: Back-off pulling image)"},
		{"missing Secret", observation{Deployment: rolledOut(2), Pods: problemPods(pod("payments-a", waiting("CreateContainerConfigError", `secret "tasker-db" not found`)))},
			v1.ReasonConfigError, `pod payments-a: container worker cannot be created (CreateContainerConfigError: secret "tasker-db" not found)`},
		{"crash loop", observation{Deployment: rolledOut(2), Pods: problemPods(pod("payments-a", oom), pod("payments-b", oom))},
			v1.ReasonCrashLoop, "pod payments-a: container worker keeps exiting (restarted 3 times; last exit code 137, reason OOMKilled) (and 1 more pod)"},
		{"unschedulable", observation{Deployment: rolledOut(2), Pods: problemPods(pod("payments-a", corev1.ContainerStatus{},
			corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
				Message: "0/1 nodes are available: 1 Insufficient cpu."}))},
			v1.ReasonUnschedulable, "pod payments-a cannot be scheduled: 0/1 nodes are available: 1 Insufficient cpu."},
		{"foreign Service", observation{Deployment: rolledOut(2), Pods: readyPods(2, sample(0, 0, 0, 0)),
			Blocked: &blockedError{Reason: v1.ReasonChildConflict, Message: "Service shop/payments exists and is not this pool's (no controller)"}},
			v1.ReasonChildConflict, "Service shop/payments exists and is not this pool's"},
		{"quota", observation{Deployment: quota, Pods: readyPods(2, sample(0, 0, 0, 0))},
			v1.ReasonForbidden, "Deployment payments cannot create pods: pods \"payments-7c9-x\" is forbidden: exceeded quota"},
		{"deadline", observation{Deployment: deadline, Pods: readyPods(2, sample(0, 0, 0, 0))},
			v1.ReasonProgressDeadlineExceeded, `the rollout made no progress within its deadline: ReplicaSet "payments-7c9" has timed out progressing.`},
		{"spec the worker refuses", observation{SpecErr: errors.New("spec.dispatch.handlerTimeout: \"1500us\" must be a whole number of milliseconds")},
			v1.ReasonInvalidSpec, "spec.dispatch.handlerTimeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := testPool()
			st := computeStatus(pool, withReplicas(pool, tc.obs))
			s := cond(t, st, v1.ConditionStalled)
			if s.Status != metav1.ConditionTrue || s.Reason != tc.reason || !strings.Contains(s.Message, tc.message) {
				t.Fatalf("Stalled %s/%s %q, want True/%s containing %q", s.Status, s.Reason, s.Message, tc.reason, tc.message)
			}
			if r := cond(t, st, v1.ConditionReady); r.Status != metav1.ConditionFalse || r.Reason != tc.reason || r.Message != s.Message {
				t.Errorf("Ready %+v", r)
			}
			if r := cond(t, st, v1.ConditionReconciling); r.Status != metav1.ConditionFalse || r.Reason != v1.ReasonStalled {
				t.Errorf("Reconciling %+v", r)
			}
			if k := kstatusOf(t, pool, st); k != kstatus.FailedStatus {
				t.Errorf("kstatus %s, want Failed", k)
			}
			evs := transitionEvents(pool.Status.Conditions, st.Conditions)
			if len(evs) != 1 || evs[0].Type != corev1.EventTypeWarning || evs[0].Reason != tc.reason {
				t.Errorf("events %+v", evs)
			}
			// Fixed: the next pass sees healthy pods.
			pool.Status = st
			healed := computeStatus(pool, observation{Replicas: specReplicas(pool), Deployment: rolledOut(2), Pods: readyPods(2, sample(0, 0, 0, 0))})
			if s := cond(t, healed, v1.ConditionStalled); s.Status != metav1.ConditionFalse {
				t.Errorf("Stalled after the fix %+v", s)
			}
			if k := kstatusOf(t, pool, healed); k != kstatus.CurrentStatus {
				t.Errorf("kstatus after the fix %s", k)
			}
			if evs := transitionEvents(st.Conditions, healed.Conditions); len(evs) != 1 || evs[0].Reason != "StalledCleared" {
				t.Errorf("events after the fix %+v", evs)
			}
		})
	}
}

// problemPods are the pods as observe sees them: diagnosed, on the
// current template.
func problemPods(pods ...*corev1.Pod) []podObservation {
	out := make([]podObservation, len(pods))
	for i, p := range pods {
		out[i] = podObservation{Name: p.Name, Current: true, Problem: diagnosePod(p)}
	}
	return out
}

// What ails pods of an older template does not block a rollout that
// replaces them.
func TestOldTemplatePodsDoNotStall(t *testing.T) {
	pods := problemPods(pod("old", waiting("CrashLoopBackOff", "")))
	pods[0].Current = false
	pods = append(pods, readyPods(2, sample(0, 0, 0, 0))...)
	st := computeStatus(testPool(), observation{Replicas: specReplicas(testPool()), Deployment: rolledOut(2), Pods: pods})
	if s := cond(t, st, v1.ConditionStalled); s.Status != metav1.ConditionFalse {
		t.Errorf("Stalled %+v", s)
	}
	if p := cond(t, st, v1.ConditionProgressing); p.Status != metav1.ConditionTrue || p.Message != "2 of 3 pods run the current template" {
		t.Errorf("Progressing %+v", p)
	}
}

func TestConditionsKeepTransitionTimes(t *testing.T) {
	pool := testPool()
	obs := observation{Deployment: rolledOut(2), ScrapedAt: now, Pods: readyPods(2, sample(0, 0.9, 0, 0))}
	pool.Status = computeStatus(pool, withReplicas(pool, obs))
	first := cond(t, pool.Status, v1.ConditionBackpressure).LastTransitionTime
	obs.ScrapedAt = metav1.NewTime(now.Add(time.Minute))
	next := computeStatus(pool, withReplicas(pool, obs))
	if got := cond(t, next, v1.ConditionBackpressure).LastTransitionTime; !got.Equal(&first) {
		t.Fatalf("unchanged condition moved its transition time: %v → %v", first, got)
	}
	if statusNeedsWrite(pool.Status, next) {
		t.Error("a pass that changed only lastScrapeTime wants a status write")
	}
	obs.ScrapedAt = metav1.NewTime(now.Add(statusHeartbeat))
	if !statusNeedsWrite(pool.Status, computeStatus(pool, withReplicas(pool, obs))) {
		t.Error("lastScrapeTime never refreshed past the heartbeat")
	}
	obs.Pods = readyPods(2, sample(1, 0.9, 0, 0))
	obs.ScrapedAt = metav1.NewTime(now.Add(time.Minute))
	if !statusNeedsWrite(pool.Status, computeStatus(pool, withReplicas(pool, obs))) {
		t.Error("a changed figure does not want a status write")
	}
}

func TestTransitionEvents(t *testing.T) {
	c := func(typ string, s metav1.ConditionStatus, reason string) metav1.Condition {
		return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: typ + " " + reason}
	}
	const T, F, U = metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown
	for _, tc := range []struct {
		name      string
		old, next []metav1.Condition
		want      string
	}{
		{"healthy start is quiet", nil, []metav1.Condition{c("Starving", F, "PollingKeepsUp"), c("Backpressure", F, "Normal"), c("Stalled", F, "NotStalled")}, ""},
		{"starving appears", []metav1.Condition{c("Starving", F, "PollingKeepsUp")}, []metav1.Condition{c("Starving", T, "EventsStarving")}, "Warning/Starving"},
		{"starving clears", []metav1.Condition{c("Starving", T, "EventsStarving")}, []metav1.Condition{c("Starving", F, "PollingKeepsUp")}, "Normal/StarvingCleared"},
		{"warning to critical", []metav1.Condition{c("Backpressure", T, "Warning")}, []metav1.Condition{c("Backpressure", T, "Critical")}, "Warning/BackpressureCritical"},
		{"critical back to warning", []metav1.Condition{c("Backpressure", T, "Critical")}, []metav1.Condition{c("Backpressure", T, "Warning")}, "Warning/BackpressureWarning"},
		{"backpressure clears", []metav1.Condition{c("Backpressure", T, "Warning")}, []metav1.Condition{c("Backpressure", F, "Normal")}, "Normal/BackpressureCleared"},
		{"to unknown is quiet", []metav1.Condition{c("Backpressure", T, "Warning")}, []metav1.Condition{c("Backpressure", U, "ScrapeFailed")}, ""},
		{"unknown to true is news", []metav1.Condition{c("Starving", U, "NoReadyPods")}, []metav1.Condition{c("Starving", T, "EventsStarving")}, "Warning/Starving"},
		{"no change is quiet", []metav1.Condition{c("Backpressure", T, "Warning")}, []metav1.Condition{c("Backpressure", T, "Warning")}, ""},
		{"stalled", []metav1.Condition{c("Stalled", F, "NotStalled")}, []metav1.Condition{c("Stalled", T, "ImagePullFailed")}, "Warning/ImagePullFailed"},
		{"stalled for another cause", []metav1.Condition{c("Stalled", T, "ImagePullFailed")}, []metav1.Condition{c("Stalled", T, "CrashLoop")}, "Warning/CrashLoop"},
		{"unstalled", []metav1.Condition{c("Stalled", T, "CrashLoop")}, []metav1.Condition{c("Stalled", F, "NotStalled")}, "Normal/StalledCleared"},
	} {
		var got []string
		for _, e := range transitionEvents(tc.old, tc.next) {
			got = append(got, fmt.Sprintf("%s/%s", e.Type, e.Reason))
		}
		if strings.Join(got, ",") != tc.want {
			t.Errorf("%s: events %v, want %q", tc.name, got, tc.want)
		}
	}
}

func TestPodListIsBoundedWorstFirst(t *testing.T) {
	var pods []podObservation
	for i := range 30 {
		pods = append(pods, podObservation{Name: fmt.Sprintf("p%02d", i), Ready: true, Current: true, Sample: sample(float64(i), 0, 0, float64(i*100))})
	}
	pods[5].Problem = podProblem{v1.ReasonCrashLoop, "pod p05: container worker keeps exiting"}
	list := podList(pods)
	if len(list) != maxPodsInStatus || list[0].Name != "p05" || list[0].Problem == "" || list[1].Name != "p29" ||
		list[1].OldestPendingAge != "2.9s" || list[19].Name != "p11" {
		t.Fatalf("pods %+v", list)
	}
}

func TestPercentAndAge(t *testing.T) {
	for in, want := range map[float64]int32{0: 0, 0.29: 29, 0.8: 80, 0.7999: 79, 0.95: 95, 1: 100, 1.5: 100, -1: 0} {
		if got := percent(in); got != want {
			t.Errorf("percent(%v) = %d, want %d", in, got, want)
		}
	}
	for in, want := range map[float64]string{0: "0s", 2500: "2.5s", 2549: "2.5s", 15000: "15s", 61234: "1m1.2s"} {
		if got := formatAge(in); got != want {
			t.Errorf("formatAge(%v) = %q, want %q", in, got, want)
		}
	}
}
