package controllers

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// metricsPool is a pool with a status as the operator writes it: every
// condition, pending events and a saturation.
func metricsPool(namespace, name string) (*v1.WorkerPool, *v1.WorkerPoolStatus) {
	pool := testPool()
	pool.Namespace, pool.Name = namespace, name
	st := &v1.WorkerPoolStatus{ReadyReplicas: 3,
		Dispatch: v1.DispatchStatus{CompletionSaturationPercent: 42},
		FFI:      v1.FFIStatus{PendingEvents: 7, OldestPendingAge: "2.5s"}}
	for _, t := range []string{v1.ConditionReady, v1.ConditionReconciling, v1.ConditionStalled, v1.ConditionAvailable,
		v1.ConditionProgressing, v1.ConditionStarving, v1.ConditionBackpressure, v1.ConditionMetricsAvailable} {
		st.Conditions = append(st.Conditions, metav1.Condition{Type: t, Status: metav1.ConditionFalse, Reason: "Test"})
	}
	st.Conditions[0].Status = metav1.ConditionTrue
	return pool, st
}

// gatherPool returns the series of one pool, by family name.
func gatherPool(t *testing.T, reg *prometheus.Registry, name string) map[string][]*dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*dto.Metric{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "workerpool" && l.GetValue() == name {
					out[mf.GetName()] = append(out[mf.GetName()], m)
				}
			}
		}
	}
	return out
}

// The per-pool series carry what the pool's status and writes say, typed
// as before (gauges, counters), and go with the pool.
func TestPoolMetricsSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewPoolMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	pool, st := metricsPool("shop", "payments")
	other, otherSt := metricsPool("shop", "orders")
	m.childWrite(pool, "Deployment", "applied")
	m.observe(pool, st)
	m.observe(pool, st)
	m.observe(other, otherSt)
	m.scrapeErrors(pool, 2)
	m.scrapeErrors(pool, 0)
	m.childWrite(pool, "Deployment", "applied")
	m.childWrite(pool, "ConfigMap", "deleted")

	got := gatherPool(t, reg, "payments")
	value := func(family string, labels map[string]string) float64 {
		t.Helper()
	series:
		for _, s := range got[family] {
			for _, l := range s.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue series
				}
			}
			if s.GetGauge() != nil {
				return s.GetGauge().GetValue()
			}
			return s.GetCounter().GetValue()
		}
		t.Fatalf("no %s%v", family, labels)
		return 0
	}
	for family, want := range map[string]float64{
		"workerpool_ffi_pending_events": 7, "workerpool_ffi_oldest_pending_age_seconds": 2.5,
		"workerpool_completion_saturation_ratio": 0.42, "workerpool_ready_replicas": 3,
		"workerpool_reconciles_total": 2, "workerpool_scrape_errors_total": 2,
	} {
		if v := value(family, nil); v != want {
			t.Errorf("%s = %v, want %v", family, v, want)
		}
	}
	if n := len(got["workerpool_status_condition"]); n != 8 {
		t.Errorf("%d condition series, want 8 (one a condition, with its current status)", n)
	}
	if v := value("workerpool_status_condition", map[string]string{"type": v1.ConditionReady, "status": "True"}); v != 1 {
		t.Errorf("Ready True = %v, want 1", v)
	}
	if v := value("workerpool_status_condition", map[string]string{"type": v1.ConditionStarving, "status": "False"}); v != 1 {
		t.Errorf("Starving False = %v, want 1", v)
	}
	for _, s := range got["workerpool_status_condition"] {
		for _, l := range s.GetLabel() {
			if l.GetName() == "type" && l.GetValue() == v1.ConditionReady {
				for _, l := range s.GetLabel() {
					if l.GetName() == "status" && l.GetValue() != "True" {
						t.Errorf("a Ready series with status %s for a pool that is Ready", l.GetValue())
					}
				}
			}
		}
	}
	if v := value("workerpool_child_writes_total", map[string]string{"kind": "Deployment", "operation": "applied"}); v != 2 {
		t.Errorf("Deployment applies %v, want 2", v)
	}
	if v := value("workerpool_child_writes_total", map[string]string{"kind": "ConfigMap", "operation": "deleted"}); v != 1 {
		t.Errorf("ConfigMap deletes %v, want 1", v)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		wantCounter := mf.GetName() == "workerpool_reconciles_total" || mf.GetName() == "workerpool_scrape_errors_total" ||
			mf.GetName() == "workerpool_child_writes_total"
		if (mf.GetType() == dto.MetricType_COUNTER) != wantCounter {
			t.Errorf("%s is a %s", mf.GetName(), mf.GetType())
		}
	}

	m.forget("shop", "payments")
	if left := gatherPool(t, reg, "payments"); len(left) != 0 {
		t.Errorf("a forgotten pool keeps series: %v", left)
	}
	if len(gatherPool(t, reg, "orders")) == 0 {
		t.Error("forgetting one pool dropped another's series")
	}
}

// A pool's metrics cost the operator a small record, not a few dozen
// labelled series (about 20 KiB a pool as gauge and counter vectors: 200 MiB
// at 10 000 pools).
func TestPoolMetricsMemoryPerPool(t *testing.T) {
	const pools = 2000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m, err := NewPoolMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	observePools(m, pools)
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(m)
	perPool := float64(after.HeapAlloc-before.HeapAlloc) / pools
	t.Logf("%.0f bytes per pool", perPool)
	if perPool > 2048 {
		t.Fatalf("%.0f bytes of metrics per pool, want at most 2 KiB", perPool)
	}
}

// A scrape of the operator's metrics allocates per series little more than
// what the Prometheus client needs to expose it: at 10 000 pools a scrape
// is 160 000 series, and what it allocates is live on top of the caches
// until the page is written (about 890 bytes a series as gauge and counter
// vectors, or with a fresh set of label pairs per series).
func TestPoolMetricsScrapeAllocations(t *testing.T) {
	const pools = 2000
	reg := prometheus.NewRegistry()
	m, err := NewPoolMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	observePools(m, pools)
	if _, err := reg.Gather(); err != nil { // the registry's own first-time work
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	mfs, err := reg.Gather()
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, mf := range mfs {
		series += len(mf.GetMetric())
	}
	perSeries := float64(after.TotalAlloc-before.TotalAlloc) / float64(series)
	t.Logf("%d series, %.0f bytes allocated per series", series, perSeries)
	if perSeries > 450 {
		t.Fatalf("a scrape allocates %.0f bytes per series, want at most 450", perSeries)
	}
}

// observePools records n pools as a pass over each of them does: a status,
// a scrape and the writes of its three children.
func observePools(m *PoolMetrics, n int) {
	for i := range n {
		pool, st := metricsPool("shop", fmt.Sprintf("pool-%05d", i))
		m.observe(pool, st)
		m.scrapeErrors(pool, 0)
		for _, kind := range []string{"ConfigMap", "Deployment", "Service"} {
			m.childWrite(pool, kind, "applied")
		}
	}
}

// The collector emits each family in the order the registry sorts it into
// (label values in label name order), so that the registry's sort of
// hundreds of thousands of series is a pass over sorted ones.
func TestPoolMetricsEmittedSorted(t *testing.T) {
	m, err := NewPoolMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"shop", "billing", "zoo"} {
		for _, name := range []string{"b", "a", "c-scaled", "aa"} {
			pool, st := metricsPool(ns, name)
			if name == "aa" {
				st.Conditions = st.Conditions[:3] // a pool with fewer conditions
			}
			m.observe(pool, st)
			m.scrapeErrors(pool, 1)
			m.observeQueue(pool, queueObservation{Backlog: 3})
			for _, kind := range []string{"Service", "ConfigMap", "Deployment"} {
				m.childWrite(pool, kind, "applied")
			}
			if name == "c-scaled" {
				m.observeScale(pool, scaleDecision{Desired: 2})
				m.childWrite(pool, "Pod", "annotated")
				m.childWrite(pool, "ConfigMap", "deleted")
			}
		}
	}
	ch := make(chan prometheus.Metric)
	go func() { (*poolCollector)(m).Collect(ch); close(ch) }()
	byFamily := map[*prometheus.Desc][][]string{}
	for metric := range ch {
		out := &dto.Metric{}
		if err := metric.Write(out); err != nil {
			t.Fatal(err)
		}
		var values []string
		for _, l := range out.GetLabel() {
			values = append(values, l.GetValue())
		}
		byFamily[metric.Desc()] = append(byFamily[metric.Desc()], values)
	}
	if len(byFamily) < 10 {
		t.Fatalf("%d families emitted, want every per-pool family", len(byFamily))
	}
	for desc, series := range byFamily {
		for i := 1; i < len(series); i++ {
			if slices.Compare(series[i-1], series[i]) >= 0 {
				t.Errorf("%s: series %v emitted after %v", desc, series[i], series[i-1])
				break
			}
		}
	}
}

// BenchmarkMetricsPage10000 gathers and encodes the operator's per-pool
// series for 10 000 pools, as a Prometheus scrape of the operator does
// (series per page, time and bytes allocated per page).
func BenchmarkMetricsPage10000(b *testing.B) {
	reg := prometheus.NewRegistry()
	m, err := NewPoolMetrics(reg)
	if err != nil {
		b.Fatal(err)
	}
	observePools(m, 10000)
	b.ReportAllocs()
	series := 0
	for b.Loop() {
		mfs, err := reg.Gather()
		if err != nil {
			b.Fatal(err)
		}
		series = 0
		enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, mf := range mfs {
			series += len(mf.GetMetric())
			if err := enc.Encode(mf); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(series), "series")
}
