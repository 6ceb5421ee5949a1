package refresh

// The invariants checked on the world's state whenever the driver has let
// time pass. The others are checked where they can break: (a) and (d) in
// the hub's write, (c), (f) and (g) in Keycloak's grant, (h) when a
// back-channel logout is answered, (j) when fresh-token answers.
//
//	(a) nobody whose Keycloak session is live is logged out by tokenkeeper;
//	(b) every live session's newest refresh token is held by the hub or the journal;
//	(c) at most one grant per user is in flight;
//	(d) tokenkeeper never writes tokens over an auth_state it cleared;
//	(e) an ended session is logged out within a sweep interval and an
//	    access-token lifetime (kept users);
//	(f) no session ends by refresh-token reuse (someone spent a stale copy);
//	(g) tokenkeeper never spends a hub admin's refresh token;
//	(h) an accepted back-channel logout has logged the session's user out;
//	(i) a kept user with a live session has an unexpired access token in the
//	    hub, give or take a sweep interval;
//	(j) fresh-token answers with the user's own unexpired access token;
//	(k) every logout tokenkeeper starts (clearing auth_state) finishes: the
//	    session's browser token revoked, the server stopped, the user's
//	    Keycloak sessions ended (as configured) and the audit row written,
//	    within a sweep interval, unless the user logged in again first.
//
// Time during which the world held tokenkeeper up (Keycloak or the hub
// failing), plus the longest backoff after it, extends the deadlines of (e)
// and (i); time while the mass-failure guard holds logouts back extends
// (e)'s. No other red health excuses anything.

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
)

// check checks (b), (e) and (i) for every user. The journal is read only
// when some live session's newest refresh token is not in the hub.
func (w *simWorld) check() {
	gen := w.gen
	guard := gen.eng.guardHolds()
	w.mu.Lock()
	keys, need, owedDue := w.keys, w.needJournal(), w.owedDue()
	w.mu.Unlock()
	var audit map[string]time.Time
	if owedDue {
		var err error
		if audit, err = gen.eng.loggedOut(context.Background()); err != nil {
			w.t.Fatalf("read the audit table: %v", err)
		}
	}
	journal := map[string]string{}
	if need {
		var err error
		if journal, err = gen.eng.journal(context.Background(), keys); err != nil {
			w.t.Fatalf("read the journal: %v", err)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	if guard {
		w.guardUntil = now.Add(simBackoffCap) // held users are probed by their own backoff once it is released
	}
	w.checkFences(now)
	if owedDue {
		w.checkOwed(audit, now)
	}
	for _, name := range w.hub.names {
		u := w.hub.users[name]
		w.checkHeld(u, journal, now)
		switch {
		case u.admin:
		case w.kept(u):
			w.checkFresh(u, now)
			w.checkLoggedOut(u, now, 0)
		default: // idle: introspection checks the session every idleCheck
			w.checkLoggedOut(u, now, idleCheck)
		}
	}
}

// needJournal reports whether (b) needs the journal. The caller holds w.mu.
func (w *simWorld) needJournal() bool {
	now := time.Now()
	for _, name := range w.hub.names {
		u := w.hub.users[name]
		if s := u.login; s != nil && w.kc.live(s, now) && w.hubRefresh(u) != s.current.raw {
			return true
		}
	}
	return false
}

// checkHeld is (b) for the session of u's latest login.
func (w *simWorld) checkHeld(u *simHubUser, journal map[string]string, now time.Time) {
	s := u.login
	if s == nil || s.writtenOff != "" || len(s.answering) > 0 || !w.kc.live(s, now) {
		return
	}
	if w.hubRefresh(u) == s.current.raw || journal[u.name] == s.current.raw {
		return
	}
	if s.current.raw == s.lost && w.hubRefresh(u) == s.lastSpent.raw && w.kc.reusable(s.lastSpent) {
		return // the newest token's answer was lost; the realm's reuse still lets the one in the hub recover it
	}
	inJournal := "nothing"
	if t := w.kc.refresh[journal[u.name]]; t != nil {
		inJournal = t.label
	}
	w.violate("b", "%s: session %s is live but its newest refresh token %s is neither in the hub (%s) nor in the journal (%s)",
		u.name, s.id, s.current.label, w.hub.describe(u.state), inJournal)
}

// heldUp is until when the world held tokenkeeper up about u: a failing
// hub costs up to a recheck or a backoff after it recovers.
func (w *simWorld) heldUp(u *simHubUser) time.Time {
	return latest(w.impairedUntil, w.hub.impaired(u.name).Add(simBackoffCap))
}

// checkFresh is (i).
func (w *simWorld) checkFresh(u *simHubUser, now time.Time) {
	st := u.tokens
	s := w.kc.sessions[st.sid]
	if !st.ok || s == nil || s.writtenOff != "" || !w.kc.live(s, now) {
		return
	}
	expiry := st.expiry.Add(-w.cfg.realm.skew) // its exp is on Keycloak's clock
	from := latest(expiry, u.keptSince, w.heldUp(u), s.start.Add(w.cfg.recheck()))
	if deadline := from.Add(w.cfg.interval + 20*time.Second); now.After(deadline) {
		w.violate("i", "%s: session %s is live and the user is kept, but the hub's access token expired at %s and was not refreshed by %s",
			u.name, s.id, w.since(expiry), w.since(deadline))
	}
}

// checkLoggedOut is (e), for kept users and, with slack for the checks of
// idle sessions, for idle ones.
func (w *simWorld) checkLoggedOut(u *simHubUser, now time.Time, slack time.Duration) {
	s := w.heldSession(u)
	if s == nil || w.kc.live(s, now) {
		return
	}
	end := w.kc.end(s)
	from := latest(end, u.keptSince, w.heldUp(u), w.guardUntil, s.start.Add(w.cfg.recheck()))
	if deadline := from.Add(slack + w.cfg.interval + w.cfg.realm.access + 20*time.Second); now.After(deadline) {
		w.violate("e", "%s: session %s ended at %s (%s), yet the hub still holds its tokens after %s",
			u.name, s.id, w.since(end), w.endReason(s), w.since(deadline))
	}
}

func (w *simWorld) endReason(s *simSession) string {
	switch end := w.kc.end(s); {
	case end.Equal(s.detached):
		return "refresh-token reuse"
	case end.Equal(s.ended):
		return s.endReason
	case end.Equal(s.start.Add(w.kc.realm.max)):
		return "SSO session max"
	default:
		return "SSO session idle"
	}
}

// simFence is a back-channel logout tokenkeeper accepted: by deadline the
// hub must no longer hold the session's tokens.
type simFence struct {
	sid, by  string
	status   int
	deadline time.Time
}

// checkBackchannel is (h): after tokenkeeper accepted (2xx) or refused as
// replayed (400) the logout of session sid, the hub must not hold its tokens
// once the grant in flight (if any) or the next sweep has carried it out,
// provided tokenkeeper knew the session or its user and the token had not
// expired. Checked by checkFences.
func (w *simWorld) checkBackchannel(gen *simGen, sid, user string, status int, exp time.Time) {
	if !time.Now().Before(exp) {
		return
	}
	known := gen.eng.knowsSession(context.Background(), sid, simSub(user))
	w.mu.Lock()
	defer w.mu.Unlock()
	u := w.hub.users[user]
	if s := w.heldSession(u); !known || s == nil || s.id != sid {
		return
	}
	w.fences[user] = simFence{sid: sid, by: gen.p.name, status: status, deadline: w.fenceDeadline(u, time.Now())}
}

// fenceDeadline is when an accepted back-channel logout must have taken
// effect, given when it was accepted and the hub's failures since. The
// caller holds w.mu.
func (w *simWorld) fenceDeadline(u *simHubUser, accepted time.Time) time.Time {
	return latest(accepted, w.heldUp(u)).Add(30*time.Second + w.cfg.interval + 20*time.Second)
}

// checkFences is (h) for the logouts accepted. The caller holds w.mu.
func (w *simWorld) checkFences(now time.Time) {
	for user, f := range w.fences {
		u := w.hub.users[user]
		s := w.heldSession(u)
		f.deadline = latest(f.deadline, w.fenceDeadline(u, time.Time{}))
		w.fences[user] = f
		switch {
		case s == nil || s.id != f.sid:
			delete(w.fences, user)
		case now.After(f.deadline):
			w.violate("h", "%s: %s answered %d to the back-channel logout of session %s, yet the hub still holds the session's tokens at %s",
				user, f.by, f.status, f.sid, w.since(f.deadline))
			delete(w.fences, user)
		}
	}
}

// simLogout is a logout tokenkeeper started by clearing a user's auth_state.
type simLogout struct {
	at      time.Time
	sid, by string
	running bool        // the user's server ran when it was cleared
	login   *simSession // the user's latest login then
}

// owedDeadline is when a logout's actions and audit row must be done.
func (w *simWorld) owedDeadline(l simLogout, u *simHubUser) time.Time {
	return latest(l.at, w.heldUp(u)).Add(w.cfg.interval + 30*time.Second + 20*time.Second)
}

// owedDue reports whether some logout's deadline has passed, so that (k)
// needs the audit table. The caller holds w.mu.
func (w *simWorld) owedDue() bool {
	now := time.Now()
	for name, l := range w.owed {
		if u := w.hub.users[name]; u.login == l.login && now.After(w.owedDeadline(l, u)) {
			return true
		}
	}
	return false
}

// checkOwed is (k), given the audit table's latest logout of each user.
// The caller holds w.mu.
func (w *simWorld) checkOwed(audit map[string]time.Time, now time.Time) {
	for name, l := range w.owed {
		u := w.hub.users[name]
		switch {
		case u.login != l.login:
			delete(w.owed, name) // logged in again: the new session is not the logout's business
			continue
		case !now.After(w.owedDeadline(l, u)):
			continue
		}
		delete(w.owed, name)
		var missing []string
		if w.cfg.revoke && slices.ContainsFunc(u.browser, func(t hubclient.Token) bool {
			return t.SessionID != nil && *t.SessionID == "browser-"+l.sid
		}) {
			missing = append(missing, "the session's browser token revoked")
		}
		if w.cfg.stopServers && l.running && u.running && u.tkStopped.Before(l.at) && u.userStopped.Before(l.at) {
			missing = append(missing, "the server stopped")
		}
		if w.cfg.endSessions && w.kc.endedUser[simSub(name)].Before(l.at) {
			missing = append(missing, "the Keycloak sessions ended")
		}
		if audit[name].Add(-w.cfg.tkSkew).Before(l.at.Add(-time.Second)) { // the row's time is on tokenkeeper's clock
			missing = append(missing, "the audit row")
		}
		if len(missing) > 0 {
			w.violate("k", "%s: %s cleared the auth_state of session %s at %s, and by %s still missing: %s",
				name, l.by, l.sid, w.since(l.at), w.since(w.owedDeadline(l, u)), strings.Join(missing, ", "))
		}
	}
}
