package refresh

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenkeeper/tokenkeeper/store"
)

// problemClasses are every class Health can report. collectHealth gives
// each a series, at 0 while health does not report it, so that alerts and
// dashboards see every class before its first incident.
var problemClasses = []ProblemClass{
	ProblemKeycloakClient, ProblemHubUnreachable, ProblemLogoutsPaused, ProblemStuckUsers, ProblemHubBudget,
	ProblemSweepPanicked, ProblemNoSessionID, ProblemKeycloakUnreachable, ProblemKeycloakSlow, ProblemExcessScopes,
}

// healthValues are tokenkeeper_health_status's values, by health state.
var healthValues = map[string]float64{HealthOK: 0, HealthDegraded: 1, HealthUnhealthy: 2}

var (
	healthDesc = prometheus.NewDesc("tokenkeeper_health_status",
		"Health as the health endpoint answers it: 0 ok, 1 degraded (every user served), 2 unhealthy (health answers 503).", nil, nil)
	problemDesc = prometheus.NewDesc("tokenkeeper_health_problem",
		"1 while health reports the problem class, else 0.", []string{"class"}, nil)
	problemUsersDesc = prometheus.NewDesc("tokenkeeper_health_problem_users",
		"Users a reported problem class affects (logouts_paused: the users whose logout the guard holds); 0 when it counts none.",
		[]string{"class"}, nil)
	expiredDesc = prometheus.NewDesc("tokenkeeper_kept_users_expired",
		"Users whose tokens are kept fresh (a running server, or keep=all) and whose access token has expired all the same.", nil, nil)
	budgetDesc = prometheus.NewDesc("tokenkeeper_hub_max_rps",
		"The hub request budget per second (hub_max_rps) the hub_budget problem is judged by; 0 when unlimited.", nil, nil)
)

// describeHealth sends the descriptors of collectHealth's metrics.
func describeHealth(ch chan<- *prometheus.Desc) {
	ch <- healthDesc
	ch <- problemDesc
	ch <- problemUsersDesc
	ch <- expiredDesc
	ch <- budgetDesc
}

// collectHealth sends health as metrics: the state, every known problem
// class (1 while reported), the users each affects, the kept users whose
// access token has expired, and the hub budget. It takes the refresher's
// mutex itself.
func (r *Refresher) collectHealth(ch chan<- prometheus.Metric) {
	h := r.Health()
	reported := map[ProblemClass]Problem{}
	for _, p := range h.Problems {
		reported[p.Class] = p
	}
	ch <- prometheus.MustNewConstMetric(healthDesc, prometheus.GaugeValue, healthValues[h.State()])
	for _, c := range problemClasses {
		p, ok := reported[c]
		on := 0.0
		if ok {
			on = 1
		}
		ch <- prometheus.MustNewConstMetric(problemDesc, prometheus.GaugeValue, on, string(c))
		ch <- prometheus.MustNewConstMetric(problemUsersDesc, prometheus.GaugeValue, float64(p.Users), string(c))
	}
	ch <- prometheus.MustNewConstMetric(expiredDesc, prometheus.GaugeValue, float64(r.keptExpired()))
	ch <- prometheus.MustNewConstMetric(budgetDesc, prometheus.GaugeValue, r.opts.HubRPS)
}

// keptExpired counts the users whose tokens the sweep keeps fresh and whose
// access token has expired: refreshing has failed them (Keycloak down, the
// hub refusing their new tokens, a budget too small), whatever the cause.
// Users whose session ended, who must log in again, or whom the hub
// refreshes (hub admins) do not count.
func (r *Refresher) keptExpired() int {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, u := range r.users {
		switch u.Status {
		case store.StatusFresh, store.StatusBackoff, store.StatusStuck:
		default:
			continue
		}
		if u.Kept && !u.AccessExpiry.IsZero() && !u.AccessExpiry.After(now) {
			n++
		}
	}
	return n
}
