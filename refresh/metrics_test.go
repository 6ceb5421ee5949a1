package refresh

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

// samples returns the counters and histogram counts reg gathers, by
// family, as "label=value,..." → value.
func samples(t *testing.T, reg prometheus.Gatherer) map[string]map[string]float64 {
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

// TestMetricsStartAtZero: every counter exists at zero for its known label
// values before its first event, and an event moves only its own series.
func TestMetricsStartAtZero(t *testing.T) {
	zero := map[string]map[string]float64{
		"tokenkeeper_grants_total": {
			"outcome=success": 0, "outcome=transient": 0, "outcome=terminal": 0, "outcome=operator": 0, "outcome=unknown": 0,
		},
		"tokenkeeper_grant_duration_seconds": {"": 0},
		"tokenkeeper_logouts_total":          {"reason=backchannel": 0, "reason=session_ended": 0},
		"tokenkeeper_derived_tokens_total": {
			"kind=audience,outcome=success": 0, "kind=audience,outcome=refused": 0, "kind=audience,outcome=transient": 0,
			"kind=identity_provider,outcome=success": 0, "kind=identity_provider,outcome=refused": 0, "kind=identity_provider,outcome=transient": 0,
		},
		"tokenkeeper_derived_token_duration_seconds": {"kind=audience": 0, "kind=identity_provider": 0},
	}
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	if diff := cmp.Diff(zero, samples(t, reg)); diff != "" {
		t.Errorf("metrics before any event (-want +got):\n%s", diff)
	}

	m.grant("terminal", time.Second)
	m.logout(metricReason(ReasonBackchannel))
	m.derivedToken(KindProvider, "refused", time.Second)
	want := zero
	want["tokenkeeper_grants_total"]["outcome=terminal"] = 1
	want["tokenkeeper_grant_duration_seconds"][""] = 1
	want["tokenkeeper_logouts_total"]["reason=backchannel"] = 1
	want["tokenkeeper_derived_tokens_total"]["kind=identity_provider,outcome=refused"] = 1
	want["tokenkeeper_derived_token_duration_seconds"]["kind=identity_provider"] = 1
	if diff := cmp.Diff(want, samples(t, reg)); diff != "" {
		t.Errorf("metrics after one event each (-want +got):\n%s", diff)
	}
}
