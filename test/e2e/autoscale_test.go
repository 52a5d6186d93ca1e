//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// burstSteps is the burst of sleep steps the autoscaling scenario drains.
const (
	burstSteps = 20000
	burstSleep = `{"ms":50}`
)

// deploymentReplicas is the replica count the operator set on the pool's
// Deployment.
func deploymentReplicas(t *testing.T, ns, name string) int32 {
	t.Helper()
	dep := &appsv1.Deployment{}
	if err := e.k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, dep); err != nil {
		t.Fatal(err)
	}
	return *dep.Spec.Replicas
}

// stepsRunMoreThanOnce counts the queue's steps that were attempted more
// than once: a step interrupted by a scale-in would be.
func (e *env) stepsRunMoreThanOnce(t *testing.T, queueName string) int64 {
	t.Helper()
	var n int64
	if err := e.db.QueryRow(context.Background(), `SELECT count(*) FROM tasker_steps WHERE queue = $1 AND attempts > 1`, queueName).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// autoscaledBurst: a burst of 20 000 sleep steps of 50 ms onto a pool with
// minReplicas 1 and maxReplicas 4. It measures the time from the burst to
// the first scale decision and to all replicas Ready, and the drain time
// against the same burst on one fixed replica; after the burst the pool
// scales in again with no step run twice and none lost.
func autoscaledBurst(t *testing.T, ns string) {
	drain := func(q string) time.Duration {
		start := time.Now()
		e.enqueue(t, q, "sleep", burstSleep, burstSteps)
		e.waitDrained(t, q, burstSteps, 10*time.Minute)
		return time.Since(start)
	}

	fixed := workerPool(ns, "burst-fixed", "burst-fixed")
	kubectlApply(t, e.poolManifest(t, fixed))
	e.waitPool(t, ns, "burst-fixed", "Ready", 3*time.Minute, ready)
	fixedDrain := drain("burst-fixed")
	kubectl(t, "delete", "wp", "burst-fixed", "-n", ns, "--wait=true", "--timeout=2m")

	wp := workerPool(ns, "burst", "burst")
	wp.Spec.Replicas = nil
	wp.Spec.Autoscaling = &v1.AutoscalingSpec{MinReplicas: ptr(int32(1)), MaxReplicas: 4, TargetOldestReadyAge: "5s",
		TargetBacklogPerReplica: ptr(int32(1000)), TargetUtilizationPercent: ptr(int32(70)),
		Behavior: &v1.AutoscalingBehavior{ScaleDown: &v1.ScalingRules{StabilizationWindow: "30s"}}}
	kubectlApply(t, e.poolManifest(t, wp))
	e.waitPool(t, ns, "burst", "Ready at one replica", 3*time.Minute, func(w *v1.WorkerPool) bool {
		return ready(w) && w.Status.ReadyReplicas == 1 && cond(w, v1.ConditionScalingActive).Status == metav1.ConditionTrue
	})

	start := time.Now()
	e.enqueue(t, "burst", "sleep", burstSleep, burstSteps)
	var firstDecision, allReady time.Duration
	eventually(t, "first scale decision", time.Minute, func() (bool, string) {
		n := deploymentReplicas(t, ns, "burst")
		firstDecision = time.Since(start)
		return n > 1, fmt.Sprint(n)
	})
	got := e.waitPool(t, ns, "burst", "4 replicas Ready", 3*time.Minute, func(w *v1.WorkerPool) bool { return w.Status.ReadyReplicas == 4 })
	allReady = time.Since(start)
	t.Logf("burst: first decision after %s (%s), 4 replicas Ready after %s", firstDecision.Round(100*time.Millisecond),
		got.Status.Autoscaling.LastDecision, allReady.Round(100*time.Millisecond))
	e.waitDrained(t, "burst", burstSteps, 10*time.Minute)
	autoDrain := time.Since(start)
	t.Logf("burst of %d sleep steps of 50 ms drained in %s autoscaled (1 → 4), %s on one fixed replica: %.2fx faster",
		burstSteps, autoDrain.Round(100*time.Millisecond), fixedDrain.Round(100*time.Millisecond), fixedDrain.Seconds()/autoDrain.Seconds())
	if firstDecision > 5*time.Second {
		t.Errorf("first scale decision %s after the burst, goal 5s", firstDecision)
	}

	// Scale-in once idle: back to one replica; nothing ran twice.
	e.waitPool(t, ns, "burst", "scaled in to 1", 3*time.Minute, func(w *v1.WorkerPool) bool {
		return w.Status.Autoscaling != nil && w.Status.Autoscaling.DesiredReplicas == 1 && w.Status.ReadyReplicas == 1
	})
	if n := e.stepsRunMoreThanOnce(t, "burst"); n != 0 {
		t.Errorf("%d steps ran more than once", n)
	}
	t.Logf("scale-in after the burst: %d steps run more than once, %d completed of %d", e.stepsRunMoreThanOnce(t, "burst"), e.completed(t, "burst"), burstSteps)
	kubectl(t, "delete", "wp", "burst", "-n", ns, "--wait=true", "--timeout=2m")
}

// autoscaledSteadyLoad: steady load at about half the utilisation target for
// two minutes changes the replica count at most once.
func autoscaledSteadyLoad(t *testing.T, ns string) {
	wp := workerPool(ns, "steady", "steady")
	wp.Spec.Replicas = nil
	wp.Spec.Dispatch.MaxConcurrentHandlers = 10
	wp.Spec.Autoscaling = &v1.AutoscalingSpec{MinReplicas: ptr(int32(1)), MaxReplicas: 4, TargetUtilizationPercent: ptr(int32(60))}
	kubectlApply(t, e.poolManifest(t, wp))
	e.waitPool(t, ns, "steady", "Ready", 3*time.Minute, ready)

	// 200 ms steps at 15 per second keep about 3 of 10 handlers busy: 30 %.
	changes, last := 0, deploymentReplicas(t, ns, "steady")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	sent := 0
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			e.enqueue(t, "steady", "sleep", `{"ms":200}`, 3)
			sent += 3
			if n := deploymentReplicas(t, ns, "steady"); n != last {
				changes++
				t.Logf("steady load: replicas %d → %d", last, n)
				last = n
			}
		}
	}
	got := e.pool(t, ns, "steady")
	t.Logf("steady load at about half the utilisation target for 2m (%d steps): %d scale changes; %s", sent, changes, summary(got))
	if changes > 1 {
		t.Errorf("%d scale changes under steady load (at most 1)", changes)
	}
	e.waitDrained(t, "steady", int64(sent), 3*time.Minute)
	kubectl(t, "delete", "wp", "steady", "-n", ns, "--wait=true", "--timeout=2m")
}

// autoscaledToZero: an idle pool with minReplicas 0 goes to zero after its
// idle period; one new step wakes it and completes.
func autoscaledToZero(t *testing.T, ns string) {
	wp := workerPool(ns, "napper", "napper")
	wp.Spec.Replicas = nil
	wp.Spec.Autoscaling = &v1.AutoscalingSpec{MinReplicas: ptr(int32(0)), MaxReplicas: 2, TargetBacklogPerReplica: ptr(int32(100)),
		Behavior: &v1.AutoscalingBehavior{ScaleToZeroAfter: "20s"}}
	kubectlApply(t, e.poolManifest(t, wp))
	// A new pool starts at its minimum: zero. Wake it, let it finish, let it sleep.
	e.enqueue(t, "napper", "noop", `{}`, 1)
	e.waitDrained(t, "napper", 1, 3*time.Minute)
	e.waitPool(t, ns, "napper", "back to zero after 20s idle", 3*time.Minute, func(w *v1.WorkerPool) bool {
		return w.Status.Autoscaling != nil && w.Status.Autoscaling.DesiredReplicas == 0 && len(poolPods(t, ns, "napper")) == 0
	})
	start := time.Now()
	e.enqueue(t, "napper", "noop", `{}`, 1)
	e.waitDrained(t, "napper", 2, 3*time.Minute)
	t.Logf("scale to zero: one step woke the pool and completed %s after it was enqueued", time.Since(start).Round(100*time.Millisecond))
	kubectl(t, "delete", "wp", "napper", "-n", ns, "--wait=true", "--timeout=2m")
}
