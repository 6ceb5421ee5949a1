package refresh

// The driver: steps, time passing, and the seeded random events that happen
// between sweeps. Events pick their targets with what the models know (a
// grant in flight, a session that just ended), the way an adversary would.

import (
	"context"
	"fmt"
	"math"
	"slices"
	"testing/synctest"
	"time"
)

// simStep is one step of a run: an event, then time passing.
func (w *simWorld) simStep(step int) {
	if step%1000 == 999 {
		w.mu.Lock()
		w.kc.prune()
		w.mu.Unlock()
	}
	// Goroutines woken at this instant (a delivery's retry, a handler
	// returning) run until they block before the driver acts, so that no
	// run depends on which of them the scheduler ran first.
	synctest.Wait()
	name := w.pickEvent()
	start := time.Now()
	desc := w.apply(name)
	w.steps.add(fmt.Sprintf("step %d %s %s", step, w.since(start), desc))
	if w.failed() {
		return
	}
	synctest.Wait()
	w.check()
	if w.failed() {
		return
	}
	w.advance(w.pickAdvance())
}

func (w *simWorld) failed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.violations) > 0
}

// pickEvent draws an event by the configured weights.
func (w *simWorld) pickEvent() string {
	total := 0
	for _, name := range simEvents {
		total += w.cfg.weights[name]
	}
	n := w.rng.IntN(total)
	for _, name := range simEvents {
		if n -= w.cfg.weights[name]; n < 0 {
			return name
		}
	}
	return "idle"
}

// simEvents are the events, in the order they are drawn.
var simEvents = []string{"idle", "fresh", "login", "relogin", "logout", "flakylogout", "server", "adminreq", "hubwrite", "hubread",
	"kcoutage", "wipe", "sigterm", "crash", "keyrotate", "quiet"}

func (w *simWorld) apply(name string) string {
	switch name {
	case "fresh":
		return w.freshBurst()
	case "login":
		return w.login()
	case "relogin":
		return w.relogin()
	case "logout", "flakylogout":
		return w.logout(name == "flakylogout")
	case "server":
		return w.toggleServer()
	case "adminreq":
		return w.adminRequest()
	case "hubwrite", "hubread":
		return w.hubFailure(name)
	case "kcoutage":
		return w.kcOutage()
	case "wipe":
		w.mu.Lock()
		w.kc.wipe()
		w.mu.Unlock()
		return "Keycloak loses every session"
	case "sigterm":
		return w.sigterm()
	case "crash":
		return w.crash()
	case "keyrotate":
		return w.keyRotate()
	case "quiet":
		d := w.logUniform(2*time.Minute, 30*time.Minute)
		w.advance(d)
		return "quiet for " + d.String()
	}
	return "nothing"
}

// pickAdvance is how long to let time pass after an event: little while a
// sweep or a back-channel logout is under way, so that events land inside it.
func (w *simWorld) pickAdvance() time.Duration {
	w.mu.Lock()
	busy := w.pending > 0
	w.mu.Unlock()
	switch {
	case busy || w.gen.sweeping():
		return time.Duration(1+w.rng.IntN(200)) * time.Millisecond
	case w.rng.IntN(5) > 0:
		return time.Duration(50+w.rng.IntN(2950)) * time.Millisecond
	default:
		return time.Duration(3+w.rng.IntN(17)) * time.Second
	}
}

// logUniform draws a duration between lo and hi, whole milliseconds.
func (w *simWorld) logUniform(lo, hi time.Duration) time.Duration {
	x := math.Exp(math.Log(float64(lo)) + w.rng.Float64()*(math.Log(float64(hi))-math.Log(float64(lo))))
	return time.Duration(x).Round(time.Millisecond)
}

// align moves the driver to the next whole millisecond, where no model
// instant falls.
func (w *simWorld) align() {
	now := time.Now()
	if t := now.Truncate(time.Millisecond); !t.Equal(now) {
		time.Sleep(t.Add(time.Millisecond).Sub(now))
		synctest.Wait()
	}
}

// advance lets d pass, running the sweep schedule and checking the
// invariants whenever something may have happened.
func (w *simWorld) advance(d time.Duration) {
	w.advanceUntil(d, 0, nil)
}

// advanceUntil lets up to d pass in chunks of at most chunk (0: as long as
// possible) and stops early once cond holds.
func (w *simWorld) advanceUntil(d, chunk time.Duration, cond func() bool) {
	w.align()
	end := time.Now().Add(d)
	for time.Now().Before(end) && !w.failed() {
		next := earliest(end, w.nextSweep)
		if chunk > 0 {
			next = earliest(next, time.Now().Add(chunk))
		}
		time.Sleep(time.Until(next))
		synctest.Wait() // the engine's timers that fire now run first, in any order, before the driver acts
		w.tick()
		synctest.Wait()
		w.check()
		if cond != nil && cond() {
			return
		}
	}
}

// freshBurst is several concurrent fresh-token requests for one user, some
// of them impatient.
func (w *simWorld) freshBurst() string {
	w.mu.Lock()
	name := w.pickUser(w.holdsLive)
	if name == "" || w.rng.IntN(10) < 2 {
		name = w.hub.names[w.rng.IntN(len(w.hub.names))]
	}
	w.mu.Unlock()
	n := 1 + w.rng.IntN(8)
	minValid := []time.Duration{0, 10 * time.Second, time.Minute, 2 * time.Minute, 5 * time.Minute}[w.rng.IntN(5)]
	gen := w.gen
	for range n {
		timeout := 30 * time.Second
		if w.rng.IntN(10) < 3 {
			timeout = time.Duration(5+w.rng.IntN(2000)) * time.Millisecond
		}
		w.serve(gen, func() { w.freshCall(gen, name, minValid, timeout) })
	}
	return fmt.Sprintf("fresh-token ×%d for %s (min_valid %s)", n, name, minValid)
}

// freshCall is one fresh-token request; what it returns must be the user's
// own, unexpired access token.
func (w *simWorld) freshCall(gen *simGen, name string, minValid, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	access, exp, err := gen.eng.fresh(ctx, name, minValid)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil || gen.p.dead {
		return
	}
	w.count("fresh tokens served")
	a, ok := w.kc.access[access]
	switch {
	case !ok:
		w.violate("j", "%s: fresh-token for %s returned a token Keycloak never issued", gen.p.name, name)
	case a.user != name:
		w.violate("j", "%s: fresh-token for %s returned %s's token", gen.p.name, name, a.user)
	case a.exp.Before(time.Now()): // the token's true expiry; exp is on Keycloak's clock
		w.violate("j", "%s: fresh-token for %s returned a token that expired at %s (it says %s)", gen.p.name, name, w.since(a.exp), w.since(exp))
	}
}

// login is a user without tokens in the hub (logged out, or never logged in)
// logging in.
func (w *simWorld) login() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	name := w.pickUser(func(u *simHubUser) bool { return !u.tokens.ok })
	if name == "" {
		return "login: everyone is logged in"
	}
	s := w.hub.login(w.hub.users[name])
	return fmt.Sprintf("%s logs in: session %s", name, s.id)
}

// relogin is a user whose tokens the hub holds logging in again, usually
// because their session ended (and soon after tokenkeeper was told so),
// sometimes from another device while the old session lives on.
func (w *simWorld) relogin() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	name := ""
	if w.rng.IntN(2) == 0 {
		name = w.pickUser(func(u *simHubUser) bool {
			t, ok := w.kc.lastTerminal[u.name]
			return ok && now.Sub(t) < 10*time.Second && w.holdsDead(u)
		})
		if name == "" {
			name = w.pickUser(w.holdsDead)
		}
	}
	if name == "" {
		name = w.pickUser(func(u *simHubUser) bool { return w.heldSession(u) != nil })
	}
	if name == "" {
		return "relogin: nobody is logged in"
	}
	u := w.hub.users[name]
	how := "from another device"
	if u.login != nil && w.kc.live(u.login, now) && w.rng.IntN(10) < 4 {
		w.kc.endSession(u.login, "the user logged out at Keycloak")
		how = "after logging out at Keycloak"
	}
	s := w.hub.login(u)
	return fmt.Sprintf("%s logs in again %s: session %s", name, how, s.id)
}

// logout is an admin (or the user elsewhere) ending a session at Keycloak,
// preferably one whose refresh is under way; flaky makes the hub fail reads
// or writes for that user for a while first.
func (w *simWorld) logout(flaky bool) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	name := ""
	if w.rng.IntN(2) == 0 {
		name = w.pickUser(func(u *simHubUser) bool { return w.holdsLive(u) && len(w.heldSession(u).answering) > 0 })
	}
	if name == "" && w.rng.IntN(2) == 0 {
		name = w.pickUser(func(u *simHubUser) bool { return w.holdsLive(u) && len(w.kc.inFlight[u.name]) > 0 })
	}
	if name == "" {
		name = w.pickUser(w.holdsLive)
	}
	if name == "" {
		return "logout: nobody is logged in"
	}
	u := w.hub.users[name]
	failing := ""
	if flaky {
		op := []string{"read", "write"}[w.rng.IntN(2)]
		now := time.Now()
		d := w.logUniform(500*time.Millisecond, time.Minute)
		w.hub.fail(simHubFailure{op: op, user: name, from: now, until: now.Add(d)})
		failing = fmt.Sprintf(" (hub %ss fail for %s)", op, d)
	}
	w.kc.endSession(u.login, "logged out by an admin")
	return fmt.Sprintf("admin logs out %s's session %s%s", name, u.login.id, failing)
}

func (w *simWorld) toggleServer() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	u := w.hub.users[w.hub.names[w.rng.IntN(len(w.hub.names))]]
	u.running = !u.running
	if !u.running {
		u.userStopped = time.Now() // the user's own stop: a later server is not the logout's business
	}
	if u.running {
		u.keptSince, u.lastActivity = time.Now(), time.Now()
		return u.name + "'s server starts"
	}
	return u.name + "'s server stops"
}

// adminRequest is a hub admin using the hub: OAuthenticator refreshes their
// expired access token itself.
func (w *simWorld) adminRequest() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	name := w.pickUser(func(u *simHubUser) bool { return u.admin })
	if name == "" {
		return "admin request: no admins"
	}
	u := w.hub.users[name]
	if !u.tokens.ok || u.tokens.expiry.After(time.Now().Add(w.cfg.hubSkew)) || u.refreshing { // the token's exp on the hub's clock
		return "admin " + name + " uses the hub"
	}
	version, rt := u.version, u.tokens.refresh
	u.refreshing = true
	w.bg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		tok, err := w.kc.grant(ctx, w.hubProc, rt)
		w.mu.Lock()
		defer w.mu.Unlock()
		u.refreshing = false
		switch {
		case err != nil:
			w.note("hub: OAuthenticator's refresh of %s failed: %v", name, err)
		case u.version != version:
			w.note("hub: OAuthenticator's refresh of %s dropped: auth_state changed meanwhile", name)
		default:
			w.hub.extWrite(u, simLayout(name, tok), "refresh by OAuthenticator of")
		}
	})
	return "admin " + name + " uses the hub; OAuthenticator refreshes"
}

// hubFailure makes hub reads (and sometimes the user list) or writes fail
// for one user or everyone for a while.
func (w *simWorld) hubFailure(kind string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	op := kind[len("hub"):]
	user, who := "", "everyone"
	if w.rng.IntN(10) < 7 {
		user = w.hub.names[w.rng.IntN(len(w.hub.names))]
		who = user
	}
	now := time.Now()
	until := now.Add(w.logUniform(time.Second, 3*time.Minute))
	f := simHubFailure{op: op, user: user, from: now, until: until, ambiguous: op == "write" && w.rng.IntN(4) == 0}
	w.hub.fail(f)
	if op == "read" && user == "" && w.rng.IntN(2) == 0 {
		w.hub.fail(simHubFailure{op: "list", from: now, until: until})
		who += " (and the user list)"
	}
	return fmt.Sprintf("hub %ss fail for %s until %s%s", op, who, w.since(until),
		map[bool]string{true: " (writes take effect anyway)"}[f.ambiguous])
}

func (w *simWorld) kcOutage() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	kinds := []string{"network", "network", "503", "503", "blackhole", "invalid_client", "lost", "lost"}
	kind := kinds[w.rng.IntN(len(kinds))]
	now := time.Now()
	until := now.Add(w.logUniform(2*time.Second, 10*time.Minute))
	w.kc.outages = append(slices.DeleteFunc(w.kc.outages, func(o simOutage) bool { return o.until.Before(now) }),
		simOutage{kind: kind, from: now, until: until})
	w.impair(until.Add(simBackoffCap))
	return fmt.Sprintf("Keycloak outage (%s) until %s", kind, w.since(until))
}

// pickUser returns a random user for whom ok holds, or "". The caller holds w.mu.
func (w *simWorld) pickUser(ok func(u *simHubUser) bool) string {
	var names []string
	for _, name := range w.hub.names {
		if ok(w.hub.users[name]) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return ""
	}
	return names[w.rng.IntN(len(names))]
}

// holdsLive reports whether the hub holds tokens of a live session for u.
// The caller holds w.mu.
func (w *simWorld) holdsLive(u *simHubUser) bool {
	s := w.heldSession(u)
	return s != nil && w.kc.live(s, time.Now())
}

// holdsDead reports whether the hub holds tokens of an ended session for u.
func (w *simWorld) holdsDead(u *simHubUser) bool {
	s := w.heldSession(u)
	return s != nil && !w.kc.live(s, time.Now())
}

// heldSession is the session whose tokens the hub holds for u, or nil.
func (w *simWorld) heldSession(u *simHubUser) *simSession {
	if !u.tokens.ok {
		return nil
	}
	return w.kc.sessions[u.tokens.sid]
}

// hubRefresh is the refresh token the hub holds for u, or "".
func (w *simWorld) hubRefresh(u *simHubUser) string { return u.tokens.refresh }

// kept reports whether tokenkeeper must keep u fresh.
func (w *simWorld) kept(u *simHubUser) bool { return w.cfg.keep == "all" || u.running }

// backchannelLogout sends s's logout token to tokenkeeper as Keycloak does.
// The caller holds w.mu.
func (w *simWorld) backchannelLogout(s *simSession) {
	s.notified = true
	w.kc.serial++
	now := time.Now()
	exp := now.Add(2 * time.Minute)
	kc := w.cfg.realm.skew // Keycloak stamps the token with its clock
	raw := w.sign.token(w.t, map[string]any{
		"iss": testIssuer, "aud": "jupyterhub", "iat": now.Add(kc).Unix(), "exp": exp.Add(kc).Unix(),
		"jti": fmt.Sprintf("jti-%d", w.kc.serial), "sid": s.id, "sub": simSub(s.user),
		"events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}},
	})
	delay := w.latency("bc", s.user, nil)
	dup := w.chance("bc-dup/"+s.id, 0.1)
	w.pending++
	w.note("kc back-channel logout of %s (%s) on its way", s.id, s.user)
	w.bg.Go(func() { w.deliver(raw, s.id, s.user, exp, delay, dup) })
}

// deliver posts a logout token until tokenkeeper answers 2xx or 400,
// retrying other answers for about a minute, and checks that an accepted
// logout took effect.
func (w *simWorld) deliver(raw, sid, user string, exp time.Time, delay time.Duration, dup bool) {
	defer func() {
		w.mu.Lock()
		w.pending--
		w.mu.Unlock()
	}()
	time.Sleep(delay)
	backoff := time.Second
	for range 7 {
		status, gen := w.post(raw)
		if status == 200 || status == 400 {
			w.checkBackchannel(gen, sid, user, status, exp)
			if dup {
				time.Sleep(backoff)
				w.post(raw)
			}
			return
		}
		time.Sleep(backoff)
		backoff *= 2
	}
	w.mu.Lock()
	w.note("kc gave up the back-channel logout of %s (%s)", sid, user)
	w.mu.Unlock()
}

// post is one delivery; 0 means no answer (the process was not there).
func (w *simWorld) post(raw string) (int, *simGen) {
	w.mu.Lock()
	gen := w.gen
	w.mu.Unlock()
	var status int
	done := make(chan struct{})
	if !w.serve(gen, func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		status = gen.eng.backchannel(ctx, raw, w.sign.verify)
	}) {
		return 0, gen
	}
	<-done
	w.mu.Lock()
	defer w.mu.Unlock()
	w.note("kc back-channel logout answered %d by %s", status, gen.p.name)
	if gen.p.dead {
		return 0, gen
	}
	return status, gen
}
