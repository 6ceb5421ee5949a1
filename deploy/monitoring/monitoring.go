// Package monitoring is tokenkeeper's monitoring kit: Prometheus alert
// rules (tokenkeeper-rules.yaml), a Grafana dashboard
// (tokenkeeper-dashboard.json) and the scrape wiring for Zero to JupyterHub
// and a plain hub. The Go code reads the rules and the dashboard with
// Prometheus's own parsers, for the tests that check them here and against
// a running tokenkeeper.
package monitoring

import (
	"bytes"
	_ "embed" // the kit's files
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// Job is the job label the scrape wiring gives tokenkeeper's target and
// every expression of the kit selects.
const Job = "tokenkeeper"

var (
	//go:embed tokenkeeper-rules.yaml
	rulesYAML []byte
	//go:embed tokenkeeper-dashboard.json
	dashboardJSON []byte
)

// Parser is the PromQL parser the kit is checked with: Prometheus's
// default, without experimental functions.
func Parser() parser.Parser { return parser.NewParser(parser.Options{}) }

// Rules parses the alert rules as Prometheus loads a rule file, expressions
// and annotation templates included.
func Rules() (*rulefmt.RuleGroups, error) {
	return parseRules(rulesYAML)
}

func parseRules(b []byte) (*rulefmt.RuleGroups, error) {
	groups, errs := rulefmt.Parse(b, false, model.UTF8Validation, Parser(), slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		return nil, fmt.Errorf("tokenkeeper-rules.yaml: %w", errors.Join(errs...))
	}
	return groups, nil
}

// Query is one PromQL expression of the kit and where it is.
type Query struct {
	Where string
	Expr  string
}

// templateQuery finds the PromQL queries in alert annotations' templates
// ({{ range query "..." }}).
var templateQuery = regexp.MustCompile(`query "([^"]+)"`)

// RuleQueries lists the rules' expressions and the queries their
// annotations' templates run.
func RuleQueries(groups *rulefmt.RuleGroups) []Query {
	var qs []Query
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			qs = append(qs, Query{Where: "alert " + r.Alert, Expr: r.Expr})
			for _, k := range slices.Sorted(maps.Keys(r.Annotations)) {
				for _, m := range templateQuery.FindAllStringSubmatch(r.Annotations[k], -1) {
					qs = append(qs, Query{Where: "alert " + r.Alert + " annotation " + k, Expr: m[1]})
				}
			}
		}
	}
	return qs
}

// Dashboard is the part of a Grafana dashboard the checks read.
type Dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []Panel `json:"panels"`
	Templating struct {
		List []Variable `json:"list"`
	} `json:"templating"`
}

// Panel is a dashboard panel; rows are panels of type "row".
type Panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *Datasource `json:"datasource"`
	GridPos    struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []Target `json:"targets"`
}

// Target is one query of a panel.
type Target struct {
	RefID      string      `json:"refId"`
	Expr       string      `json:"expr"`
	Datasource *Datasource `json:"datasource"`
}

// Datasource names a panel's or query's data source.
type Datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Variable is a dashboard variable.
type Variable struct {
	Name       string      `json:"name"`
	Type       string      `json:"type"`
	Query      any         `json:"query"`
	Definition string      `json:"definition"`
	Datasource *Datasource `json:"datasource"`
}

// LoadDashboard decodes the dashboard; the fields of Grafana's model that
// the checks do not read are ignored.
func LoadDashboard() (*Dashboard, error) {
	var d Dashboard
	if err := json.NewDecoder(bytes.NewReader(dashboardJSON)).Decode(&d); err != nil {
		return nil, fmt.Errorf("tokenkeeper-dashboard.json: %w", err)
	}
	return &d, nil
}

// grafanaValues stand in for the dashboard's variables so that its
// expressions parse as PromQL: a rate window, the job, every instance.
var grafanaValues = strings.NewReplacer(
	"$__rate_interval", "2m",
	"$__interval", "30s",
	"$__range", "6h",
	"$job", Job,
	"$instance", ".*",
)

// labelValues is a Grafana variable query, label_values(<selector>, label).
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)

// DashboardQueries lists the expressions of the dashboard's panels and the
// selectors of its variables' label_values queries, with Grafana's
// variables replaced (grafanaValues).
func DashboardQueries(d *Dashboard) ([]Query, error) {
	var qs []Query
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			qs = append(qs, Query{Where: fmt.Sprintf("panel %q query %s", p.Title, t.RefID), Expr: grafanaValues.Replace(t.Expr)})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.Definition)
		if m == nil {
			return nil, fmt.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, v.Definition)
		}
		qs = append(qs, Query{Where: "variable " + v.Name, Expr: grafanaValues.Replace(m[1])})
	}
	return qs, nil
}

// Selectors parses q and returns its vector selectors.
func Selectors(q Query) ([]*parser.VectorSelector, error) {
	expr, err := Parser().ParseExpr(q.Expr)
	if err != nil {
		return nil, fmt.Errorf("%s: %q: %w", q.Where, q.Expr, err)
	}
	var sels []*parser.VectorSelector
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			sels = append(sels, vs)
		}
		return nil
	})
	return sels, nil
}

// MetricNames parses qs and returns the metric names their selectors name,
// each with where it is used.
func MetricNames(qs []Query) (map[string][]string, error) {
	names := map[string][]string{}
	for _, q := range qs {
		sels, err := Selectors(q)
		if err != nil {
			return nil, err
		}
		for _, s := range sels {
			name := metricName(s)
			if name == "" {
				return nil, fmt.Errorf("%s: a selector without a metric name: %s", q.Where, s)
			}
			if !slices.Contains(names[name], q.Where) {
				names[name] = append(names[name], q.Where)
			}
		}
	}
	return names, nil
}

// metricName is the name a selector matches exactly, or "".
func metricName(s *parser.VectorSelector) string {
	if s.Name != "" {
		return s.Name
	}
	for _, m := range s.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// All lists every query of the kit: the rules' and the dashboard's.
func All() ([]Query, error) {
	groups, err := Rules()
	if err != nil {
		return nil, err
	}
	d, err := LoadDashboard()
	if err != nil {
		return nil, err
	}
	dq, err := DashboardQueries(d)
	if err != nil {
		return nil, err
	}
	return append(RuleQueries(groups), dq...), nil
}

// Synthetic are the series Prometheus makes itself for every target,
// which are not in tokenkeeper's /metrics.
var Synthetic = []string{"up"}
