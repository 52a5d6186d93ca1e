package envtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/util/retry"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// eventually polls cond until it holds, failing the test with the last
// state it described once the deadline passes.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last state: %s", what, timeout, state)
		}
		<-tick.C
	}
}

// operatedPool is a minimal pool in the namespace the operator watches.
func operatedPool(name string) *v1.WorkerPool {
	wp := minimal(name)
	wp.Namespace = operatedNS
	return wp
}

func getPool(t *testing.T, wp *v1.WorkerPool) *v1.WorkerPool {
	t.Helper()
	got := &v1.WorkerPool{}
	if err := k8s.Get(context.Background(), keyOf(wp), got); err != nil {
		t.Fatal(err)
	}
	return got
}

func condition(wp *v1.WorkerPool, typ string) metav1.Condition {
	if c := meta.FindStatusCondition(wp.Status.Conditions, typ); c != nil {
		return *c
	}
	return metav1.Condition{Type: typ, Status: "absent"}
}

// waitForStatus waits until the pool's status satisfies ok.
func waitForStatus(t *testing.T, wp *v1.WorkerPool, what string, ok func(*v1.WorkerPool) bool) *v1.WorkerPool {
	t.Helper()
	var got *v1.WorkerPool
	eventually(t, what, 20*time.Second, func() (bool, string) {
		got = getPool(t, wp)
		return ok(got), fmt.Sprintf("%+v", got.Status)
	})
	return got
}

// waitForChild waits until the operator created obj (found by its name).
func waitForChild(t *testing.T, obj client.Object) {
	t.Helper()
	eventually(t, fmt.Sprintf("%T %s created", obj, obj.GetName()), 20*time.Second, func() (bool, string) {
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
		return err == nil, fmt.Sprint(err)
	})
}

// rollOut plays the Deployment controller (envtest runs none): the pool's
// Deployment reports n replicas, all updated, ready and available.
func rollOut(t *testing.T, wp *v1.WorkerPool, n int32) {
	t.Helper()
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: wp.Name, Namespace: wp.Namespace}}
	waitForChild(t, dep)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(context.Background(), keyOf(dep), dep); err != nil {
			return err
		}
		dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n,
			AvailableReplicas: n, Conditions: []appsv1.DeploymentCondition{
				{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable", LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now()},
				{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: "NewReplicaSetAvailable", LastUpdateTime: metav1.Now(), LastTransitionTime: metav1.Now()},
			}}
		return k8s.Status().Update(context.Background(), dep)
	})
	if err != nil {
		t.Fatalf("roll out Deployment: %v", err)
	}
}

// addPod plays the ReplicaSet and the kubelet: a pod of the pool on the
// Deployment's current template, Running and Ready, whose IP and "metrics"
// port are where a real metrics endpoint listens.
func addPod(t *testing.T, wp *v1.WorkerPool, name string, addr *net.TCPAddr) *corev1.Pod {
	t.Helper()
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: wp.Name, Namespace: wp.Namespace}}
	waitForChild(t, dep)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: wp.Namespace, Labels: map[string]string{v1.PoolLabel: wp.Name},
			Annotations: map[string]string{v1.TemplateHashAnnotation: dep.Spec.Template.Annotations[v1.TemplateHashAnnotation]}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "worker", Image: wp.Spec.Image,
			Ports: []corev1.ContainerPort{{Name: v1.MetricsPortName, ContainerPort: int32(addr.Port)}}}}},
	}
	if err := k8s.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), pod, client.GracePeriodSeconds(0)) })
	setPodReady(t, pod, addr.IP.String(), true)
	return pod
}

func setPodReady(t *testing.T, pod *corev1.Pod, ip string, ready bool) {
	t.Helper()
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(context.Background(), keyOf(pod), pod); err != nil {
			return err
		}
		pod.Status.Phase, pod.Status.PodIP, pod.Status.PodIPs = corev1.PodRunning, ip, []corev1.PodIP{{IP: ip}}
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status, LastTransitionTime: metav1.Now()}}
		return k8s.Status().Update(context.Background(), pod)
	})
	if err != nil {
		t.Fatalf("set pod %s ready=%v: %v", pod.Name, ready, err)
	}
}

// moveToCurrentTemplate plays a rollout for pod: it now runs the
// Deployment's current template.
func moveToCurrentTemplate(t *testing.T, wp *v1.WorkerPool, pod *corev1.Pod) {
	t.Helper()
	dep := &appsv1.Deployment{}
	if err := k8s.Get(context.Background(), keyOf(wp), dep); err != nil {
		t.Fatal(err)
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(context.Background(), keyOf(pod), pod); err != nil {
			return err
		}
		pod.Annotations[v1.TemplateHashAnnotation] = dep.Spec.Template.Annotations[v1.TemplateHashAnnotation]
		return k8s.Update(context.Background(), pod)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// mountedConfigMap is the worker.toml ConfigMap the pool's Deployment
// mounts, once the operator created both.
func mountedConfigMap(t *testing.T, wp *v1.WorkerPool) *corev1.ConfigMap {
	t.Helper()
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: wp.Name, Namespace: wp.Namespace}}
	waitForChild(t, dep)
	for _, vol := range dep.Spec.Template.Spec.Volumes {
		if vol.ConfigMap != nil {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: vol.ConfigMap.Name, Namespace: wp.Namespace}}
			waitForChild(t, cm)
			return cm
		}
	}
	t.Fatalf("Deployment %s mounts no ConfigMap", wp.Name)
	return nil
}

// kstatusOf is what kstatus (sigs.k8s.io/cli-utils, as Flux, Argo CD and
// kpt use it) computes for the pool as the API server serves it now.
func kstatusOf(t *testing.T, wp *v1.WorkerPool) *kstatus.Result {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(v1.GroupVersion.WithKind("WorkerPool"))
	if err := k8s.Get(context.Background(), keyOf(wp), u); err != nil {
		t.Fatal(err)
	}
	res, err := kstatus.Compute(u)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// metricsEndpoint is a real Prometheus endpoint serving the worker metrics
// the operator reads, with values the test sets.
type metricsEndpoint struct {
	Addr     *net.TCPAddr
	gauges   map[string]prometheus.Gauge
	srv      *http.Server
	once     sync.Once
	requests atomic.Int64
}

var workerGauges = []string{"tasker_dispatch_in_flight", "tasker_dispatch_capacity", "tasker_channel_completion_saturation",
	"tasker_ffi_pending_events", "tasker_ffi_oldest_event_age_ms", "tasker_ffi_starving_events",
	"tasker_ffi_unpolled_events", "tasker_ffi_oldest_unpolled_age_ms",
	"tasker_callback_timeouts_total", "tasker_semaphore_acquisition_failures_total"}

// startEndpoint listens on ip (a 127.0.0.0/8 address) and serves the page
// until the test ends or Stop is called.
func startEndpoint(t *testing.T, ip string) *metricsEndpoint {
	t.Helper()
	reg := prometheus.NewRegistry()
	e := &metricsEndpoint{gauges: map[string]prometheus.Gauge{}}
	for _, name := range workerGauges {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: name})
		reg.MustRegister(g)
		e.gauges[name] = g
	}
	e.Set("tasker_dispatch_capacity", 10)
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	e.Addr = ln.Addr().(*net.TCPAddr)
	page := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	e.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.requests.Add(1)
		page.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := e.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("metrics endpoint %s: %v", e.Addr, err)
		}
	}()
	t.Cleanup(e.Stop)
	return e
}

// Set sets one metric.
func (e *metricsEndpoint) Set(name string, v float64) { e.gauges[name].Set(v) }

// Requests is how many times the page was read.
func (e *metricsEndpoint) Requests() int64 { return e.requests.Load() }

// Stop closes the endpoint: later scrapes get "connection refused".
func (e *metricsEndpoint) Stop() { e.once.Do(func() { _ = e.srv.Close() }) }

// freeAddr returns a free TCP port on ip.
func freeAddr(t *testing.T, ip string) *net.TCPAddr {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a := ln.Addr().(*net.TCPAddr)
	return &net.TCPAddr{IP: a.IP, Port: a.Port}
}

func hostPort(a *net.TCPAddr) string { return net.JoinHostPort(a.IP.String(), strconv.Itoa(a.Port)) }

// poolEvents returns the reasons of the events recorded on the pool.
func poolEvents(t *testing.T, wp *v1.WorkerPool) map[string]eventsv1.Event {
	t.Helper()
	list := &eventsv1.EventList{}
	if err := k8s.List(context.Background(), list, client.InNamespace(wp.Namespace)); err != nil {
		t.Fatal(err)
	}
	out := map[string]eventsv1.Event{}
	for _, e := range list.Items {
		if e.Regarding.Name == wp.Name && e.Regarding.Kind == "WorkerPool" {
			out[e.Reason] = e
		}
	}
	return out
}

// waitForEvent waits until the pool has an event with this reason.
func waitForEvent(t *testing.T, wp *v1.WorkerPool, reason, eventType string) eventsv1.Event {
	t.Helper()
	var ev eventsv1.Event
	eventually(t, "event "+reason, 20*time.Second, func() (bool, string) {
		evs := poolEvents(t, wp)
		e, ok := evs[reason]
		ev = e
		return ok, fmt.Sprintf("events %v", keys(evs))
	})
	if ev.Type != eventType {
		t.Errorf("event %s has type %s, want %s", reason, ev.Type, eventType)
	}
	return ev
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
