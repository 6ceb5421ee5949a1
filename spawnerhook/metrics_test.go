package spawnerhook

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// requestSamples returns the request counter's values and the duration
// histogram's sample counts reg gathers, by family, as "label=value,..." →
// value.
func requestSamples(t *testing.T, reg prometheus.Gatherer) map[string]map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]map[string]float64{}
	for _, f := range families {
		got[f.GetName()] = map[string]float64{}
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			got[f.GetName()][strings.Join(ls, ",")] = m.GetCounter().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return got
}

// TestRequestMetrics: every route's duration histogram exists, empty,
// before any request; each request counts under its route's template and
// status, never its path or query, and requests no route matches count as
// unmatched.
func TestRequestMetrics(t *testing.T) {
	durations := func(fresh, unmatched float64) map[string]float64 {
		d := map[string]float64{}
		for _, route := range []string{"/", "/health", "/backchannel-logout", "/fresh-token", "/service-token", "/job-status"} {
			d["route="+strings.TrimSuffix(prefix, "/")+route] = 0
		}
		d["route="+prefix+"fresh-token"] = fresh
		d["route=unmatched"] = unmatched
		return d
	}
	for _, tt := range []struct {
		name     string
		requests []string // targets, with alice's token
		want     map[string]map[string]float64
	}{
		{name: "before any request", want: map[string]map[string]float64{
			"tokenkeeper_http_request_duration_seconds": durations(0, 0),
			"tokenkeeper_spawn_secret_refused_total":    {"": 0},
		}},
		{name: "one request", requests: []string{prefix + "fresh-token?user=alice"}, want: map[string]map[string]float64{
			"tokenkeeper_http_requests_total":           {"route=" + prefix + "fresh-token,status=200": 1},
			"tokenkeeper_http_request_duration_seconds": durations(1, 0),
			"tokenkeeper_spawn_secret_refused_total":    {"": 0},
		}},
		{name: "refused and unmatched", requests: []string{prefix + "fresh-token?user=bob", prefix + "alice-token/alice"}, want: map[string]map[string]float64{
			"tokenkeeper_http_requests_total": {
				"route=" + prefix + "fresh-token,status=403": 1,
				"route=unmatched,status=404":                 1,
			},
			"tokenkeeper_http_request_duration_seconds": durations(1, 1),
			"tokenkeeper_spawn_secret_refused_total":    {"": 0},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			d := (&fakes{}).deps()
			d.Requests = NewRequestMetrics(reg)
			h := NewHandler(prefix, d)
			for _, target := range tt.requests {
				get(t, h, target, "token alice-token")
			}
			if diff := cmp.Diff(tt.want, requestSamples(t, reg)); diff != "" {
				t.Errorf("request metrics (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRequestMetricsServed: the metrics route serves the request metrics,
// its own request among them.
func TestRequestMetricsServed(t *testing.T) {
	reg := prometheus.NewRegistry()
	d := (&fakes{}).deps()
	d.Requests = NewRequestMetrics(reg)
	d.Metrics = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	h := NewHandler(prefix, d)
	serve(h, prefix+"metrics", "")
	status, body := serve(h, prefix+"metrics", "")
	if status != http.StatusOK {
		t.Fatalf("GET metrics: status = %d, want 200", status)
	}
	if want := `tokenkeeper_http_requests_total{route="` + prefix + `metrics",status="200"} 1`; !strings.Contains(body, want) {
		t.Errorf("GET metrics does not show %s:\n%s", want, body)
	}
}
