package main

import (
	"fmt"
	"strings"
	"time"
)

func (r *report) freshSection(w *strings.Builder) {
	fmt.Fprintf(w, "## 1. fresh-token: its cache, a bare handler, and the hub's API\n\n")
	fmt.Fprintf(w, "Command: `make bench` (`%s`), fresh-token phase. The realm issues Keycloak's default "+
		"%s access tokens. One user per min_valid (`%s`, `%s`, `%s`) gets a real Keycloak session (a password "+
		"grant with the hub's client) and a hub API token of scope `access:services!service=tokenkeeper`.\n\n",
		r.Command, span(realmLife), freshUserName(freshMinValids[0]), freshUserName(freshMinValids[1]),
		freshUserName(freshMinValids[2]))
	r.loadTable(w)
	r.ratioTable(w)
	r.cacheTable(w)
}

func (r *report) loadTable(w *strings.Builder) {
	f := r.Fresh
	fmt.Fprintf(w, "### Requests per second and latency\n\n")
	fmt.Fprintf(w, "For each connection count and endpoint, a closed-loop load generator in Go keeps that many "+
		"keep-alive connections busy for %s after %s of warm-up and records every request's latency.\n\n",
		span(r.Opts.run), span(r.Opts.warm))
	fmt.Fprintf(w, "- **bare, own process**: a net/http handler on 127.0.0.1 writing a JSON body of fresh-token's "+
		"shape with the same access token, in a process of its own (the bench binary started again): the fair "+
		"ceiling, since fresh-token also answers from another process.\n")
	fmt.Fprintf(w, "- **bare, in process**: the same handler inside the load generator's process.\n")
	fmt.Fprintf(w, "- **fresh-token, min_valid=N**: `GET /services/tokenkeeper/fresh-token?min_valid=N` on "+
		"tokenkeeper directly (as the pre-spawn hook calls it), each for its own user.\n")
	fmt.Fprintf(w, "- **hub**: `GET /hub/api/users/{name}` on the hub's API with an `admin:users` token, which "+
		"returns the user with `auth_state`: what a spawner does without tokenkeeper.\n\n")
	fmt.Fprintf(w, "The access token is %d bytes; fresh-token's answer %d bytes.\n\n", f.Sizes[0], f.BodyBytes)
	fmt.Fprintf(w, "| connections | endpoint | requests | req/s | p50 | p99 | errors |\n| ---: | --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, run := range f.Runs {
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s |\n", run.Conns, run.Target, thousands(float64(run.Requests)),
			thousands(run.RPS), ms(run.P50), ms(run.P99), errorsCell(run))
	}
	fmt.Fprintln(w)
}

func (r *report) ratioTable(w *strings.Builder) {
	fmt.Fprintf(w, "| connections | min_valid | fresh-token ÷ bare (own process), req/s (≥ 80 %%) | "+
		"fresh-token p99 ÷ bare p99, own process (≤ 1.5×) | fresh-token ÷ bare (in process), req/s |\n"+
		"| ---: | ---: | ---: | ---: | ---: |\n")
	for _, x := range r.ratios() {
		fmt.Fprintf(w, "| %d | %s | %.0f %% %s | %.2f× %s | %.0f %% |\n", x.conns, span(x.minValid),
			100*x.share, verdict(x.share >= targetBareShare), x.p99, verdict(x.p99 <= targetP99Factor),
			100*x.inProcessShare)
	}
	fmt.Fprintf(w, "\nThe load generator, both bare handlers, tokenkeeper, the hub and Keycloak share the machine's "+
		"cores. §4 compares the two handlers in process, without sockets.\n\n")
}

func (r *report) cacheTable(w *strings.Builder) {
	f := r.Fresh
	fmt.Fprintf(w, "### What the calls cost the hub\n\n")
	fmt.Fprintf(w, "Besides the load runs, a caller asks for each user's token once a second, as a notebook "+
		"in a loop would, from the users' first call until %s later (more than one token lifetime). The "+
		"bench's gate between tokenkeeper and the hub counts tokenkeeper's reads (`GET /hub/api/users/{name}`) "+
		"and writes of each user; refreshes are tokenkeeper's `refreshed` log lines for the user, by the sweep "+
		"or by fresh-token. tokenkeeper serves from its cache while the token has min_valid left, min_valid "+
		"being capped at half the token's life (%s here), so the pre-spawn hook's default of %s is served "+
		"from cache for the first half of each token's life and refreshes it then.\n\n",
		span(f.Watched.Round(time.Second)), span(realmLife/2), span(freshMinValids[len(freshMinValids)-1]))
	fmt.Fprintf(w, "| min_valid | calls answered | hub reads of the user | writes | refreshes | reads per 1,000 calls | "+
		"reads beyond learning the user (%d) and %d per refresh |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
		learnReads, readsPerRefresh)
	for _, u := range f.Users {
		extra := u.Reads - learnReads - readsPerRefresh*int64(u.Refreshes)
		fmt.Fprintf(w, "| %s | %s | %d | %d | %d | %.3f | %d %s |\n", span(u.MinValid), count(u.Calls), u.Reads,
			u.Writes, u.Refreshes, 1000*float64(u.Reads)/float64(max(u.Calls, 1)), max(extra, 0), verdict(cacheHolds(u)))
	}
	fmt.Fprintf(w, "\nThe %d reads that learn a user are the sweep's first read of a new user and the first "+
		"fresh-token call, which fills the cache entry. Each refresh reads the user twice: before the grant, "+
		"and again just before the write-back, so that a login that landed meanwhile is kept (the hub's API "+
		"has no compare-and-set). Identity lookups (`GET /hub/api/user` with the caller's token, cached 10 s "+
		"per token) were %d over the %s, for all three users together.\n\n",
		learnReads, f.Identities, span(f.Watched.Round(time.Second)))
}

func errorsCell(r loadResult) string {
	if r.Errors == 0 {
		return "0"
	}
	return fmt.Sprintf("%d (%s)", r.Errors, strings.ReplaceAll(r.FirstErr, "|", "/"))
}
