package refresh

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tokenkeeper/tokenkeeper/keycloak"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// Metrics are tokenkeeper's Prometheus metrics. None carries a per-user label.
type Metrics struct {
	grants        *prometheus.CounterVec
	grantDuration prometheus.Histogram
	logouts       *prometheus.CounterVec
	derived       *prometheus.CounterVec
	deriveTime    *prometheus.HistogramVec
}

// Label values known in advance. NewMetrics starts every counter at zero
// for them, so that dashboards and alerts see each series before its first
// event.
var (
	grantOutcomes   = []string{"success", keycloak.Transient.String(), keycloak.Terminal.String(), keycloak.Operator.String(), keycloak.Unknown.String()}
	logoutReasons   = []string{"backchannel", "session_ended"}
	derivedKinds    = []Kind{KindAudience, KindProvider}
	derivedOutcomes = []string{"success", "refused", "transient"}
)

// NewMetrics registers the refresher's counters and histograms with reg,
// every counter at zero for the label values known in advance.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		grants: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenkeeper_grants_total", Help: "Refresh grants by outcome (success, transient, terminal, operator, unknown).",
		}, []string{"outcome"}),
		grantDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tokenkeeper_grant_duration_seconds", Help: "Duration of refresh grants at Keycloak.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}),
		logouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenkeeper_logouts_total", Help: "Users logged out of the hub, by reason.",
		}, []string{"reason"}),
		derived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenkeeper_derived_tokens_total",
			Help: "Derived tokens asked of Keycloak, by kind (audience, identity_provider) and outcome (success, refused, transient).",
		}, []string{"kind", "outcome"}),
		deriveTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tokenkeeper_derived_token_duration_seconds", Help: "Duration of token exchanges and identity-provider token requests at Keycloak.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"kind"}),
	}
	reg.MustRegister(m.grants, m.grantDuration, m.logouts, m.derived, m.deriveTime)
	for _, o := range grantOutcomes {
		m.grants.WithLabelValues(o)
	}
	for _, r := range logoutReasons {
		m.logouts.WithLabelValues(r)
	}
	for _, k := range derivedKinds {
		for _, o := range derivedOutcomes {
			m.derived.WithLabelValues(string(k), o)
		}
		m.deriveTime.WithLabelValues(string(k))
	}
	return m
}

func (m *Metrics) grant(outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.grants.WithLabelValues(outcome).Inc()
	m.grantDuration.Observe(d.Seconds())
}

func (m *Metrics) derivedToken(kind Kind, outcome string, d time.Duration) {
	if m == nil {
		return
	}
	m.derived.WithLabelValues(string(kind), outcome).Inc()
	m.deriveTime.WithLabelValues(string(kind)).Observe(d.Seconds())
}

func (m *Metrics) logout(reason string) {
	if m != nil {
		m.logouts.WithLabelValues(reason).Inc()
	}
}

// expiryBuckets are the upper bounds, in seconds, of the seconds-to-expiry histogram.
var expiryBuckets = []float64{0, 30, 60, 120, 300, 600, 1800, 3600}

var (
	usersDesc = prometheus.NewDesc("tokenkeeper_users", "Users known to the schedule, by status.", []string{"status"}, nil)
	dueDesc   = prometheus.NewDesc("tokenkeeper_due_users", "Users whose refresh is due now.", nil, nil)
	shortDesc = prometheus.NewDesc("tokenkeeper_hub_budget_short_users",
		"Due users of the last sweep whose access token expires before the hub request budget reaches them.", nil, nil)
	expiryDesc = prometheus.NewDesc("tokenkeeper_access_token_seconds_to_expiry",
		"Seconds until users' access tokens expire, as a histogram over users.", nil, nil)
)

// Describe implements prometheus.Collector for the schedule's gauges.
func (r *Refresher) Describe(ch chan<- *prometheus.Desc) {
	ch <- usersDesc
	ch <- dueDesc
	ch <- shortDesc
	ch <- expiryDesc
	describeHealth(ch)
}

// Collect implements prometheus.Collector: users by status, the due queue,
// seconds to expiry, and health (collectHealth), computed from the schedule
// at scrape time.
func (r *Refresher) Collect(ch chan<- prometheus.Metric) {
	now := r.now()
	byStatus := map[store.Status]float64{}
	// Every bucket, empty ones too, so that a query of one bucket (the
	// users already expired, le="0") finds 0 rather than nothing.
	buckets := make(map[float64]uint64, len(expiryBuckets))
	for _, b := range expiryBuckets {
		buckets[b] = 0
	}
	var due, count uint64
	var sum float64
	r.mu.Lock()
	for _, u := range r.users {
		byStatus[u.Status]++
		if !u.Due.After(now) {
			due++
		}
		if u.AccessExpiry.IsZero() {
			continue
		}
		left := u.AccessExpiry.Sub(now).Seconds()
		count++
		sum += left
		for _, b := range expiryBuckets {
			if left <= b {
				buckets[b]++
			}
		}
	}
	short := r.short
	r.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(shortDesc, prometheus.GaugeValue, float64(short))
	for s, n := range byStatus {
		ch <- prometheus.MustNewConstMetric(usersDesc, prometheus.GaugeValue, n, string(s))
	}
	ch <- prometheus.MustNewConstMetric(dueDesc, prometheus.GaugeValue, float64(due))
	ch <- prometheus.MustNewConstHistogram(expiryDesc, count, sum, buckets)
	r.collectHealth(ch)
}
