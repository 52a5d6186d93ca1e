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
	"k8s.io/utils/ptr"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

func testPool() *v1.WorkerPool {
	return &v1.WorkerPool{
		ObjectMeta: metav1.ObjectMeta{Name: "payments", Namespace: "shop", Generation: 4},
		Spec: v1.WorkerPoolSpec{
			Replicas: ptr.To(int32(2)),
			Dispatch: v1.DispatchSpec{SaturationWarningPercent: 80, SaturationCriticalPercent: 95},
			FFI:      v1.FFISpec{Enabled: true, StarvationWarningThreshold: "10s", CompletionTimeout: "30s"},
		},
	}
}

// rolledOut is a Deployment whose rollout finished with n available pods.
func rolledOut(n int32) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Generation: 3},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n,
			Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue}}},
	}
}

func sample(inFlight, sat, pending, oldestMs float64) *podSample {
	return &podSample{InFlight: inFlight, Capacity: 10, CompletionSaturation: sat, PendingEvents: pending, OldestPendingAgeMs: oldestMs}
}

func cond(t *testing.T, st v1.WorkerPoolStatus, typ string) metav1.Condition {
	t.Helper()
	c := meta.FindStatusCondition(st.Conditions, typ)
	if c == nil {
		t.Fatalf("no %s condition in %+v", typ, st.Conditions)
	}
	return *c
}

var now = metav1.NewTime(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))

func TestComputeStatusAggregatesReadyPods(t *testing.T) {
	pool := testPool()
	st := computeStatus(pool, observation{Deployment: rolledOut(2), Now: now, Pods: []podObservation{
		{Name: "a", Ready: true, Sample: &podSample{InFlight: 3, Capacity: 10, CompletionSaturation: 0.12, PendingEvents: 4,
			OldestPendingAgeMs: 2500, StarvingEvents: 0, CallbackTimeouts: 2, SemaphoreFailures: 1}},
		{Name: "b", Ready: true, Sample: &podSample{InFlight: 5, Capacity: 10, CompletionSaturation: 0.29, PendingEvents: 1,
			OldestPendingAgeMs: 900, CallbackTimeouts: 3}},
		{Name: "c", Ready: false}, // not ready: listed, not counted
	}})
	if st.ObservedGeneration != 4 || st.Replicas != 2 || st.ReadyReplicas != 2 || st.UpdatedReplicas != 2 ||
		st.Selector != "workers.tasker.dev/pool=payments" {
		t.Fatalf("replica fields %+v", st)
	}
	if st.Dispatch != (v1.DispatchStatus{InFlight: 8, Capacity: 20, CompletionSaturationPercent: 29}) {
		t.Fatalf("dispatch %+v", st.Dispatch)
	}
	if st.FFI != (v1.FFIStatus{PendingEvents: 5, OldestPendingAge: "2.5s"}) || st.CallbackTimeouts != 5 || st.SemaphoreAcquisitionFailures != 1 {
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
	if c := cond(t, st, v1.ConditionReady); c.Status != metav1.ConditionTrue || c.Reason != v1.ReasonPoolReady {
		t.Errorf("Ready %+v", c)
	}
	if c := cond(t, st, v1.ConditionMetricsAvailable); c.Status != metav1.ConditionTrue || c.Message != "read metrics from all 2 ready pods" {
		t.Errorf("MetricsAvailable %+v", c)
	}
}

func TestStarvingFollowsTheThreshold(t *testing.T) {
	for _, tc := range []struct {
		name     string
		enabled  bool
		oldestMs float64
		status   metav1.ConditionStatus
		reason   string
	}{
		{"under", true, 9999, metav1.ConditionFalse, v1.ReasonPollingKeepsUp},
		{"at the threshold is not over it", true, 10000, metav1.ConditionFalse, v1.ReasonPollingKeepsUp},
		{"over", true, 12000, metav1.ConditionTrue, v1.ReasonEventsStarving},
		{"FFI disabled", false, 12000, metav1.ConditionFalse, v1.ReasonFFIDisabled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pool := testPool()
			pool.Spec.FFI.Enabled = tc.enabled
			st := computeStatus(pool, observation{Deployment: rolledOut(1), Now: now,
				Pods: []podObservation{{Name: "slow-pod", Ready: true, Sample: sample(0, 0, 3, tc.oldestMs)}}})
			c := cond(t, st, v1.ConditionStarving)
			if c.Status != tc.status || c.Reason != tc.reason {
				t.Fatalf("Starving %+v", c)
			}
			if tc.status == metav1.ConditionTrue && !strings.Contains(c.Message, "12s on pod slow-pod (threshold 10s)") {
				t.Errorf("message does not name the pod, age and threshold: %q", c.Message)
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
		st := computeStatus(testPool(), observation{Deployment: rolledOut(2), Now: now, Pods: []podObservation{
			{Name: "calm", Ready: true, Sample: sample(0, 0.1, 0, 0)},
			{Name: "busy", Ready: true, Sample: sample(0, tc.sat, 0, 0)}}})
		c := cond(t, st, v1.ConditionBackpressure)
		if c.Status != tc.status || c.Reason != tc.reason {
			t.Errorf("saturation %v: Backpressure %s/%s, want %s/%s", tc.sat, c.Status, c.Reason, tc.status, tc.reason)
		}
		if !strings.Contains(c.Message, "on pod busy") {
			t.Errorf("message does not name the fullest pod: %q", c.Message)
		}
	}
}

func TestScrapeFailuresNameThePods(t *testing.T) {
	st := computeStatus(testPool(), observation{Deployment: rolledOut(3), Now: now, Pods: []podObservation{
		{Name: "ok", Ready: true, Sample: sample(1, 0.5, 0, 0)},
		{Name: "dead-1", Ready: true, Err: errors.New("connection refused")},
		{Name: "dead-2", Ready: true, Err: errors.New("no answer within 2s")}}})
	c := cond(t, st, v1.ConditionMetricsAvailable)
	if c.Status != metav1.ConditionFalse || c.Reason != v1.ReasonScrapeFailed ||
		c.Message != "2 of 3 ready pods could not be read: dead-1 (connection refused); dead-2 (no answer within 2s)" {
		t.Fatalf("MetricsAvailable %+v", c)
	}
	if r := cond(t, st, v1.ConditionReady); r.Status != metav1.ConditionFalse || r.Reason != v1.ReasonScrapeFailed {
		t.Errorf("Ready %+v", r)
	}
	// The figures come from the pods that answered.
	if st.Dispatch.InFlight != 1 || st.Dispatch.CompletionSaturationPercent != 50 {
		t.Errorf("dispatch %+v", st.Dispatch)
	}
	if st.Pods[0].Name != "dead-1" || st.Pods[0].ScrapeError != "connection refused" {
		t.Errorf("failing pods not listed first with their error: %+v", st.Pods)
	}
	// Nobody answered: the metric conditions are Unknown, not a guess.
	st = computeStatus(testPool(), observation{Deployment: rolledOut(1), Now: now,
		Pods: []podObservation{{Name: "dead", Ready: true, Err: errors.New("refused")}}})
	for _, typ := range []string{v1.ConditionStarving, v1.ConditionBackpressure} {
		if c := cond(t, st, typ); c.Status != metav1.ConditionUnknown || c.Reason != v1.ReasonScrapeFailed {
			t.Errorf("%s %+v", typ, c)
		}
	}
	if st.LastScrapeTime != nil || st.FFI.OldestPendingAge != "" {
		t.Errorf("a pass that read nothing set figures: %+v", st)
	}
}

func TestNoReadyPodsAndRollouts(t *testing.T) {
	pool := testPool()
	st := computeStatus(pool, observation{Now: now})
	if c := cond(t, st, v1.ConditionAvailable); c.Status != metav1.ConditionFalse {
		t.Errorf("Available without a Deployment: %+v", c)
	}
	if c := cond(t, st, v1.ConditionMetricsAvailable); c.Status != metav1.ConditionUnknown || c.Reason != v1.ReasonNoReadyPods {
		t.Errorf("MetricsAvailable %+v", c)
	}
	rolling := rolledOut(2)
	rolling.Status.UpdatedReplicas = 1
	rolling.Status.Replicas = 3
	st = computeStatus(pool, observation{Deployment: rolling, Now: now})
	if c := cond(t, st, v1.ConditionProgressing); c.Status != metav1.ConditionTrue || c.Reason != v1.ReasonRollingOut || c.Message != "1 of 2 replicas updated" {
		t.Errorf("Progressing %+v", c)
	}
	if c := cond(t, st, v1.ConditionReady); c.Status != metav1.ConditionFalse || c.Reason != v1.ReasonRollingOut {
		t.Errorf("Ready during a rollout %+v", c)
	}
	stalled := rolledOut(2)
	stalled.Status.Conditions = append(stalled.Status.Conditions, appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing,
		Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded", Message: `ReplicaSet "x" has timed out progressing.`})
	st = computeStatus(pool, observation{Deployment: stalled, Now: now})
	if c := cond(t, st, v1.ConditionReady); c.Status != metav1.ConditionFalse || c.Reason != v1.ReasonProgressDeadlineExceeded {
		t.Errorf("Ready on a stalled rollout %+v", c)
	}
	st = computeStatus(pool, observation{Deployment: rolledOut(2), ConfigErr: errors.New("worker.mpsc_channels... bad"), Now: now})
	if c := cond(t, st, v1.ConditionReady); c.Status != metav1.ConditionFalse || c.Reason != v1.ReasonInvalidSpec {
		t.Errorf("Ready with an invalid spec %+v", c)
	}
}

func TestConditionsKeepTransitionTimes(t *testing.T) {
	pool := testPool()
	obs := observation{Deployment: rolledOut(1), Now: now, Pods: []podObservation{{Name: "a", Ready: true, Sample: sample(0, 0.9, 0, 0)}}}
	pool.Status = computeStatus(pool, obs)
	first := cond(t, pool.Status, v1.ConditionBackpressure).LastTransitionTime
	obs.Now = metav1.NewTime(now.Add(time.Minute))
	next := computeStatus(pool, obs)
	if got := cond(t, next, v1.ConditionBackpressure).LastTransitionTime; !got.Equal(&first) {
		t.Fatalf("unchanged condition moved its transition time: %v → %v", first, got)
	}
	if statusNeedsWrite(pool.Status, next) {
		t.Error("a pass that changed only lastScrapeTime wants a status write")
	}
	obs.Now = metav1.NewTime(now.Add(statusHeartbeat))
	if !statusNeedsWrite(pool.Status, computeStatus(pool, obs)) {
		t.Error("lastScrapeTime never refreshed past the heartbeat")
	}
	obs.Pods[0].Sample = sample(1, 0.9, 0, 0)
	obs.Now = metav1.NewTime(now.Add(time.Minute))
	if !statusNeedsWrite(pool.Status, computeStatus(pool, obs)) {
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
		{"healthy start is quiet", nil, []metav1.Condition{c("Starving", F, "PollingKeepsUp"), c("Backpressure", F, "Normal")}, ""},
		{"starving appears", []metav1.Condition{c("Starving", F, "PollingKeepsUp")}, []metav1.Condition{c("Starving", T, "EventsStarving")}, "Warning/Starving"},
		{"starving clears", []metav1.Condition{c("Starving", T, "EventsStarving")}, []metav1.Condition{c("Starving", F, "PollingKeepsUp")}, "Normal/StarvingCleared"},
		{"warning to critical", []metav1.Condition{c("Backpressure", T, "Warning")}, []metav1.Condition{c("Backpressure", T, "Critical")}, "Warning/BackpressureCritical"},
		{"critical back to warning", []metav1.Condition{c("Backpressure", T, "Critical")}, []metav1.Condition{c("Backpressure", T, "Warning")}, "Warning/BackpressureWarning"},
		{"backpressure clears", []metav1.Condition{c("Backpressure", T, "Warning")}, []metav1.Condition{c("Backpressure", F, "Normal")}, "Normal/BackpressureCleared"},
		{"to unknown is quiet", []metav1.Condition{c("Backpressure", T, "Warning")}, []metav1.Condition{c("Backpressure", U, "ScrapeFailed")}, ""},
		{"unknown to true is news", []metav1.Condition{c("Starving", U, "NoReadyPods")}, []metav1.Condition{c("Starving", T, "EventsStarving")}, "Warning/Starving"},
		{"no change is quiet", []metav1.Condition{c("Backpressure", T, "Warning")}, []metav1.Condition{c("Backpressure", T, "Warning")}, ""},
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
		pods = append(pods, podObservation{Name: fmt.Sprintf("p%02d", i), Ready: true, Sample: sample(float64(i), 0, 0, float64(i*100))})
	}
	list := podList(pods)
	if len(list) != maxPodsInStatus || list[0].Name != "p29" || list[0].OldestPendingAge != "2.9s" || list[19].Name != "p10" {
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
