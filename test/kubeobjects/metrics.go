package kubeobjects

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/seed-a17b38e7/workerpool-operator/controllers"
	"github.com/seed-a17b38e7/workerpool-operator/internal/config"
	"github.com/seed-a17b38e7/workerpool-operator/internal/worker"
)

// Family is a metric family the project really serves: its type (rate()
// only suits counters) and the label names its series carry, for checking
// that alert rules and dashboards read real series with real labels.
type Family struct {
	Type   dto.MetricType
	Labels []string
}

// Families are the served metric families by name.
type Families map[string]Family

// Has says whether a family of that name is served.
func (f Families) Has(name string) bool { _, ok := f[name]; return ok }

// Names lists the served families, sorted, for failure messages.
func (f Families) Names() []string { return slices.Sorted(maps.Keys(f)) }

var workerFamilies struct {
	once sync.Once
	fams Families
	err  error
}

// WorkerMetrics assembles a real worker (FFI enabled, so every family is
// registered) and reads its /metrics endpoint: what monitors, alerts and
// dashboards may query. The worker never runs and its database pool never
// connects: assembling it touches no database. It is read once per test
// binary.
func WorkerMetrics(t testing.TB) Families {
	t.Helper()
	workerFamilies.once.Do(func() { workerFamilies.fams, workerFamilies.err = readWorkerMetrics() })
	if workerFamilies.err != nil {
		t.Fatal(workerFamilies.err)
	}
	if len(workerFamilies.fams) == 0 {
		t.Fatal("the worker serves no metrics")
	}
	return workerFamilies.fams
}

func readWorkerMetrics() (Families, error) {
	cfg := config.Default()
	cfg.Worker.WorkerID = "kubeobjects-test"
	cfg.Worker.MPSCChannels.FFIDispatch.Enabled = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer func() { _ = ln.Close() }()
	w, err := worker.New(context.Background(), worker.Options{
		Config:      cfg,
		DatabaseURL: "postgres://kubeobjects@127.0.0.1:1/kubeobjects",
		Logger:      logr.Discard(),
		Listener:    ln,
		Version:     "test",
	})
	if err != nil {
		return nil, fmt.Errorf("assemble worker: %w", err)
	}
	defer w.Queue().Pool().Close()

	rec := httptest.NewRecorder()
	w.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		return nil, fmt.Errorf("worker /metrics: %d %s", rec.Code, rec.Body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		return nil, fmt.Errorf("parse worker /metrics: %w", err)
	}
	return toFamilies(slices.Collect(maps.Values(mfs))), nil
}

// OperatorMetrics are the series controllers.NewPoolMetrics registers: what
// the condition alerts may query. Its vectors have no children until a pool
// is observed (which only the package itself can do), so the names and
// label names come from the collectors' descriptors: one sample is made for
// each descriptor and gathered.
func OperatorMetrics(t testing.TB) Families {
	t.Helper()
	reg := prometheus.NewRegistry()
	if _, err := controllers.NewPoolMetrics(reg); err != nil {
		t.Fatalf("NewPoolMetrics: %v", err)
	}
	descs := make(chan *prometheus.Desc)
	go func() { reg.Describe(descs); close(descs) }()
	var c sampleCollector
	var sampleErr error
	for d := range descs { // drained to the end, so the goroutine above ends
		m, err := sampleFor(d)
		if err != nil && sampleErr == nil {
			sampleErr = fmt.Errorf("descriptor %s: %w", d, err)
		}
		c.descs, c.samples = append(c.descs, d), append(c.samples, m)
	}
	if sampleErr != nil {
		t.Fatal(sampleErr)
	}
	if len(c.descs) == 0 {
		t.Fatal("NewPoolMetrics registered no collectors")
	}
	out := prometheus.NewRegistry()
	if err := out.Register(c); err != nil {
		t.Fatal(err)
	}
	mfs, err := out.Gather()
	if err != nil {
		t.Fatal(err)
	}
	fams := toFamilies(mfs)
	if !fams.Has("workerpool_status_condition") {
		t.Fatalf("operator metrics %v lack workerpool_status_condition", fams.Names())
	}
	return fams
}

// sampleFor makes one untyped sample of a descriptor, finding its number of
// variable labels by trying (NewConstMetric refuses a wrong count).
func sampleFor(d *prometheus.Desc) (prometheus.Metric, error) {
	var err error
	for n := 0; n <= 16; n++ {
		values := make([]string, n)
		for i := range values {
			values[i] = "v"
		}
		var m prometheus.Metric
		if m, err = prometheus.NewConstMetric(d, prometheus.UntypedValue, 1, values...); err == nil {
			return m, nil
		}
	}
	return nil, err
}

// sampleCollector serves fixed samples for fixed descriptors.
type sampleCollector struct {
	descs   []*prometheus.Desc
	samples []prometheus.Metric
}

func (c sampleCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c sampleCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.samples {
		ch <- m
	}
}

func toFamilies(mfs []*dto.MetricFamily) Families {
	out := Families{}
	for _, mf := range mfs {
		f := Family{Type: mf.GetType()}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if !slices.Contains(f.Labels, lp.GetName()) {
					f.Labels = append(f.Labels, lp.GetName())
				}
			}
		}
		out[mf.GetName()] = f
	}
	return out
}
