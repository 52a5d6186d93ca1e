package controllers

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// PoolMetrics are the operator's per-pool series, served beside
// controller-runtime's own on the manager's metrics endpoint. They let one
// Prometheus scrape of the operator alert on every pool, and the condition
// gauge lets alert rules fire on Starving or Backpressure without a
// kube-state-metrics custom-resource config.
type PoolMetrics struct {
	pending     *prometheus.GaugeVec
	oldestAge   *prometheus.GaugeVec
	saturation  *prometheus.GaugeVec
	ready       *prometheus.GaugeVec
	scrapeErrs  *prometheus.CounterVec
	condition   *prometheus.GaugeVec
	scrapePass  prometheus.Histogram
	childWrites *prometheus.CounterVec
	reconciles  *prometheus.CounterVec
	backlog     *prometheus.GaugeVec
	oldestReady *prometheus.GaugeVec
	desired     *prometheus.GaugeVec
	scaled      *prometheus.CounterVec
}

var poolLabels = []string{"namespace", "workerpool"}

// NewPoolMetrics registers the per-pool series with reg.
func NewPoolMetrics(reg prometheus.Registerer) (*PoolMetrics, error) {
	m := &PoolMetrics{
		pending: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workerpool_ffi_pending_events",
			Help: "FFI events polled and not completed, summed over the pool's ready pods."}, poolLabels),
		oldestAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workerpool_ffi_oldest_pending_age_seconds",
			Help: "Age of the oldest pending FFI event among the pool's pods."}, poolLabels),
		saturation: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workerpool_completion_saturation_ratio",
			Help: "Highest completion-channel fill (0..1) among the pool's pods."}, poolLabels),
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workerpool_ready_replicas",
			Help: "Ready worker pods of the pool."}, poolLabels),
		scrapeErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "workerpool_scrape_errors_total",
			Help: "Pod metrics scrapes that failed, per pool."}, poolLabels),
		condition: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workerpool_status_condition",
			Help: "1 for the pool condition's current status (True, False or Unknown), 0 for the others."},
			append(poolLabels[:2:2], "type", "status")),
		scrapePass: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "workerpool_scrape_pass_duration_seconds",
			Help: "Time to scrape all ready pods of one pool.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
		childWrites: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "workerpool_child_writes_total",
			Help: "Server-side applies and deletes of a pool's children. It grows only when the pool or a child changed; growth on an unchanged pool is API load the operator should not cause."},
			append(poolLabels[:2:2], "kind", "operation")),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "workerpool_reconciles_total",
			Help: "Reconcile passes that computed the pool's status."}, poolLabels),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workerpool_queue_backlog",
			Help: "Steps ready to be claimed now over the pool's queues, read once per queue by the operator (a floor when a queue holds more than 100000)."}, poolLabels),
		oldestReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workerpool_queue_oldest_ready_age_seconds",
			Help: "How long the oldest ready step of the pool's queues has waited."}, poolLabels),
		desired: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "workerpool_autoscaler_desired_replicas",
			Help: "The replica count the built-in autoscaler set (pools with spec.autoscaling)."}, poolLabels),
		scaled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "workerpool_autoscaler_scale_decisions_total",
			Help: "Replica count changes the built-in autoscaler decided, by direction (up, down)."}, append(poolLabels[:2:2], "direction")),
	}
	for _, c := range []prometheus.Collector{m.pending, m.oldestAge, m.saturation, m.ready, m.scrapeErrs, m.condition, m.scrapePass, m.childWrites, m.reconciles,
		m.backlog, m.oldestReady, m.desired, m.scaled} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// observe records a pool's new status.
func (m *PoolMetrics) observe(pool *v1.WorkerPool, st *v1.WorkerPoolStatus) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"namespace": pool.Namespace, "workerpool": pool.Name}
	m.reconciles.With(l).Inc()
	m.pending.With(l).Set(float64(st.FFI.PendingEvents))
	m.oldestAge.With(l).Set(parseAgeSeconds(st.FFI.OldestPendingAge))
	m.saturation.With(l).Set(float64(st.Dispatch.CompletionSaturationPercent) / 100)
	m.ready.With(l).Set(float64(st.ReadyReplicas))
	for _, c := range st.Conditions {
		for _, s := range []metav1.ConditionStatus{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown} {
			v := 0.0
			if c.Status == s {
				v = 1
			}
			m.condition.WithLabelValues(pool.Namespace, pool.Name, c.Type, string(s)).Set(v)
		}
	}
}

// scrapeErrors counts the failed pod scrapes of one pass over a pool.
func (m *PoolMetrics) scrapeErrors(pool *v1.WorkerPool, n int) {
	if m == nil {
		return
	}
	m.scrapeErrs.WithLabelValues(pool.Namespace, pool.Name).Add(float64(n))
}

// observeQueue records a reading of the pool's queues.
func (m *PoolMetrics) observeQueue(pool *v1.WorkerPool, q queueObservation) {
	if m == nil || q.Err != nil {
		return
	}
	l := prometheus.Labels{"namespace": pool.Namespace, "workerpool": pool.Name}
	m.backlog.With(l).Set(float64(q.Backlog))
	m.oldestReady.With(l).Set(q.OldestReady.Seconds())
}

// observeScale records an autoscaler decision.
func (m *PoolMetrics) observeScale(pool *v1.WorkerPool, d scaleDecision) {
	if m == nil {
		return
	}
	m.desired.WithLabelValues(pool.Namespace, pool.Name).Set(float64(d.Desired))
	switch {
	case d.Desired > d.From:
		m.scaled.WithLabelValues(pool.Namespace, pool.Name, "up").Inc()
	case d.Desired < d.From:
		m.scaled.WithLabelValues(pool.Namespace, pool.Name, "down").Inc()
	}
}

// childWrite counts one create, update or delete of a pool's child.
func (m *PoolMetrics) childWrite(pool *v1.WorkerPool, kind, operation string) {
	if m == nil {
		return
	}
	m.childWrites.WithLabelValues(pool.Namespace, pool.Name, kind, operation).Inc()
}

// forget drops a deleted pool's series, so they do not linger as stale
// values that alerts keep firing on.
func (m *PoolMetrics) forget(namespace, name string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"namespace": namespace, "workerpool": name}
	m.pending.Delete(l)
	m.oldestAge.Delete(l)
	m.saturation.Delete(l)
	m.ready.Delete(l)
	m.scrapeErrs.Delete(l)
	m.condition.DeletePartialMatch(l)
	m.childWrites.DeletePartialMatch(l)
	m.reconciles.Delete(l)
	m.backlog.Delete(l)
	m.oldestReady.Delete(l)
	m.desired.Delete(l)
	m.scaled.DeletePartialMatch(l)
}

func parseAgeSeconds(s string) float64 {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0
	}
	return d.Seconds()
}
