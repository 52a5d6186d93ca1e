// Package promconfig writes what a Prometheus server outside the cluster
// reads to stand in for the one prometheus-operator would run: scrape jobs
// made from the chart's ServiceMonitors (the same discovery, selection and
// relabelling) and a rule file from its PrometheusRule, and reads the Grafana
// dashboard's queries. The e2e suite runs a
// real Prometheus with them; the monitoring tests check them.
package promconfig

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/seed-a17b38e7/workerpool-operator/test/kubeobjects"
)

// Config is a Prometheus server's configuration file (prometheus.yml), with
// the fields the tests set.
type Config struct {
	Global struct {
		ScrapeInterval     string `json:"scrape_interval,omitempty"`
		ScrapeTimeout      string `json:"scrape_timeout,omitempty"`
		EvaluationInterval string `json:"evaluation_interval,omitempty"`
	} `json:"global"`
	RuleFiles     []string       `json:"rule_files,omitempty"`
	ScrapeConfigs []ScrapeConfig `json:"scrape_configs"`
}

// Marshal writes the configuration as Prometheus reads it.
func (c Config) Marshal() ([]byte, error) { return yaml.Marshal(c) }

// ScrapeConfig is one scrape job of a Prometheus configuration.
type ScrapeConfig struct {
	JobName             string               `json:"job_name"`
	HonorLabels         bool                 `json:"honor_labels"`
	ScrapeInterval      string               `json:"scrape_interval,omitempty"`
	ScrapeTimeout       string               `json:"scrape_timeout,omitempty"`
	MetricsPath         string               `json:"metrics_path,omitempty"`
	Scheme              string               `json:"scheme,omitempty"`
	Authorization       *Authorization       `json:"authorization,omitempty"`
	TLSConfig           *TLSConfig           `json:"tls_config,omitempty"`
	KubernetesSDConfigs []KubernetesSDConfig `json:"kubernetes_sd_configs"`
	RelabelConfigs      []RelabelConfig      `json:"relabel_configs"`
}

// Authorization presents a credential read from a file, as a bearer token.
type Authorization struct {
	Type            string `json:"type,omitempty"`
	CredentialsFile string `json:"credentials_file"`
}

// TLSConfig is the part of a scrape's TLS settings ServiceMonitors use here.
type TLSConfig struct {
	InsecureSkipVerify bool `json:"insecure_skip_verify"`
}

// KubernetesSDConfig is Prometheus's Kubernetes service discovery.
type KubernetesSDConfig struct {
	Role string `json:"role"`
	// KubeconfigFile is how Prometheus reaches the API server from outside
	// the cluster; empty, it uses its pod's ServiceAccount.
	KubeconfigFile string `json:"kubeconfig_file,omitempty"`
	Namespaces     *struct {
		Names []string `json:"names"`
	} `json:"namespaces,omitempty"`
}

// RelabelConfig is one relabeling step of a scrape job.
type RelabelConfig struct {
	SourceLabels []string `json:"source_labels,omitempty"`
	Separator    string   `json:"separator,omitempty"`
	Regex        string   `json:"regex,omitempty"`
	Replacement  *string  `json:"replacement,omitempty"`
	TargetLabel  string   `json:"target_label,omitempty"`
	Action       string   `json:"action,omitempty"`
}

// ScrapeOptions say how a Prometheus outside the cluster stands in for one
// the prometheus-operator runs in it.
type ScrapeOptions struct {
	// Kubeconfig is the file the service discovery reads the cluster from.
	Kubeconfig string
	// Files maps a path a ServiceMonitor names inside Prometheus's pod (its
	// ServiceAccount token) to the file on this host standing for it.
	Files map[string]string
}

// discoveryRole is the Kubernetes service discovery role the scrape configs
// use. prometheus-operator uses endpoints or endpointslice (its Prometheus
// serviceDiscoveryRole); EndpointSlices replace the deprecated Endpoints API.
const discoveryRole = "endpointslice"

// ScrapeConfigs are the scrape jobs prometheus-operator generates for a
// ServiceMonitor, one per endpoint, with the same discovery, selection and
// relabeling (its generateServiceMonitorConfig, without sharding): keep the
// endpoints of the Services the selector matches, on the named port; name
// the target by namespace, service, pod and container; drop finished pods;
// job is the Service's name, endpoint the port's; then the monitor's own
// relabelings.
func ScrapeConfigs(sm *kubeobjects.ServiceMonitor, opts ScrapeOptions) ([]ScrapeConfig, error) {
	sd := KubernetesSDConfig{Role: discoveryRole, KubeconfigFile: opts.Kubeconfig}
	switch ns := sm.Spec.NamespaceSelector; {
	case ns == nil:
		sd.Namespaces = &struct {
			Names []string `json:"names"`
		}{[]string{sm.Namespace}}
	case ns.Any:
	default:
		sd.Namespaces = &struct {
			Names []string `json:"names"`
		}{ns.MatchNames}
	}

	var selection []RelabelConfig
	for _, k := range slices.Sorted(maps.Keys(sm.Spec.Selector.MatchLabels)) {
		selection = append(selection, RelabelConfig{Action: "keep",
			SourceLabels: []string{ServiceLabel(k), ServiceLabelPresent(k)},
			Regex:        "(" + regexp.QuoteMeta(sm.Spec.Selector.MatchLabels[k]) + ");true"})
	}
	for _, e := range sm.Spec.Selector.MatchExpressions {
		values := make([]string, len(e.Values))
		for i, v := range e.Values {
			values[i] = regexp.QuoteMeta(v)
		}
		switch e.Operator {
		case metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn:
			action := map[metav1.LabelSelectorOperator]string{metav1.LabelSelectorOpIn: "keep", metav1.LabelSelectorOpNotIn: "drop"}[e.Operator]
			selection = append(selection, RelabelConfig{Action: action,
				SourceLabels: []string{ServiceLabel(e.Key), ServiceLabelPresent(e.Key)},
				Regex:        "(" + strings.Join(values, "|") + ");true"})
		case metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist:
			action := map[metav1.LabelSelectorOperator]string{metav1.LabelSelectorOpExists: "keep", metav1.LabelSelectorOpDoesNotExist: "drop"}[e.Operator]
			selection = append(selection, RelabelConfig{Action: action, SourceLabels: []string{ServiceLabelPresent(e.Key)}, Regex: "true"})
		default:
			return nil, fmt.Errorf("ServiceMonitor %s: selector operator %q", sm.Name, e.Operator)
		}
	}

	var out []ScrapeConfig
	for i, ep := range sm.Spec.Endpoints {
		if ep.Port == "" {
			return nil, fmt.Errorf("ServiceMonitor %s endpoint %d names no port", sm.Name, i)
		}
		sc := ScrapeConfig{
			JobName:             fmt.Sprintf("serviceMonitor/%s/%s/%d", sm.Namespace, sm.Name, i),
			HonorLabels:         ep.HonorLabels,
			ScrapeInterval:      ep.Interval,
			ScrapeTimeout:       ep.ScrapeTimeout,
			MetricsPath:         ep.Path,
			Scheme:              ep.Scheme,
			KubernetesSDConfigs: []KubernetesSDConfig{sd},
		}
		if ep.TLSConfig != nil {
			sc.TLSConfig = &TLSConfig{InsecureSkipVerify: ep.TLSConfig.InsecureSkipVerify}
		}
		if f := ep.BearerTokenFile; f != "" {
			// prometheus-operator writes bearer_token_file, the older
			// spelling of this.
			if host, ok := opts.Files[f]; ok {
				f = host
			}
			sc.Authorization = &Authorization{Type: "Bearer", CredentialsFile: f}
		}
		target := []string{"__meta_kubernetes_endpointslice_address_target_kind", "__meta_kubernetes_endpointslice_address_target_name"}
		sc.RelabelConfigs = append([]RelabelConfig{{SourceLabels: []string{"job"}, TargetLabel: "__tmp_prometheus_job_name"}}, selection...)
		sc.RelabelConfigs = append(sc.RelabelConfigs,
			RelabelConfig{Action: "keep", SourceLabels: []string{"__meta_kubernetes_endpointslice_port_name"}, Regex: regexp.QuoteMeta(ep.Port)},
			RelabelConfig{SourceLabels: target, Separator: ";", Regex: "Node;(.*)", Replacement: ptr("${1}"), TargetLabel: "node"},
			RelabelConfig{SourceLabels: target, Separator: ";", Regex: "Pod;(.*)", Replacement: ptr("${1}"), TargetLabel: "pod"},
			RelabelConfig{SourceLabels: []string{"__meta_kubernetes_namespace"}, TargetLabel: "namespace"},
			RelabelConfig{SourceLabels: []string{"__meta_kubernetes_service_name"}, TargetLabel: "service"},
			RelabelConfig{SourceLabels: []string{"__meta_kubernetes_pod_name"}, TargetLabel: "pod"},
			RelabelConfig{SourceLabels: []string{"__meta_kubernetes_pod_container_name"}, TargetLabel: "container"},
			RelabelConfig{Action: "drop", SourceLabels: []string{"__meta_kubernetes_pod_phase"}, Regex: "(Failed|Succeeded)"},
			RelabelConfig{SourceLabels: []string{"__meta_kubernetes_service_name"}, TargetLabel: "job", Replacement: ptr("${1}")},
			RelabelConfig{TargetLabel: "endpoint", Replacement: ptr(ep.Port)},
		)
		for _, r := range ep.Relabelings {
			sc.RelabelConfigs = append(sc.RelabelConfigs, RelabelConfig{SourceLabels: r.SourceLabels, TargetLabel: r.TargetLabel, Action: r.Action})
		}
		out = append(out, sc)
	}
	return out, nil
}

func ptr[T any](v T) *T { return &v }

// metaName is how Kubernetes service discovery names a Kubernetes label in
// its meta labels: every character not allowed in a label name becomes _.
func metaName(label string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || (r >= '0' && r <= '9') || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') {
			return r
		}
		return '_'
	}, label)
}

// ServiceLabel is the meta label holding the Service label k.
func ServiceLabel(k string) string { return "__meta_kubernetes_service_label_" + metaName(k) }

// ServiceLabelPresent is the meta label saying the Service has label k.
func ServiceLabelPresent(k string) string {
	return "__meta_kubernetes_service_labelpresent_" + metaName(k)
}

// RuleGroups reads the rule groups of a monitoring.coreos.com/v1
// PrometheusRule: its spec, which is what prometheus-operator hands
// Prometheus as a rule file. They are kept as decoded YAML, every field
// as written, for RuleFile and for tests that change a rule.
func RuleGroups(prometheusRule []byte) ([]any, error) {
	var obj struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Spec       struct {
			Groups []any `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(prometheusRule, &obj); err != nil {
		return nil, err
	}
	if obj.APIVersion != "monitoring.coreos.com/v1" || obj.Kind != "PrometheusRule" {
		return nil, fmt.Errorf("a %s %s, not a monitoring.coreos.com/v1 PrometheusRule", obj.APIVersion, obj.Kind)
	}
	if len(obj.Spec.Groups) == 0 {
		return nil, fmt.Errorf("a PrometheusRule without rule groups")
	}
	return obj.Spec.Groups, nil
}

// RuleFile writes rule groups as a Prometheus rule file (promtool check
// rules, promtool test rules and the server's rule_files read it).
func RuleFile(groups []any) ([]byte, error) {
	return yaml.Marshal(map[string]any{"groups": groups})
}
