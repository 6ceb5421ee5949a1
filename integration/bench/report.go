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
	targetBareShare = 0.80 // fresh-token req/s ÷ the bare handler's, at least
	targetHubFactor = 100  // fresh-token req/s ÷ the hub API's, at least
	targetP99Factor = 1.5  // fresh-token p99 ÷ the bare handler's p99, at most
	targetNaive     = 10   // naive hub requests per hour ÷ tokenkeeper's, at least
	targetPerUser   = 1024 // heap bytes per user at 100k users, at most
)

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
		"request-counting proxy and the naive refresher run in the bench process and share the same %s cores with "+
		"Keycloak, the hub and tokenkeeper: the client's CPU time is taken from the servers'.\n\n", integration.KeycloakVersion, r.Opts.portBase, r.StackUp.Round(time.Second), m.Nproc)
}

// freshRatios are fresh-token's ratios at one connection count.
type freshRatios struct {
	conns                     int
	bare, fresh, hub          loadResult
	bareShare, hubX, p99Ratio float64
}

func (r *report) ratios() []freshRatios {
	var out []freshRatios
	for _, c := range r.Opts.conns {
		x := freshRatios{conns: c}
		for _, run := range r.Fresh.Runs {
			if run.Conns != c {
				continue
			}
			switch run.Target {
			case "bare":
				x.bare = run
			case "fresh-token":
				x.fresh = run
			case "hub":
				x.hub = run
			}
		}
		x.bareShare = x.fresh.RPS / x.bare.RPS
		x.hubX = x.fresh.RPS / x.hub.RPS
		x.p99Ratio = float64(x.fresh.P99) / float64(x.bare.P99)
		out = append(out, x)
	}
	return out
}

func (r *report) targets(w *strings.Builder) {
	fmt.Fprintf(w, "## Targets\n\n| target | measured | verdict |\n| --- | --- | --- |\n")
	var share, hubX, p99 []string
	okShare, okHub, okP99 := true, true, true
	for _, x := range r.ratios() {
		share = append(share, fmt.Sprintf("%d: %.0f %%", x.conns, 100*x.bareShare))
		hubX = append(hubX, fmt.Sprintf("%d: %.0f×", x.conns, x.hubX))
		p99 = append(p99, fmt.Sprintf("%d: %.2f×", x.conns, x.p99Ratio))
		okShare = okShare && x.bareShare >= targetBareShare
		okHub = okHub && x.hubX >= targetHubFactor
		okP99 = okP99 && x.p99Ratio <= targetP99Factor
	}
	row := func(t string, v []string, ok bool) {
		fmt.Fprintf(w, "| %s | connections %s | %s |\n", t, strings.Join(v, "; "), verdict(ok))
	}
	row("fresh-token req/s ≥ 80 % of the bare handler's", share, okShare)
	row("fresh-token req/s ≥ 100× the hub API's", hubX, okHub)
	row("fresh-token p99 ≤ 1.5× the bare handler's", p99, okP99)
	var naive []string
	okNaive := true
	for _, s := range r.Sweeps {
		x := s.naivePerHour(r.Opts.sweep) / s.tkPerHour()
		naive = append(naive, fmt.Sprintf("%d users: %.1f×", s.Users, x))
		okNaive = okNaive && x >= targetNaive
	}
	fmt.Fprintf(w, "| ≥ 10× fewer hub requests per hour than a naive refresher | %s (30 s tokens, see §2) | %s |\n",
		strings.Join(naive, "; "), verdict(okNaive))
	sched, _ := r.Schedule.Value("BenchmarkSchedule100k/memory", "schedule-B/user")
	asked, _ := r.Schedule.Value("BenchmarkSchedule100k/memory", "asked-B/user")
	fmt.Fprintf(w, "| ≤ 1 KB of memory per user at 100k users, users nobody asks a token for | %.0f B (schedule) | %s |\n",
		sched, verdict(sched <= targetPerUser))
	fmt.Fprintf(w, "| ≤ 1 KB of memory per user at 100k users, every user asked for a token | %.0f B (schedule + cached access token) | %s |\n",
		asked, verdict(asked <= targetPerUser))
	grows, text := r.sweepGrowth()
	fmt.Fprintf(w, "| sweep cost grows with the due users, not all users | %s | %s |\n\n", text, verdict(grows))
}

func (r *report) freshSection(w *strings.Builder) {
	f := r.Fresh
	fmt.Fprintf(w, "## 1. fresh-token from cache, a bare handler, and the hub's API\n\n")
	fmt.Fprintf(w, "Command: `make bench` (`%s`), fresh-token phase. For each connection count and endpoint, "+
		"a closed-loop load generator in Go keeps that many keep-alive connections busy for %s after %s of "+
		"warm-up and records every request's latency.\n\n", r.Command, span(r.Opts.run), span(r.Opts.warm))
	fmt.Fprintf(w, "- **bare**: a net/http handler on 127.0.0.1 in the bench process writing a JSON body of "+
		"fresh-token's shape with the same access token (the ceiling).\n")
	fmt.Fprintf(w, "- **fresh-token**: `GET %sfresh-token?min_valid=1` on tokenkeeper directly (as the spawner "+
		"hook calls it), for `%s`, logged in through the real OAuth flow, with a hub API token of scope "+
		"`access:services!service=tokenkeeper`; one call first warms the identity cache (kept 60 s, so it is "+
		"refilled about once a minute during the runs) and the token cache.\n", "/services/tokenkeeper/", freshUser)
	fmt.Fprintf(w, "- **hub**: `GET /hub/api/users/%s` on the hub's API with an `admin:users` token, which "+
		"returns the user with `auth_state`: what a spawner does without tokenkeeper.\n\n", freshUser)
	fmt.Fprintf(w, "The access token is %d bytes; fresh-token's answer %d bytes.\n\n", f.Sizes[0], f.BodyBytes)
	fmt.Fprintf(w, "| connections | endpoint | requests | req/s | p50 | p99 | errors |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, run := range f.Runs {
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s |\n", run.Conns, run.Target, thousands(float64(run.Requests)),
			thousands(run.RPS), ms(run.P50), ms(run.P99), errorsCell(run))
	}
	fmt.Fprintf(w, "\n| connections | fresh-token ÷ bare, req/s (≥ 80 %%) | fresh-token ÷ hub, req/s (≥ 100×) | "+
		"fresh-token p99 ÷ bare p99 (≤ 1.5×) |\n| ---: | ---: | ---: | ---: |\n")
	for _, x := range r.ratios() {
		fmt.Fprintf(w, "| %d | %.0f %% %s | %.0f× %s | %.2f× %s |\n", x.conns,
			100*x.bareShare, verdict(x.bareShare >= targetBareShare), x.hubX, verdict(x.hubX >= targetHubFactor),
			x.p99Ratio, verdict(x.p99Ratio <= targetP99Factor))
	}
	fmt.Fprintf(w, "\nThe bare handler runs in the load generator's own process, tokenkeeper in another "+
		"process, and the hub in a third; all share the machine's cores with the load generator. A request to "+
		"the bare handler never leaves the process's scheduler, a request to fresh-token is a round trip "+
		"between two processes. §4 compares the two handlers in process, without sockets.\n\n")
}

func errorsCell(r loadResult) string {
	if r.Errors == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%s)", r.Errors, strings.ReplaceAll(r.FirstErr, "|", "/"))
}

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
	n := float64(len(s.Naive))
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
	fmt.Fprintf(w, "## 2. Sweep cost with real Keycloak sessions\n\n")
	fmt.Fprintf(w, "Command: `make bench` (`%s`), sweep phase.\n\n", r.Command)
	fmt.Fprintf(w, "For each user count the bench creates the users in Keycloak (admin API, partial import), "+
		"starts a real Keycloak session for each (password grant with the hub's client `jupyterhub`, for which "+
		"the bench enables direct access grants on its own stack; refresh tokens are bound to that client), "+
		"creates the hub users and writes their `auth_state` in OAuthenticator's layout (`access_token`, "+
		"`refresh_token`, `id_token`, `scope`, `token_response`, `oauth_user`). tokenkeeper runs with its "+
		"defaults (sweep every %s, refresh window %s, concurrency 8) except `TOKENKEEPER_KEEP=all`, so no "+
		"servers are needed. Its hub traffic goes through `integration.StartHubProxy`, which counts list, read "+
		"and write requests; grants are tokenkeeper's `tokenkeeper_grants_total` and match its `refreshed` log "+
		"lines. The realm's access tokens live %s, refresh-token rotation (`revokeRefreshToken`) is on.\n\n",
		span(tick), span(refreshWindow), span(realmLife))
	r.steadyTable(w, tick)
	r.naiveTable(w, tick)
	r.burstTable(w)
	r.idleTable(w)
	r.modelSection(w, tick)
}

func (r *report) steadyTable(w *strings.Builder, tick time.Duration) {
	fmt.Fprintf(w, "### Steady state, per hour\n\n")
	fmt.Fprintf(w, "Counted over a %s window (%.0f token lifetimes) right after the first refresh of "+
		"everyone, and **extrapolated to an hour** (× %.0f). The naive refresher's figures are its measured "+
		"requests per tick (below) × %.0f ticks per hour at tokenkeeper's sweep interval of %s.\n\n",
		span(r.Opts.window), r.Opts.window.Seconds()/realmLife.Seconds(), time.Hour.Seconds()/r.Opts.window.Seconds(),
		time.Hour.Seconds()/tick.Seconds(), span(tick))
	fmt.Fprintf(w, "| users | lists | reads | writes | grants (failed) | refreshes per user per hour | "+
		"refreshes after the previous token expired | "+
		"tokenkeeper hub req/h | naive hub req/h | naive ÷ tokenkeeper (≥ 10×) | tokenkeeper grants/h | naive grants/h |\n")
	fmt.Fprintf(w, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, s := range r.Sweeps {
		x := s.naivePerHour(tick) / s.tkPerHour()
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s (%.0f) | %.0f | %s of %s | %s | %s | %.1f× %s | %s | %s |\n",
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
		"refresh token (x/oauth2, the hub's client) and writes every `auth_state` back, %d requests in flight. "+
		"It runs against the same users on the same stack while tokenkeeper's sweeps are held (the bench "+
		"refuses tokenkeeper's user list until it is done), for %d back-to-back ticks.\n\n",
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

func (r *report) burstTable(w *strings.Builder) {
	fmt.Fprintf(w, "### Everyone due at once\n\n")
	fmt.Fprintf(w, "tokenkeeper's sweeps are held while the users are set up and until every user's token is "+
		"due; then the next sweep finds all of them new and due. Wall time runs from that sweep's first list "+
		"request to the last user's `refreshed` log line.\n\n")
	fmt.Fprintf(w, "| users | setup | wall time to refresh all | per user | lists | reads | writes | grants (failed) |\n"+
		"| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, s := range r.Sweeps {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s (%.0f) |\n", thousands(float64(s.Users)),
			secs(s.Setup), secs(s.BurstWall), ms(s.BurstWall/time.Duration(s.Users)), count(s.Burst.Lists),
			count(s.Burst.Reads), count(s.Burst.Patches), thousands(s.Burst.Grants), s.Burst.FailedGrants)
	}
	fmt.Fprintln(w)
}

func (r *report) idleTable(w *strings.Builder) {
	fmt.Fprintf(w, "### Nobody due\n\n")
	fmt.Fprintf(w, "After the naive ticks the bench sets the realm's access token lifespan to %s, waits until "+
		"tokenkeeper's metrics show every user with a token that has more than 60 s left and nobody due, "+
		"then watches %d sweeps. The assertion: reads, writes and grants are zero.\n\n", span(idleLife), r.Opts.idle)
	fmt.Fprintf(w, "| users | window | lists | reads | writes | grants | reads = writes = grants = 0 |\n"+
		"| ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, s := range r.Sweeps {
		ok := s.Idle.Reads == 0 && s.Idle.Patches == 0 && s.Idle.Grants == 0
		fmt.Fprintf(w, "| %s | %s | %d | %d | %d | %.0f | %s |\n", thousands(float64(s.Users)), secs(s.IdleWindow),
			s.Idle.Lists, s.Idle.Reads, s.Idle.Patches, s.Idle.Grants, map[bool]string{true: "holds", false: "**fails**"}[ok])
	}
	fmt.Fprintln(w)
}

// modelSection explains what bounds the ratio, using the measured figures.
func (r *report) modelSection(w *strings.Builder, tick time.Duration) {
	fmt.Fprintf(w, "### What bounds the ratio\n\n")
	fmt.Fprintf(w, "Both refreshers read and write each user once per refresh; they differ in how often they "+
		"refresh. The naive one refreshes everyone every tick (%s); tokenkeeper refreshes each user once per "+
		"access token, at ⅔–80 %% of its life or when %s are left, never before half of it, at the next sweep. "+
		"With the test realm's %s tokens that is half the life (%s) plus the wait for the next sweep, so "+
		"tokenkeeper cannot refresh much less often than once per %s tick. "+
		"The measured mean time between refreshes of one user:\n\n", span(tick), span(refreshWindow),
		span(realmLife), span(realmLife/2), span(tick))
	for _, s := range r.Sweeps {
		if s.Steady.Grants == 0 {
			continue
		}
		period := s.Window.Seconds() * float64(s.Users) / s.Steady.Grants
		fmt.Fprintf(w, "- %s users: %.1f s (%.2f hub requests per refresh besides the lists)\n",
			thousands(float64(s.Users)), period, float64(s.Steady.Reads+s.Steady.Patches)/s.Steady.Grants)
	}
	fmt.Fprintf(w, "\nA user whose refresh comes more than %s after the last one holds an expired access token in "+
		"`auth_state` until then (fresh-token still refreshes on demand); the steady-state table counts those "+
		"refreshes.\n", span(realmLife))
	due := min((2.0/3+0.8)/2*idleLife.Seconds(), (idleLife - refreshWindow).Seconds())
	period := due + tick.Seconds()/2
	fmt.Fprintf(w, "\n**Model, not measured:** with Keycloak's default %s access tokens the same schedule "+
		"refreshes each user every ≈ %.0f s (due at 200–240 s, mean %.0f s, plus half a sweep). Keeping the "+
		"measured hub requests per refresh and per sweep, tokenkeeper's hub requests per hour become (the "+
		"naive refresher's do not depend on the token lifetime):\n\n", span(idleLife), period, due)
	fmt.Fprintf(w, "| users | tokenkeeper hub req/h (model) | naive hub req/h (measured) | ratio (model) |\n| ---: | ---: | ---: | ---: |\n")
	for _, s := range r.Sweeps {
		if s.Steady.Grants == 0 {
			continue
		}
		perRefresh := float64(s.Steady.Reads+s.Steady.Patches) / s.Steady.Grants
		lists := float64(s.Steady.Lists) * time.Hour.Seconds() / s.Window.Seconds()
		tk := lists + perRefresh*float64(s.Users)*time.Hour.Seconds()/period
		nv := s.naivePerHour(tick)
		fmt.Fprintf(w, "| %s | %s | %s | %.1f× |\n", thousands(float64(s.Users)), thousands(tk), thousands(nv), nv/tk)
	}
	fmt.Fprintf(w, "\nThe verdict above is on the measured figures, not on this model.\n\n")
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
		ok = ok && reads == float64(due) && grants == float64(due) && lists == 1
		parts = append(parts, fmt.Sprintf("%s due: %s CPU", thousands(float64(due)), ms(time.Duration(cpu))))
	}
	return ok, strings.Join(parts, "; ") + "; hub reads and grants = due users; the list is O(all users), see §3"
}

func (r *report) scheduleSection(w *strings.Builder) {
	g := r.Schedule
	fmt.Fprintf(w, "## 3. The schedule at 100k synthetic users\n\n")
	fmt.Fprintf(w, "Command: `%s` (run by `make bench` after the stack has stopped).\n\n", g.Command())
	fmt.Fprintf(w, "An in-memory hub and grant function stand in for JupyterHub and Keycloak; tokens have "+
		"the sizes of the test realm's real tokens measured in §1 (access, refresh, ID: %d, %d, %d bytes) and "+
		"live 5 minutes. The refresher is tokenkeeper's own (`refresh.Refresher`) with its SQLite store on "+
		"disk, concurrency 8, and JSON logging.\n\n", r.Fresh.Sizes[0], r.Fresh.Sizes[1], r.Fresh.Sizes[2])
	sched, _ := g.Value("BenchmarkSchedule100k/memory", "schedule-B/user")
	asked, _ := g.Value("BenchmarkSchedule100k/memory", "asked-B/user")
	fmt.Fprintf(w, "**Memory.** `runtime.MemStats.HeapAlloc` after a full GC before the refresher exists, after its "+
		"first sweep over 100k users (which reads each user once and builds the schedule), and after every user "+
		"has asked for a token once through `Refresher.Fresh` (as fresh-token does), each divided by 100k. "+
		"tokenkeeper caches an access token only for users someone has asked for; the sweep keeps those "+
		"current.\n\n")
	fmt.Fprintf(w, "| state | per user | target ≤ 1 KB |\n| --- | ---: | --- |\n")
	fmt.Fprintf(w, "| schedule (users nobody asks a token for) | %.0f B | %s |\n", sched, verdict(sched <= targetPerUser))
	fmt.Fprintf(w, "| schedule + cached access token (every user asked) | %.0f B | %s |\n\n", asked,
		verdict(asked <= targetPerUser))
	fmt.Fprintf(w, "A cached token costs its own length (the access token is %d bytes here) plus the map entry. "+
		"SQLite's page cache is C memory and not counted; it is bounded by SQLite's cache size, not by the "+
		"number of users.\n\n", r.Fresh.Sizes[0])
	fmt.Fprintf(w, "**One sweep** over 100k users (every token cached) with K of them due. CPU is the process's user + system time "+
		"during the sweep (both cores can work: 8 users are refreshed at once).\n\n")
	fmt.Fprintf(w, "| due users | wall time | CPU | hub lists | hub reads | hub writes | grants |\n"+
		"| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, due := range []int{0, 100, 10_000} {
		name := fmt.Sprintf("BenchmarkSchedule100k/sweep/due=%d", due)
		v := func(u string) float64 { x, _ := g.Value(name, u); return x }
		fmt.Fprintf(w, "| %s | %s | %s | %.0f | %.0f | %.0f | %.0f |\n", thousands(float64(due)),
			ms(time.Duration(v("ns/op"))), ms(time.Duration(v("cpu-ns/op"))), v("lists/op"), v("reads/op"),
			v("writes/op"), v("grants/op"))
	}
	c0, _ := g.Value("BenchmarkSchedule100k/sweep/due=0", "cpu-ns/op")
	c1, _ := g.Value("BenchmarkSchedule100k/sweep/due=10000", "cpu-ns/op")
	fmt.Fprintf(w, "\nHub reads, writes and grants are exactly the due users. The CPU is a floor of %s per "+
		"sweep (%.2f µs per user: walking the list and the schedule) plus %.0f µs per due user (read, parse, "+
		"grant, journal, write-back, store). The floor is O(all users), and so is the hub's side: a real hub "+
		"answers the list in pages of 200, so 100k users cost %d list requests per sweep, %s per hour at a "+
		"%s sweep, whoever is due.\n\n", ms(time.Duration(c0)), c0/1e3/benchUsers, (c1-c0)/1e3/10_000,
		pages(benchUsers), thousands(float64(pages(benchUsers))*time.Hour.Seconds()/r.Opts.sweep.Seconds()), span(r.Opts.sweep))
}

// benchUsers is the user count of BenchmarkSchedule100k.
const benchUsers = 100_000

func (r *report) handlerSection(w *strings.Builder) {
	g := r.Handler
	fmt.Fprintf(w, "## 4. The fresh-token handler in process\n\n")
	fmt.Fprintf(w, "Command: `%s` (run by `make bench` after the stack has stopped).\n\n", g.Command())
	fmt.Fprintf(w, "tokenkeeper's gin handler with the real identity cache (`hubclient`) and token cache "+
		"(`refresh.Refresher`), both warm, against a bare net/http handler writing the same body, called "+
		"through `httptest` from both cores (`b.RunParallel`): the handlers' own cost without sockets.\n\n")
	fmt.Fprintf(w, "| handler | ns/op | B/op | allocs/op |\n| --- | ---: | ---: | ---: |\n")
	for _, name := range []string{"BenchmarkFreshTokenHandler", "BenchmarkBareHandler"} {
		ns, _ := g.Value(name, "ns/op")
		b, _ := g.Value(name, "B/op")
		a, _ := g.Value(name, "allocs/op")
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f |\n", strings.TrimPrefix(name, "Benchmark"), ns, b, a)
	}
	f, _ := g.Value("BenchmarkFreshTokenHandler", "ns/op")
	b, _ := g.Value("BenchmarkBareHandler", "ns/op")
	fmt.Fprintf(w, "\nIn process, fresh-token does %.0f %% of the bare handler's requests per second.\n", 100*b/f)
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
