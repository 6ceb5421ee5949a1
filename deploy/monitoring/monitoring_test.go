package monitoring

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/prometheus/model/labels"
	"go.yaml.in/yaml/v3"
)

// wantAlerts are the alerts the kit must have: the admin's questions they
// answer are in README.md.
var wantAlerts = []string{
	"TokenkeeperDown", "TokenkeeperNotScraped", "TokenkeeperUnhealthy", "TokenkeeperDegraded",
	"TokenkeeperLogoutsPaused", "TokenkeeperKeycloakUnreachable", "TokenkeeperKeycloakRefusesClient",
	"TokenkeeperUnexpectedSessionEndings", "TokenkeeperKeptTokensExpired", "TokenkeeperStuckUsers",
	"TokenkeeperHubBudgetShort",
}

// TestRulesParse: Prometheus's rule-file parser accepts the rules
// (expressions, durations, annotation templates); each expression and
// template query parses with the PromQL parser; every alert has a
// severity, a summary and a description, and README.md says what to do
// about it.
func TestRulesParse(t *testing.T) {
	groups, err := Rules()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("rule %q in group %s is no alert", r.Record, g.Name)
				continue
			}
			names = append(names, r.Alert)
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
			}
			for _, k := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[k]) == "" {
					t.Errorf("%s: no %s", r.Alert, k)
				}
			}
			if time.Duration(r.For) > 30*time.Minute {
				t.Errorf("%s: for %s, want at most 30m", r.Alert, r.For)
			}
			if !strings.Contains(string(readme), "### "+r.Alert+"\n") {
				t.Errorf("%s: README.md has no section ### %s", r.Alert, r.Alert)
			}
		}
	}
	slices.Sort(names)
	want := slices.Sorted(slices.Values(wantAlerts))
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("alerts (-want +got):\n%s", diff)
	}
	for _, q := range RuleQueries(groups) {
		sels, err := Selectors(q)
		if err != nil {
			t.Error(err)
			continue
		}
		for _, s := range sels {
			if !hasMatcher(s.LabelMatchers, labels.MatchEqual, "job", Job) {
				t.Errorf("%s: %s does not select job=%q: it would match other jobs' series", q.Where, s, Job)
			}
		}
	}
}

// TestBrokenRulesAreRefused: the parser the rules are checked with refuses
// a broken expression, an unknown field and a broken template, so that
// TestRulesParse can fail.
func TestBrokenRulesAreRefused(t *testing.T) {
	tests := []struct{ name, yaml string }{
		{"expression", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: rate(tokenkeeper_grants_total[5m]\n"},
		{"unknown field", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    fore: 5m\n"},
		{"template", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    annotations:\n      summary: '{{ $labels.instance '\n"},
		{"duration", "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up == 0\n    for: 5 minutes\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := parseRules([]byte(tt.yaml)); err == nil {
				t.Errorf("parseRules accepted a broken %s", tt.name)
			}
		})
	}
}

// TestDashboardParses: the dashboard decodes; every panel but rows queries
// the dashboard's datasource variable; every expression parses as PromQL
// and selects the job and instance variables; panels have unique ids and
// do not overlap; the panels cover what an admin watches. (The job
// variable lists the jobs, so its own query selects none.)
func TestDashboardParses(t *testing.T) {
	d, err := LoadDashboard()
	if err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard uid %q, title %q; want both", d.UID, d.Title)
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name+":"+v.Type)
	}
	if diff := cmp.Diff([]string{"datasource:datasource", "job:query", "instance:query"}, vars); diff != "" {
		t.Errorf("variables (-want +got):\n%s", diff)
	}
	ids := map[int]string{}
	cells := map[[2]int]string{}
	for _, p := range d.Panels {
		if prev, ok := ids[p.ID]; ok {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q: gridPos %+v outside the 24 columns", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if prev, ok := cells[[2]int{x, y}]; ok {
					t.Errorf("panels %q and %q overlap at %d,%d", prev, p.Title, x, y)
				}
				cells[[2]int{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want the variable ${datasource}", p.Title, p.Datasource)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q query %s: datasource %+v, want the variable ${datasource}", p.Title, tg.RefID, tg.Datasource)
			}
		}
	}
	qs, err := DashboardQueries(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		sels, err := Selectors(q)
		if err != nil {
			t.Error(err)
			continue
		}
		for _, s := range sels {
			if q.Where != "variable job" && !hasMatcher(s.LabelMatchers, labels.MatchRegexp, "job", Job) {
				t.Errorf("%s: %s does not select job=~\"$job\"", q.Where, s)
			}
			if !strings.HasPrefix(q.Where, "variable ") && !hasMatcher(s.LabelMatchers, labels.MatchRegexp, "instance", ".*") {
				t.Errorf("%s: %s does not select instance=~\"$instance\"", q.Where, s)
			}
		}
	}
	names, err := MetricNames(qs)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{
		"tokenkeeper_health_status", "tokenkeeper_health_problem", "tokenkeeper_health_problem_users", "up",
		"tokenkeeper_users", "tokenkeeper_kept_users_expired", "tokenkeeper_grants_total",
		"tokenkeeper_access_token_seconds_to_expiry_bucket", "tokenkeeper_hub_budget_short_users", "tokenkeeper_hub_max_rps",
		"tokenkeeper_hub_request_duration_seconds_count", "tokenkeeper_logouts_total", "tokenkeeper_derived_tokens_total",
		"tokenkeeper_http_request_duration_seconds_bucket", "tokenkeeper_build_info",
	} {
		if _, ok := names[m]; !ok {
			t.Errorf("no panel shows %s", m)
		}
	}
}

// TestBrokenDashboardExpressionIsRefused: an expression PromQL cannot
// parse fails MetricNames, so that TestDashboardParses can fail.
func TestBrokenDashboardExpressionIsRefused(t *testing.T) {
	for _, expr := range []string{
		`sum by (outcome) (rate(tokenkeeper_grants_total{job=~"$job"}[$__rate_interval])`,
		`histogram_quantile(0.95, sum by (le) (rate(tokenkeeper_grant_duration_seconds_bucket[5m])) +)`,
	} {
		q := Query{Where: "test", Expr: grafanaValues.Replace(expr)}
		if _, err := MetricNames([]Query{q}); err == nil {
			t.Errorf("MetricNames(%q) = nil error, want a parse error", expr)
		}
	}
}

func hasMatcher(ms []*labels.Matcher, typ labels.MatchType, name, value string) bool {
	return slices.ContainsFunc(ms, func(m *labels.Matcher) bool { return m.Type == typ && m.Name == name && m.Value == value })
}

// readYAML decodes a YAML file of the repository.
func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestScrapeWiringMatchesTheZ2JHValues: the ServiceMonitor scrapes the
// port deploy/z2jh/values.yaml adds to the hub Service, at the sidecar's
// service prefix plus "metrics", and names the job the rules select; the
// network policy opens that port; every plain scrape job reads the same
// path and ends up with the same job label.
func TestScrapeWiringMatchesTheZ2JHValues(t *testing.T) {
	var values struct {
		Hub struct {
			ExtraContainers []struct {
				Name  string
				Ports []struct {
					Name          string
					ContainerPort int `yaml:"containerPort"`
				}
				Env []struct{ Name, Value string }
			} `yaml:"extraContainers"`
			Service struct {
				ExtraPorts []struct {
					Name       string
					Port       int
					TargetPort string `yaml:"targetPort"`
				} `yaml:"extraPorts"`
			}
		}
	}
	readYAML(t, "../z2jh/values.yaml", &values)
	env := map[string]string{}
	for _, c := range values.Hub.ExtraContainers {
		for _, e := range c.Env {
			if c.Name == "tokenkeeper" {
				env[e.Name] = e.Value
			}
		}
	}
	// The sidecar's prefix: JUPYTERHUB_SERVICE_PREFIX, else as JupyterHub
	// makes it from the base URL and the service's name.
	prefix := env["JUPYTERHUB_SERVICE_PREFIX"]
	if prefix == "" && env["JUPYTERHUB_BASE_URL"] != "" && env["JUPYTERHUB_SERVICE_NAME"] != "" {
		prefix = strings.TrimSuffix(env["JUPYTERHUB_BASE_URL"], "/") + "/services/" + env["JUPYTERHUB_SERVICE_NAME"] + "/"
	}
	if prefix == "" || len(values.Hub.Service.ExtraPorts) != 1 {
		t.Fatalf("deploy/z2jh/values.yaml: prefix %q, hub Service extra ports %+v; want the sidecar's prefix and one port",
			prefix, values.Hub.Service.ExtraPorts)
	}
	port := values.Hub.Service.ExtraPorts[0]
	path := prefix + "metrics"

	var sm struct {
		Kind string
		Spec struct {
			Endpoints []struct {
				Port, Path  string
				Relabelings []struct {
					TargetLabel string `yaml:"targetLabel"`
					Replacement string
				}
			}
		}
	}
	readYAML(t, "servicemonitor.yaml", &sm)
	if sm.Kind != "ServiceMonitor" || len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("servicemonitor.yaml: kind %q, %d endpoints; want a ServiceMonitor with one", sm.Kind, len(sm.Spec.Endpoints))
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Port != port.Name || ep.Path != path {
		t.Errorf("servicemonitor.yaml scrapes port %q path %q, want %q %q (deploy/z2jh/values.yaml)", ep.Port, ep.Path, port.Name, path)
	}
	if !slices.ContainsFunc(ep.Relabelings, func(r struct {
		TargetLabel string `yaml:"targetLabel"`
		Replacement string
	}) bool {
		return r.TargetLabel == "job" && r.Replacement == Job
	}) {
		t.Errorf("servicemonitor.yaml does not set job=%q", Job)
	}

	var np struct {
		Spec struct {
			Ingress []struct {
				Ports []struct{ Port int }
			}
		}
	}
	readYAML(t, "networkpolicy.yaml", &np)
	if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].Ports) != 1 || np.Spec.Ingress[0].Ports[0].Port != port.Port {
		t.Errorf("networkpolicy.yaml opens %+v, want port %d alone", np.Spec.Ingress, port.Port)
	}

	var prom struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			RelabelConfig []struct {
				TargetLabel string `yaml:"target_label"`
				Replacement string
			} `yaml:"relabel_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, "prometheus-scrape.yaml", &prom)
	if len(prom.ScrapeConfigs) == 0 {
		t.Fatal("prometheus-scrape.yaml has no scrape job")
	}
	for _, sc := range prom.ScrapeConfigs {
		if sc.MetricsPath != path {
			t.Errorf("prometheus-scrape.yaml job %s: metrics_path %q, want %q", sc.JobName, sc.MetricsPath, path)
		}
		job := sc.JobName
		for _, r := range sc.RelabelConfig {
			if r.TargetLabel == "job" {
				job = r.Replacement
			}
		}
		if job != Job {
			t.Errorf("prometheus-scrape.yaml job %s ends up as job=%q, want %q", sc.JobName, job, Job)
		}
	}
}

// TestReadmeNamesEveryFile: README.md describes every file of the kit.
func TestReadmeNamesEveryFile(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !regexp.MustCompile(`\.(yaml|json)$`).MatchString(e.Name()) {
			continue
		}
		if !strings.Contains(string(readme), "`"+e.Name()+"`") {
			t.Errorf("README.md does not mention `%s`", e.Name())
		}
	}
}
