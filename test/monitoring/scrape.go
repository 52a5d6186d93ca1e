package monitoring

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	corev1 "k8s.io/api/core/v1"

	"github.com/seed-a17b38e7/workerpool-operator/test/kubeobjects"
	"github.com/seed-a17b38e7/workerpool-operator/test/promconfig"
)

// The scrape configuration types are promconfig's; the tests here check
// what it writes.
type (
	Config        = promconfig.Config
	ScrapeConfig  = promconfig.ScrapeConfig
	ScrapeOptions = promconfig.ScrapeOptions
)

// ScrapeConfigs are the scrape jobs prometheus-operator generates for a
// ServiceMonitor (promconfig.ScrapeConfigs).
func ScrapeConfigs(sm *kubeobjects.ServiceMonitor, opts ScrapeOptions) ([]ScrapeConfig, error) {
	return promconfig.ScrapeConfigs(sm, opts)
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
		set(promconfig.ServiceLabel(k), v)
		set(promconfig.ServiceLabelPresent(k), "true")
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
func Target(sc ScrapeConfig, p PodEndpoint) (map[string]string, bool, error) {
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
func TargetLabels(sc ScrapeConfig, p PodEndpoint) ([]string, error) {
	t, ok, err := Target(sc, p)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("job %s does not scrape %s port %s", sc.JobName, p.Service.Name, p.Port)
	}
	return slices.Sorted(maps.Keys(t)), nil
}
