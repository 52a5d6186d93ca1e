//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/seed-a17b38e7/workerpool-operator/test/kubeobjects"
	"github.com/seed-a17b38e7/workerpool-operator/test/promconfig"
)

// prometheus is the suite's Prometheus server: the real one, pinned in
// hack/tools, run on this host and configured as prometheus-operator would
// configure one from the chart's ServiceMonitors and PrometheusRule. It
// finds the worker pods and the operator through Kubernetes service
// discovery, scrapes them every 2 s and evaluates the shipped alert rules
// every 2 s (their `for:` durations unchanged).
type prometheus struct {
	url string
	log string // its log file, shown when the suite fails
}

// prom is started by TestOperator before its steps.
var prom *prometheus

// promServiceAccountToken is where a ServiceMonitor expects Prometheus's
// own ServiceAccount token (bearerTokenFile) inside its pod.
const promServiceAccountToken = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// startPrometheus renders the chart's monitoring objects for the suite's
// release, gives the server a ServiceAccount token bound to the chart's
// metrics-reader ClusterRole (the operator checks every scrape's token),
// and starts it. It is stopped when t ends.
func startPrometheus(t *testing.T, ns string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	rendered := e.helmCmd(t, "template", release, chartDir, "--namespace", operatorNS,
		"--set", "watchNamespaces={"+ns+"}", "--set", "monitoring.serviceMonitor.enabled=true",
		"--set", "monitoring.workerServiceMonitor.enabled=true", "--set", "monitoring.prometheusRule.enabled=true")
	var monitors []*kubeobjects.ServiceMonitor
	var rules []any
	reader := ""
	for _, doc := range strings.Split(rendered, "\n---") {
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("helm template: %v", err)
		}
		switch {
		case head.Kind == "ServiceMonitor":
			sm := &kubeobjects.ServiceMonitor{}
			if err := yaml.Unmarshal([]byte(doc), sm); err != nil {
				t.Fatal(err)
			}
			monitors = append(monitors, sm)
		case head.Kind == "PrometheusRule":
			groups, err := promconfig.RuleGroups([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			rules = groups
		case head.Kind == "ClusterRole" && strings.HasSuffix(head.Metadata.Name, "-metrics-reader"):
			reader = head.Metadata.Name
		}
	}
	if len(monitors) != 2 || rules == nil || reader == "" {
		t.Fatalf("the chart rendered %d ServiceMonitors (want the operator's and the workers'), rules %t, metrics-reader ClusterRole %q",
			len(monitors), rules != nil, reader)
	}

	kubectl(t, "create", "serviceaccount", "prometheus", "-n", ns)
	binding := ns + "-prometheus"
	kubectl(t, "create", "clusterrolebinding", binding, "--clusterrole="+reader, "--serviceaccount="+ns+":prometheus")
	t.Cleanup(func() { _, _ = run(t, "kubectl", "delete", "clusterrolebinding", binding, "--ignore-not-found") })
	token := filepath.Join(dir, "token")
	writeFile(t, token, []byte(strings.TrimSpace(kubectl(t, "create", "token", "prometheus", "-n", ns, "--duration=3h"))))

	var cfg promconfig.Config
	cfg.Global.ScrapeInterval, cfg.Global.ScrapeTimeout, cfg.Global.EvaluationInterval = "2s", "2s", "2s"
	ruleFile := filepath.Join(dir, "rules.yaml")
	data, err := promconfig.RuleFile(rules)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, ruleFile, data)
	cfg.RuleFiles = []string{ruleFile}
	for _, sm := range monitors {
		scs, err := promconfig.ScrapeConfigs(sm, promconfig.ScrapeOptions{Kubeconfig: os.Getenv("KUBECONFIG"),
			Files: map[string]string{promServiceAccountToken: token}})
		if err != nil {
			t.Fatal(err)
		}
		cfg.ScrapeConfigs = append(cfg.ScrapeConfigs, scs...)
	}
	data, err = cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfgFile, data)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	p := &prometheus{url: "http://" + addr, log: filepath.Join(dir, "prometheus.log")}
	logFile, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(e.prometheusBin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Prometheus targets: %s", p.targetHealth())
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logFile.Close()
		if t.Failed() {
			if b, err := os.ReadFile(p.log); err == nil {
				t.Logf("Prometheus log:\n%s", b)
			}
		}
	})
	eventually(t, "Prometheus ready", time.Minute, func() (bool, string) {
		resp, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
	t.Logf("Prometheus %s on %s: %d scrape jobs from the chart's ServiceMonitors, the chart's rules", e.prometheusBin, addr, len(cfg.ScrapeConfigs))
	return p
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// api GETs a Prometheus HTTP API path and decodes its data into out.
func (p *prometheus) api(path string, params url.Values, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+path+"?"+params.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %s: %w", path, resp.Status, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s", path, body.Error)
	}
	return json.Unmarshal(body.Data, out)
}

// promAlert is an alert in Prometheus's /api/v1/alerts.
type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"` // pending or firing
}

// alertState is the state of the named alert for the pool ("" when it is
// not active: never fired, or resolved).
func (p *prometheus) alertState(ns, pool, name string) (string, promAlert, error) {
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	if err := p.api("/api/v1/alerts", nil, &data); err != nil {
		return "", promAlert{}, err
	}
	for _, a := range data.Alerts {
		if a.Labels["alertname"] == name && a.Labels["namespace"] == ns && a.Labels["workerpool"] == pool {
			return a.State, a, nil
		}
	}
	return "", promAlert{}, nil
}

// waitAlert waits until the named alert of the pool is in state ("" for
// resolved) and returns it.
func (p *prometheus) waitAlert(t *testing.T, ns, pool, name, state string, timeout time.Duration) promAlert {
	t.Helper()
	var got promAlert
	want := state
	if want == "" {
		want = "resolved"
	}
	what := fmt.Sprintf("alert %s{workerpool=%q} %s", name, pool, want)
	eventually(t, what, timeout, func() (bool, string) {
		s, a, err := p.alertState(ns, pool, name)
		if err != nil {
			return false, err.Error()
		}
		got = a
		return s == state, "state " + fmt.Sprintf("%q", s) + "; targets: " + p.targetHealth()
	})
	return got
}

// alertPendingThenFiring asserts that the named alert of the pool goes
// pending and then, after its `for:`, firing; it returns the firing alert.
func (p *prometheus) alertPendingThenFiring(t *testing.T, ns, pool, name string) promAlert {
	t.Helper()
	start := time.Now()
	p.waitAlert(t, ns, pool, name, "pending", 90*time.Second)
	pending := time.Since(start)
	a := p.waitAlert(t, ns, pool, name, "firing", 3*time.Minute)
	t.Logf("Prometheus: %s for %s pending after %s, firing after %s: %s", name, pool, pending.Round(time.Second),
		time.Since(start).Round(time.Second), a.Annotations["summary"])
	return a
}

// targetHealth summarises Prometheus's active targets by job: how many are
// up, for a failing wait's message.
func (p *prometheus) targetHealth() string {
	var data struct {
		ActiveTargets []struct {
			Labels    map[string]string `json:"labels"`
			Health    string            `json:"health"`
			LastError string            `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := p.api("/api/v1/targets", url.Values{"state": {"active"}}, &data); err != nil {
		return err.Error()
	}
	var out []string
	for _, tg := range data.ActiveTargets {
		s := tg.Labels["job"] + "/" + tg.Labels["pod"] + " " + tg.Health
		if tg.LastError != "" {
			s += " (" + tg.LastError + ")"
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// query runs an instant query and returns how many series it gave.
func (p *prometheus) query(expr string) (int, error) {
	var data struct {
		Result []json.RawMessage `json:"result"`
	}
	if err := p.api("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return 0, err
	}
	return len(data.Result), nil
}

// checkDashboard runs every query of the chart's Grafana dashboard, its
// variables set to the pool, and requires each to return data: the pool is
// an FFI pool that is busy and has completed steps, so every panel has
// something to show.
func (p *prometheus) checkDashboard(t *testing.T, ns, pool string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartDir, "files", "dashboards", "workerpool-workers.json"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := promconfig.ReadDashboard(data)
	if err != nil {
		t.Fatal(err)
	}
	queries, err := d.Queries(map[string]string{"datasource": "prometheus", "namespace": ns, "workerpool": pool, "__rate_interval": "1m"})
	if err != nil {
		t.Fatal(err)
	}
	var report bytes.Buffer
	for _, q := range queries {
		var n int
		eventually(t, fmt.Sprintf("dashboard panel %q query %s returns data", q.Panel, q.RefID), time.Minute, func() (bool, string) {
			var err error
			n, err = p.query(q.Expr)
			if err != nil {
				return false, err.Error()
			}
			return n > 0, fmt.Sprintf("%d series from %s", n, q.Expr)
		})
		fmt.Fprintf(&report, "  %-40s %s: %d series\n", q.Panel, q.RefID, n)
	}
	t.Logf("dashboard queries against Prometheus, pool %s:\n%s", pool, report.String())
}
