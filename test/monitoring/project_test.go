package monitoring_test

import (
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/template"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/seed-a17b38e7/workerpool-operator/test/kubeobjects"
	"github.com/seed-a17b38e7/workerpool-operator/test/monitoring"
)

const repoRoot = "../.."

func readStrict(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// prometheusPin finds the github.com/prometheus/prometheus version a go.mod
// requires.
var prometheusPin = regexp.MustCompile(`(?m)^\s*(?:require\s+)?github\.com/prometheus/prometheus\s+(v\S+)`)

// TestPrometheusPin: the parser these tests use is the one of the promtool
// and server hack/tools/go.mod pins, so a rule the tests accept is one that
// Prometheus release loads.
func TestPrometheusPin(t *testing.T) {
	version := func(path string) string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		m := prometheusPin.FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s does not require github.com/prometheus/prometheus", path)
		}
		return string(m[1])
	}
	here, tools := version("go.mod"), version(filepath.Join(repoRoot, "hack", "tools", "go.mod"))
	if here != tools {
		t.Errorf("test/monitoring/go.mod requires prometheus %s, hack/tools/go.mod %s: pin the same release in both", here, tools)
	}
}

// scrapes are the scrape jobs Prometheus runs for the kustomize install's
// ServiceMonitors (config/prometheus), checked as prometheus-operator
// generates them.
func scrapes(t *testing.T) monitoring.Scrapes {
	t.Helper()
	var om, wm kubeobjects.ServiceMonitor
	var svc corev1.Service
	readStrict(t, "config/prometheus/monitor.yaml", &om)
	readStrict(t, "config/prometheus/worker_monitor.yaml", &wm)
	readStrict(t, "config/default/metrics_service.yaml", &svc)
	return monitoring.CheckScrapes(t, &om, &wm, &svc)
}

// sources are what the rules and the dashboard may read: the families a
// real worker serves on /metrics and those the operator registers, each
// with the labels its scrape adds.
func sources(t *testing.T) (worker, operator monitoring.Source) {
	t.Helper()
	s := scrapes(t)
	return monitoring.Source{Families: kubeobjects.WorkerMetrics(t), TargetLabels: s.WorkerTargetLabels},
		monitoring.Source{Families: kubeobjects.OperatorMetrics(t), TargetLabels: s.OperatorTargetLabels}
}

func TestScrapes(t *testing.T) { scrapes(t) }

// TestRules: every rule of the PrometheusRule (which the chart ships as it
// is) parses with Prometheus's parser, reads only series the worker or the
// operator serves (counters through rate()), matches and keeps labels those
// series carry, and its annotations render with the labels the alert then
// has. test/monitoring/alerts proves with promtool when each fires.
func TestRules(t *testing.T) {
	worker, operator := sources(t)
	var pr kubeobjects.PrometheusRule
	readStrict(t, "config/prometheus/prometheusrule.yaml", &pr)
	var n int
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			n++
			t.Run(r.Alert, func(t *testing.T) {
				q, err := monitoring.Check(r.Expr, worker, operator)
				if err != nil {
					t.Fatal(err)
				}
				if len(q.Metrics) == 0 {
					t.Fatalf("%q reads no metric", r.Expr)
				}
				// An alert carries its result's labels and the rule's own.
				labels := map[string]string{}
				for _, l := range q.Labels {
					labels[l] = "<" + l + ">"
				}
				maps.Copy(labels, r.Labels)
				for _, l := range []string{"namespace", "workerpool"} {
					if _, ok := labels[l]; !ok {
						t.Errorf("the alert does not carry %s (it carries %v): routes and silences select pools by it", l, slices.Sorted(maps.Keys(labels)))
					}
				}
				for key, text := range r.Annotations {
					if _, err := renderAnnotation(text, labels); err != nil {
						t.Errorf("%s annotation does not render with the alert's labels %v: %v", key, slices.Sorted(maps.Keys(labels)), err)
					}
				}
			})
		}
	}
	if n == 0 {
		t.Fatal("no rules in config/prometheus/prometheusrule.yaml")
	}
}

// renderAnnotation expands an annotation as Prometheus does (with $labels
// and $value defined), failing on a label the alert does not carry: a
// missing label would render as an empty string in a real notification.
func renderAnnotation(text string, labels map[string]string) (string, error) {
	const defs = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$value := .Value}}"
	stub := func(v any) string { return "value" }
	tmpl, err := template.New("annotation").Option("missingkey=error").Funcs(template.FuncMap{
		"humanize": stub, "humanizePercentage": stub, "humanizeDuration": stub, "humanize1024": stub,
	}).Parse(defs + text)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	err = tmpl.Execute(&b, struct {
		Labels, ExternalLabels map[string]string
		Value                  float64
	}{labels, map[string]string{}, 0.97})
	return b.String(), err
}

// dashboardFile is the dashboard the chart ships (test/chart checks that
// its ConfigMap holds this file as it is).
var dashboardFile = filepath.Join(repoRoot, "charts", "workerpool-operator", "files", "dashboards", "workerpool-workers.json")

// dashboardValues stand for the dashboard's variables when its queries are
// parsed: Grafana substitutes them before Prometheus sees a query.
var dashboardValues = map[string]string{"datasource": "prometheus", "namespace": "shop", "workerpool": "payments", "__rate_interval": "1m"}

var legendLabel = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)

// TestDashboard: the dashboard's variables and panels, as Grafana sends
// them to Prometheus, parse with Prometheus's parser and read only series
// the worker serves, with labels they carry or the worker's scrape gives
// them; each legend shows labels its query's result keeps; and the
// dashboard shows the metrics the alerts are about.
func TestDashboard(t *testing.T) {
	worker, _ := sources(t)
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	d, err := monitoring.ReadDashboard(b)
	if err != nil {
		t.Fatal(err)
	}

	variables := map[string]bool{}
	for _, v := range d.Templating.List {
		variables[v.Name] = true
		if v.Type != "query" {
			continue
		}
		def, err := monitoring.ExpandVariables(v.Definition, dashboardValues)
		if err == nil {
			def, err = monitoring.LabelValuesQuery(def)
		}
		if err == nil {
			_, err = monitoring.Check(def, worker)
		}
		if err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
		}
	}
	for name := range dashboardValues {
		if !variables[name] && !strings.HasPrefix(name, "__") {
			t.Errorf("the dashboard has no variable %s", name)
		}
	}

	queries, err := d.Queries(dashboardValues)
	if err != nil {
		t.Fatal(err)
	}
	if len(queries) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	used := map[string]bool{}
	var stepsByOutcome bool
	for _, pq := range queries {
		q, err := monitoring.Check(pq.Expr, worker)
		if err != nil {
			t.Errorf("panel %q: %v", pq.Panel, err)
			continue
		}
		if len(q.Metrics) == 0 {
			t.Errorf("panel %q: %q reads no metric", pq.Panel, pq.Expr)
		}
		for _, m := range q.Metrics {
			used[m] = true
		}
		for _, m := range legendLabel.FindAllStringSubmatch(pq.Legend, -1) {
			if !slices.Contains(q.Labels, m[1]) {
				t.Errorf("panel %q legend shows {{%s}}, which its query's result does not carry (%v)", pq.Panel, m[1], q.Labels)
			}
		}
		if slices.Contains(q.Metrics, "tasker_steps_completed_total") && slices.Contains(q.Labels, "outcome") {
			stepsByOutcome = true
		}
	}
	for _, m := range []string{"tasker_ffi_pending_events", "tasker_ffi_oldest_event_age_ms", "tasker_channel_completion_saturation",
		"tasker_dispatch_in_flight", "tasker_callback_timeouts_total", "tasker_steps_completed_total"} {
		if !used[m] {
			t.Errorf("the dashboard does not show %s", m)
		}
	}
	if !stepsByOutcome {
		t.Error("no panel shows tasker_steps_completed_total by outcome")
	}
}
