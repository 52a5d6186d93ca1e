package envtest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue/queuetest"
)

// queueDB is a real PostgreSQL database with the queue schema, and the
// Secret in the operated namespace that names it, as a pool's
// databaseSecretRef does.
type queueDB struct {
	q      *queue.Queue
	pool   *pgxpool.Pool
	secret string
}

func newQueueDB(t *testing.T, secret string) *queueDB {
	t.Helper()
	db := queuetest.New(t)
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: operatedNS}, StringData: map[string]string{"url": db.DSN}}
	if err := k8s.Create(ctx(t), s); err != nil {
		t.Fatal(err)
	}
	return &queueDB{q: db.Queue, pool: db.Pool, secret: secret}
}

func (d *queueDB) enqueue(t *testing.T, queueName string, n int) {
	t.Helper()
	steps := make([]queue.NewStep, n)
	for i := range steps {
		steps[i] = queue.NewStep{Queue: queueName, Handler: "noop"}
	}
	if _, err := d.q.Enqueue(context.Background(), steps); err != nil {
		t.Fatal(err)
	}
}

// The operator reads a pool's queues through its databaseSecretRef, also
// with no pod running, and shows the backlog and the oldest wait in the
// status and in kubectl get.
func TestStatusQueueFollowsTheQueue(t *testing.T) {
	db := newQueueDB(t, "backlog-db")
	wp := operatedPool("backlog")
	wp.Spec.Queue.Namespaces = []v1.QueueName{"orders", "invoices"}
	wp.Spec.Queue.DatabaseSecretRef.Name = db.secret
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	db.enqueue(t, "orders", 4)
	db.enqueue(t, "invoices", 3)
	db.enqueue(t, "someone-elses", 9)
	got := waitForStatus(t, wp, "backlog 7", func(w *v1.WorkerPool) bool { return w.Status.Queue != nil && w.Status.Queue.Backlog == 7 })
	if q := got.Status.Queue; q.BacklogCapped || q.OldestReadyAge == "" || q.MeasuredAt == nil {
		t.Errorf("status.queue %+v", q)
	}
	if cells := table(t, got); cells["Backlog"] != float64(7) || cells["Waited"] == "" {
		t.Errorf("kubectl get columns %v", cells)
	}
	if v := operatorMetric(t, "workerpool_queue_backlog", map[string]string{"workerpool": "backlog"}); v != 7 {
		t.Errorf("workerpool_queue_backlog = %v", v)
	}
	claimed, err := db.q.Claim(context.Background(), []string{"orders", "invoices"}, "test", 10, time.Hour)
	if err != nil || len(claimed) != 7 {
		t.Fatalf("claim: %v, %d", err, len(claimed))
	}
	waitForStatus(t, wp, "backlog 0", func(w *v1.WorkerPool) bool { return w.Status.Queue != nil && w.Status.Queue.Backlog == 0 })
}

// A pool at zero replicas (minReplicas 0) is woken by a ready step: the
// operator measured the queue itself, with no pod running.
func TestBacklogWakesAPoolAtZero(t *testing.T) {
	db := newQueueDB(t, "wake-db")
	wp := operatedPool("sleepy")
	wp.Spec.Replicas = nil
	wp.Spec.Queue.DatabaseSecretRef.Name = db.secret
	wp.Spec.Autoscaling = &v1.AutoscalingSpec{MinReplicas: ptr(int32(0)), MaxReplicas: 3, TargetBacklogPerReplica: ptr(int32(10))}
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "sleepy", Namespace: operatedNS}}
	waitForChild(t, dep)
	got := waitForStatus(t, wp, "at zero, scaling active", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionScalingActive).Status == metav1.ConditionTrue && w.Status.Autoscaling != nil
	})
	if *dep.Spec.Replicas != 0 || got.Status.Autoscaling.DesiredReplicas != 0 {
		t.Fatalf("an idle pool with minReplicas 0 starts at %d replicas (%+v)", *dep.Spec.Replicas, got.Status.Autoscaling)
	}
	db.enqueue(t, "payments", 5)
	eventually(t, "woken", 20*time.Second, func() (bool, string) {
		_ = k8s.Get(ctx(t), keyOf(dep), dep)
		return *dep.Spec.Replicas == 1, fmt.Sprint(*dep.Spec.Replicas)
	})
	got = waitForStatus(t, wp, "status says why", func(w *v1.WorkerPool) bool {
		return w.Status.Autoscaling != nil && w.Status.Autoscaling.DesiredReplicas == 1
	})
	if a := got.Status.Autoscaling; a.LastDecision != "backlog 5, target 10 per replica: 0 → 1" || a.LastScaleTime == nil {
		t.Errorf("status.autoscaling %+v", a)
	}
	if ev := waitForEvent(t, wp, "ScaledUp", corev1.EventTypeNormal); !strings.Contains(ev.Note, "0 → 1") {
		t.Errorf("ScaledUp event %q", ev.Note)
	}
}

// A queue the operator cannot read keeps the replica count and says why.
func TestUnreadableQueueKeepsTheCount(t *testing.T) {
	wp := operatedPool("blind")
	wp.Spec.Replicas = nil
	wp.Spec.Queue.DatabaseSecretRef.Name = "no-such-secret"
	wp.Spec.Autoscaling = &v1.AutoscalingSpec{MinReplicas: ptr(int32(2)), MaxReplicas: 5, TargetOldestReadyAge: "5s"}
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	got := waitForStatus(t, wp, "ScalingActive False", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionScalingActive).Reason == v1.ReasonBacklogUnavailable
	})
	if c := condition(got, v1.ConditionScalingActive); c.Status != metav1.ConditionFalse ||
		!strings.Contains(c.Message, "Secret operated/no-such-secret (spec.queue.databaseSecretRef) not found: keeping 2 replicas") {
		t.Errorf("ScalingActive %+v", c)
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "blind", Namespace: operatedNS}}
	waitForChild(t, dep)
	if *dep.Spec.Replicas != 2 {
		t.Errorf("replicas %d", *dep.Spec.Replicas)
	}
}

// Before scaling in, every pod read carries its handlers in flight as its
// deletion cost, so the ReplicaSet removes idle pods first.
func TestScaleInMarksIdlePodsFirst(t *testing.T) {
	db := newQueueDB(t, "scale-in-db")
	wp := operatedPool("shrinking")
	wp.Spec.Replicas = nil
	wp.Spec.Queue.DatabaseSecretRef.Name = db.secret
	// minReplicas 3 at first, so nothing scales in before every pod is read.
	wp.Spec.Autoscaling = &v1.AutoscalingSpec{MinReplicas: ptr(int32(3)), MaxReplicas: 3, TargetUtilizationPercent: ptr(int32(60)),
		Behavior: &v1.AutoscalingBehavior{ScaleDown: &v1.ScalingRules{StabilizationWindow: "0s",
			Policies: []v1.ScalingPolicy{{Type: "Pods", Value: 1, Period: "1s"}}}}}
	// Three pods, 30 handlers, 7 busy: about 23 %, well under 60 %.
	inFlight := map[string]float64{"shrinking-idle": 0, "shrinking-busy": 5, "shrinking-some": 2}
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "shrinking", Namespace: operatedNS}}
	waitForChild(t, dep)
	rollOut(t, wp, 3)
	ip := 91
	for name, n := range inFlight {
		e := startEndpoint(t, fmt.Sprintf("127.0.0.%d", ip))
		e.Set("tasker_dispatch_in_flight", n)
		addPod(t, wp, name, e.Addr)
		ip++
	}
	waitForStatus(t, wp, "every pod read", func(w *v1.WorkerPool) bool { return w.Status.Dispatch.Capacity == 30 })
	update(t, wp, func(w *v1.WorkerPool) { w.Spec.Autoscaling.MinReplicas = ptr(int32(1)) })
	eventually(t, "scaled in", 20*time.Second, func() (bool, string) {
		_ = k8s.Get(ctx(t), keyOf(dep), dep)
		return *dep.Spec.Replicas < 3, fmt.Sprint(*dep.Spec.Replicas)
	})
	for name, n := range inFlight {
		pod := &corev1.Pod{}
		if err := k8s.Get(ctx(t), client.ObjectKey{Namespace: operatedNS, Name: name}, pod); err != nil {
			t.Fatal(err)
		}
		if got, want := pod.Annotations["controller.kubernetes.io/pod-deletion-cost"], fmt.Sprint(n); got != want {
			t.Errorf("pod %s deletion cost %q, want %q", name, got, want)
		}
	}
}
