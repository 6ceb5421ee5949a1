package refresh

import (
	"time"
)

// Guard pauses logouts when many users' sessions end unexpectedly within a
// while, which usually means Keycloak lost its sessions (restarted without
// persistence, or a realm-wide revocation) rather than that each of those
// users logged out. An ending that the refresh token's own expiry predicted
// (SSO idle or maximum) is expected and never counts.
type Guard struct {
	// Min is the least number of unexpected endings that can trip it.
	Min int
	// Fraction is the share of the users holding tokens that trips it.
	Fraction float64
}

// minGuardSpan is the shortest window the guard counts over.
const minGuardSpan = 5 * time.Minute

// guardWindow counts grant attempts and unexpected session endings over a
// sliding window of twice the longest access-token lifetime seen (at least
// 5 minutes). It trips when at least Min endings are in the window and they
// are at least Fraction of the grants attempted since the first of them: a
// realm-wide loss fails every grant from its start, however the schedule's
// jitter spreads it over the sweeps, while a few sessions ended by their
// users stand among many grants that work. An unexpected ending is logged
// out only once the failed access token has expired, which gives the window
// time to see a loss, and still logs the user out within one access-token
// lifetime of their session's end. Once tripped it stays tripped until
// released.
type guardWindow struct {
	span     time.Duration
	attempts []time.Time
	failures []time.Time
	tripped  bool
}

// attempt records a grant attempt at now.
func (g *guardWindow) attempt(now time.Time) {
	g.attempts = append(prune(g.attempts, now, g.span), now)
}

// fail records an unexpected session ending at now.
func (g *guardWindow) fail(now time.Time) { g.failures = append(prune(g.failures, now, g.span), now) }

// lifetime widens the window for an access-token lifetime seen.
func (g *guardWindow) lifetime(d time.Duration) { g.span = max(g.span, 2*d, minGuardSpan) }

// check trips the window if the endings in it reach the guard's
// thresholds, and reports whether it is tripped.
func (g *guardWindow) check(gd Guard, now time.Time) bool {
	g.attempts, g.failures = prune(g.attempts, now, g.span), prune(g.failures, now, g.span)
	n := len(g.failures)
	if n == 0 || gd.Min <= 0 || n < gd.Min {
		return g.tripped
	}
	since := 0
	for _, a := range g.attempts {
		if !a.Before(g.failures[0]) {
			since++
		}
	}
	if float64(n) >= gd.Fraction*float64(max(since, n)) {
		g.tripped = true
	}
	return g.tripped
}

// release clears the window and untrips it.
func (g *guardWindow) release() {
	g.attempts, g.failures, g.tripped = nil, nil, false
}

// prune drops the times before now-span from ts, which is in order.
func prune(ts []time.Time, now time.Time, span time.Duration) []time.Time {
	cut := now.Add(-max(span, minGuardSpan))
	i := 0
	for i < len(ts) && ts[i].Before(cut) {
		i++
	}
	return ts[i:]
}
