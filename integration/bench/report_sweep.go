package main

import (
	"fmt"
	"strings"
	"time"
)

// tkPerHour is tokenkeeper's hub requests per hour, extrapolated from the window.
func (s sweepResult) tkPerHour() float64 {
	return float64(s.Steady.hubRequests()) * time.Hour.Seconds() / s.Window.Seconds()
}

func (s sweepResult) tkGrantsPerHour() float64 {
	return s.Steady.Grants * time.Hour.Seconds() / s.Window.Seconds()
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
	fmt.Fprintf(w, "Counted over a %s window (%.0f token lifetimes) right after every user's first refresh, "+
		"and **extrapolated to an hour** (× %.0f). The naive refresher's figures are its measured requests "+
		"per tick (below) × %.0f ticks per hour at tokenkeeper's sweep interval of %s.\n\n",
		span(r.Opts.window), r.Opts.window.Seconds()/realmLife.Seconds(), time.Hour.Seconds()/r.Opts.window.Seconds(),
		time.Hour.Seconds()/tick.Seconds(), span(tick))
	fmt.Fprintf(w, "| users | lists | reads | writes | grants (failed) | refreshes per user per hour | "+
		"refreshes after the previous token expired | "+
		"tokenkeeper hub req/h | naive hub req/h | naive ÷ tokenkeeper (≥ 10×) | tokenkeeper grants/h | naive grants/h |\n")
	fmt.Fprintf(w, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, s := range r.Sweeps {
		x := s.naivePerHour(tick) / s.tkPerHour()
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s (%.0f) | %.1f | %s of %s | %s | %s | %.1f× %s | %s | %s |\n",
			thousands(float64(s.Users)), count(s.Steady.Lists), count(s.Steady.Reads), count(s.Steady.Patches),
			thousands(s.Steady.Grants), s.Steady.FailedGrants, s.tkGrantsPerHour()/float64(s.Users),
			count(int64(s.Late)), count(int64(s.Known)), thousands(s.tkPerHour()),
			thousands(s.naivePerHour(tick)), x, verdict(x >= targetNaive), thousands(s.tkGrantsPerHour()),
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
	fmt.Fprintf(w, "### What the ratio is made of\n\n")
	fmt.Fprintf(w, "The naive refresher makes 2 hub requests per user per tick (read, write), every %s. "+
		"tokenkeeper refreshes each user once per access token, at ⅔–80 %% of its life (at most %s before "+
		"expiry) at the next sweep, and each refresh makes 3 hub requests: the read, the compare-and-set "+
		"re-read, and the write. Both list every user every sweep. Measured in the window:\n\n",
		span(tick), span(refreshWindow))
	for _, s := range r.Sweeps {
		if s.Steady.Grants == 0 {
			continue
		}
		period := s.Window.Seconds() * float64(s.Users) / s.Steady.Grants
		fmt.Fprintf(w, "- %s users: a user refreshed every %.1f s on average; %.2f hub requests per refresh "+
			"besides the lists; lists %.1f %% of tokenkeeper's requests\n", thousands(float64(s.Users)), period,
			float64(s.Steady.Reads+s.Steady.Patches)/s.Steady.Grants,
			100*float64(s.Steady.Lists)/float64(max(s.Steady.hubRequests(), 1)))
	}
	fmt.Fprintln(w)
}
