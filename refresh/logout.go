package refresh

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// SessionHub is the part of the JupyterHub API that logging out uses.
type SessionHub interface {
	Tokens(ctx context.Context, user string) ([]hubclient.Token, error)
	DeleteToken(ctx context.Context, user, id string) error
	StopServer(ctx context.Context, user, server string) error
}

// LogoutActions choose what logging a user out does besides clearing their
// auth_state (which makes the hub's refresh_user_hook send the browser to
// the login page).
type LogoutActions struct {
	// RevokeTokens deletes the user's hub tokens that belong to browser
	// sessions (those with a session id). Server and API tokens stay.
	RevokeTokens bool
	// StopServers stops the user's running servers.
	StopServers bool
	// EndSessions, when set, ends all the user's Keycloak sessions, given
	// their Keycloak user id (the sub claim).
	EndSessions func(ctx context.Context, sub string) error
	// EndSession, when set, ends the one Keycloak session a refresh token
	// belongs to, as the hub's client; LogoutEverywhere uses it.
	EndSession func(ctx context.Context, refresh config.Secret) error
}

// Logout logs a user out of JupyterHub at an admin's request: under the
// user's lock it clears their auth_state if it holds tokens, takes the
// configured actions, and records the logout in the audit table.
func (r *Refresher) Logout(ctx context.Context, name, reason string) error {
	_, err := r.logoutIf(ctx, name, reason, func(AuthState) bool { return true })
	return err
}

// logoutIf logs name out if their auth_state, read under the user's lock,
// still satisfies still (compare-and-set). Otherwise the user holds another
// session now: their tokens are adopted and nothing is cleared. It reports
// whether the user was logged out. Hub admins whose tokens the hub refreshes
// are left to the hub, which sends them to the login page once their
// session fails its own refresh.
func (r *Refresher) logoutIf(ctx context.Context, name, reason string, still func(AuthState) bool) (bool, error) {
	if !r.work.start() {
		return false, ErrStopping
	}
	defer r.work.done()
	unlock, err := r.locks.lock(ctx, name)
	if err != nil {
		return false, err
	}
	defer unlock()
	u, err := r.hub.User(ctx, name)
	if err != nil {
		return false, fmt.Errorf("logout %q: read auth_state: %w", name, err)
	}
	st, err := ParseAuthState(u.AuthState)
	switch {
	case err != nil:
		r.reschedule(ctx, name, store.StatusEmpty, "logged out") // nothing left to log out
		return false, nil
	case !still(st):
		r.log.Info("not logged out: the user holds a newer session", "user", name)
		r.settle(ctx, name, st, "", "")
		return false, nil
	case u.Admin && !r.opts.RefreshAdmins:
		r.log.Info("not logged out: hub admin, whose session the hub checks itself", "user", name)
		return false, nil
	}
	return true, r.logout(ctx, name, st, reason)
}

// logout clears the user's auth_state, then takes the configured actions,
// and records the user as ended, drops their journal entry, intent and
// fence and appends the audit record in one store transaction. The logout
// is fenced first (unless a back-channel logout fenced it already), so that
// a failed write, a stop or a crash part-way leaves it to be finished by the
// next update (finishLogout). The caller holds the user's lock.
func (r *Refresher) logout(ctx context.Context, name string, st AuthState, reason string) error {
	if _, ok := r.fenceFor(name, st); !ok {
		if err := r.fence(ctx, name, st.Session, st.Subject, reason); err != nil {
			return fmt.Errorf("logout %q: %w", name, err)
		}
	}
	if err := r.hub.SetAuthState(ctx, name, nil); err != nil {
		return fmt.Errorf("logout %q: clear auth_state: %w", name, err)
	}
	return r.finishLogout(ctx, name, st.Session, st.Subject, reason)
}

// finishLogout takes a logout's actions once auth_state is cleared, and
// records it. It runs again (the actions are idempotent) for a fenced user
// whose auth_state a logout cleared before it could finish, and while an
// action fails: the fence stays until every action is done, so the next
// sweep tries again, and only then is the audit row written.
//
// Only the fences of the session logged out (sid, or every session of sub
// for a fence without one) are settled: a back-channel logout of a newer
// login, recorded meanwhile, stays to be carried out.
func (r *Refresher) finishLogout(ctx context.Context, name, sid, sub, reason string) error {
	r.mu.Lock()
	r.forget(name)
	delete(r.unsaved, name)
	r.mu.Unlock()
	r.ends.loggedOut(name, r.now())
	done, errs := r.logoutActions(ctx, name, sub)
	u := r.setUser(store.UserState{Name: name, Status: store.StatusEnded, Reason: reason, Due: r.now().Add(r.opts.Recheck)})
	if err := errors.Join(errs...); err != nil {
		r.save(ctx, store.Change{User: &u, DropPending: name, DropIntent: name})
		r.log.Warn("logout incomplete; the next sweep finishes it", "user", name, "reason", reason, "err", err)
		return err
	}
	settled := r.settleFences(name, sid, sub)
	actions := strings.Join(append([]string{"cleared auth_state"}, done...), "; ")
	errs = append(errs, r.store.Apply(context.WithoutCancel(ctx), store.Change{User: &u, DropPending: name, DropIntent: name, DropFences: settled,
		Logout: &store.Logout{User: name, At: r.opts.Now(), Reason: reason, Actions: actions}}))
	r.log.Warn("logged out", "user", name, "reason", reason, "actions", actions)
	r.opts.Metrics.logout(metricReason(reason))
	return errors.Join(errs...)
}

// logoutActions revokes session tokens, stops servers and ends Keycloak
// sessions as configured, and describes what it did.
func (r *Refresher) logoutActions(ctx context.Context, name, sub string) ([]string, []error) {
	var done []string
	var errs []error
	if r.opts.Actions.RevokeTokens {
		n, err := r.revokeSessionTokens(ctx, name)
		errs = append(errs, err)
		done = append(done, fmt.Sprintf("revoked %d session tokens", n))
	}
	if r.opts.Actions.StopServers {
		n, err := r.stopServers(ctx, name)
		errs = append(errs, err)
		done = append(done, fmt.Sprintf("stopped %d servers", n))
	}
	if r.opts.Actions.EndSessions != nil && sub != "" {
		errs = append(errs, r.opts.Actions.EndSessions(ctx, sub))
		done = append(done, "ended keycloak sessions")
	}
	return done, errs
}

func (r *Refresher) revokeSessionTokens(ctx context.Context, name string) (int, error) {
	tokens, err := r.sessions.Tokens(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("logout %q: list tokens: %w", name, err)
	}
	n := 0
	var errs []error
	for _, t := range tokens {
		if t.SessionID == nil || *t.SessionID == "" {
			continue
		}
		if err := r.sessions.DeleteToken(ctx, name, t.ID); err != nil {
			errs = append(errs, fmt.Errorf("logout %q: revoke token %s: %w", name, t.ID, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

func (r *Refresher) stopServers(ctx context.Context, name string) (int, error) {
	u, err := r.hub.User(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("logout %q: read servers: %w", name, err)
	}
	n := 0
	var errs []error
	for server, s := range u.Servers {
		if s.Stopped {
			continue
		}
		if err := r.sessions.StopServer(ctx, name, server); err != nil {
			errs = append(errs, fmt.Errorf("logout %q: stop server %q: %w", name, server, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// logoutEnded logs out the users whose sessions ended. While the guard is
// tripped only endings their refresh token's expiry predicted are logged
// out; the others wait, health says why, and ReleaseGuard lets them go.
// Each logout is compare-and-set on the refresh token whose grant found the
// session ended: a user who logged in again since keeps the new login.
func (r *Refresher) logoutEnded(ctx context.Context, ended []string) {
	now := r.now()
	tripped := r.checkGuard(ctx, now)
	for _, name := range ended {
		u, ok := r.user(name)
		v := endingView{Pending: ok && pendingLogout(&u), Due: ok && !u.Due.After(now), Expected: u.EndExpected, Tripped: tripped}
		if decideEnding(v) == endingWait {
			continue // not ended, or an unexpected ending still held for the guard
		}
		if ctx.Err() != nil {
			return // the user stays ended and due; the next sweep logs them out
		}
		r.performEnding(ctx, name, u, v)
	}
	r.setHeld(tripped)
}

// performEnding carries out the steps decideEnding chooses for name's ended
// session, observing again after a confirmation.
func (r *Refresher) performEnding(ctx context.Context, name string, u store.UserState, v endingView) {
	for {
		switch decideEnding(v) {
		case endingWait:
			return
		case endingConfirm:
			if !r.stillEnded(ctx, name, u) {
				return // alive after all, or Keycloak cannot say yet
			}
			v.Confirmed = true
			continue
		case endingHold:
			r.holdAgain(ctx, u)
			return
		}
		still := func(st AuthState) bool { return digest(st.Refresh.Reveal()) == u.EndedOn }
		if _, err := r.logoutIf(ctx, name, u.Reason, still); err != nil {
			r.log.Error("logout incomplete", "user", name, "err", err)
		}
		return
	}
}

// setHeld records how many logouts the tripped guard holds back: every
// unexpected ending that waits for its logout.
func (r *Refresher) setHeld(tripped bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, u := range r.users {
		if tripped && pendingLogout(u) && !u.EndExpected {
			n++
		}
	}
	if n > 0 && r.held == 0 {
		r.log.Error("logouts paused: many Keycloak sessions ended unexpectedly at once, which looks like Keycloak "+
			"lost its sessions; nobody is logged out until an admin releases the guard", "held", n)
	}
	r.held = n
}

// ReleaseGuard lets the logouts the mass-failure guard holds back go ahead
// at the next sweep, and starts counting afresh. It is the admin's answer
// once they have checked that the sessions really ended; each held user is
// still asked about first (stillEnded), so only sessions still ended are
// logged out. The release is durable.
func (r *Refresher) ReleaseGuard(ctx context.Context) error {
	if err := r.store.PutGuard(ctx, store.GuardState{}); err != nil {
		return fmt.Errorf("release the guard: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log.Warn("mass-failure guard released by an admin", "held", r.held)
	r.guard.release()
	r.held = 0
	now := r.now()
	for _, u := range r.users {
		if pendingLogout(u) && u.Due.After(now) {
			u.Due = now
		}
	}
	return nil
}

// checkGuard checks the guard's window and reports whether it is tripped;
// the moment it trips is made durable, so that a restart keeps holding.
func (r *Refresher) checkGuard(ctx context.Context, now time.Time) bool {
	r.mu.Lock()
	was := r.guard.tripped
	tripped := r.guard.check(r.opts.Guard, now)
	r.mu.Unlock()
	if tripped && !was {
		if err := r.store.PutGuard(ctx, store.GuardState{Tripped: true, Since: now}); err != nil {
			r.log.Error("the tripped guard could not be recorded; a restart would release it", "err", err)
		}
	}
	return tripped
}

// stillEnded reports whether the logout of an unexpected ending may go
// ahead: Keycloak's introspection must agree that the refresh token a grant
// found ended is no longer accepted. Introspection neither spends the token
// nor moves the session's idle timer, so it is how the guard's held users
// are probed, and how a release logs out only sessions still ended. A user
// whose token Keycloak accepts after all is kept; one it cannot answer for
// is asked again later; one who logged in again keeps the new session
// (the hub is read first). Without Introspect the logout may go ahead.
func (r *Refresher) stillEnded(ctx context.Context, name string, u store.UserState) bool {
	unlock, err := r.locks.lock(ctx, name)
	if err != nil {
		return false
	}
	defer unlock()
	hu, err := r.hub.User(ctx, name)
	if err != nil {
		r.holdAgain(ctx, u)
		return false
	}
	st, err := ParseAuthState(hu.AuthState)
	if err != nil {
		return true // logoutIf finds nothing to clear
	}
	if digest(st.Refresh.Reveal()) != u.EndedOn {
		// The user logged in again: the new session is theirs to keep,
		// whatever the guard holds.
		r.log.Info("not logged out: the user holds a newer session", "user", name)
		r.settle(ctx, name, st, "", "")
		return false
	}
	if r.opts.Introspect == nil {
		return true
	}
	active, err := r.introspect(ctx, st)
	switch {
	case err != nil:
		r.log.Warn("could not ask Keycloak whether an ended session really ended; asking again later", "user", name, "err", err)
		r.holdAgain(ctx, u)
		return false
	case active:
		r.log.Warn("not logged out: Keycloak still accepts the refresh token of a session a grant found ended", "user", name)
		r.settle(ctx, name, st, "", "")
		return false
	}
	return true
}

// holdAgain schedules the next look at an ending that is held or could not
// be confirmed, with backoff.
//
// u is the state the ending was looked at with. When the hub's activity of
// the user moved since (a back-channel catch-up's listing saw a login while
// Keycloak was asked), the user stays due as that listing left them: the
// next sweep reads the hub again rather than waiting out a backoff with a
// new session unrefreshed.
func (r *Refresher) holdAgain(ctx context.Context, u store.UserState) {
	r.mu.Lock()
	if cur := r.users[u.Name]; cur != nil && cur.Activity != u.Activity {
		r.mu.Unlock()
		return
	}
	u.Failures++
	u.Due = Retry(r.now(), u.Failures, time.Time{}, r.jitter(u.Name, u.Failures))
	u = r.setUserLocked(u)
	r.mu.Unlock()
	r.save(ctx, store.Change{User: &u})
}

// user returns a copy of name's schedule state.
func (r *Refresher) user(name string) (store.UserState, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u := r.users[name]; u != nil {
		return *u, true
	}
	return store.UserState{}, false
}

// Logout reasons, as recorded and as metric labels.
const (
	ReasonBackchannel = "keycloak back-channel logout"
)

// metricReason maps a logout reason to a low-cardinality label.
func metricReason(reason string) string {
	if reason == ReasonBackchannel {
		return "backchannel"
	}
	return "session_ended"
}
