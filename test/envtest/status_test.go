package envtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"fmt"

	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
	"github.com/seed-a17b38e7/workerpool-operator/internal/config"
	"github.com/seed-a17b38e7/workerpool-operator/internal/pgtest"
	"github.com/seed-a17b38e7/workerpool-operator/internal/queue"
)

// The pool's status and conditions follow what its pods' metrics
// endpoints report: aggregates, Starving appearing and clearing,
// Backpressure Warning then Critical, MetricsAvailable naming a pod that
// stops answering. Each transition of Starving and Backpressure is an event.
func TestStatusFollowsThePodsMetrics(t *testing.T) {
	wp := operatedPool("observed")
	wp.Spec.Replicas = ptr(int32(2))
	wp.Spec.FFI.Enabled = true
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	a, b := startEndpoint(t, "127.0.0.21"), startEndpoint(t, "127.0.0.22")
	a.Set("tasker_dispatch_in_flight", 3)
	b.Set("tasker_dispatch_in_flight", 4)
	a.Set("tasker_channel_completion_saturation", 0.10)
	a.Set("tasker_ffi_pending_events", 2)
	a.Set("tasker_ffi_oldest_event_age_ms", 1500)
	b.Set("tasker_ffi_pending_events", 1)
	b.Set("tasker_callback_timeouts_total", 2)
	b.Set("tasker_semaphore_acquisition_failures_total", 1)
	rollOut(t, wp, 2)
	addPod(t, wp, "observed-a", a.Addr)
	addPod(t, wp, "observed-b", b.Addr)

	got := waitForStatus(t, wp, "aggregates from both pods", func(w *v1.WorkerPool) bool {
		return w.Status.Dispatch.Capacity == 20 && condition(w, v1.ConditionReady).Status == metav1.ConditionTrue
	})
	st := got.Status
	if st.Dispatch != (v1.DispatchStatus{InFlight: 7, Capacity: 20, CompletionSaturationPercent: 10}) ||
		st.FFI != (v1.FFIStatus{PendingEvents: 3, OldestPendingAge: "1.5s", OldestUnpolledAge: "0s"}) || st.CallbackTimeouts != 2 ||
		st.SemaphoreAcquisitionFailures != 1 || st.ReadyReplicas != 2 || st.LastScrapeTime == nil || len(st.Pods) != 2 ||
		st.Pods[0].Name != "observed-a" || st.ObservedGeneration != got.Generation {
		t.Fatalf("status %+v", st)
	}
	for typ, want := range map[string]metav1.ConditionStatus{v1.ConditionAvailable: "True", v1.ConditionProgressing: "False",
		v1.ConditionMetricsAvailable: "True", v1.ConditionStarving: "False", v1.ConditionBackpressure: "False"} {
		if c := condition(got, typ); c.Status != want || c.ObservedGeneration != got.Generation {
			t.Errorf("%s %+v, want %s", typ, c, want)
		}
	}
	cells := table(t, got)
	if cells["Ready"] != "True" || cells["Replicas"] != "2" || cells["Pending"] != float64(3) || cells["Oldest"] != "1.5s" ||
		cells["Saturation"] != float64(10) || cells["InFlight"] != float64(7) || cells["Starving"] != "False" {
		t.Errorf("kubectl get columns %v", cells)
	}

	// Starving appears on the pod whose oldest event passes the threshold (10s)...
	b.Set("tasker_ffi_oldest_event_age_ms", 12000)
	b.Set("tasker_ffi_starving_events", 1)
	got = waitForStatus(t, wp, "Starving=True", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionStarving).Status == metav1.ConditionTrue
	})
	if c := condition(got, v1.ConditionStarving); c.Reason != v1.ReasonEventsStarving || !strings.Contains(c.Message, "12s on pod observed-b (threshold 10s)") {
		t.Errorf("Starving %+v", c)
	}
	if got.Status.FFI.StarvingEvents != 1 || got.Status.FFI.OldestPendingAge != "12s" || got.Status.Pods[0].Name != "observed-b" {
		t.Errorf("status while starving %+v", got.Status)
	}
	waitForEvent(t, wp, "Starving", corev1.EventTypeWarning)
	if v := conditionMetric(t, "observed", v1.ConditionStarving, "True"); v != 1 {
		t.Errorf("workerpool_status_condition{type=Starving,status=True} = %v", v)
	}
	// ... and clears when the pollers catch up.
	b.Set("tasker_ffi_oldest_event_age_ms", 0)
	b.Set("tasker_ffi_starving_events", 0)
	waitForStatus(t, wp, "Starving=False", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionStarving).Status == metav1.ConditionFalse
	})
	waitForEvent(t, wp, "StarvingCleared", corev1.EventTypeNormal)

	// Backpressure: Warning at 80 %, Critical at 95 %.
	a.Set("tasker_channel_completion_saturation", 0.85)
	got = waitForStatus(t, wp, "Backpressure Warning", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionBackpressure).Reason == v1.ReasonSaturationWarning
	})
	if c := condition(got, v1.ConditionBackpressure); c.Status != metav1.ConditionTrue || got.Status.Dispatch.CompletionSaturationPercent != 85 {
		t.Errorf("Backpressure %+v saturation %d", c, got.Status.Dispatch.CompletionSaturationPercent)
	}
	waitForEvent(t, wp, "BackpressureWarning", corev1.EventTypeWarning)
	a.Set("tasker_channel_completion_saturation", 0.97)
	waitForStatus(t, wp, "Backpressure Critical", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionBackpressure).Reason == v1.ReasonSaturationCritical
	})
	waitForEvent(t, wp, "BackpressureCritical", corev1.EventTypeWarning)
	a.Set("tasker_channel_completion_saturation", 0.2)
	waitForStatus(t, wp, "Backpressure cleared", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionBackpressure).Status == metav1.ConditionFalse
	})
	waitForEvent(t, wp, "BackpressureCleared", corev1.EventTypeNormal)

	// A pod that stops answering is named; its last sample counts while it
	// is recent, then the pool's figures leave it out. One unreadable pod
	// does not make the pool not Ready.
	b.Stop()
	got = waitForStatus(t, wp, "observed-b unreadable", func(w *v1.WorkerPool) bool {
		return w.Status.Dispatch.Capacity == 10 && len(w.Status.Pods) > 0 && w.Status.Pods[0].ScrapeError != ""
	})
	if c := condition(got, v1.ConditionMetricsAvailable); c.Status != metav1.ConditionTrue || c.Reason != v1.ReasonPartialScrape ||
		!strings.HasPrefix(c.Message, "read 1 of 2 ready pods") || !strings.Contains(c.Message, "1 unreadable: observed-b (") {
		t.Errorf("MetricsAvailable %+v", c)
	}
	if c := condition(got, v1.ConditionReady); c.Status != metav1.ConditionTrue {
		t.Errorf("Ready %+v", c)
	}
	if got.Status.Dispatch.Capacity != 10 || got.Status.Pods[0].Name != "observed-b" || got.Status.Pods[0].ScrapeError == "" {
		t.Errorf("status with one pod unreadable %+v", got.Status)
	}
	if v := scrapeErrorsMetric(t, "observed"); v < 1 {
		t.Errorf("workerpool_scrape_errors_total = %v", v)
	}
}

// Ready follows the template, not the replica count: scaling keeps it True
// (its transition time does not move), while a template change makes it
// False for the new generation until every pod runs the new template, even
// though the Deployment's status, read before the Deployment controller saw
// the change, says everything is rolled out.
func TestReadyThroughScaleAndRollout(t *testing.T) {
	wp := operatedPool("steady")
	wp.Spec.Replicas = ptr(int32(3))
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	rollOut(t, wp, 3)
	var pods []*corev1.Pod
	for i := range 3 {
		pods = append(pods, addPod(t, wp, fmt.Sprintf("steady-%d", i), startEndpoint(t, fmt.Sprintf("127.0.0.%d", 41+i)).Addr))
	}
	got := waitForStatus(t, wp, "Ready", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionReady).Status == metav1.ConditionTrue
	})
	readySince := condition(got, v1.ConditionReady).LastTransitionTime
	if res := kstatusOf(t, wp); res.Status != kstatus.CurrentStatus {
		t.Errorf("kstatus of a ready pool: %s (%s)", res.Status, res.Message)
	}

	// Scale 3 → 4: the Deployment controller has not seen it, then a fourth
	// pod starts.
	update(t, wp, func(w *v1.WorkerPool) { w.Spec.Replicas = ptr(int32(4)) })
	got = waitForStatus(t, wp, "scaling observed", func(w *v1.WorkerPool) bool { return w.Status.ObservedGeneration == w.Generation })
	if c := condition(got, v1.ConditionReady); c.Status != metav1.ConditionTrue || !c.LastTransitionTime.Equal(&readySince) {
		t.Errorf("Ready while scaling: %+v (True since %s)", c, readySince)
	}
	if c := condition(got, v1.ConditionReconciling); c.Status != metav1.ConditionTrue || c.Reason != v1.ReasonScaling {
		t.Errorf("Reconciling while scaling: %+v", c)
	}
	if res := kstatusOf(t, wp); res.Status != kstatus.InProgressStatus {
		t.Errorf("kstatus while scaling: %s (%s)", res.Status, res.Message)
	}
	rollOut(t, wp, 4)
	pods = append(pods, addPod(t, wp, "steady-3", startEndpoint(t, "127.0.0.44").Addr))
	got = waitForStatus(t, wp, "scaled", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionReconciling).Status == metav1.ConditionFalse && w.Status.Dispatch.Capacity == 40
	})
	if c := condition(got, v1.ConditionReady); c.Status != metav1.ConditionTrue || !c.LastTransitionTime.Equal(&readySince) {
		t.Errorf("Ready after scaling: %+v (True since %s)", c, readySince)
	}

	// A template change: not Ready for the new generation until it is
	// rolled out, although the Deployment's status is the old one's.
	update(t, wp, func(w *v1.WorkerPool) { w.Spec.Env = []corev1.EnvVar{{Name: "NEW", Value: "1"}} })
	got = waitForStatus(t, wp, "new generation observed", func(w *v1.WorkerPool) bool { return w.Status.ObservedGeneration == w.Generation })
	gen := got.Generation
	for range 3 {
		waitPasses(t, wp, 1)
		got = getPool(t, wp)
		if c := condition(got, v1.ConditionReady); got.Status.ObservedGeneration == gen && (c.Status != metav1.ConditionFalse || c.Reason != v1.ReasonRollingOut) {
			t.Fatalf("Ready for generation %d before any pod runs its template: %+v", gen, c)
		}
	}
	if c := condition(got, v1.ConditionProgressing); c.Status != metav1.ConditionTrue || c.Message != "0 of 4 pods run the current template" {
		t.Errorf("Progressing %+v", c)
	}
	rollOut(t, wp, 4)
	for _, p := range pods[:2] {
		moveToCurrentTemplate(t, wp, p)
	}
	got = waitForStatus(t, wp, "halfway", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionProgressing).Message == "2 of 4 pods run the current template"
	})
	if c := condition(got, v1.ConditionReady); c.Status != metav1.ConditionFalse {
		t.Errorf("Ready halfway through a rollout: %+v", c)
	}
	for _, p := range pods[2:] {
		moveToCurrentTemplate(t, wp, p)
	}
	waitForStatus(t, wp, "rolled out", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionReady).Status == metav1.ConditionTrue && condition(w, v1.ConditionProgressing).Reason == v1.ReasonRolledOut
	})
}

// A rollout's stream of Deployment status updates does not make the operator
// scrape the pool's pods on each: a pool is read at most once per status
// interval unless its ready pods change.
func TestDeploymentUpdatesDoNotEachScrape(t *testing.T) {
	wp := operatedPool("watched")
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	e := startEndpoint(t, "127.0.0.71")
	rollOut(t, wp, 1)
	addPod(t, wp, "watched-0", e.Addr)
	waitForStatus(t, wp, "Ready", func(w *v1.WorkerPool) bool { return condition(w, v1.ConditionReady).Status == metav1.ConditionTrue })

	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "watched", Namespace: operatedNS}}
	labels := map[string]string{"namespace": operatedNS, "workerpool": "watched"}
	passes0, scrapes0, start := sumOperatorMetric(t, "workerpool_reconciles_total", labels), e.Requests(), time.Now()
	for i := range 40 {
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			if err := k8s.Get(ctx(t), keyOf(dep), dep); err != nil {
				return err
			}
			dep.Status.Conditions[1].Message = fmt.Sprintf("ReplicaSet \"watched-1\" is progressing (%d)", i)
			return k8s.Status().Update(ctx(t), dep)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	waitPasses(t, wp, 1)
	passes := sumOperatorMetric(t, "workerpool_reconciles_total", labels) - passes0
	scrapes := e.Requests() - scrapes0
	// The interval's own passes, plus one for the pass in flight at the start.
	limit := int64(elapsed/statusInterval) + 2
	t.Logf("40 Deployment updates in %s: %v passes, %d scrapes (at most %d allowed)", elapsed.Round(time.Millisecond), passes, scrapes, limit)
	if scrapes > limit {
		t.Errorf("%d scrapes of the pod in %s (%v passes): at most %d, one per %s", scrapes, elapsed, passes, limit, statusInterval)
	}
	if passes < 5 {
		t.Errorf("only %v passes: the Deployment updates did not reconcile the pool", passes)
	}
}

// A pod that cannot be read is not proof that its trouble went away: a
// backpressured pool whose saturated pod stops answering stays
// Backpressure=True, with no "cleared" event.
func TestPartialScrapeKeepsBackpressure(t *testing.T) {
	wp := operatedPool("partial")
	wp.Spec.Replicas = ptr(int32(2))
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	calm, full := startEndpoint(t, "127.0.0.51"), startEndpoint(t, "127.0.0.52")
	calm.Set("tasker_channel_completion_saturation", 0.1)
	full.Set("tasker_channel_completion_saturation", 0.97)
	rollOut(t, wp, 2)
	addPod(t, wp, "partial-calm", calm.Addr)
	addPod(t, wp, "partial-full", full.Addr)
	waitForStatus(t, wp, "Backpressure Critical", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionBackpressure).Reason == v1.ReasonSaturationCritical
	})
	full.Stop()
	waitForStatus(t, wp, "partial-full unreadable", func(w *v1.WorkerPool) bool {
		return len(w.Status.Pods) > 0 && w.Status.Pods[0].Name == "partial-full" && w.Status.Pods[0].ScrapeError != ""
	})
	// Long past the time its last sample may stand for it.
	waitPasses(t, wp, 6)
	got := getPool(t, wp)
	if c := condition(got, v1.ConditionBackpressure); c.Status != metav1.ConditionTrue || c.Reason != v1.ReasonSaturationCritical ||
		!strings.Contains(c.Message, "not cleared while 1 of 2 ready pods are unread") {
		t.Errorf("Backpressure with the saturated pod unread: %+v", c)
	}
	if _, ok := poolEvents(t, wp)["BackpressureCleared"]; ok {
		t.Error("a BackpressureCleared event although the saturated pod was not read")
	}
	if c := condition(got, v1.ConditionReady); c.Status != metav1.ConditionTrue {
		t.Errorf("Ready with one of two pods unread: %+v", c)
	}
}

// Each transition is one event, written after the status: a pool hovering
// at the warning threshold does not alternate Warning and Cleared, and the
// Warning event is not emitted twice (the event recorder would turn a
// second one into a series).
func TestOneEventPerTransition(t *testing.T) {
	wp := operatedPool("hover")
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	e := startEndpoint(t, "127.0.0.61")
	e.Set("tasker_channel_completion_saturation", 0.5)
	rollOut(t, wp, 1)
	addPod(t, wp, "hover-0", e.Addr)
	waitForStatus(t, wp, "Ready", func(w *v1.WorkerPool) bool { return condition(w, v1.ConditionReady).Status == metav1.ConditionTrue })
	e.Set("tasker_channel_completion_saturation", 0.81)
	waitForEvent(t, wp, "BackpressureWarning", corev1.EventTypeWarning)
	for i := range 6 {
		e.Set("tasker_channel_completion_saturation", []float64{0.79, 0.81}[i%2])
		waitPasses(t, wp, 2)
	}
	got := getPool(t, wp)
	if c := condition(got, v1.ConditionBackpressure); c.Status != metav1.ConditionTrue || c.Reason != v1.ReasonSaturationWarning {
		t.Errorf("Backpressure while hovering at the threshold: %+v", c)
	}
	evs := poolEvents(t, wp)
	if _, ok := evs["BackpressureCleared"]; ok {
		t.Error("a pool hovering at the threshold was reported cleared")
	}
	if ev := evs["BackpressureWarning"]; ev.Series != nil {
		t.Errorf("BackpressureWarning emitted %d times for one transition", ev.Series.Count)
	}
	e.Set("tasker_channel_completion_saturation", 0.6)
	waitForEvent(t, wp, "BackpressureCleared", corev1.EventTypeNormal)
}

// conditionMetric reads workerpool_status_condition from the operator's registry.
func conditionMetric(t *testing.T, pool, typ, status string) float64 {
	t.Helper()
	return operatorMetric(t, "workerpool_status_condition", map[string]string{"workerpool": pool, "type": typ, "status": status})
}

func scrapeErrorsMetric(t *testing.T, pool string) float64 {
	t.Helper()
	return operatorMetric(t, "workerpool_scrape_errors_total", map[string]string{"workerpool": pool})
}

// operatorMetric is the first series of name that carries labels.
func operatorMetric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	series := operatorSeries(t, name, labels)
	if len(series) == 0 {
		t.Fatalf("no %s%v in the operator's registry", name, labels)
	}
	return metricValue(series[0])
}

// sumOperatorMetric adds up every series of name that carries labels (0
// when there is none yet).
func sumOperatorMetric(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	sum := 0.0
	for _, m := range operatorSeries(t, name, labels) {
		sum += metricValue(m)
	}
	return sum
}

// operatorSeries gathers the operator's registry and keeps the series of
// name whose labels include labels.
func operatorSeries(t *testing.T, name string, labels map[string]string) []*dto.Metric {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []*dto.Metric
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue series
				}
			}
			out = append(out, m)
		}
	}
	return out
}

func metricValue(m *dto.Metric) float64 {
	if m.GetGauge() != nil {
		return m.GetGauge().GetValue()
	}
	return m.GetCounter().GetValue()
}

// A real tasker-worker process, started from the worker.toml the operator
// rendered, is read by the operator: its capacity is the pool's
// maxConcurrentHandlers. When it is killed, MetricsAvailable names its pod.
func TestStatusFromARealWorker(t *testing.T) {
	bin := workerBinary(t)
	wp := operatedPool("real-worker")
	wp.Spec.Dispatch.MaxConcurrentHandlers = 7
	if err := k8s.Create(ctx(t), wp); err != nil {
		t.Fatal(err)
	}
	cm := mountedConfigMap(t, wp)
	cfgFile, err := config.Parse([]byte(cm.Data["worker.toml"]))
	if err != nil {
		t.Fatalf("rendered worker.toml refused: %v", err)
	}
	addr := freeAddr(t, "127.0.0.31")
	cfgFile.Worker.HTTP.ListenAddress = hostPort(addr)
	data, err := cfgFile.Render()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "worker.toml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	dsn := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := queue.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run")
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn, "TASKER_CONFIG_PATH="+path, "POD_NAME=real-worker-0")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("worker output:\n%s", out.String())
		}
	})

	rollOut(t, wp, 1)
	addPod(t, wp, "real-worker-0", addr)
	got := waitForStatus(t, wp, "capacity from the real worker", func(w *v1.WorkerPool) bool {
		return w.Status.Dispatch.Capacity == 7
	})
	if c := condition(got, v1.ConditionMetricsAvailable); c.Status != metav1.ConditionTrue {
		t.Errorf("MetricsAvailable %+v", c)
	}
	if got.Status.Dispatch.InFlight != 0 || got.Status.Dispatch.CompletionSaturationPercent != 0 || got.Status.FFI.OldestPendingAge != "0s" {
		t.Errorf("an idle worker's status %+v", got.Status)
	}

	_ = cmd.Process.Kill()
	<-exited
	got = waitForStatus(t, wp, "MetricsAvailable=False after the worker died", func(w *v1.WorkerPool) bool {
		return condition(w, v1.ConditionMetricsAvailable).Status == metav1.ConditionFalse
	})
	if c := condition(got, v1.ConditionMetricsAvailable); !strings.Contains(c.Message, "real-worker-0 (") || !strings.Contains(c.Message, "connection refused") {
		t.Errorf("MetricsAvailable %+v", c)
	}
}

// workerBinary is $TASKER_WORKER_BIN (make test builds it) or a fresh build.
func workerBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("TASKER_WORKER_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "tasker-worker")
	c := exec.Command("go", "build", "-o", bin, "../../cmd/tasker-worker")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("build tasker-worker: %v\n%s", err, out)
	}
	return bin
}

// syncBuffer collects a process's output from its writer goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
