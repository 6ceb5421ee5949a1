package main

import (
	"fmt"
	"strings"
	"time"
)

// freshRatios are one fresh-token target's ratios to the bare handler in
// its own process at one connection count.
type freshRatios struct {
	conns          int
	minValid       time.Duration
	bare, fresh    loadResult
	share, p99     float64
	inProcessShare float64
}

// ratios compares every fresh-token run with the bare handler's runs at
// the same connection count.
func (r *report) ratios() []freshRatios {
	var out []freshRatios
	for _, c := range r.Opts.conns {
		var own, in loadResult
		for _, run := range r.Fresh.Runs {
			switch {
			case run.Conns != c:
			case run.Target == "bare, own process":
				own = run
			case run.Target == "bare, in process":
				in = run
			}
		}
		for _, mv := range freshMinValids {
			for _, run := range r.Fresh.Runs {
				if run.Conns != c || run.Target != freshTargetName(mv) {
					continue
				}
				out = append(out, freshRatios{conns: c, minValid: mv, bare: own, fresh: run,
					share: run.RPS / own.RPS, p99: float64(run.P99) / float64(own.P99),
					inProcessShare: run.RPS / in.RPS})
			}
		}
	}
	return out
}

// freshTargetName is the load target of fresh-token at min_valid mv.
func freshTargetName(mv time.Duration) string {
	return fmt.Sprintf("fresh-token, min_valid=%d", int(mv.Seconds()))
}

// learnReads is the reads of a fresh user that are no refresh's: the first
// sweep's and the first fresh-token call's, which fills the cache.
const learnReads = 2

// cacheHolds reports whether u's calls read the hub only to learn the user
// and for its refreshes.
func cacheHolds(u freshUser) bool {
	return u.Reads <= learnReads+readsPerRefresh*int64(u.Refreshes)
}

func (r *report) targets(w *strings.Builder) {
	fmt.Fprintf(w, "## Targets\n\n| target | measured | verdict |\n| --- | --- | --- |\n")
	var cache []string
	okCache := true
	for _, u := range r.Fresh.Users {
		cache = append(cache, fmt.Sprintf("min_valid=%s: %s calls, %d reads, %d refreshes",
			span(u.MinValid), count(u.Calls), u.Reads, u.Refreshes))
		okCache = okCache && cacheHolds(u)
	}
	fmt.Fprintf(w, "| fresh-token with 5-minute tokens reads the hub only for refreshes (%d reads each: before the grant, "+
		"and again before the write-back) and %d to learn the user, at any min_valid (§1) | %s | %s |\n",
		readsPerRefresh, learnReads, strings.Join(cache, "; "), verdict(okCache))
	r.loadTargets(w)
	var naive []string
	okNaive := len(r.Sweeps) > 0
	for _, s := range r.Sweeps {
		x := s.naivePerHour(r.Opts.sweep) / s.tkPerHour()
		naive = append(naive, fmt.Sprintf("%s users: %.1f×", thousands(float64(s.Users)), x))
		okNaive = okNaive && x >= targetNaive
	}
	fmt.Fprintf(w, "| ≥ 10× fewer hub requests per hour than a naive refresher, 5-minute tokens, measured over %s (§2) | %s | %s |\n",
		span(r.Opts.window), strings.Join(naive, "; "), verdict(okNaive))
	r.budgetTarget(w)
	sched, _ := r.Schedule.Value("BenchmarkSchedule100k/memory", "schedule-B/user")
	beyond, _ := r.Schedule.Value("BenchmarkSchedule100k/memory", "beyond-token-B/user")
	fmt.Fprintf(w, "| ≤ 1 KB of memory per user at 100k users beyond the cached access token itself (§3) | %.0f B "+
		"(schedule %.0f B, cache entry overhead %.0f B) | %s |\n", beyond, sched, beyond-sched, verdict(beyond <= targetPerUser))
	grows, text := r.sweepGrowth()
	fmt.Fprintf(w, "| sweep cost grows with the due users, not all users (§3) | %s | %s |\n\n", text, verdict(grows))
}

// loadTargets are fresh-token's throughput and latency against the bare
// handler in its own process.
func (r *report) loadTargets(w *strings.Builder) {
	var share, p99 []string
	okShare, okP99 := true, true
	for _, x := range r.ratios() {
		at := fmt.Sprintf("%d conns, min_valid=%s", x.conns, span(x.minValid))
		share = append(share, fmt.Sprintf("%s: %.0f %%", at, 100*x.share))
		p99 = append(p99, fmt.Sprintf("%s: %.2f×", at, x.p99))
		okShare = okShare && x.share >= targetBareShare
		okP99 = okP99 && x.p99 <= targetP99Factor
	}
	fmt.Fprintf(w, "| fresh-token req/s ≥ 80 %% of a bare handler's in its own process (§1) | %s | %s |\n",
		strings.Join(share, "; "), verdict(okShare))
	fmt.Fprintf(w, "| fresh-token p99 ≤ 1.5× a bare handler's in its own process (§1) | %s | %s |\n",
		strings.Join(p99, "; "), verdict(okP99))
}

// budgetTarget is the hub budget: no second above hub_max_rps, and nobody
// refreshed after their token expired.
func (r *report) budgetTarget(w *strings.Builder) {
	var parts []string
	ok := len(r.Sweeps) > 0
	for _, s := range r.Sweeps {
		parts = append(parts, fmt.Sprintf("%s users issued within %s: busiest second %d requests; refreshed after "+
			"expiry: %d at first sight, %d of %s in the window", thousands(float64(s.Users)), secs(s.IssueSpread),
			s.Busiest, s.BurstLate, s.Late, count(int64(s.Known))))
		ok = ok && float64(s.Busiest) <= r.Opts.hubRPS && s.BurstLate == 0 && s.Late == 0
	}
	fmt.Fprintf(w, "| hub budget %g req/s: the hub never sees more in one second, and everyone is refreshed before "+
		"expiry (§2) | %s | %s |\n", r.Opts.hubRPS, strings.Join(parts, "; "), verdict(ok))
}
