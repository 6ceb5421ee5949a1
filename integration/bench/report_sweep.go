package main

import (
	"fmt"
	"strings"
	"time"
)

// perRefresh is tokenkeeper's hub requests per refresh in the window,
// lists apart (reads of users without tokens included).
func (s sweepResult) perRefresh() float64 {
	return float64(s.Steady.Reads+s.Steady.Patches) / max(s.Steady.Grants, 1)
}

// refreshesPerHour is the users' refreshes per hour at the measured mean
// interval between two refreshes of one user.
func (s sweepResult) refreshesPerHour() float64 {
	if s.Interval <= 0 {
		return 0
	}
	return float64(s.Users) * time.Hour.Seconds() / s.Interval.Seconds()
}

// tkPerHour is tokenkeeper's hub requests per hour: the window's lists per
// hour, and the refreshes per hour times the requests per refresh.
func (s sweepResult) tkPerHour() float64 {
	lists := float64(s.Steady.Lists) * time.Hour.Seconds() / s.Window.Seconds()
	return lists + s.refreshesPerHour()*s.perRefresh()
}

// naiveMean is the naive refresher's mean hub requests and grants per tick.
func (s sweepResult) naiveMean() (requests, grants float64) {
	for _, t := range s.Naive {
		requests += float64(t.HubRequests())
		grants += float64(t.Grants)
	}
	n := float64(max(len(s.Naive), 1))
	return requests / n, grants / n
}

func (s sweepResult) naivePerHour(tick time.Duration) float64 {
	req, _ := s.naiveMean()
	return req * time.Hour.Seconds() / tick.Seconds()
}

func (s sweepResult) naiveGrantsPerHour(tick time.Duration) float64 {
	_, g := s.naiveMean()
	return g * time.Hour.Seconds() / tick.Seconds()
}

func (r *report) sweepSection(w *strings.Builder) {
	tick := r.Opts.sweep
	fmt.Fprintf(w, "## 2. Sweeps with real Keycloak sessions\n\n")
	fmt.Fprintf(w, "Command: `make bench` (`%s`), sweep phase.\n\n", r.Command)
	fmt.Fprintf(w, "The realm has Keycloak's default lifetimes: access tokens %s, SSO idle %s, SSO maximum %s; "+
		"refresh-token rotation (`revokeRefreshToken`) is on. For each user count the bench creates the users "+
		"in Keycloak (admin API, partial import), starts a real Keycloak session for each (password grant "+
		"with the hub's client `jupyterhub`, for which the bench enables direct access grants on its own "+
		"stack; refresh tokens are bound to that client), creates the hub users and writes their `auth_state` "+
		"in OAuthenticator's layout (`access_token`, `refresh_token`, `id_token`, `scope`, `token_response`, "+
		"`oauth_user`). tokenkeeper runs with its defaults (sweep every %s, refresh window %s, concurrency 8) "+
		"except `TOKENKEEPER_KEEP=all`, so no servers are needed, and a hub budget of `hub_max_rps` = %g. "+
		"Its hub traffic passes a gate, which counts every request by second of the clock, and "+
		"`integration.StartHubProxy`, which counts list, read and write requests; grants are tokenkeeper's "+
		"`tokenkeeper_grants_total` and match its `refreshed` log lines.\n\n",
		span(realmLife), span(realmSSOIdle), span(realmSSOMax), span(tick), span(refreshWindow), r.Opts.hubRPS)
	r.burstTable(w)
	r.steadyTable(w, tick)
	r.naiveTable(w, tick)
	r.boundSection(w, tick)
}

func (r *report) burstTable(w *strings.Builder) {
	fmt.Fprintf(w, "### A whole class at once, under the hub budget\n\n")
	fmt.Fprintf(w, "tokenkeeper's sweeps are held while the users are set up (their tokens are issued within "+
		"the spread shown), then the gate opens: the next sweep finds every user new, and all their tokens "+
		"fall due together. At %g hub requests per second and 3 per refresh (read, re-read, write), %s users "+
		"take about %s of budget, more than the third of a token's life left when it falls due, so tokenkeeper "+
		"starts early the users it could not otherwise reach in time. The table runs from the gate's opening "+
		"to every user's first refresh; the busiest second is over that and the steady-state window.\n\n",
		r.Opts.hubRPS, thousands(float64(maxUsers(r.Sweeps))), secs(time.Duration(float64(3*maxUsers(r.Sweeps))/
			r.Opts.hubRPS*float64(time.Second))))
	fmt.Fprintf(w, "| users | setup | tokens issued within | until all refreshed | first refreshed after expiry | "+
		"busiest second (≤ %g) | lists | reads | writes | grants (failed) |\n"+
		"| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n", r.Opts.hubRPS)
	for _, s := range r.Sweeps {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %d %s | %d %s | %s | %s | %s | %s (%.0f) |\n",
			thousands(float64(s.Users)), secs(s.Setup), secs(s.IssueSpread), secs(s.BurstWall), s.BurstLate,
			verdict(s.BurstLate == 0), s.Busiest, verdict(float64(s.Busiest) <= r.Opts.hubRPS),
			count(s.Burst.Lists), count(s.Burst.Reads), count(s.Burst.Patches), thousands(s.Burst.Grants),
			s.Burst.FailedGrants)
	}
	fmt.Fprintln(w)
}

func maxUsers(sweeps []sweepResult) int {
	n := 0
	for _, s := range sweeps {
		n = max(n, s.Users)
	}
	return n
}

func (r *report) steadyTable(w *strings.Builder, tick time.Duration) {
	fmt.Fprintf(w, "### Steady state, per hour\n\n")
	fmt.Fprintf(w, "Counted over a %s window (%.0f token lifetimes) right after every user's first refresh. "+
		"Users set up together are refreshed nearly in step, so a window of whole token lifetimes holds a "+
		"whole number of refreshes per user whatever the true rate; the rate per hour is therefore taken from "+
		"the mean time between two refreshes of one user (every pair of consecutive refreshes in the window): "+
		"hub requests per hour = lists per hour + users × 3,600 s ÷ that interval × hub requests per refresh, "+
		"all three measured in the window. The naive refresher's figures are its measured requests per tick "+
		"(below) × %.0f ticks per hour at tokenkeeper's sweep interval of %s.\n\n",
		span(r.Opts.window), r.Opts.window.Seconds()/realmLife.Seconds(), time.Hour.Seconds()/tick.Seconds(), span(tick))
	fmt.Fprintf(w, "| users | lists | reads | writes | grants (failed) | mean interval between refreshes (pairs) | "+
		"hub requests per refresh | refreshed after the previous token expired | "+
		"tokenkeeper hub req/h | naive hub req/h | naive ÷ tokenkeeper (≥ 10×) | tokenkeeper grants/h | naive grants/h |\n")
	fmt.Fprintf(w, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, s := range r.Sweeps {
		x := s.naivePerHour(tick) / s.tkPerHour()
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s (%.0f) | %s (%s) | %.2f | %s of %s | %s | %s | %.1f× %s | %s | %s |\n",
			thousands(float64(s.Users)), count(s.Steady.Lists), count(s.Steady.Reads), count(s.Steady.Patches),
			thousands(s.Steady.Grants), s.Steady.FailedGrants, secs(s.Interval), count(int64(s.Pairs)), s.perRefresh(),
			count(int64(s.Late)), count(int64(s.Known)), thousands(s.tkPerHour()),
			thousands(s.naivePerHour(tick)), x, verdict(x >= targetNaive), thousands(s.refreshesPerHour()),
			thousands(s.naiveGrantsPerHour(tick)))
	}
	fmt.Fprintln(w)
}

func (r *report) naiveTable(w *strings.Builder, tick time.Duration) {
	fmt.Fprintf(w, "### The naive refresher\n\n")
	fmt.Fprintf(w, "Every tick it lists all users (pages of %d), reads every user's `auth_state`, spends every "+
		"refresh token (x/oauth2, the hub's client) and writes every `auth_state` back, %d requests in flight, "+
		"with no budget. It runs against the same users on the same stack while tokenkeeper's sweeps are held "+
		"(the bench refuses tokenkeeper's user list until it is done), for %d back-to-back ticks.\n\n",
		naivePage, naiveConcurrency, r.Opts.ticks)
	fmt.Fprintf(w, "| users | tick | lists | reads | writes | grants | failures | wall time |\n"+
		"| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, s := range r.Sweeps {
		for i, t := range s.Naive {
			fail := fmt.Sprint(t.Failures)
			if t.Failures > 0 {
				fail += " (" + strings.ReplaceAll(t.FirstErr, "|", "/") + ")"
			}
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s |\n", thousands(float64(s.Users)), i+1,
				count(t.Lists), count(t.Reads), count(t.Patches), count(t.Grants), fail, secs(t.Wall))
		}
	}
	fmt.Fprintf(w, "\nA tick that takes longer than %s could not keep up at that interval; the per-hour figures "+
		"above assume it does.\n\n", span(tick))
}

// boundSection explains the ratio from the measured figures.
func (r *report) boundSection(w *strings.Builder, tick time.Duration) {
	every := scheduleInterval(tick)
	fmt.Fprintf(w, "### What the ratio is made of\n\n")
	fmt.Fprintf(w, "The naive refresher makes 2 hub requests per user per tick (read, write), every %s. "+
		"tokenkeeper refreshes each user once per access token, at ⅔–80 %% of its life (at most %s before "+
		"expiry) at the next sweep: every %.0f s on average for %s tokens, and each refresh makes 3 hub "+
		"requests: the read, the compare-and-set re-read, and the write. Both list every user every sweep. So "+
		"before the lists the ratio is about 2 × %.0f s ÷ %s ÷ 3 = %.1f×; the lists and the reads of users "+
		"without tokens (read again every minute) take it lower for few users, the hub budget's spreading of "+
		"refreshes takes it higher for many. The re-read costs a third of every refresh: without it the "+
		"ratio would be about %.0f×, but then a login that lands while tokenkeeper's grant is at Keycloak "+
		"would be overwritten by the old session's tokens, and with refresh-token rotation Keycloak would "+
		"later refuse them as stale and end the session.\n\n",
		span(tick), span(refreshWindow), every.Seconds(), span(realmLife), every.Seconds(),
		span(tick), 2*every.Seconds()/tick.Seconds()/3, 2*every.Seconds()/tick.Seconds()/2)
}

// scheduleInterval is the mean interval between refreshes the schedule aims
// at for the realm's tokens: due at ⅔–80 % of the life, on average, plus
// half a sweep.
func scheduleInterval(tick time.Duration) time.Duration {
	mean := (2.0/3 + 0.8) / 2
	return time.Duration(mean*float64(realmLife)) + tick/2
}
