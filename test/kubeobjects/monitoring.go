package kubeobjects

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	workersv1alpha1 "github.com/seed-a17b38e7/workerpool-operator/api/v1alpha1"
)

// PrometheusRule is a monitoring.coreos.com/v1 PrometheusRule, with only the
// fields the installs use: decoded strictly, a misspelt field fails.
type PrometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []Rule `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// Rule is one alerting rule of a PrometheusRule, checked against the
// metrics the project serves.
type Rule struct {
	Alert       string            `json:"alert"`
	Expr        string            `json:"expr"`
	For         string            `json:"for"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
}

// ServiceMonitor is a monitoring.coreos.com/v1 ServiceMonitor, with only the
// fields the installs use: decoded strictly, a misspelt field fails.
type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any"`
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port            string `json:"port"`
			Path            string `json:"path"`
			Scheme          string `json:"scheme"`
			Interval        string `json:"interval"`
			ScrapeTimeout   string `json:"scrapeTimeout"`
			BearerTokenFile string `json:"bearerTokenFile"`
			HonorLabels     bool   `json:"honorLabels"`
			TLSConfig       *struct {
				InsecureSkipVerify bool `json:"insecureSkipVerify"`
			} `json:"tlsConfig"`
			Relabelings []struct {
				SourceLabels []string `json:"sourceLabels"`
				TargetLabel  string   `json:"targetLabel"`
				Action       string   `json:"action"`
			} `json:"relabelings"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// RelabelTargets maps each single source label of a monitor's replace
// relabelings to its target label: the labels a monitor adds to the series,
// which alerts and dashboards may use.
func RelabelTargets(m *ServiceMonitor) map[string]string {
	out := map[string]string{}
	for _, ep := range m.Spec.Endpoints {
		for _, r := range ep.Relabelings {
			if len(r.SourceLabels) == 1 && (r.Action == "" || r.Action == "replace") {
				out[r.SourceLabels[0]] = r.TargetLabel
			}
		}
	}
	return out
}

// ServiceLabelMeta is the Kubernetes service discovery meta label of a
// Service label (invalid characters become underscores): the source label a
// relabeling must name to copy that Service label onto the series.
func ServiceLabelMeta(label string) string {
	b := []byte(label)
	for i, c := range b {
		if !(c == '_' || (c >= '0' && c <= '9') || (c|0x20 >= 'a' && c|0x20 <= 'z')) {
			b[i] = '_'
		}
	}
	return "__meta_kubernetes_service_label_" + string(b)
}

// CheckOperatorMonitor: the operator's ServiceMonitor scrapes exactly the
// manager's metrics Service, in its own namespace, on its https port with
// the pod's bearer token (the manager authenticates every scrape), accepting
// the manager's self-signed certificate, and honours the series' labels (or
// the pools' namespace label would become exported_namespace).
func CheckOperatorMonitor(t testing.TB, om *ServiceMonitor, metricsService *corev1.Service) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(&om.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(metricsService.Labels)) {
		t.Errorf("operator ServiceMonitor selector %+v does not select the metrics Service (labels %v): %v", om.Spec.Selector, metricsService.Labels, err)
	}
	if om.Spec.NamespaceSelector != nil {
		t.Errorf("operator ServiceMonitor looks beyond its own namespace: %+v", om.Spec.NamespaceSelector)
	}
	if len(om.Spec.Endpoints) != 1 {
		t.Fatalf("operator ServiceMonitor has %d endpoints, want 1", len(om.Spec.Endpoints))
	}
	ep := om.Spec.Endpoints[0]
	if len(metricsService.Spec.Ports) == 0 || ep.Port != metricsService.Spec.Ports[0].Name || ep.Port != "https" || ep.Scheme != "https" || ep.Path != "/metrics" {
		t.Errorf("operator endpoint = %s %s %s, want https port https /metrics (the metrics Service's port)", ep.Scheme, ep.Port, ep.Path)
	}
	if ep.BearerTokenFile != "/var/run/secrets/kubernetes.io/serviceaccount/token" {
		t.Errorf("operator endpoint bearerTokenFile = %q: the manager authenticates every scrape", ep.BearerTokenFile)
	}
	if ep.TLSConfig == nil || !ep.TLSConfig.InsecureSkipVerify {
		t.Error("operator endpoint does not skip verifying the manager's self-signed certificate")
	}
	if !ep.HonorLabels {
		t.Error("operator endpoint must honor labels, or the pools' namespace label becomes exported_namespace")
	}
}

// PoolServiceLabels are the labels of the headless Service the operator
// creates for a pool (controllers/children.go puts them on every object it
// creates for the pool), which the worker ServiceMonitor selects.
func PoolServiceLabels(pool string) map[string]string {
	return map[string]string{"app.kubernetes.io/managed-by": "workerpool-operator", "app.kubernetes.io/name": "tasker-worker",
		workersv1alpha1.PoolLabel: pool, "app.kubernetes.io/instance": pool}
}

// CheckWorkerMonitor: the worker ServiceMonitor selects the per-pool
// Services the operator creates (by the labels controllers/children.go puts
// on them) and not the operator's own metrics Service, scrapes them over
// http on the port the operator names, and relabels the pool's name into
// workerpool, as the operator's own series call it. Where it looks for
// Services (its namespaceSelector) is the caller's to check.
func CheckWorkerMonitor(t testing.TB, wm *ServiceMonitor, operatorService *corev1.Service) {
	t.Helper()
	poolService := labels.Set(PoolServiceLabels("payments"))
	sel, err := metav1.LabelSelectorAsSelector(&wm.Spec.Selector)
	if err != nil || !sel.Matches(poolService) || wm.Spec.Selector.MatchLabels["app.kubernetes.io/managed-by"] != "workerpool-operator" {
		t.Errorf("worker ServiceMonitor selector %+v must select the pools' Services by app.kubernetes.io/managed-by=workerpool-operator (%v)", wm.Spec.Selector, err)
	}
	if sel != nil && sel.Matches(labels.Set(operatorService.Labels)) {
		t.Error("worker ServiceMonitor also selects the operator's metrics Service")
	}
	if len(wm.Spec.Endpoints) != 1 {
		t.Fatalf("worker ServiceMonitor has %d endpoints, want 1", len(wm.Spec.Endpoints))
	}
	ep := wm.Spec.Endpoints[0]
	if ep.Port != workersv1alpha1.MetricsPortName || ep.Path != "/metrics" || ep.Scheme != "http" {
		t.Errorf("worker endpoint = %s %s %s, want http port %s /metrics", ep.Scheme, ep.Port, ep.Path, workersv1alpha1.MetricsPortName)
	}
	if got := RelabelTargets(wm)[ServiceLabelMeta(workersv1alpha1.PoolLabel)]; got != "workerpool" {
		t.Errorf("worker endpoint relabels the pool label into %q, want workerpool (as the operator's series)", got)
	}
}
