package main

import (
	"fmt"
	"strings"
	"time"
)

// benchUsers is the user count of BenchmarkSchedule100k.
const benchUsers = 100_000

func (r *report) scheduleSection(w *strings.Builder) {
	g := r.Schedule
	fmt.Fprintf(w, "## 3. The schedule at 100k synthetic users\n\n")
	fmt.Fprintf(w, "Command: `%s` (run by `make bench` after the stack has stopped).\n\n", g.Command())
	fmt.Fprintf(w, "An in-memory hub and grant function stand in for JupyterHub and Keycloak; tokens have "+
		"the sizes of the realm's real tokens measured in §1 (access, refresh, ID: %d, %d, %d bytes) and "+
		"live 5 minutes. The refresher is tokenkeeper's own (`refresh.Refresher`) with its SQLite store on "+
		"disk, concurrency 8, and JSON logging.\n\n", r.Fresh.Sizes[0], r.Fresh.Sizes[1], r.Fresh.Sizes[2])
	r.memoryTable(w)
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
	fmt.Fprintf(w, "\nHub writes and grants are exactly the due users, hub reads twice that (each refresh reads "+
		"the user before the grant and again before the write-back). The CPU is a floor of %s per "+
		"sweep (%.2f µs per user: walking the list and the schedule) plus %.0f µs per due user (read, parse, "+
		"grant, journal, write-back, store). The floor is O(all users), and so is the hub's side: a real hub "+
		"answers the list in pages of 200, so 100k users cost %d list requests per sweep, %s per hour at a "+
		"%s sweep, whoever is due.\n\n", ms(time.Duration(c0)), c0/1e3/benchUsers, (c1-c0)/1e3/10_000,
		pages(benchUsers), thousands(float64(pages(benchUsers))*time.Hour.Seconds()/r.Opts.sweep.Seconds()), span(r.Opts.sweep))
}

func (r *report) memoryTable(w *strings.Builder) {
	g := r.Schedule
	v := func(u string) float64 { x, _ := g.Value("BenchmarkSchedule100k/memory", u); return x }
	fmt.Fprintf(w, "**Memory.** Each iteration of `BenchmarkSchedule100k/memory` replaces the refresher with a "+
		"new one over the same store, as a restart does, lets its first sweep learn every user, and asks once "+
		"for every user's token through `Refresher.Fresh`, as fresh-token does; it took %s per iteration. "+
		"`runtime.MemStats.HeapAlloc` after a full GC before the refresher exists, after the sweep, and after "+
		"the tokens were asked for, each divided by 100k, gives the memory per user. tokenkeeper caches an "+
		"access token only for users someone has asked for; the sweep keeps those current.\n\n",
		secs(time.Duration(v("ns/op"))))
	sched, asked, beyond := v("schedule-B/user"), v("asked-B/user"), v("beyond-token-B/user")
	fmt.Fprintf(w, "| per user | bytes |\n| --- | ---: |\n")
	fmt.Fprintf(w, "| schedule state (users nobody asks a token for) | %.0f |\n", sched)
	fmt.Fprintf(w, "| schedule state + cache entry (every user asked) | %.0f |\n", asked)
	fmt.Fprintf(w, "| the cached access token itself | %d |\n", r.Fresh.Sizes[0])
	fmt.Fprintf(w, "| **beyond the token: schedule state + the cache entry's overhead** (≤ 1 KB) | **%.0f** %s |\n",
		beyond, verdict(beyond <= targetPerUser))
	fmt.Fprintf(w, "| of which the cache entry's overhead | %.0f |\n\n", beyond-sched)
	fmt.Fprintf(w, "SQLite's page cache is C memory and not counted; it is bounded by SQLite's cache size, not by "+
		"the number of users.\n\n")
}

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
