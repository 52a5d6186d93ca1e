package monitoring

import (
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/seed-a17b38e7/workerpool-operator/test/kubeobjects"
)

// A small stand-in for what a component serves, so each check is shown to
// pass and to fail on its own.
var testSource = Source{
	Families: kubeobjects.Families{
		"steps_total":      {Type: dto.MetricType_COUNTER, Labels: []string{"outcome"}},
		"in_flight":        {Type: dto.MetricType_GAUGE},
		"capacity":         {Type: dto.MetricType_GAUGE},
		"claim_seconds":    {Type: dto.MetricType_HISTOGRAM},
		"status_condition": {Type: dto.MetricType_UNTYPED, Labels: []string{"type", "status"}},
	},
	TargetLabels: []string{"namespace", "pod", "workerpool", "job", "instance"},
}

func TestCheckAccepts(t *testing.T) {
	for _, tc := range []struct {
		expr    string
		metrics []string
		labels  []string
	}{
		{`in_flight > 100`, []string{"in_flight"}, []string{"instance", "job", "namespace", "pod", "workerpool"}},
		{`sum by (namespace, workerpool, outcome) (rate(steps_total{namespace=~"a|b"}[5m]))`, []string{"steps_total"},
			[]string{"namespace", "outcome", "workerpool"}},
		{`sum by (workerpool) (in_flight) / sum by (workerpool) (capacity)`, []string{"in_flight", "capacity"}, []string{"workerpool"}},
		{`in_flight / on (pod) group_left (outcome) sum by (pod, outcome) (rate(steps_total[1m]))`, []string{"in_flight", "steps_total"},
			[]string{"instance", "job", "namespace", "outcome", "pod", "workerpool"}},
		{`sum without (pod, instance) (in_flight)`, []string{"in_flight"}, []string{"job", "namespace", "workerpool"}},
		{`histogram_quantile(0.9, sum by (le, workerpool) (rate(claim_seconds_bucket[5m])))`, []string{"claim_seconds_bucket"}, []string{"workerpool"}},
		{`label_replace(in_flight, "pool", "$1", "workerpool", "(.*)")`, []string{"in_flight"},
			[]string{"instance", "job", "namespace", "pod", "pool", "workerpool"}},
		{`status_condition{type="Ready",status="False"} == 1`, []string{"status_condition"},
			[]string{"instance", "job", "namespace", "pod", "status", "type", "workerpool"}},
		{`topk by (namespace) (3, in_flight)`, []string{"in_flight"}, []string{"instance", "job", "namespace", "pod", "workerpool"}},
	} {
		q, err := Check(tc.expr, testSource)
		if err != nil {
			t.Errorf("Check(%q): %v", tc.expr, err)
			continue
		}
		if !slices.Equal(q.Metrics, tc.metrics) || !slices.Equal(q.Labels, tc.labels) {
			t.Errorf("Check(%q) = metrics %v labels %v, want %v %v", tc.expr, q.Metrics, q.Labels, tc.metrics, tc.labels)
		}
	}
}

func TestCheckRejects(t *testing.T) {
	for _, tc := range []struct{ expr, says string }{
		{`sum(in_flight`, "unclosed"},
		{`no_such_metric > 1`, "no_such_metric is not served"},
		{`{job="x"}`, "names no metric"},
		{`steps_total > 1`, "counter, read without rate()"},
		{`rate(in_flight[5m])`, "rate of in_flight, a GAUGE"},
		{`in_flight{node="n1"}`, "matched on label node"},
		{`sum by (node) (in_flight)`, "sum groups by node"},
		// The inner sum dropped pod: the outer max cannot group by it.
		{`max by (pod) (sum by (workerpool) (in_flight))`, "max groups by pod"},
		{`in_flight / on (outcome) capacity`, "on(...) matches outcome"},
		{`in_flight / on (pod) group_left (nope) capacity`, "group_left includes nope"},
		{`sum by (workerpool) (in_flight) / sum by (namespace) (capacity)`, "the sides carry different labels"},
		{`label_replace(in_flight, "pool", "$1", "nope", "(.*)")`, "label_replace reads nope"},
	} {
		_, err := Check(tc.expr, testSource)
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Check(%q) = %v, want an error saying %q", tc.expr, err, tc.says)
		}
	}
}

func TestExpandVariables(t *testing.T) {
	values := map[string]string{"namespace": "shop", "__rate_interval": "1m"}
	got, err := ExpandVariables(`rate(x{namespace=~"$namespace", a="${namespace:regex}", b="[[namespace]]"}[$__rate_interval])`, values)
	if want := `rate(x{namespace=~"shop", a="shop", b="shop"}[1m])`; err != nil || got != want {
		t.Errorf("ExpandVariables = %q, %v; want %q", got, err, want)
	}
	if _, err := ExpandVariables(`x{pod=~"$pod"}`, values); err == nil || !strings.Contains(err.Error(), "[pod]") {
		t.Errorf("ExpandVariables with $pod unset: %v, want an error naming pod", err)
	}
}

func TestLabelValuesQuery(t *testing.T) {
	got, err := LabelValuesQuery(`label_values(in_flight{namespace=~"shop"}, workerpool)`)
	if want := `group by (workerpool) (in_flight{namespace=~"shop"})`; err != nil || got != want {
		t.Errorf("LabelValuesQuery = %q, %v; want %q", got, err, want)
	}
	if _, err := Check(got, testSource); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{`query_result(up)`, `label_values(in_flight)`, `label_values(in_flight, "a b")`} {
		if q, err := LabelValuesQuery(bad); err == nil {
			t.Errorf("LabelValuesQuery(%q) = %q, want an error", bad, q)
		}
	}
}
