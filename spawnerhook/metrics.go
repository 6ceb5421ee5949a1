package spawnerhook

import (
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
)

// unmatchedRoute is the route label of requests no route matched.
const unmatchedRoute = "unmatched"

// RequestMetrics are the Prometheus metrics of tokenkeeper's own HTTP API.
// Their route label is the route's template, never the request's path or
// query, so no user name or token ends up in a label.
type RequestMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// spawnRefused counts requests refused for a wrong spawn secret.
	spawnRefused prometheus.Counter
}

// NewRequestMetrics registers the HTTP API's request counter and duration
// histogram with reg.
func NewRequestMetrics(reg prometheus.Registerer) *RequestMetrics {
	m := &RequestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokenkeeper_http_requests_total", Help: "Requests to tokenkeeper's HTTP API, by route template and status code.",
		}, []string{"route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tokenkeeper_http_request_duration_seconds", Help: "Duration of requests to tokenkeeper's HTTP API, by route template.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route"}),
		spawnRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokenkeeper_spawn_secret_refused_total", Help: "Requests refused because they carried a wrong spawn secret.",
		}),
	}
	reg.MustRegister(m.requests, m.duration, m.spawnRefused)
	return m
}

// start makes the duration histogram of every route exist, empty, before
// its first request. Status codes are not known in advance, so the request
// counter's series appear with their first request.
func (m *RequestMetrics) start(routes gin.RoutesInfo) {
	for _, r := range routes {
		m.duration.WithLabelValues(r.Path)
	}
	m.duration.WithLabelValues(unmatchedRoute)
}

// observe is the middleware that counts and times every request.
func (m *RequestMetrics) observe(c *gin.Context) {
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = unmatchedRoute
	}
	m.requests.WithLabelValues(route, strconv.Itoa(c.Writer.Status())).Inc()
	m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
}

// spawnSecretRefused counts a request refused for a wrong spawn secret; a
// nil m counts nothing.
func (m *RequestMetrics) spawnSecretRefused() {
	if m != nil {
		m.spawnRefused.Inc()
	}
}
