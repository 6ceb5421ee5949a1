package refresh

import (
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenkeeper/tokenkeeper/keycloak"
)

// healthGauges gathers r's health metrics as name{label=value} → value.
func healthGauges(t *testing.T, r *Refresher) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(r)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "tokenkeeper_health_") && f.GetName() != "tokenkeeper_kept_users_expired" &&
			f.GetName() != "tokenkeeper_hub_max_rps" {
			continue
		}
		for _, m := range f.GetMetric() {
			name := f.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			got[name] = m.GetGauge().GetValue()
		}
	}
	return got
}

// wantHealth is healthGauges' answer for a health state, the classes
// reported with the users each affects, and the kept users expired, with
// the fixture's unlimited hub budget.
func wantHealth(state float64, problems map[ProblemClass]int, expired float64) map[string]float64 {
	want := map[string]float64{"tokenkeeper_health_status": state, "tokenkeeper_kept_users_expired": expired, "tokenkeeper_hub_max_rps": 0}
	for _, c := range problemClasses {
		users, on := problems[c]
		want[fmt.Sprintf("tokenkeeper_health_problem{class=%s}", c)] = 0
		want[fmt.Sprintf("tokenkeeper_health_problem_users{class=%s}", c)] = float64(users)
		if on {
			want[fmt.Sprintf("tokenkeeper_health_problem{class=%s}", c)] = 1
		}
	}
	return want
}

// TestHealthMetricsFollowHealth: the health metrics say what health says,
// every class at 0 before its first incident; a kept user whose access
// token expired because Keycloak does not answer counts as expired.
func TestHealthMetricsFollowHealth(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	if diff := cmp.Diff(wantHealth(0, nil, 0), healthGauges(t, f.r)); diff != "" {
		t.Errorf("health metrics of an idle refresher (-want +got):\n%s", diff)
	}
	// alice's token has 10 s left; Keycloak does not answer.
	f.addUser("alice", true, f.now.Add(-290*time.Second), "rt-alice")
	f.grant.fail = func(string) error { return fmt.Errorf("refresh grant: %w: connection refused", keycloak.ErrNotSent) }
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantHealth(1, map[ProblemClass]int{ProblemKeycloakSlow: 0}, 0), healthGauges(t, f.r)); diff != "" {
		t.Errorf("health metrics once a grant went unanswered (-want +got):\n%s", diff)
	}
	f.advance(unreachableFor)
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantHealth(2, map[ProblemClass]int{ProblemKeycloakUnreachable: 0}, 1), healthGauges(t, f.r)); diff != "" {
		t.Errorf("health metrics with Keycloak unreachable and alice's token expired (-want +got):\n%s", diff)
	}
	f.grant.fail = nil
	f.advance(time.Minute)
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantHealth(0, nil, 0), healthGauges(t, f.r)); diff != "" {
		t.Errorf("health metrics once Keycloak answers again (-want +got):\n%s", diff)
	}
}

// TestHealthMetricsCountTheGuardsUsers: while the guard holds logouts,
// logouts_paused is 1 with the users it holds, as health counts them.
func TestHealthMetricsCountTheGuardsUsers(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, func(o *Options) { o.HubRPS = 20 })
	for i := range 6 {
		f.addUser(fmt.Sprintf("u%d", i), true, f.now.Add(-290*time.Second), fmt.Sprintf("rt-%d-old", i))
	}
	f.grant.fail = func(string) error { return grantError(400, "invalid_grant", "Session not active") }
	for range 3 {
		if err := f.r.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		f.advance(time.Minute)
	}
	h := f.r.Health()
	i := slices.IndexFunc(h.Problems, func(p Problem) bool { return p.Class == ProblemLogoutsPaused })
	if i < 0 || h.Problems[i].Users == 0 {
		t.Fatalf("Health() = %+v, want logouts paused holding users", h)
	}
	got := healthGauges(t, f.r)
	for name, want := range map[string]float64{
		"tokenkeeper_health_status":                                  2,
		"tokenkeeper_health_problem{class=logouts_paused}":           1,
		"tokenkeeper_health_problem_users{class=logouts_paused}":     float64(h.Problems[i].Users),
		"tokenkeeper_health_problem{class=keycloak_unreachable}":     0,
		"tokenkeeper_health_problem_users{class=hub_unreachable}":    0,
		"tokenkeeper_health_problem{class=keycloak_client}":          0,
		"tokenkeeper_health_problem_users{class=tokens_without_sid}": 0,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
}

// TestProblemClassesListsEveryClass: every ProblemClass constant declared
// in health.go is in problemClasses, so each has its series at 0.
func TestProblemClassesListsEveryClass(t *testing.T) {
	file, err := parser.ParseFile(token.NewFileSet(), "health.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	ast.Inspect(file, func(n ast.Node) bool {
		spec, ok := n.(*ast.ValueSpec)
		if !ok || spec.Type == nil || fmt.Sprint(spec.Type) != "ProblemClass" {
			return true
		}
		for _, v := range spec.Values {
			if lit, ok := v.(*ast.BasicLit); ok {
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					t.Fatal(err)
				}
				declared = append(declared, s)
			}
		}
		return true
	})
	var listed []string
	for _, c := range problemClasses {
		listed = append(listed, string(c))
	}
	slices.Sort(declared)
	slices.Sort(listed)
	if len(declared) == 0 {
		t.Fatal("found no ProblemClass constants in health.go")
	}
	if diff := cmp.Diff(declared, listed); diff != "" {
		t.Errorf("problemClasses (-declared in health.go +listed):\n%s", diff)
	}
}

// TestExpiryHistogramHasEveryBucket: the seconds-to-expiry histogram has
// every bucket, empty ones too, so that the users already expired
// (le="0") read 0 rather than nothing.
func TestExpiryHistogramHasEveryBucket(t *testing.T) {
	f := newFixture(t)
	f.addUser("alice", true, f.now, "rt-alice")
	if err := f.r.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(f.r)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[float64]uint64{}
	for _, fam := range families {
		if fam.GetName() != "tokenkeeper_access_token_seconds_to_expiry" {
			continue
		}
		for _, b := range fam.GetMetric()[0].GetHistogram().GetBucket() {
			got[b.GetUpperBound()] = b.GetCumulativeCount()
		}
	}
	// alice's token has its whole 5 minutes left.
	want := map[float64]uint64{0: 0, 30: 0, 60: 0, 120: 0, 300: 1, 600: 1, 1800: 1, 3600: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("seconds-to-expiry buckets (-want +got):\n%s", diff)
	}
}
