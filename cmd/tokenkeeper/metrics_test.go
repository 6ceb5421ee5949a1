package main

import (
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

// TestRegisterProcess: the registry serves the process and Go runtime
// collectors' families and tokenkeeper_build_info at 1, labelled with the
// version and the Go release.
func TestRegisterProcess(t *testing.T) {
	reg := prometheus.NewRegistry()
	registerProcess(reg, "1.2.3")
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	var info map[string]string
	var value float64
	for _, f := range families {
		got[f.GetName()] = true
		if f.GetName() == "tokenkeeper_build_info" {
			info = map[string]string{}
			for _, l := range f.GetMetric()[0].GetLabel() {
				info[l.GetName()] = l.GetValue()
			}
			value = f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_resident_memory_bytes"} {
		if !got[name] {
			t.Errorf("no %s among the registry's families", name)
		}
	}
	if diff := cmp.Diff(map[string]string{"version": "1.2.3", "goversion": runtime.Version()}, info); diff != "" || value != 1 {
		t.Errorf("tokenkeeper_build_info = %v, labels (-want +got):\n%s", value, diff)
	}
}
