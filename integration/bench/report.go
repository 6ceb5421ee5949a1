package main

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/tokenkeeper/tokenkeeper/integration"
)

// Targets.
const (
	targetBareShare = 0.80 // fresh-token req/s ÷ the bare handler's (own process), at least
	targetP99Factor = 1.5  // fresh-token p99 ÷ the bare handler's p99 (own process), at most
	targetNaive     = 10   // naive hub requests per hour ÷ tokenkeeper's, at least
	targetPerUser   = 1024 // heap bytes per user beyond the cached access token, at 100k users, at most
)

// readsPerRefresh is the hub reads one refresh makes: the read before the
// grant and the compare-and-set re-read before the write-back.
const readsPerRefresh = 2

// report is everything one run measured.
type report struct {
	Opts     options
	Command  string
	Started  time.Time
	Wall     time.Duration
	Machine  machine
	RunDir   string
	StackUp  time.Duration
	Fresh    freshResult
	Sweeps   []sweepResult
	Schedule goBench
	Handler  goBench
}

func (r *report) markdown() string {
	var w strings.Builder
	r.header(&w)
	r.targets(&w)
	r.freshSection(&w)
	r.sweepSection(&w)
	r.scheduleSection(&w)
	r.handlerSection(&w)
	return w.String()
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func (r *report) header(w *strings.Builder) {
	m := r.Machine
	fmt.Fprintf(w, "# Benchmarks\n\n")
	fmt.Fprintf(w, "Every figure in this file comes from one run of `make bench` (`%s`), started %s and "+
		"finished %s later. The file is written by that run; nothing in it is edited by hand.\n\n",
		r.Command, r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Wall.Round(time.Second))
	fmt.Fprintf(w, "| machine | |\n| --- | --- |\n")
	fmt.Fprintf(w, "| `nproc` | %s |\n| CPU | %s |\n| memory | %s |\n| `go version` | %s |\n| kernel | %s |\n",
		m.Nproc, m.CPU, m.Memory, m.GoVersion, m.Kernel)
	fmt.Fprintf(w, "| load average (1, 5, 15 min) at start / end | %s / %s |\n", m.LoadStart, m.LoadEnd)
	var others []string
	for _, p := range m.Others {
		stacks := "none"
		if len(p.Stacks) > 0 {
			stacks = "**" + strings.Join(p.Stacks, ", ") + "**"
		}
		others = append(others, p.Phase+": "+stacks)
	}
	fmt.Fprintf(w, "| other stacks running on this machine as each phase began (they would share the cores) | %s |\n\n",
		strings.Join(others, "; "))
	fmt.Fprintf(w, "The stack is the real one from `integration/stack/install.sh`: Keycloak %s (`start-dev`), "+
		"JupyterHub with OAuthenticator, configurable-http-proxy, and tokenkeeper (`bin/tokenkeeper`) as the hub's "+
		"managed service, all on 127.0.0.1 from port %d; it came up in %s. The load generator, the bare handler, the "+
		"request-counting proxy and the naive refresher run in the bench process (the bare handler also in a process of its own) and share the same %s cores with "+
		"Keycloak, the hub and tokenkeeper: the client's CPU time is taken from the servers'.\n\n", integration.KeycloakVersion, r.Opts.portBase, r.StackUp.Round(time.Second), m.Nproc)
}

// sweepGrowth judges the 100k-user sweeps: hub calls and grants exactly
// the due users, and the cost beyond the due=0 floor.
func (r *report) sweepGrowth() (bool, string) {
	ok := true
	var parts []string
	for _, due := range []int{0, 100, 10_000} {
		name := fmt.Sprintf("BenchmarkSchedule100k/sweep/due=%d", due)
		cpu, _ := r.Schedule.Value(name, "cpu-ns/op")
		reads, _ := r.Schedule.Value(name, "reads/op")
		grants, _ := r.Schedule.Value(name, "grants/op")
		lists, _ := r.Schedule.Value(name, "lists/op")
		ok = ok && reads == readsPerRefresh*float64(due) && grants == float64(due) && lists == 1
		parts = append(parts, fmt.Sprintf("%s due: %s CPU", thousands(float64(due)), ms(time.Duration(cpu))))
	}
	return ok, strings.Join(parts, "; ") + "; grants = due users, hub reads = 2 × due users; the list is O(all users)"
}

// thousands formats a number rounded to an integer with thousands separators.
func thousands(v float64) string {
	s := fmt.Sprintf("%d", int64(math.Round(v)))
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var out []string
	for len(s) > 3 {
		out = append([]string{s[len(s)-3:]}, out...)
		s = s[:len(s)-3]
	}
	out = append([]string{s}, out...)
	if neg {
		return "-" + strings.Join(out, ",")
	}
	return strings.Join(out, ",")
}

// count formats a request or grant count.
func count(n int64) string { return thousands(float64(n)) }

// ms formats a latency or cost: µs below a millisecond, ms below a second, else s.
func ms(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// span formats a configured duration: "90 s", "5 min".
func span(d time.Duration) string {
	if d >= 2*time.Minute && d%time.Minute == 0 {
		return fmt.Sprintf("%d min", int(d.Minutes()))
	}
	return fmt.Sprintf("%g s", d.Seconds())
}

func secs(d time.Duration) string {
	return fmt.Sprintf("%.1f s", d.Seconds())
}
