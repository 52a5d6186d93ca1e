package controllers

import (
	"cmp"
	"iter"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	v1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// PoolMetrics are the operator's per-pool series, served beside
// controller-runtime's own on the manager's metrics endpoint. They let one
// Prometheus scrape of the operator alert on every pool, and the condition
// gauge lets alert rules fire on Starving or Backpressure without a
// kube-state-metrics custom-resource config.
//
// A pool's figures are kept as one small record and turned into series
// only when the endpoint is scraped. A pool has about 16 series (8 of
// them the condition gauge), and a labelled series held by the Prometheus
// client costs about 600 bytes: kept as series, the metrics of 10 000
// pools would be the largest thing in the operator's memory. The series
// made for a scrape share their label pairs (each pool's namespace and
// name, and the few values of type, status, kind and operation), so a
// scrape of thousands of pools allocates little beyond what the Prometheus
// client itself needs per series.
type PoolMetrics struct {
	mu    sync.Mutex
	pools map[types.NamespacedName]*poolRecord

	pending, oldestAge, saturation, ready, scrapeErrs, condition, childWrites, reconciles *prometheus.Desc
	backlog, oldestReady, desired, scaled                                                 *prometheus.Desc
	scrapePass                                                                            prometheus.Histogram
}

// poolRecord is one pool's figures. The slices are replaced, never changed
// in place, so that a copy taken under the lock can be read without it.
type poolRecord struct {
	// labels are the pool's namespace and name label pairs, in label order.
	labels []*dto.LabelPair

	pending, oldestAgeSeconds, saturation, ready float64
	reconciles                                   float64
	// scrapeErrors counts failed pod scrapes; scraped says the pool was
	// scraped at least once (the counter's series exists from then on).
	scrapeErrors float64
	scraped      bool
	conditions   []poolCondition
	writes       []childWriteCount

	// The queue reading (queueRead: at least one succeeded) and the
	// autoscaler's last decision (autoscaled: it decided at least once).
	backlog, oldestReadySeconds   float64
	queueRead                     bool
	desired, scaledUp, scaledDown float64
	autoscaled                    bool
}

type poolCondition struct {
	Type   string
	Status metav1.ConditionStatus
}

type childWriteCount struct {
	kind, operation string
	n               float64
}

var (
	poolLabels       = []string{"namespace", "workerpool"}
	conditionLabels  = []string{"namespace", "workerpool", "type", "status"}
	childWriteLabels = []string{"namespace", "workerpool", "kind", "operation"}
	// conditionStatuses are the values of the condition gauge's status
	// label, sorted. A condition has one series, with its current status: a
	// series for each status (0 for the others, as kube-state-metrics does)
	// would triple the operator's largest family, to 240 000 series at
	// 10 000 pools, in the operator's page and in Prometheus; alerts select
	// a status and compare with 1 all the same.
	conditionStatuses = []metav1.ConditionStatus{metav1.ConditionFalse, metav1.ConditionTrue, metav1.ConditionUnknown}
)

// NewPoolMetrics registers the per-pool series with reg.
func NewPoolMetrics(reg prometheus.Registerer) (*PoolMetrics, error) {
	m := &PoolMetrics{
		pools: map[types.NamespacedName]*poolRecord{},
		pending: prometheus.NewDesc("workerpool_ffi_pending_events",
			"FFI events polled and not completed, summed over the pool's ready pods.", poolLabels, nil),
		oldestAge: prometheus.NewDesc("workerpool_ffi_oldest_pending_age_seconds",
			"Age of the oldest pending FFI event among the pool's pods.", poolLabels, nil),
		saturation: prometheus.NewDesc("workerpool_completion_saturation_ratio",
			"Highest completion-channel fill (0..1) among the pool's pods.", poolLabels, nil),
		ready: prometheus.NewDesc("workerpool_ready_replicas",
			"Ready worker pods of the pool.", poolLabels, nil),
		scrapeErrs: prometheus.NewDesc("workerpool_scrape_errors_total",
			"Pod metrics scrapes that failed, per pool.", poolLabels, nil),
		condition: prometheus.NewDesc("workerpool_status_condition",
			"1 for each of the pool's conditions, with its current status (True, False or Unknown) in the status label.", conditionLabels, nil),
		childWrites: prometheus.NewDesc("workerpool_child_writes_total",
			"Server-side applies and deletes of a pool's children. It grows only when the pool or a child changed; growth on an unchanged pool is API load the operator should not cause.",
			childWriteLabels, nil),
		reconciles: prometheus.NewDesc("workerpool_reconciles_total",
			"Reconcile passes that computed the pool's status.", poolLabels, nil),
		backlog: prometheus.NewDesc("workerpool_queue_backlog",
			"Steps ready to be claimed now over the pool's queues, read once per queue by the operator (a floor when a queue holds more than 100000).", poolLabels, nil),
		oldestReady: prometheus.NewDesc("workerpool_queue_oldest_ready_age_seconds",
			"How long the oldest ready step of the pool's queues has waited.", poolLabels, nil),
		desired: prometheus.NewDesc("workerpool_autoscaler_desired_replicas",
			"The replica count the built-in autoscaler set (pools with spec.autoscaling).", poolLabels, nil),
		scaled: prometheus.NewDesc("workerpool_autoscaler_scale_decisions_total",
			"Replica count changes the built-in autoscaler decided, by direction (up, down).", []string{"namespace", "workerpool", "direction"}, nil),
		scrapePass: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "workerpool_scrape_pass_duration_seconds",
			Help: "Time to scrape all ready pods of one pool.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
	}
	for _, c := range []prometheus.Collector{(*poolCollector)(m), m.scrapePass} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// record returns the pool's record, made if it has none; the caller holds mu.
func (m *PoolMetrics) record(namespace, name string) *poolRecord {
	key := types.NamespacedName{Namespace: namespace, Name: name}
	r := m.pools[key]
	if r == nil {
		r = &poolRecord{labels: []*dto.LabelPair{labelPair("namespace", namespace), labelPair("workerpool", name)}}
		m.pools[key] = r
	}
	return r
}

// observe records a pool's new status.
func (m *PoolMetrics) observe(pool *v1.WorkerPool, st *v1.WorkerPoolStatus) {
	if m == nil {
		return
	}
	conditions := make([]poolCondition, len(st.Conditions))
	for i, c := range st.Conditions {
		conditions[i] = poolCondition{Type: c.Type, Status: c.Status}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.record(pool.Namespace, pool.Name)
	r.reconciles++
	r.pending = float64(st.FFI.PendingEvents)
	r.oldestAgeSeconds = parseAgeSeconds(st.FFI.OldestPendingAge)
	r.saturation = float64(st.Dispatch.CompletionSaturationPercent) / 100
	r.ready = float64(st.ReadyReplicas)
	r.conditions = mergeConditions(r.conditions, conditions)
}

// mergeConditions returns the current conditions followed by those the
// pool had and no longer has: as with a gauge vector, a condition's series
// stay (at their last values) until the pool is forgotten.
func mergeConditions(old, current []poolCondition) []poolCondition {
	out := current
outer:
	for _, o := range old {
		for _, c := range current {
			if c.Type == o.Type {
				continue outer
			}
		}
		out = append(out, o)
	}
	return out
}

// observeScrapePass records the duration of one scrape of a pool's pods.
func (m *PoolMetrics) observeScrapePass(d time.Duration) {
	if m == nil {
		return
	}
	m.scrapePass.Observe(d.Seconds())
}

// scrapeErrors counts the failed pod scrapes of one pass over a pool.
func (m *PoolMetrics) scrapeErrors(pool *v1.WorkerPool, n int) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.record(pool.Namespace, pool.Name)
	r.scraped = true
	r.scrapeErrors += float64(n)
}

// observeQueue records a reading of the pool's queues.
func (m *PoolMetrics) observeQueue(pool *v1.WorkerPool, q queueObservation) {
	if m == nil || q.Err != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.record(pool.Namespace, pool.Name)
	r.queueRead = true
	r.backlog = float64(q.Backlog)
	r.oldestReadySeconds = q.OldestReady.Seconds()
}

// observeScale records an autoscaler decision.
func (m *PoolMetrics) observeScale(pool *v1.WorkerPool, d scaleDecision) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.record(pool.Namespace, pool.Name)
	r.autoscaled = true
	r.desired = float64(d.Desired)
	switch {
	case d.Desired > d.From:
		r.scaledUp++
	case d.Desired < d.From:
		r.scaledDown++
	}
}

// childWrite counts one create, update or delete of a pool's child.
func (m *PoolMetrics) childWrite(pool *v1.WorkerPool, kind, operation string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.record(pool.Namespace, pool.Name)
	writes := make([]childWriteCount, len(r.writes), len(r.writes)+1)
	copy(writes, r.writes)
	for i := range writes {
		if writes[i].kind == kind && writes[i].operation == operation {
			writes[i].n++
			r.writes = writes
			return
		}
	}
	r.writes = append(writes, childWriteCount{kind: kind, operation: operation, n: 1})
}

// forget drops a deleted pool's series, so they do not linger as stale
// values that alerts keep firing on.
func (m *PoolMetrics) forget(namespace, name string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.pools, types.NamespacedName{Namespace: namespace, Name: name})
}

// poolCollector turns the records into series when the endpoint is scraped.
type poolCollector PoolMetrics

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.oldestAge, c.saturation, c.ready, c.scrapeErrs, c.condition, c.childWrites, c.reconciles,
		c.backlog, c.oldestReady, c.desired, c.scaled} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	// Copy the records under the lock and emit without it: a scrape of
	// thousands of pools must not hold up the reconcilers.
	c.mu.Lock()
	records := make([]poolRecord, 0, len(c.pools))
	for _, r := range c.pools {
		records = append(records, *r)
	}
	c.mu.Unlock()
	// The registry sorts each family's series by their label values, in
	// label name order. Emitted in that order already, a family costs the
	// sort a pass over it; in map order, sorting the 290 000 series of
	// 10 000 pools took half of the page's time. Every family's labels
	// start with namespace and end with workerpool, or have a label before
	// namespace (direction, kind) or between the two (status and type,
	// operation): those are emitted grouped by it.
	slices.SortFunc(records, func(a, b poolRecord) int {
		return cmp.Or(strings.Compare(a.labels[0].GetValue(), b.labels[0].GetValue()),
			strings.Compare(a.labels[1].GetValue(), b.labels[1].GetValue()))
	})
	for _, r := range records {
		pool := r.labels // namespace, workerpool
		if r.reconciles > 0 {
			ch <- &series{c.pending, pool, r.pending, false}
			ch <- &series{c.oldestAge, pool, r.oldestAgeSeconds, false}
			ch <- &series{c.saturation, pool, r.saturation, false}
			ch <- &series{c.ready, pool, r.ready, false}
			ch <- &series{c.reconciles, pool, r.reconciles, true}
		}
		if r.scraped {
			ch <- &series{c.scrapeErrs, pool, r.scrapeErrors, true}
		}
		if r.queueRead {
			ch <- &series{c.backlog, pool, r.backlog, false}
			ch <- &series{c.oldestReady, pool, r.oldestReadySeconds, false}
		}
		if r.autoscaled {
			ch <- &series{c.desired, pool, r.desired, false}
		}
	}
	// direction, namespace, workerpool.
	for _, up := range []bool{false, true} {
		dir := constLabelPair("direction", "down")
		if up {
			dir = constLabelPair("direction", "up")
		}
		for _, r := range records {
			if r.autoscaled {
				v := r.scaledDown
				if up {
					v = r.scaledUp
				}
				ch <- &series{c.scaled, []*dto.LabelPair{dir, r.labels[0], r.labels[1]}, v, true}
			}
		}
	}
	var kinds, operations []string
	for _, r := range records {
		for _, w := range r.writes {
			kinds, operations = appendSorted(kinds, w.kind), appendSorted(operations, w.operation)
		}
	}
	for _, kind := range kinds {
		kindLabel := constLabelPair("kind", kind)
		for group := range byNamespace(records) {
			for _, op := range operations {
				opLabel := constLabelPair("operation", op)
				for _, r := range group {
					for _, w := range r.writes {
						if w.kind == kind && w.operation == op {
							// kind, namespace, operation, workerpool.
							ch <- &series{c.childWrites, []*dto.LabelPair{kindLabel, r.labels[0], opLabel, r.labels[1]}, w.n, true}
						}
					}
				}
			}
		}
	}
	for group := range byNamespace(records) {
		var types []string
		for _, r := range group {
			for _, cond := range r.conditions {
				types = appendSorted(types, cond.Type)
			}
		}
		for _, status := range conditionStatuses {
			statusLabel := constLabelPair("status", string(status))
			for _, typ := range types {
				typeLabel := constLabelPair("type", typ)
				for _, r := range group {
					for _, cond := range r.conditions {
						if cond.Type == typ && cond.Status == status {
							// namespace, status, type, workerpool.
							ch <- &series{c.condition, []*dto.LabelPair{r.labels[0], statusLabel, typeLabel, r.labels[1]}, 1, false}
						}
					}
				}
			}
		}
	}
}

// byNamespace yields the runs of records (sorted by namespace) that share
// a namespace.
func byNamespace(records []poolRecord) iter.Seq[[]poolRecord] {
	return func(yield func([]poolRecord) bool) {
		for start := 0; start < len(records); {
			ns := records[start].labels[0].GetValue()
			end := start + 1
			for end < len(records) && records[end].labels[0].GetValue() == ns {
				end++
			}
			if !yield(records[start:end]) {
				return
			}
			start = end
		}
	}
}

// appendSorted inserts v into the sorted set list unless it holds it.
func appendSorted(list []string, v string) []string {
	i, found := slices.BinarySearch(list, v)
	if found {
		return list
	}
	return slices.Insert(list, i, v)
}

// series is one sample of a pool's, with label pairs it shares with others.
// Its labels must be in label name order, as the Prometheus client keeps
// them.
type series struct {
	desc    *prometheus.Desc
	labels  []*dto.LabelPair
	value   float64
	counter bool
}

func (s *series) Desc() *prometheus.Desc { return s.desc }

func (s *series) Write(out *dto.Metric) error {
	out.Label = s.labels
	if s.counter {
		out.Counter = &dto.Counter{Value: &s.value}
	} else {
		out.Gauge = &dto.Gauge{Value: &s.value}
	}
	return nil
}

func labelPair(name, value string) *dto.LabelPair {
	return &dto.LabelPair{Name: &name, Value: &value}
}

// constLabelPairs are the label pairs of the few values of type, status,
// kind and operation, made once and shared by every pool's series.
var constLabelPairs = struct {
	sync.RWMutex
	m map[[2]string]*dto.LabelPair
}{m: map[[2]string]*dto.LabelPair{}}

func constLabelPair(name, value string) *dto.LabelPair {
	key := [2]string{name, value}
	constLabelPairs.RLock()
	lp := constLabelPairs.m[key]
	constLabelPairs.RUnlock()
	if lp != nil {
		return lp
	}
	constLabelPairs.Lock()
	defer constLabelPairs.Unlock()
	if lp = constLabelPairs.m[key]; lp == nil {
		lp = labelPair(name, value)
		constLabelPairs.m[key] = lp
	}
	return lp
}

func parseAgeSeconds(s string) float64 {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0
	}
	return d.Seconds()
}
