package monitoring

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/seed-a17b38e7/workerpool-operator/test/kubeobjects"
)

// Source is one place series come from: the metric families a component
// serves on its /metrics page, and the labels the scrape adds to each of
// its series (the target labels of its ServiceMonitor's scrape config, see
// ScrapeConfig.TargetLabels).
type Source struct {
	Families     kubeobjects.Families
	TargetLabels []string
}

// Query is a PromQL expression as Prometheus's own parser reads it, with
// what the checks learnt about it.
type Query struct {
	Expr parser.Expr
	// Metrics are the metric names it reads, in the order they appear.
	Metrics []string
	// Labels are the labels every series of its result carries (sorted),
	// which legends and alert annotations may show.
	Labels []string
}

// Parse reads expr with Prometheus's parser, as Prometheus and promtool do.
func Parse(expr string) (parser.Expr, error) {
	return parser.NewParser(parser.Options{}).ParseExpr(expr)
}

// Check parses expr and checks it against the sources it may read:
//   - every selector names a metric one of the sources serves (a classic
//     histogram's or summary's _bucket, _sum and _count series included);
//   - rate(), irate() and increase() read counters, and nothing else reads a
//     counter (a raw counter only ever grows);
//   - every label it matches on is one the series carry (their own labels or
//     their target labels);
//   - every label it groups by (by, without, on, ignoring, group_left,
//     group_right, label_replace's source) is one its operand's series
//     carry at that point of the expression, so an aggregation that dropped
//     a label cannot be followed by one that groups by it;
//   - the two sides of a one-to-one vector operation without on(...) carry
//     the same labels, or nothing would match.
//
// The families' types are checked only where known: the operator's
// families are read from descriptors, untyped.
func Check(expr string, sources ...Source) (Query, error) {
	e, err := Parse(expr)
	if err != nil {
		return Query{}, fmt.Errorf("%q: %w", expr, err)
	}
	c := &checker{sources: sources}
	out := c.labels(e, false)
	q := Query{Expr: e, Metrics: c.metrics, Labels: slices.Sorted(maps.Keys(out))}
	if len(c.errs) > 0 {
		return q, fmt.Errorf("%q: %w", expr, errors.Join(c.errs...))
	}
	return q, nil
}

type labelSet map[string]bool

func setOf(names ...string) labelSet {
	s := labelSet{}
	for _, n := range names {
		s[n] = true
	}
	return s
}

func (s labelSet) sorted() []string { return slices.Sorted(maps.Keys(s)) }

type checker struct {
	sources []Source
	metrics []string
	errs    []error
}

func (c *checker) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// rateFunctions need a counter: they account for its resets.
var rateFunctions = []string{"rate", "irate", "increase"}

// family finds the family serving the series named name, and the labels a
// series of that name carries.
func (c *checker) family(name string) (kubeobjects.Family, labelSet, bool) {
	for _, src := range c.sources {
		if f, ok := src.Families[name]; ok {
			return f, setOf(slices.Concat(f.Labels, src.TargetLabels)...), true
		}
	}
	// A classic histogram's or summary's series are named after its family.
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		for _, src := range c.sources {
			f, ok := src.Families[base]
			if !ok || (f.Type != dto.MetricType_HISTOGRAM && (f.Type != dto.MetricType_SUMMARY || suffix == "_bucket")) {
				continue
			}
			ls := setOf(slices.Concat(f.Labels, src.TargetLabels)...)
			if suffix == "_bucket" {
				ls["le"] = true
			}
			return kubeobjects.Family{Type: dto.MetricType_COUNTER, Labels: f.Labels}, ls, true
		}
	}
	return kubeobjects.Family{}, nil, false
}

func (c *checker) selector(vs *parser.VectorSelector, inRate bool) labelSet {
	if vs.Name == "" {
		c.errorf("selector %s names no metric", vs)
		return labelSet{}
	}
	c.metrics = append(c.metrics, vs.Name)
	fam, ls, ok := c.family(vs.Name)
	if !ok {
		var served []string
		for _, src := range c.sources {
			served = append(served, src.Families.Names()...)
		}
		c.errorf("%s is not served (served: %v)", vs.Name, served)
		return labelSet{}
	}
	switch {
	case fam.Type == dto.MetricType_UNTYPED:
	case inRate && fam.Type != dto.MetricType_COUNTER:
		c.errorf("rate of %s, a %s", vs.Name, fam.Type)
	case !inRate && fam.Type == dto.MetricType_COUNTER:
		c.errorf("%s is a counter, read without rate()", vs.Name)
	}
	for _, m := range vs.LabelMatchers {
		if m.Name != "__name__" && !ls[m.Name] {
			c.errorf("%s is matched on label %s, which its series do not carry (%v)", vs.Name, m.Name, ls.sorted())
		}
	}
	return ls
}

// requireAll reports each of names missing from have.
func (c *checker) requireAll(what string, names []string, have labelSet) {
	for _, n := range names {
		if !have[n] {
			c.errorf("%s %s, which its operand's series do not carry (%v)", what, n, have.sorted())
		}
	}
}

// labels walks e and returns the labels every series of its result carries
// (without __name__, which the checks need not follow).
func (c *checker) labels(e parser.Expr, inRate bool) labelSet {
	switch e := e.(type) {
	case *parser.VectorSelector:
		return c.selector(e, inRate)
	case *parser.MatrixSelector:
		return c.labels(e.VectorSelector, inRate)
	case *parser.SubqueryExpr:
		return c.labels(e.Expr, false)
	case *parser.ParenExpr:
		return c.labels(e.Expr, inRate)
	case *parser.UnaryExpr:
		return c.labels(e.Expr, inRate)
	case *parser.StepInvariantExpr:
		return c.labels(e.Expr, inRate)
	case *parser.NumberLiteral, *parser.StringLiteral, *parser.DurationExpr:
		return labelSet{}
	case *parser.Call:
		return c.call(e)
	case *parser.AggregateExpr:
		if e.Param != nil {
			c.labels(e.Param, false)
		}
		in := c.labels(e.Expr, false)
		c.requireAll(e.Op.String()+" groups by", e.Grouping, in)
		var out labelSet
		switch {
		case e.Op == parser.TOPK || e.Op == parser.BOTTOMK || e.Op == parser.LIMITK || e.Op == parser.LIMIT_RATIO:
			return in // they select series, keeping their labels
		case e.Without:
			out = maps.Clone(in)
			for _, l := range e.Grouping {
				delete(out, l)
			}
		default:
			out = setOf(e.Grouping...)
		}
		if e.Op == parser.COUNT_VALUES {
			if s, ok := e.Param.(*parser.StringLiteral); ok {
				out[s.Val] = true
			}
		}
		return out
	case *parser.BinaryExpr:
		return c.binary(e)
	}
	c.errorf("%T is an expression these checks do not know", e)
	return labelSet{}
}

func (c *checker) call(e *parser.Call) labelSet {
	inRate := slices.Contains(rateFunctions, e.Func.Name)
	var first labelSet // the labels of the first vector argument
	for _, a := range e.Args {
		ls := c.labels(a, inRate)
		if first == nil && (a.Type() == parser.ValueTypeVector || a.Type() == parser.ValueTypeMatrix) {
			first = ls
		}
	}
	if e.Type() != parser.ValueTypeVector || first == nil {
		return labelSet{} // scalar(), time(), vector(), absent()...
	}
	out := maps.Clone(first)
	str := func(i int) string {
		if i < len(e.Args) {
			if s, ok := e.Args[i].(*parser.StringLiteral); ok {
				return s.Val
			}
		}
		return ""
	}
	switch e.Func.Name {
	case "label_replace": // label_replace(v, dst, replacement, src, regex)
		c.requireAll("label_replace reads", []string{str(3)}, first)
		out[str(1)] = true
	case "label_join": // label_join(v, dst, separator, src...)
		for i := 3; i < len(e.Args); i++ {
			c.requireAll("label_join reads", []string{str(i)}, first)
		}
		out[str(1)] = true
	case "histogram_quantile", "histogram_fraction":
		delete(out, "le")
	}
	return out
}

func (c *checker) binary(e *parser.BinaryExpr) labelSet {
	lhs, rhs := c.labels(e.LHS, false), c.labels(e.RHS, false)
	lv := e.LHS.Type() == parser.ValueTypeVector
	rv := e.RHS.Type() == parser.ValueTypeVector
	switch {
	case !lv && !rv:
		return labelSet{}
	case !rv:
		return lhs
	case !lv:
		return rhs
	}
	m := e.VectorMatching
	if m == nil {
		m = &parser.VectorMatching{Card: parser.CardOneToOne}
	}
	if m.On {
		c.requireAll("on(...) matches", m.MatchingLabels, lhs)
		c.requireAll("on(...) matches", m.MatchingLabels, rhs)
	} else {
		for _, l := range m.MatchingLabels {
			if !lhs[l] && !rhs[l] {
				c.errorf("ignoring(...) names %s, which neither side carries (%v, %v)", l, lhs.sorted(), rhs.sorted())
			}
		}
	}
	if e.Op.IsSetOperator() {
		if e.Op == parser.LOR { // each series keeps its own labels
			out := labelSet{}
			for l := range lhs {
				if rhs[l] {
					out[l] = true
				}
			}
			return out
		}
		return lhs
	}
	switch m.Card {
	case parser.CardManyToOne:
		c.requireAll("group_left includes", m.Include, rhs)
		return union(lhs, setOf(m.Include...))
	case parser.CardOneToMany:
		c.requireAll("group_right includes", m.Include, lhs)
		return union(rhs, setOf(m.Include...))
	}
	if m.On {
		return setOf(m.MatchingLabels...)
	}
	l, r := maps.Clone(lhs), maps.Clone(rhs)
	for _, n := range m.MatchingLabels {
		delete(l, n)
		delete(r, n)
	}
	if !maps.Equal(l, r) {
		c.errorf("%s: the sides carry different labels (%v, %v), so no series match one to one; say on(...) or ignoring(...)", e.Op, l.sorted(), r.sorted())
	}
	return l
}

func union(a, b labelSet) labelSet {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}
