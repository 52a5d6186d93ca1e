package chart

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// The PromQL the chart ships (the dashboard's queries) is small: selectors,
// a few functions and aggregations with by (...). readPromQL reads that subset
// well enough to name every metric, every label it matches on or groups by,
// and whether it is the argument of rate(). Anything outside the subset is an
// error, so a query this reader does not understand fails the test instead
// of passing unchecked.

// promSelector is one metric read by an expression.
type promSelector struct {
	name     string
	matchers []string // label names matched in {...}
	inRate   bool     // an argument of rate/irate/increase
}

type promQuery struct {
	selectors []promSelector
	grouping  []string // labels of by (...) clauses
}

// promFunctions are the functions and aggregations the chart's queries may use.
var promFunctions = []string{"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "clamp_min", "clamp_max", "abs"}

var promRateFunctions = []string{"rate", "irate", "increase"}

var promKeywords = []string{"and", "or", "unless", "bool", "offset"}

var promVectorMatching = []string{"on", "ignoring", "group_left", "group_right"}

type promToken struct {
	kind byte // 'i' identifier, 's' string, 'n' number, 'v' Grafana variable, or the punctuation itself
	text string
}

func lexPromQL(expr string) ([]promToken, error) {
	isStart := func(c byte) bool { return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
	isPart := func(c byte) bool { return isStart(c) || (c >= '0' && c <= '9') }
	var out []promToken
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case c == '"' || c == '\'':
			j := i + 1
			for j < len(expr) && expr[j] != c {
				if expr[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(expr) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			out = append(out, promToken{'s', expr[i+1 : j]})
			i = j + 1
		case c == '[': // a range: a duration or a Grafana interval variable
			end := strings.IndexByte(expr[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("unterminated range at %d", i)
			}
			i += end + 1
		case c == '$': // a Grafana variable outside a string
			j := i + 1
			for j < len(expr) && isPart(expr[j]) {
				j++
			}
			out = append(out, promToken{'v', expr[i:j]})
			i = j
		case c >= '0' && c <= '9' || c == '.':
			j := i
			for j < len(expr) && (isPart(expr[j]) || expr[j] == '.') {
				j++
			}
			out = append(out, promToken{'n', expr[i:j]})
			i = j
		case isStart(c):
			j := i
			for j < len(expr) && isPart(expr[j]) {
				j++
			}
			out = append(out, promToken{'i', expr[i:j]})
			i = j
		case strings.IndexByte("(){},", c) >= 0:
			out = append(out, promToken{c, string(c)})
			i++
		case strings.IndexByte("+-*/%^=!<>~", c) >= 0: // arithmetic, comparison, matcher operators
			j := i + 1
			if j < len(expr) && strings.IndexByte("=~", expr[j]) >= 0 { // =~ != !~ >= <= ==
				j++
			}
			out = append(out, promToken{'o', expr[i:j]})
			i = j
		default:
			return nil, fmt.Errorf("unexpected %q at %d", c, i)
		}
	}
	return out, nil
}

func readPromQL(expr string) (promQuery, error) {
	toks, err := lexPromQL(expr)
	if err != nil {
		return promQuery{}, fmt.Errorf("%q: %w", expr, err)
	}
	var q promQuery
	var stack []string // the function of each open parenthesis ("" for plain grouping)
	at := func(i int, kind byte) bool { return i < len(toks) && toks[i].kind == kind }
	for i := 0; i < len(toks); i++ {
		tok := toks[i]
		switch tok.kind {
		case '(':
			stack = append(stack, "")
		case ')':
			if len(stack) == 0 {
				return q, fmt.Errorf("%q: unbalanced )", expr)
			}
			stack = stack[:len(stack)-1]
		case '{':
			return q, fmt.Errorf("%q: a selector without a metric name", expr)
		case 'i':
			switch {
			case (tok.text == "by" || tok.text == "without") && at(i+1, '('):
				if tok.text == "without" {
					return q, fmt.Errorf("%q: without (...) is outside the subset this test reads", expr)
				}
				i += 2
				for ; i < len(toks) && toks[i].kind != ')'; i++ {
					switch toks[i].kind {
					case 'i':
						q.grouping = append(q.grouping, toks[i].text)
					case ',':
					default:
						return q, fmt.Errorf("%q: %q in a by clause", expr, toks[i].text)
					}
				}
				if i == len(toks) {
					return q, fmt.Errorf("%q: unterminated by clause", expr)
				}
			case slices.Contains(promVectorMatching, tok.text) && at(i+1, '('):
				// on (...), ignoring (...), group_left (...): labels of the other side too.
				for i += 2; i < len(toks) && toks[i].kind != ')'; i++ {
				}
				if i == len(toks) {
					return q, fmt.Errorf("%q: unterminated %s clause", expr, tok.text)
				}
			case at(i+1, '('):
				if !slices.Contains(promFunctions, tok.text) {
					return q, fmt.Errorf("%q: function %s is outside the subset this test reads", expr, tok.text)
				}
				stack = append(stack, tok.text)
				i++
			case slices.Contains(promKeywords, tok.text):
			case slices.Contains(promFunctions, tok.text) && at(i+1, 'i') && toks[i+1].text == "by":
				// sum by (...) (...): the aggregation's parenthesis follows its clause.
				j := i + 2
				for j < len(toks) && toks[j].kind != ')' {
					j++
				}
				if !at(j+1, '(') {
					return q, fmt.Errorf("%q: %s by (...) without an argument", expr, tok.text)
				}
				for _, t := range toks[i+3 : j] {
					if t.kind == 'i' {
						q.grouping = append(q.grouping, t.text)
					}
				}
				stack = append(stack, tok.text)
				i = j + 1
			default:
				s := promSelector{name: tok.text}
				for _, f := range stack {
					if slices.Contains(promRateFunctions, f) {
						s.inRate = true
					}
				}
				if at(i+1, '{') {
					i += 2
					for ; i < len(toks) && toks[i].kind != '}'; i++ {
						if toks[i].kind == ',' {
							continue
						}
						if !at(i, 'i') || !at(i+1, 'o') || !at(i+2, 's') {
							return q, fmt.Errorf("%q: cannot read the matchers of %s", expr, s.name)
						}
						s.matchers = append(s.matchers, toks[i].text)
						i += 2
					}
					if i == len(toks) {
						return q, fmt.Errorf("%q: unterminated selector", expr)
					}
				}
				q.selectors = append(q.selectors, s)
			}
		}
	}
	if len(stack) != 0 {
		return q, fmt.Errorf("%q: unbalanced (", expr)
	}
	return q, nil
}

// labelValuesQuery reads a Grafana variable query label_values(metric{...}, label).
func labelValuesQuery(query string) (metric promSelector, label string, err error) {
	inner, ok := strings.CutPrefix(strings.TrimSpace(query), "label_values(")
	if !ok || !strings.HasSuffix(inner, ")") {
		return promSelector{}, "", fmt.Errorf("%q is not label_values(metric, label)", query)
	}
	inner = strings.TrimSuffix(inner, ")")
	comma := strings.LastIndexByte(inner, ',')
	if comma < 0 {
		return promSelector{}, "", fmt.Errorf("%q names no label", query)
	}
	q, err := readPromQL(inner[:comma])
	if err != nil {
		return promSelector{}, "", err
	}
	if len(q.selectors) != 1 {
		return promSelector{}, "", fmt.Errorf("%q: want one metric, found %d", query, len(q.selectors))
	}
	return q.selectors[0], strings.TrimSpace(inner[comma+1:]), nil
}

func TestReadPromQL(t *testing.T) {
	q, err := readPromQL(`sum by (namespace, workerpool, outcome) (rate(tasker_steps_completed_total{namespace=~"$namespace", workerpool=~"a,b"}[$__rate_interval])) / on() max(tasker_dispatch_capacity) > 0.5`)
	if err != nil {
		t.Fatal(err)
	}
	want := []promSelector{
		{name: "tasker_steps_completed_total", matchers: []string{"namespace", "workerpool"}, inRate: true},
		{name: "tasker_dispatch_capacity"},
	}
	if len(q.selectors) != len(want) {
		t.Fatalf("selectors = %+v, want %+v", q.selectors, want)
	}
	for i, s := range q.selectors {
		if s.name != want[i].name || s.inRate != want[i].inRate || !slices.Equal(s.matchers, want[i].matchers) {
			t.Errorf("selector %d = %+v, want %+v", i, s, want[i])
		}
	}
	if !slices.Equal(q.grouping, []string{"namespace", "workerpool", "outcome"}) {
		t.Errorf("grouping = %v", q.grouping)
	}

	for _, bad := range []string{
		`histogram_quantile(0.9, x)`, // a function outside the subset
		`{__name__="x"}`,             // no metric name
		`sum(x`,                      // unbalanced
		`sum without (pod) (x)`,      // outside the subset
		`x{a=~"b"`,                   // unterminated
	} {
		if _, err := readPromQL(bad); err == nil {
			t.Errorf("readPromQL(%q) did not fail", bad)
		}
	}

	m, label, err := labelValuesQuery(`label_values(tasker_dispatch_capacity{namespace=~"$namespace"}, workerpool)`)
	if err != nil || m.name != "tasker_dispatch_capacity" || label != "workerpool" || !slices.Equal(m.matchers, []string{"namespace"}) {
		t.Errorf("labelValuesQuery = %+v %q %v", m, label, err)
	}
	if _, _, err := labelValuesQuery(`query_result(up)`); err == nil {
		t.Error("labelValuesQuery accepted query_result(up)")
	}
}
