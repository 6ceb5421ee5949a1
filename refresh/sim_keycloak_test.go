package refresh

// The model Keycloak: SSO sessions with idle and maximum lifetimes, the
// refresh grant with refresh-token rotation on (revokeRefreshToken, maximum
// reuse 0), admin logout with back-channel logout tokens, realm-wide session
// loss and outages. Error bodies are Keycloak's, word for word (see
// /work/shared/reference/keycloak.md §1).

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"syscall"
	"time"

	"golang.org/x/oauth2"
)

// simRealm is the realm's session and token settings.
type simRealm struct {
	access, idle, max time.Duration
	// backchannel is the share of logouts that send a back-channel logout
	// token; backchannelOnInvalid the share of refreshes that find an expired
	// session and send one before answering.
	backchannel, backchannelOnInvalid float64
	// maxReuse is Refresh Token Max Reuse: the client session's current
	// refresh token may be spent 1 + maxReuse times.
	maxReuse int
	// skew is how far Keycloak's clock is ahead of the world's: the times
	// in its tokens (iat, exp) are on its clock.
	skew time.Duration
}

// simSession is one SSO session with the hub's client session in it.
type simSession struct {
	id, user           string
	start, lastRefresh time.Time
	ended              time.Time // set when logged out or lost; zero otherwise
	endReason          string
	detached           time.Time // the client session was detached by reuse detection
	current            *simToken // the newest refresh token
	lastSpent          *simToken // the refresh token spent last
	notified           bool      // a back-channel logout token was sent
	// writtenOff says why the newest refresh token may be lost through no
	// fault of tokenkeeper's (a crash mid-grant, a removed key, a re-login
	// inside the hub's read→write window); empty otherwise.
	writtenOff string
	// lost is the newest refresh token when a proxy lost the answer that
	// carried it.
	lost string
	// answering are the callers of grants whose answers, carrying a new
	// token, are on their way.
	answering []*simProc
}

// simToken is a refresh token Keycloak issued.
type simToken struct {
	raw, label string
	s          *simSession
	iat, exp   time.Time
	spent      bool
	uses       int // grants that spent it
	spentBy    string
	spentAt    time.Time
}

// simAccess is an access token Keycloak issued.
type simAccess struct {
	user, sid string
	exp       time.Time
}

// simOutage is a time Keycloak answers badly: "network" (connection
// refused), "503", "blackhole" (no answer), "invalid_client" (the client
// secret was changed) or "lost" (Keycloak processes grants, but a proxy
// loses their answers and sends a 502 page instead).
type simOutage struct {
	kind        string
	from, until time.Time
}

type simKeycloak struct {
	w        *simWorld
	realm    simRealm
	sessions map[string]*simSession
	order    []*simSession // sessions that may still be live, in creation order
	refresh  map[string]*simToken
	access   map[string]simAccess
	// inFlight are the callers of the grants in flight, by hub user.
	inFlight     map[string][]*simProc
	lastTerminal map[string]time.Time // when tokenkeeper last got invalid_grant, by user
	outages      []simOutage
	serial       int
	endedUser    map[string]time.Time // when tokenkeeper last ended all of a Keycloak user's sessions, by sub
}

func newSimKeycloak(w *simWorld, realm simRealm) *simKeycloak {
	return &simKeycloak{
		w: w, realm: realm, sessions: map[string]*simSession{}, refresh: map[string]*simToken{},
		access: map[string]simAccess{}, inFlight: map[string][]*simProc{}, lastTerminal: map[string]time.Time{},
		endedUser: map[string]time.Time{},
	}
}

// walk calls f for every session that may still be live, forgetting those
// that ended long ago.
func (k *simKeycloak) walk(f func(s *simSession)) {
	now := time.Now()
	k.order = slices.DeleteFunc(k.order, func(s *simSession) bool { return k.end(s).Before(now.Add(-time.Hour)) })
	for _, s := range k.order {
		f(s)
	}
}

// prune forgets tokens that expired over an hour ago: presented again they
// would be refused as not active anyway.
func (k *simKeycloak) prune() {
	old := time.Now().Add(-time.Hour)
	for raw, t := range k.refresh {
		if t.exp.Before(old) && t.s.current != t {
			delete(k.refresh, raw)
		}
	}
	for raw, a := range k.access {
		if a.exp.Before(old) {
			delete(k.access, raw)
		}
	}
}

// end is when s stopped or will stop being valid.
func (k *simKeycloak) end(s *simSession) time.Time {
	e := s.lastRefresh.Add(k.realm.idle)
	if m := s.start.Add(k.realm.max); m.Before(e) {
		e = m
	}
	for _, t := range []time.Time{s.ended, s.detached} {
		if !t.IsZero() && t.Before(e) {
			e = t
		}
	}
	return e
}

func (k *simKeycloak) live(s *simSession, now time.Time) bool { return now.Before(k.end(s)) }

// sub is the Keycloak user id of a hub user.
func simSub(user string) string { return "kc-" + user }

// login starts a new SSO session for user and returns its first tokens.
func (k *simKeycloak) login(user string) (*simSession, *oauth2.Token) {
	k.serial++
	now := time.Now()
	s := &simSession{id: fmt.Sprintf("sess%d", k.serial), user: user, start: now, lastRefresh: now}
	k.sessions[s.id] = s
	k.order = append(k.order, s)
	return s, k.mint(s, now)
}

// mint issues a token set for s as the token endpoint answers it.
func (k *simKeycloak) mint(s *simSession, now time.Time) *oauth2.Token {
	k.serial++
	n := k.serial
	cap := s.start.Add(k.realm.max)
	aexp, rexp := now.Add(k.realm.access), now.Add(k.realm.idle)
	aexp, rexp = earliest(aexp, cap), earliest(rexp, cap)
	stamp := func(t time.Time) int64 { return t.Add(k.realm.skew).Unix() }
	common := map[string]any{"iat": stamp(now), "iss": testIssuer, "sub": simSub(s.user), "azp": "jupyterhub",
		"sid": s.id, "session_state": s.id, "scope": "openid profile email"}
	claims := func(typ string, exp time.Time, extra map[string]any) map[string]any {
		c := map[string]any{"typ": typ, "exp": stamp(exp), "jti": fmt.Sprintf("%s-%d", typ, n)}
		for _, m := range []map[string]any{common, extra} {
			for key, v := range m {
				c[key] = v
			}
		}
		return c
	}
	at := testJWT(claims("Bearer", aexp, map[string]any{"aud": "account", "preferred_username": s.user}))
	rt := testJWT(claims("Refresh", rexp, map[string]any{"aud": testIssuer}))
	id := testJWT(claims("ID", aexp, map[string]any{"aud": "jupyterhub", "preferred_username": s.user}))
	t := &simToken{raw: rt, label: fmt.Sprintf("rt%d", n), s: s, iat: now, exp: rexp}
	k.refresh[rt], s.current = t, t
	k.access[at] = simAccess{user: s.user, sid: s.id, exp: aexp}
	expiresIn, refreshIn := int64(aexp.Sub(now)/time.Second), int64(rexp.Sub(now)/time.Second)
	tok := &oauth2.Token{AccessToken: at, TokenType: "Bearer", RefreshToken: rt, Expiry: now.Add(time.Duration(expiresIn) * time.Second), ExpiresIn: expiresIn}
	return tok.WithExtra(map[string]any{
		"access_token": at, "expires_in": float64(expiresIn), "refresh_expires_in": float64(refreshIn),
		"refresh_token": rt, "token_type": "Bearer", "id_token": id, "not-before-policy": 0.0,
		"session_state": s.id, "scope": "openid profile email",
	})
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// grant is the refresh grant as p calls it: the request takes half the
// latency to arrive, is processed there, and the answer takes the other half
// to come back. A cancelled caller abandons the request; an answer that finds
// its caller gone is lost.
func (k *simKeycloak) grant(ctx context.Context, p *simProc, raw string) (*oauth2.Token, error) {
	w := k.w
	w.mu.Lock()
	if p.dead {
		w.mu.Unlock()
		return nil, errProcessGone
	}
	user := k.owner(raw)
	k.grantStart(p, user, raw)
	lat := w.latency("kc", user, p)
	w.mu.Unlock()
	defer k.grantEnd(p, user)
	if err := sleepCtx(ctx, lat/2); err != nil {
		return nil, simNetError(err)
	}
	w.mu.Lock()
	tok, outage, gerr := k.arrive(p, raw)
	if tok != nil && k.outage(time.Now()) == "lost" {
		k.lose(p, tok)
		w.mu.Unlock()
		return nil, sim502()
	}
	w.mu.Unlock()
	switch outage {
	case "network":
		return nil, simNetError(&net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})
	case "blackhole":
		<-ctx.Done()
		return nil, simNetError(ctx.Err())
	}
	serr := sleepCtx(ctx, lat-lat/2)
	w.mu.Lock()
	defer w.mu.Unlock()
	return k.answer(p, tok, gerr, serr)
}

// owner is the hub user a refresh token belongs to, or "".
func (k *simKeycloak) owner(raw string) string {
	if t := k.refresh[raw]; t != nil {
		return t.s.user
	}
	return ""
}

// grantStart checks that nobody else refreshes the user at the same time
// and that tokenkeeper leaves hub admins alone.
func (k *simKeycloak) grantStart(p *simProc, user, raw string) {
	w := k.w
	w.count("grants")
	if user == "" {
		return
	}
	label := k.refresh[raw].label
	w.note("kc grant %s %s by %s", user, label, p.name)
	for _, other := range k.inFlight[user] {
		if !other.crashed {
			w.violate("c", "%s: %s started a grant (%s) while %s's grant for the same user was in flight",
				user, p.name, label, other.name)
			break
		}
	}
	k.inFlight[user] = append(k.inFlight[user], p)
	if u := w.hub.users[user]; p.tk && u != nil && u.admin {
		w.violate("g", "%s is a hub admin, yet %s spent their refresh token %s", user, p.name, label)
	}
}

func (k *simKeycloak) grantEnd(p *simProc, user string) {
	k.w.mu.Lock()
	defer k.w.mu.Unlock()
	callers := k.inFlight[user]
	for i, c := range callers {
		if c == p {
			k.inFlight[user] = append(callers[:i:i], callers[i+1:]...)
			break
		}
	}
}

// arrive processes a grant request the way Keycloak's token endpoint does.
func (k *simKeycloak) arrive(p *simProc, raw string) (*oauth2.Token, string, error) {
	now := time.Now()
	switch o := k.outage(now); o {
	case "network", "blackhole":
		return nil, o, nil
	case "503":
		return nil, "", sim503()
	case "invalid_client":
		return nil, "", simGrantError(http.StatusUnauthorized, "invalid_client", "Invalid client or Invalid client credentials")
	}
	t := k.refresh[raw]
	if t == nil { // every token presented was issued here; prune forgot it long after it expired
		return nil, "", k.terminal(p, "", "Token is not active")
	}
	s := t.s
	switch {
	case !now.Before(t.exp):
		return nil, "", k.terminal(p, s.user, "Token is not active")
	case !s.detached.IsZero():
		return nil, "", k.terminal(p, s.user, "Session doesn't have required client")
	case !k.live(s, now):
		k.expired(s)
		return nil, "", k.terminal(p, s.user, "Session not active")
	case t.spent && !k.reusable(t):
		return nil, "", k.reuse(p, t, now)
	}
	t.uses++
	t.spent, t.spentBy, t.spentAt = true, p.name, now
	s.lastSpent, s.lastRefresh = t, now
	tok := k.mint(s, now)
	s.answering = append(s.answering, p)
	if p.crashed {
		s.writtenOff = p.name + " crashed while its grant was in flight"
	}
	k.w.note("kc refreshed %s: %s → %s for %s", s.user, t.label, s.current.label, p.name)
	k.w.count("refreshes")
	return tok, "", nil
}

// reusable reports whether Keycloak accepts the spent token t once more:
// it is the client session's current refresh token and its uses are within
// Max Reuse.
func (k *simKeycloak) reusable(t *simToken) bool {
	return t == t.s.lastSpent && t.uses <= k.realm.maxReuse
}

// lose drops the answer to a processed grant, as a proxy's 502 does. Once
// the spent token's uses exceed Max Reuse (with Max Reuse 0, at once) the
// new token is gone for good and the session is written off
// (tokenkeeper learns that from introspection), as it is when the hub's
// own grant lost its answer; with Max Reuse 1 or more tokenkeeper must
// spend the old token again and keep the session.
func (k *simKeycloak) lose(p *simProc, tok *oauth2.Token) {
	s := k.refresh[tok.RefreshToken].s
	s.answering = slices.DeleteFunc(s.answering, func(c *simProc) bool { return c == p })
	k.w.note("kc answer with %s to %s lost by a proxy (502)", s.current.label, p.name)
	k.w.count("answers lost by a proxy")
	k.unanswered(p, s)
}

// unanswered handles a processed grant whose answer never reached p: while
// the realm's reuse lets tokenkeeper spend the old token again it must
// recover the session (its intent tells it the outcome is unknown);
// otherwise, and for the hub, the session is written off.
func (k *simKeycloak) unanswered(p *simProc, s *simSession) {
	s.lost = s.current.raw
	switch {
	case s.writtenOff != "":
	case !p.tk: // the hub's OAuthenticator does not spend the token again
		s.writtenOff = "the answer to " + p.name + "'s grant was lost"
		k.w.count("written off: answer to the hub lost")
	case !k.reusable(s.lastSpent):
		s.writtenOff = "the answer to " + p.name + "'s grant was lost and the realm allows no more reuse"
		k.w.count("written off: answer lost, no reuse left")
	}
}

// introspect answers token introspection for a refresh token the way
// Keycloak does: active while a grant with it would succeed. It changes
// nothing.
func (k *simKeycloak) introspect(ctx context.Context, p *simProc, raw string) (bool, error) {
	w := k.w
	w.mu.Lock()
	if p.dead {
		w.mu.Unlock()
		return false, errProcessGone
	}
	lat := w.latency("kc", k.owner(raw), p)
	w.mu.Unlock()
	if err := sleepCtx(ctx, lat); err != nil {
		return false, simNetError(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if p.dead {
		return false, errProcessGone
	}
	now := time.Now()
	switch o := k.outage(now); o {
	case "network", "blackhole", "503":
		return false, fmt.Errorf("introspection: Keycloak unreachable (%s)", o)
	case "invalid_client":
		return false, fmt.Errorf("introspection: HTTP 401 invalid_client")
	}
	t := k.refresh[raw]
	active := t != nil && now.Before(t.exp) && t.s.detached.IsZero() && k.live(t.s, now) && (!t.spent || k.reusable(t))
	label := "an unknown token"
	if t != nil {
		label = t.label
	}
	w.note("kc introspection of %s for %s: active=%v", label, p.name, active)
	return active, nil
}

// terminal is an invalid_grant answer.
func (k *simKeycloak) terminal(p *simProc, user, desc string) error {
	if p.tk && user != "" {
		k.lastTerminal[user] = time.Now()
	}
	k.w.note("kc invalid_grant %q for %s (%s)", desc, user, p.name)
	return simGrantError(http.StatusBadRequest, "invalid_grant", desc)
}

// reuse answers a spent refresh token: Keycloak detaches the client
// session, which ends the session for the hub's client.
func (k *simKeycloak) reuse(p *simProc, t *simToken, now time.Time) error {
	s := t.s
	desc := "Stale token"
	if t == s.lastSpent {
		desc = "Maximum allowed refresh token reuse exceeded"
	}
	s.detached = now
	if p.crashed {
		s.writtenOff = p.name + " crashed while its grant was in flight"
	}
	if s.writtenOff == "" {
		k.w.violate("f", "session %s of %s ended by refresh-token reuse: %s presented %s, spent by %s at %s; the newest is %s",
			s.id, s.user, p.name, t.label, t.spentBy, k.w.since(t.spentAt), s.current.label)
	}
	return k.terminal(p, s.user, desc)
}

// expired is a refresh finding an expired session: Keycloak may send a
// back-channel logout before it answers.
func (k *simKeycloak) expired(s *simSession) {
	if s.ended.IsZero() && !s.notified && k.w.chance("bc-invalid/"+s.id, k.realm.backchannelOnInvalid) {
		k.w.backchannelLogout(s)
	}
}

// answer hands the result of a processed grant to its caller.
func (k *simKeycloak) answer(p *simProc, tok *oauth2.Token, gerr, serr error) (*oauth2.Token, error) {
	if tok == nil {
		if serr != nil {
			return nil, simNetError(serr)
		}
		return nil, gerr
	}
	s := k.refresh[tok.RefreshToken].s
	s.answering = slices.DeleteFunc(s.answering, func(c *simProc) bool { return c == p })
	switch {
	case serr != nil:
		k.w.note("kc answer with %s lost: %s cancelled the grant", s.current.label, p.name)
		k.w.count("answers lost to cancellation")
		k.unanswered(p, s)
		return nil, simNetError(serr)
	case p.dead:
		k.w.note("kc answer with %s lost: %s has exited", s.current.label, p.name)
		k.w.count("answers lost to exited processes")
		return nil, errProcessGone
	}
	return tok, nil
}

// crashed handles the sessions whose newest token is on its way to p,
// which has just crashed: recoverable while the realm's reuse lets the
// spent token be spent again, written off otherwise.
func (k *simKeycloak) crashed(p *simProc) {
	k.walk(func(s *simSession) {
		switch {
		case !slices.Contains(s.answering, p):
		case k.reusable(s.lastSpent):
			// The intent tokenkeeper wrote before the grant makes it
			// spend the token again after the restart.
			s.lost = s.current.raw
			k.w.count("answers lost to a crash, reuse left")
		default:
			s.writtenOff = p.name + " crashed while its grant was in flight"
			k.w.count("written off: crash during a grant")
		}
	})
}

// endSession ends s (logout by the user or an admin) and may send a
// back-channel logout token.
func (k *simKeycloak) endSession(s *simSession, reason string) {
	now := time.Now()
	if !k.live(s, now) {
		return
	}
	s.ended, s.endReason = now, reason
	k.w.note("kc session %s of %s ended: %s", s.id, s.user, reason)
	if k.w.chance("bc/"+s.id, k.realm.backchannel) {
		k.w.backchannelLogout(s)
	}
}

// wipe loses every session, as a Keycloak restart without persistent
// sessions does; nobody is told.
func (k *simKeycloak) wipe() {
	now := time.Now()
	k.walk(func(s *simSession) {
		if k.live(s, now) {
			s.ended, s.endReason, s.notified = now, "lost by Keycloak", true
		}
	})
	k.w.note("kc lost every session")
}

// endUser ends all the sessions of a Keycloak user through the admin API
// (tokenkeeper's end_keycloak_sessions).
func (k *simKeycloak) endUser(ctx context.Context, p *simProc, sub string) error {
	w := k.w
	w.mu.Lock()
	if p.dead {
		w.mu.Unlock()
		return errProcessGone
	}
	lat := w.latency("kc-admin", sub, p)
	w.mu.Unlock()
	if err := sleepCtx(ctx, lat); err != nil {
		return simNetError(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if p.dead {
		return errProcessGone
	}
	k.endedUser[sub] = time.Now()
	k.walk(func(s *simSession) {
		if simSub(s.user) == sub {
			k.endSession(s, "ended by "+p.name+" (end_keycloak_sessions)")
		}
	})
	return nil
}

func (k *simKeycloak) outage(now time.Time) string {
	for _, o := range k.outages {
		if !now.Before(o.from) && now.Before(o.until) {
			return o.kind
		}
	}
	return ""
}

// simGrantError is Keycloak's JSON error answer as Keycloak.Refresh returns it.
func simGrantError(status int, code, desc string) error {
	return fmt.Errorf("refresh grant: %w", &oauth2.RetrieveError{
		Response: &http.Response{StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
			Header: http.Header{"Content-Type": {"application/json"}}},
		Body:      []byte(fmt.Sprintf(`{"error":%q,"error_description":%q}`, code, desc)),
		ErrorCode: code, ErrorDescription: desc,
	})
}

// sim503 is a proxy's answer while Keycloak is down.
func sim503() error {
	return fmt.Errorf("refresh grant: %w", &oauth2.RetrieveError{
		Response: &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable",
			Header: http.Header{"Content-Type": {"text/html"}}},
		Body: []byte("<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n"),
	})
}

// sim502 is a proxy's answer whose grant Keycloak may have processed.
func sim502() error {
	return fmt.Errorf("refresh grant: %w", &oauth2.RetrieveError{
		Response: &http.Response{StatusCode: http.StatusBadGateway, Status: "502 Bad Gateway",
			Header: http.Header{"Content-Type": {"text/html"}}},
		Body: []byte("<html><body><h1>502 Bad Gateway</h1>\nThe server returned an invalid or incomplete response.\n</body></html>\n"),
	})
}

// simNetError is a transport failure as Keycloak.Refresh returns it.
func simNetError(err error) error {
	return fmt.Errorf("refresh grant: %w", &url.Error{Op: "Post", URL: testIssuer + "/protocol/openid-connect/token", Err: err})
}
