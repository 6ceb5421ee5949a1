package refresh

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
}

// Guard pauses logouts when a large share of a sweep's users fail with a
// terminal error at once, which usually means Keycloak lost its sessions
// (restarted without persistence, or a realm-wide revocation) rather than
// that each of those users logged out.
type Guard struct {
	// Min is the least number of terminal failures in one sweep that can trip it.
	Min int
	// Fraction is the share of the sweep's attempted users that trips it.
	Fraction float64
}

// trips reports whether ended terminal failures among attempted trip g.
func (g Guard) trips(ended, attempted int) bool {
	return g.Min > 0 && ended >= g.Min && float64(ended) >= g.Fraction*float64(attempted)
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
		return false, nil // no tokens: nothing to log out
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
// and records the user as ended, drops their journal entry and appends the
// audit record in one store transaction. The caller holds the user's lock.
func (r *Refresher) logout(ctx context.Context, name string, st AuthState, reason string) error {
	if err := r.hub.SetAuthState(ctx, name, nil); err != nil {
		return fmt.Errorf("logout %q: clear auth_state: %w", name, err)
	}
	r.mu.Lock()
	delete(r.cache, name)
	delete(r.unsaved, name)
	r.mu.Unlock()
	done, errs := r.logoutActions(ctx, name, st.AccessClaims.Subject)
	actions := strings.Join(append([]string{"cleared auth_state"}, done...), "; ")
	u := store.UserState{Name: name, Status: store.StatusEnded, Reason: reason, Due: r.opts.Now().Add(r.opts.Recheck)}
	r.setUser(u)
	errs = append(errs, r.store.Apply(ctx, store.Change{User: &u, DropPending: name,
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

// logoutEnded logs out the users whose sessions ended in one sweep, unless
// the guard trips, in which case nobody is logged out and health says why.
// Each logout is compare-and-set on the refresh token whose grant found the
// session ended: a user who logged in again since keeps the new login.
func (r *Refresher) logoutEnded(ctx context.Context, ended map[string]string, attempted int) {
	if len(ended) == 0 {
		r.setGuard(nil)
		return
	}
	if r.opts.Guard.trips(len(ended), attempted) {
		r.setGuard(fmt.Errorf("logouts paused: %d of %d users' Keycloak sessions ended in one sweep, "+
			"which looks like Keycloak lost its sessions; nobody was logged out", len(ended), attempted))
		return
	}
	r.setGuard(nil)
	for name, reason := range ended {
		if ctx.Err() != nil {
			return // the user stays ended and due; the next start logs them out
		}
		spent := r.endedOn(name)
		still := func(st AuthState) bool { return digest(st.Refresh.Reveal()) == spent }
		if _, err := r.logoutIf(ctx, name, reason, still); err != nil {
			r.log.Error("logout incomplete", "user", name, "err", err)
		}
	}
}

// endedOn returns the digest of the refresh token whose grant found name's
// session ended.
func (r *Refresher) endedOn(name string) store.Digest {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u := r.users[name]; u != nil {
		return u.EndedOn
	}
	return store.Digest{}
}

func (r *Refresher) setGuard(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil && r.guard == nil {
		r.log.Error("mass session failure", "err", err)
	}
	r.guard = err
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
