// Package alerts proves the alert rules of
// config/prometheus/prometheusrule.yaml (which the Helm chart ships
// unchanged) with promtool, at the release pinned in hack/tools/go.mod: the
// rules load (promtool check rules), every alert fires, with its labels and
// annotations, when its condition holds for its for: and not when it holds
// for less or stays at its threshold (promtool test rules, with the
// *.rules_test.yaml files here), and each of those tests fails when the
// rule's threshold, comparison, status or for: is changed.
package alerts

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/seed-a17b38e7/workerpool-operator/test/monitoring"
)

const repoRoot = "../../.."

// ruleTests are the promtool test files, each for one rule group.
var ruleTests = map[string]string{
	"tasker-worker":         "tasker-worker.rules_test.yaml",
	"workerpool-conditions": "workerpool-conditions.rules_test.yaml",
}

// groups reads the rule groups the project ships, checking that the chart's
// copy holds the same ones: the rules tested here are the chart's too.
func groups(t *testing.T) []any {
	t.Helper()
	read := func(path string) []any {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(repoRoot, path))
		if err != nil {
			t.Fatal(err)
		}
		g, err := monitoring.RuleGroups(b)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return g
	}
	config := read("config/prometheus/prometheusrule.yaml")
	chart := read("charts/workerpool-operator/files/config/prometheus/prometheusrule.yaml")
	if !reflect.DeepEqual(config, chart) {
		t.Fatal("the chart's rules (files/config/prometheus/prometheusrule.yaml) differ from config/prometheus/prometheusrule.yaml: run make chart-generate")
	}
	return config
}

// ruleDir writes groups as rules.yaml into a new directory, beside copies of
// the test files that load it, and returns the directory.
func ruleDir(t *testing.T, groups []any) string {
	t.Helper()
	dir := t.TempDir()
	rules, err := monitoring.RuleFile(groups)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range ruleTests {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func promtool(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), monitoring.Tool(t, "promtool"), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestRules(t *testing.T) {
	gs := groups(t)
	dir := ruleDir(t, gs)
	if out, err := promtool(t, dir, "check", "rules", "--lint=all", "--lint-fatal", "rules.yaml"); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	files := slices.Sorted(func(yield func(string) bool) {
		for _, f := range ruleTests {
			if !yield(f) {
				return
			}
		}
	})
	if out, err := promtool(t, dir, append([]string{"test", "rules"}, files...)...); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	} else {
		t.Logf("promtool test rules:\n%s", out)
	}

	// Every alert of every group has tests in its group's file that expect
	// it to fire and tests that expect it not to.
	for _, g := range decode[[]ruleGroup](t, gs) {
		f, ok := ruleTests[g.Name]
		if !ok {
			t.Errorf("rule group %s has no promtool test file", g.Name)
			continue
		}
		var tf struct {
			Tests []struct {
				AlertRuleTest []struct {
					Alertname string `json:"alertname"`
					ExpAlerts []any  `json:"exp_alerts"`
				} `json:"alert_rule_test"`
			} `json:"tests"`
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &tf); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, r := range g.Rules {
			var fires, silent bool
			for _, tc := range tf.Tests {
				for _, a := range tc.AlertRuleTest {
					if a.Alertname == r.Alert {
						fires, silent = fires || len(a.ExpAlerts) > 0, silent || len(a.ExpAlerts) == 0
					}
				}
			}
			if !fires || !silent {
				t.Errorf("%s: alert %s has tests expecting it (%t) and not (%t); want both", f, r.Alert, fires, silent)
			}
		}
	}
}

// ruleGroup is the part of a rule group the mutations read.
type ruleGroup struct {
	Name  string `json:"name"`
	Rules []struct {
		Alert string `json:"alert"`
		Expr  string `json:"expr"`
		For   string `json:"for"`
	} `json:"rules"`
}

func decode[T any](t *testing.T, v any) T {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// evaluationInterval is the test files' evaluation_interval: a for: one
// interval longer or shorter moves the moment an alert fires by one
// evaluation, which the tests pin.
const evaluationInterval = 10 * time.Second

// mutation is a changed rule: its expression or its for:.
type mutation struct {
	what, expr, for_ string
}

// mutations are the changes a rule's tests must notice: each number it
// compares with moved by 1% either way, > and < made >= and <=, a status
// it matches swapped (True and False), and its for: one evaluation longer
// or shorter.
func mutations(t *testing.T, expr, forText string) []mutation {
	t.Helper()
	e, err := monitoring.Parse(expr)
	if err != nil {
		t.Fatal(err)
	}
	var out []mutation
	// Each change is made in place on the tree, printed, and undone.
	printed := func(what string, undo func()) {
		out = append(out, mutation{what: what, expr: e.String(), for_: forText})
		undo()
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.BinaryExpr:
			if !n.Op.IsComparisonOperator() {
				return nil
			}
			for _, side := range []parser.Expr{n.LHS, n.RHS} {
				if num, ok := side.(*parser.NumberLiteral); ok {
					v := num.Val
					num.Val = v * 1.01
					printed(fmt.Sprintf("%g made %g", v, num.Val), func() { num.Val = v })
					num.Val = v * 0.99
					printed(fmt.Sprintf("%g made %g", v, num.Val), func() { num.Val = v })
				}
			}
			op := n.Op
			switch op {
			case parser.GTR:
				n.Op = parser.GTE
				printed("> made >=", func() { n.Op = op })
			case parser.LSS:
				n.Op = parser.LTE
				printed("< made <=", func() { n.Op = op })
			}
		case *parser.VectorSelector:
			for _, m := range n.LabelMatchers {
				swap := map[string]string{"True": "False", "False": "True"}[m.Value]
				if m.Type != labels.MatchEqual || swap == "" {
					continue
				}
				orig := *m
				nm, err := labels.NewMatcher(m.Type, m.Name, swap)
				if err != nil {
					t.Fatal(err)
				}
				*m = *nm
				printed(fmt.Sprintf("%s=%q made %q", m.Name, orig.Value, swap), func() { *m = orig })
			}
		}
		return nil
	})
	d, err := model.ParseDuration(forText)
	if err != nil {
		t.Fatalf("for %q: %v", forText, err)
	}
	for _, f := range []time.Duration{time.Duration(d) + evaluationInterval, time.Duration(d) - evaluationInterval} {
		out = append(out, mutation{what: "for " + forText + " made " + model.Duration(f).String(), expr: expr, for_: model.Duration(f).String()})
	}
	return out
}

// TestRuleTestsCatchChanges changes each rule in the ways mutations lists,
// one change at a time, and requires promtool test rules to fail on that
// alert each time: the tests pin every threshold and for:, not only that
// the alerts exist.
func TestRuleTestsCatchChanges(t *testing.T) {
	gs := groups(t)
	for gi, g := range decode[[]ruleGroup](t, gs) {
		for ri, r := range g.Rules {
			for _, m := range mutations(t, r.Expr, r.For) {
				t.Run(r.Alert+"/"+m.what, func(t *testing.T) {
					t.Parallel()
					changed := decode[[]any](t, gs)
					rule := changed[gi].(map[string]any)["rules"].([]any)[ri].(map[string]any)
					rule["expr"], rule["for"] = m.expr, m.for_
					dir := ruleDir(t, changed)
					out, err := promtool(t, dir, "test", "rules", "--run="+r.Alert, ruleTests[g.Name])
					if err == nil {
						t.Fatalf("promtool test rules passes with %s changed to expr %q for %s:\n%s", r.Alert, m.expr, m.for_, out)
					}
					if !strings.Contains(out, "alertname: "+r.Alert) {
						t.Errorf("promtool test rules failed, but not on %s:\n%s", r.Alert, out)
					}
				})
			}
		}
	}
}
