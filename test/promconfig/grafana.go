package promconfig

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// Dashboard is the part of a Grafana dashboard's JSON the checks read.
type Dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []Variable `json:"list"`
	} `json:"templating"`
	Panels []Panel `json:"panels"`
}

// Variable is one of a dashboard's template variables.
type Variable struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Query      any    `json:"query"`
	Definition string `json:"definition"`
}

// Panel is one dashboard panel and its Prometheus queries.
type Panel struct {
	ID         int    `json:"id"`
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		RefID        string `json:"refId"`
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
}

// ReadDashboard decodes a dashboard's JSON.
func ReadDashboard(data []byte) (Dashboard, error) {
	var d Dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return d, fmt.Errorf("dashboard JSON: %w", err)
	}
	return d, nil
}

// grafanaVariable matches the ways a query names a template variable:
// $name, ${name}, ${name:format} and the old [[name]].
var grafanaVariable = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// ExpandVariables substitutes the dashboard variables and Grafana's own
// ($__rate_interval, $__interval, ...) in a panel's query, as Grafana does
// before it sends the query to Prometheus. A variable values does not give
// is an error, so no query reaches the parser with a $ left in it.
func ExpandVariables(expr string, values map[string]string) (string, error) {
	var missing []string
	out := grafanaVariable.ReplaceAllStringFunc(expr, func(m string) string {
		sub := grafanaVariable.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		v, ok := values[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return out, fmt.Errorf("%q: no value for the variables %v", expr, missing)
	}
	return out, nil
}

// labelName is a label name as Prometheus's classic validation allows.
var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// LabelValuesQuery turns a Grafana variable query label_values(selector,
// label) (Grafana's syntax, not PromQL's) into the PromQL expression whose
// series carry the values Grafana lists: group by (label) (selector).
func LabelValuesQuery(query string) (string, error) {
	inner, ok := strings.CutPrefix(strings.TrimSpace(query), "label_values(")
	if !ok || !strings.HasSuffix(inner, ")") {
		return "", fmt.Errorf("%q is not label_values(selector, label)", query)
	}
	inner = strings.TrimSuffix(inner, ")")
	comma := strings.LastIndexByte(inner, ',')
	if comma < 0 {
		return "", fmt.Errorf("%q names no label", query)
	}
	label := strings.TrimSpace(inner[comma+1:])
	if !labelName.MatchString(label) {
		return "", fmt.Errorf("%q: %q is not a label name", query, label)
	}
	return "group by (" + label + ") (" + strings.TrimSpace(inner[:comma]) + ")", nil
}

// PanelQuery is one query of a dashboard panel, its variables expanded.
type PanelQuery struct {
	Panel, RefID, Expr, Legend string
}

// Queries are the panels' queries as Grafana sends them to Prometheus,
// with the variables given values (ExpandVariables).
func (d Dashboard) Queries(values map[string]string) ([]PanelQuery, error) {
	var out []PanelQuery
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			expr, err := ExpandVariables(tg.Expr, values)
			if err != nil {
				return nil, fmt.Errorf("panel %q: %w", p.Title, err)
			}
			out = append(out, PanelQuery{Panel: p.Title, RefID: tg.RefID, Expr: expr, Legend: tg.LegendFormat})
		}
	}
	return out, nil
}
