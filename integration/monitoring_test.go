//go:build integration

package integration

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/tokenkeeper/tokenkeeper/deploy/monitoring"
)

// scrapeFamilies reads tokenkeeper's /metrics as Prometheus does, without a
// token: the endpoint needs none.
func scrapeFamilies(ctx context.Context, timeout time.Duration) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, stack.ServiceURL()+"metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape: HTTP %d", resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape: %w", err)
	}
	return families, nil
}

// sample is one series of a scrape, as Prometheus stores it.
type sample struct {
	labels labels.Labels
	value  float64
}

// samples flattens families into series as Prometheus stores them: a
// histogram as _bucket (with le), _sum and _count, a summary as its
// quantiles, _sum and _count; extra labels (job, instance) added.
func samples(families map[string]*dto.MetricFamily, extra ...string) []sample {
	var out []sample
	add := func(name string, m *dto.Metric, v float64, more ...string) {
		b := labels.NewBuilder(labels.FromStrings(append([]string{model.MetricNameLabel, name}, extra...)...))
		for _, l := range m.GetLabel() {
			b.Set(l.GetName(), l.GetValue())
		}
		for i := 0; i+1 < len(more); i += 2 {
			b.Set(more[i], more[i+1])
		}
		out = append(out, sample{b.Labels(), v})
	}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				add(name, m, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(name, m, m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				add(name, m, m.GetUntyped().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					add(name+"_bucket", m, float64(b.GetCumulativeCount()), "le", promFloat(b.GetUpperBound()))
				}
				add(name+"_bucket", m, float64(h.GetSampleCount()), "le", "+Inf")
				add(name+"_sum", m, h.GetSampleSum())
				add(name+"_count", m, float64(h.GetSampleCount()))
			case dto.MetricType_SUMMARY:
				s := m.GetSummary()
				for _, q := range s.GetQuantile() {
					add(name, m, q.GetValue(), "quantile", promFloat(q.GetQuantile()))
				}
				add(name+"_sum", m, s.GetSampleSum())
				add(name+"_count", m, float64(s.GetSampleCount()))
			}
		}
	}
	return out
}

// promFloat formats an le or quantile label value as Prometheus 3
// normalizes it on ingestion: 60 as "60.0", 0.5 as "0.5".
func promFloat(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	s := strconv.FormatFloat(v, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// lateValues are the labels whose values appear only with their first
// event (a user with that status, a failed hub request), so a selector of
// one may match nothing on a quiet stack.
var lateValues = map[string]string{
	"tokenkeeper_users": "status",
	"tokenkeeper_hub_request_duration_seconds_count": "outcome",
}

// TestMonitoringKitMetricsExist: every metric the alert rules and the
// dashboard name is in the running tokenkeeper's /metrics, with the labels
// they select, and each selector matches a series (but for label values
// that appear with their first event).
func TestMonitoringKitMetricsExist(t *testing.T) {
	qs, err := monitoring.All()
	if err != nil {
		t.Fatal(err)
	}
	families, err := scrapeFamilies(context.Background(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string][]labels.Labels{}
	for _, s := range samples(families) {
		name := s.labels.Get(model.MetricNameLabel)
		byName[name] = append(byName[name], s.labels)
	}
	checked := 0
	for _, q := range qs {
		sels, err := monitoring.Selectors(q)
		if err != nil {
			t.Fatal(err)
		}
		for _, sel := range sels {
			name := sel.Name
			if slices.Contains(monitoring.Synthetic, name) {
				continue
			}
			series, ok := byName[name]
			if !ok {
				t.Errorf("%s: %s is not in tokenkeeper's /metrics", q.Where, name)
				continue
			}
			checked++
			var ms []*labels.Matcher
			for _, m := range sel.LabelMatchers {
				if m.Name == model.MetricNameLabel || m.Name == "job" || m.Name == "instance" {
					continue
				}
				ms = append(ms, m)
				if !slices.ContainsFunc(series, func(l labels.Labels) bool { return l.Has(m.Name) }) {
					t.Errorf("%s: %s has no label %s", q.Where, name, m.Name)
				}
			}
			matched := slices.ContainsFunc(series, func(l labels.Labels) bool {
				return !slices.ContainsFunc(ms, func(m *labels.Matcher) bool { return !m.Matches(l.Get(m.Name)) })
			})
			late := slices.ContainsFunc(ms, func(m *labels.Matcher) bool { return lateValues[name] == m.Name })
			if !matched && !late {
				t.Errorf("%s: no series of tokenkeeper's /metrics matches %s", q.Where, sel)
			}
		}
	}
	if checked < 30 {
		t.Errorf("checked %d selectors, want the kit's (at least 30)", checked)
	}
}

// scrapeStep is the time each scrape stands for: the kit's scrape interval.
// The stack runs faster than a production hub (30 s tokens, 2 s sweeps),
// so the monitor scrapes about once a second and files each scrape one
// interval after the one before: a `for` of 5m holds over ten scrapes.
const scrapeStep = 30 * time.Second

// monitor is Prometheus in miniature: it scrapes tokenkeeper into an
// in-memory TSDB (job="tokenkeeper", up, staleness markers) and evaluates
// the kit's alert rules after each scrape, at the scrape's time.
type monitor struct {
	t      *testing.T
	db     *tsdb.DB
	engine *promql.Engine
	rules  []*rules.AlertingRule
	now    time.Time
	ticks  int
	last   map[string]labels.Labels // series of the last scrape, for staleness markers
	// pending and firing are the tick at which each alert was first seen
	// pending and firing.
	pending, firing map[string]int
}

func newMonitor(t *testing.T) *monitor {
	t.Helper()
	groups, err := monitoring.Rules()
	if err != nil {
		t.Fatal(err)
	}
	opts := tsdb.DefaultOptions()
	opts.RetentionDuration = 0
	db, err := tsdb.Open(t.TempDir(), nil, nil, opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	m := &monitor{
		t: t, db: db, now: time.Now().Truncate(time.Second),
		engine:  promql.NewEngine(promql.EngineOpts{MaxSamples: 1e6, Timeout: 10 * time.Second, LookbackDelta: 5 * time.Minute}),
		last:    map[string]labels.Labels{},
		pending: map[string]int{}, firing: map[string]int{},
	}
	p := monitoring.Parser()
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				t.Fatalf("alert %s: %v", r.Alert, err)
			}
			m.rules = append(m.rules, rules.NewAlertingRule(r.Alert, expr, time.Duration(r.For), time.Duration(r.KeepFiringFor),
				labels.FromMap(r.Labels), labels.FromMap(r.Annotations), labels.EmptyLabels(), "", true, nil))
		}
	}
	return m
}

// tick scrapes once, stores the scrape at the monitor's clock, evaluates
// every rule there, and moves the clock on by scrapeStep.
func (m *monitor) tick(ctx context.Context) error {
	instance := strings.TrimPrefix(strings.Split(stack.ServiceURL(), "/services/")[0], "http://")
	families, err := scrapeFamilies(ctx, 2*time.Second)
	up := 1.0
	var got []sample
	if err != nil {
		up = 0
	} else {
		got = samples(families, "job", monitoring.Job, "instance", instance)
	}
	got = append(got, sample{labels.FromStrings(model.MetricNameLabel, "up", "job", monitoring.Job, "instance", instance), up})
	ts := m.now.UnixMilli()
	app := m.db.Appender(ctx)
	seen := map[string]labels.Labels{}
	for _, s := range got {
		if _, err := app.Append(0, s.labels, ts, s.value); err != nil {
			return fmt.Errorf("append %s: %w", s.labels, err)
		}
		seen[s.labels.String()] = s.labels
	}
	for k, l := range m.last {
		if _, ok := seen[k]; !ok {
			if _, err := app.Append(0, l, ts, math.Float64frombits(value.StaleNaN)); err != nil {
				return fmt.Errorf("mark %s stale: %w", l, err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		return fmt.Errorf("commit the scrape: %w", err)
	}
	m.last = seen
	query := rules.EngineQueryFunc(m.engine, m.db)
	for _, r := range m.rules {
		if _, err := r.Eval(ctx, 0, m.now, query, nil, 0); err != nil {
			return fmt.Errorf("evaluate %s: %w", r.Name(), err)
		}
		// As the rule manager's group does after each evaluation; State
		// reads it.
		r.SetEvaluationTimestamp(m.now)
		switch r.State() {
		case rules.StateFiring:
			if _, ok := m.firing[r.Name()]; !ok {
				m.firing[r.Name()] = m.ticks
				m.t.Logf("%s firing at scrape %d (%s): %s", r.Name(), m.ticks, m.now.Format(time.TimeOnly), summary(r))
			}
			if _, ok := m.pending[r.Name()]; !ok {
				m.pending[r.Name()] = m.ticks
			}
		case rules.StatePending:
			if _, ok := m.pending[r.Name()]; !ok {
				m.pending[r.Name()] = m.ticks
			}
		default:
			delete(m.pending, r.Name())
			delete(m.firing, r.Name())
		}
	}
	m.ticks++
	m.now = m.now.Add(scrapeStep)
	return nil
}

// summary is an active alert's expanded summary.
func summary(r *rules.AlertingRule) string {
	var out []string
	for _, a := range r.ActiveAlerts() {
		out = append(out, a.Annotations.Get("summary"))
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

// rule returns the alerting rule named name.
func (m *monitor) rule(name string) *rules.AlertingRule {
	m.t.Helper()
	for _, r := range m.rules {
		if r.Name() == name {
			return r
		}
	}
	m.t.Fatalf("no alert %s in the rules", name)
	return nil
}

// active lists the alerts pending or firing now.
func (m *monitor) active() []string {
	var out []string
	for _, r := range m.rules {
		if s := r.State(); s == rules.StatePending || s == rules.StateFiring {
			out = append(out, r.Name()+" "+s.String())
		}
	}
	return out
}

// scrapeUntil scrapes about once a second until f holds or limit passes; a
// scrape or evaluation that fails ends the test.
func (m *monitor) scrapeUntil(limit time.Duration, f func() bool) error {
	m.t.Helper()
	ctx := context.Background()
	var tickErr error
	err := Poll(ctx, limit, time.Second, func() (bool, error) {
		if tickErr = m.tick(ctx); tickErr != nil {
			return true, nil
		}
		return f(), nil
	})
	if tickErr != nil {
		m.t.Fatal(tickErr)
	}
	return err
}

// waitFiring scrapes until alert fires, then checks it was pending for its
// whole `for` first: fired no sooner than its hold in scrapes.
func (m *monitor) waitFiring(alert string, limit time.Duration) {
	m.t.Helper()
	r := m.rule(alert)
	if err := m.scrapeUntil(limit, func() bool { return r.State() == rules.StateFiring }); err != nil {
		m.t.Fatalf("%s never fired: %v (active: %v)", alert, err, m.active())
	}
	held := time.Duration(m.firing[alert]-m.pending[alert]) * scrapeStep
	if held < r.HoldDuration() {
		m.t.Errorf("%s fired after %s pending, want its for: %s", alert, held, r.HoldDuration())
	}
}

// waitInactive scrapes until alert is neither pending nor firing.
func (m *monitor) waitInactive(alert string, limit time.Duration) {
	m.t.Helper()
	r := m.rule(alert)
	if err := m.scrapeUntil(limit, func() bool { return r.State() == rules.StateInactive }); err != nil {
		m.t.Fatalf("%s still active: %v (active: %v)", alert, err, m.active())
	}
}

// TestMonitoringAlertsFireOnTheRealStack stages incidents on the real
// stack and evaluates the kit's alert rules, as Prometheus would, on what
// tokenkeeper's /metrics said meanwhile: nothing fires while all is well;
// Keycloak refusing tokenkeeper's client fires
// TokenkeeperKeycloakRefusesClient and, after its `for`,
// TokenkeeperUnhealthy; an unexpected session ending with the guard at one
// ending fires TokenkeeperLogoutsPaused until an admin releases it;
// tokenkeeper not answering fires TokenkeeperDown; Keycloak stopped fires
// TokenkeeperKeycloakUnreachable and, once the kept user's access token
// has expired, TokenkeeperKeptTokensExpired.
func TestMonitoringAlertsFireOnTheRealStack(t *testing.T) {
	ctx := context.Background()
	users := []string{"monitor1", "monitor2"}
	for _, u := range users {
		if err := stack.CreateKeycloakUser(ctx, u, u+"-pw"); err != nil {
			t.Fatal(err)
		}
	}
	// keep=all keeps both users fresh without a server; the guard trips
	// at the first unexpected ending.
	useSettings(t, map[string]any{"keep": "all", "guard_min": 1, "guard_fraction": 0.1})
	releaseGuardAtEnd(t)
	for _, u := range users {
		login(t, u)
	}
	m := newMonitor(t)

	// All is well: nothing pending or firing over a `for` of 5 minutes.
	for range 12 {
		if err := m.tick(ctx); err != nil {
			t.Fatal(err)
		}
		if a := m.active(); len(a) != 0 {
			t.Fatalf("alerts active on a healthy stack at scrape %d: %v", m.ticks, a)
		}
	}

	// Keycloak refuses tokenkeeper's client.
	id := jupyterhubClient(t)
	setClientSecret(t, id, "not-the-secret")
	restored := false
	t.Cleanup(func() {
		if !restored {
			setClientSecret(t, id, stack.ClientSecret)
		}
	})
	m.waitFiring("TokenkeeperKeycloakRefusesClient", 90*time.Second)
	m.waitFiring("TokenkeeperUnhealthy", time.Minute)
	if s := summary(m.rule("TokenkeeperUnhealthy")); !strings.Contains(s, "keycloak_client") {
		t.Errorf("TokenkeeperUnhealthy's summary %q does not name keycloak_client", s)
	}
	setClientSecret(t, id, stack.ClientSecret)
	restored = true
	m.waitInactive("TokenkeeperUnhealthy", 2*time.Minute)

	// monitor2's session ends in Keycloak without a back-channel logout:
	// the next grant finds it ended, unexpectedly, and the guard trips.
	setBackchannelURL(t, "")
	if err := stack.KeycloakLogout(ctx, "monitor2"); err != nil {
		t.Fatal(err)
	}
	m.waitFiring("TokenkeeperLogoutsPaused", 2*time.Minute)
	// The guard holds monitor2 once their logout is due (their failed
	// access token expired); the summary counts them.
	paused := m.rule("TokenkeeperLogoutsPaused")
	if err := m.scrapeUntil(time.Minute, func() bool { return strings.Contains(summary(paused), "users held: 1)") }); err != nil {
		t.Errorf("TokenkeeperLogoutsPaused's summary %q, want it to count 1 user held: %v", summary(paused), err)
	}
	guard, err := stack.UserToken(ctx, "mallory", "access:services!service=tokenkeeper", "custom:tokenkeeper:guard")
	if err != nil {
		t.Fatal(err)
	}
	if status, body := releaseGuard(t, guard); status != http.StatusOK {
		t.Fatalf("guard/release: %d %s", status, body)
	}
	m.waitInactive("TokenkeeperLogoutsPaused", time.Minute)

	// tokenkeeper stops answering (stopped, not dead: the hub does not
	// restart it): scrapes fail, up is 0.
	pid := signalTokenkeeper(t, syscall.SIGSTOP)
	continued := false
	cont := func() {
		if !continued {
			continued = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("continue tokenkeeper: %v", err)
			}
		}
	}
	t.Cleanup(cont)
	m.waitFiring("TokenkeeperDown", 2*time.Minute)
	cont()
	m.waitInactive("TokenkeeperDown", time.Minute)

	// Keycloak stops: grants go unanswered, and monitor1's access token
	// expires unrenewed.
	stack.StopKeycloak()
	t.Cleanup(func() {
		// Its ports may take a moment to be free again.
		err := Poll(context.Background(), 2*time.Minute, time.Second, func() (bool, error) {
			err := stack.StartKeycloak(context.Background())
			return err == nil, err
		})
		if err != nil {
			t.Errorf("start Keycloak again: %v", err)
		}
	})
	m.waitFiring("TokenkeeperKeycloakUnreachable", 2*time.Minute)
	m.waitFiring("TokenkeeperKeptTokensExpired", 2*time.Minute)
}
