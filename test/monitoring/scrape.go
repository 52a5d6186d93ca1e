package monitoring

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	corev1 "k8s.io/api/core/v1"
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
			SourceLabels: []string{serviceLabel(k), serviceLabelPresent(k)},
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
				SourceLabels: []string{serviceLabel(e.Key), serviceLabelPresent(e.Key)},
				Regex:        "(" + strings.Join(values, "|") + ");true"})
		case metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist:
			action := map[metav1.LabelSelectorOperator]string{metav1.LabelSelectorOpExists: "keep", metav1.LabelSelectorOpDoesNotExist: "drop"}[e.Operator]
			selection = append(selection, RelabelConfig{Action: action, SourceLabels: []string{serviceLabelPresent(e.Key)}, Regex: "true"})
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

func serviceLabel(k string) string { return "__meta_kubernetes_service_label_" + metaName(k) }
func serviceLabelPresent(k string) string {
	return "__meta_kubernetes_service_labelpresent_" + metaName(k)
}

// PodEndpoint is one pod behind a port of a Service, as Kubernetes service
// discovery (role endpointslice) finds it.
type PodEndpoint struct {
	Service   *corev1.Service
	Port      string // the Service port's name
	Pod       string
	Container string
	Address   string // the pod's IP and the port's number
	Phase     corev1.PodPhase
}

// meta is the target the discovery hands the scrape job: the endpoint's
// meta labels, with job, scheme and path from the job.
func (p PodEndpoint) meta(sc ScrapeConfig) labels.Labels {
	b := labels.NewBuilder(labels.EmptyLabels())
	set := func(k, v string) { b.Set(k, v) }
	set("__address__", p.Address)
	set("job", sc.JobName)
	set("__scheme__", sc.Scheme)
	set("__metrics_path__", sc.MetricsPath)
	set("__meta_kubernetes_namespace", p.Service.Namespace)
	set("__meta_kubernetes_service_name", p.Service.Name)
	for k, v := range p.Service.Labels {
		set(serviceLabel(k), v)
		set(serviceLabelPresent(k), "true")
	}
	set("__meta_kubernetes_endpointslice_port_name", p.Port)
	set("__meta_kubernetes_endpointslice_address_target_kind", "Pod")
	set("__meta_kubernetes_endpointslice_address_target_name", p.Pod)
	set("__meta_kubernetes_pod_name", p.Pod)
	set("__meta_kubernetes_pod_container_name", p.Container)
	set("__meta_kubernetes_pod_phase", string(p.Phase))
	return b.Labels()
}

// Target applies the job's relabeling to the endpoint, as Prometheus's
// relabeling code does: the target's labels (without the __ ones Prometheus
// drops, with instance set from the address), or false if the job does not
// scrape that endpoint.
func (sc ScrapeConfig) Target(p PodEndpoint) (map[string]string, bool, error) {
	cfgs := make([]*relabel.Config, len(sc.RelabelConfigs))
	for i, r := range sc.RelabelConfigs {
		c := relabel.DefaultRelabelConfig
		c.SourceLabels = make(model.LabelNames, len(r.SourceLabels))
		for j, l := range r.SourceLabels {
			c.SourceLabels[j] = model.LabelName(l)
		}
		if r.Separator != "" {
			c.Separator = r.Separator
		}
		if r.Regex != "" {
			re, err := relabel.NewRegexp(r.Regex)
			if err != nil {
				return nil, false, fmt.Errorf("relabeling %d: %w", i, err)
			}
			c.Regex = re
		}
		if r.Replacement != nil {
			c.Replacement = *r.Replacement
		}
		c.TargetLabel = r.TargetLabel
		if r.Action != "" {
			c.Action = relabel.Action(strings.ToLower(r.Action))
		}
		if err := c.Validate(model.UTF8Validation); err != nil {
			return nil, false, fmt.Errorf("relabeling %d %+v: %w", i, r, err)
		}
		cfgs[i] = &c
	}
	b := labels.NewBuilder(p.meta(sc))
	if !relabel.ProcessBuilder(b, cfgs...) {
		return nil, false, nil
	}
	out := map[string]string{}
	b.Labels().Range(func(l labels.Label) {
		if !strings.HasPrefix(l.Name, "__") {
			out[l.Name] = l.Value
		}
	})
	if _, ok := out["instance"]; !ok {
		out["instance"] = p.Address
	}
	return out, true, nil
}

// TargetLabels are the labels the job gives every series of the endpoint:
// what alerts and dashboards may use besides the series' own labels.
func (sc ScrapeConfig) TargetLabels(p PodEndpoint) ([]string, error) {
	t, ok, err := sc.Target(p)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("job %s does not scrape %s port %s", sc.JobName, p.Service.Name, p.Port)
	}
	return slices.Sorted(maps.Keys(t)), nil
}
