package monitoring

import (
	"fmt"

	"sigs.k8s.io/yaml"
)

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
