package refresh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tokenkeeper/tokenkeeper/store"
)

// SessionState is a user's session as the service page shows it.
type SessionState string

// Session states, in the page's words.
const (
	SessionFresh      SessionState = "fresh"      // tokens known and kept fresh (or fresh enough)
	SessionRefreshing SessionState = "refreshing" // the last grant failed transiently; retrying
	SessionEnded      SessionState = "ended"      // the Keycloak session ended; logged out or about to be
	SessionHeld       SessionState = "held"       // ended, and the guard holds the logout
	SessionStuck      SessionState = "stuck"      // new tokens the hub refuses to store, kept in the journal
	SessionAdmin      SessionState = "hub admin"  // a hub admin, whose tokens the hub refreshes
	SessionNone       SessionState = "none"       // no tokens: the user must log in
	SessionUnknown    SessionState = "unknown"    // not read from the hub yet, or unusable
)

// SessionView is what tokenkeeper's store says of one user, without any
// token: the page's row and the head of a user's view.
type SessionView struct {
	Name  string
	State SessionState
	// AccessExpiry is when the access token the hub holds expires.
	AccessExpiry time.Time
	// RefreshExpiry is when the refresh token expires: the SSO session's
	// idle end, or its maximum, whichever comes first.
	RefreshExpiry time.Time
	// NextRefresh is when the user is next due.
	NextRefresh time.Time
	// LastRefresh is when the access token the hub holds was issued (the
	// last refresh, or the login); LastOutcome is the last update's outcome
	// ("ok" or the reason it failed or was skipped).
	LastRefresh time.Time
	LastOutcome string
	Failures    int
	// Kept says the user's tokens are kept fresh (keep=all, or a running server).
	Kept bool
}

// GuardView is the mass-failure guard's state: whether it holds logouts
// back, and whose.
type GuardView struct {
	Tripped bool
	Held    []string
}

// Sessions lists every user tokenkeeper's store holds, by name. It reads
// the store, never the hub.
func (r *Refresher) Sessions(ctx context.Context) ([]SessionView, error) {
	users, err := r.store.Users(ctx)
	if err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	tripped := r.tripped()
	out := make([]SessionView, 0, len(users))
	for _, u := range users {
		out = append(out, sessionView(u, tripped))
	}
	slices.SortFunc(out, func(a, b SessionView) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Session returns one user's view from the store; ok is false when the
// store does not know the user.
func (r *Refresher) Session(ctx context.Context, name string) (SessionView, bool, error) {
	u, ok, err := r.store.User(ctx, name)
	if err != nil || !ok {
		return SessionView{}, false, err
	}
	return sessionView(u, r.tripped()), true, nil
}

// tripped reports whether the mass-failure guard holds logouts back.
func (r *Refresher) tripped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.guard.tripped
}

// sessionView is the page's view of one stored user state.
func sessionView(u store.UserState, tripped bool) SessionView {
	v := SessionView{
		Name: u.Name, State: sessionState(u, tripped),
		AccessExpiry: u.AccessExpiry, RefreshExpiry: u.RefreshExpiry, NextRefresh: u.Due,
		LastRefresh: u.Issued, LastOutcome: u.Reason, Failures: u.Failures, Kept: u.Kept,
	}
	if v.LastOutcome == "" {
		v.LastOutcome = "ok"
	}
	return v
}

// sessionState names a stored status in the page's words: an ended
// session whose unexpected ending waits while the guard is tripped is held.
func sessionState(u store.UserState, tripped bool) SessionState {
	switch u.Status {
	case store.StatusFresh:
		return SessionFresh
	case store.StatusBackoff:
		return SessionRefreshing
	case store.StatusEnded:
		if tripped && pendingLogout(&u) && !u.EndExpected {
			return SessionHeld
		}
		return SessionEnded
	case store.StatusStuck:
		return SessionStuck
	case store.StatusAdmin:
		return SessionAdmin
	case store.StatusEmpty:
		return SessionNone
	}
	return SessionUnknown
}

// GuardState returns the guard's state and the users whose logouts it
// holds back.
func (r *Refresher) GuardState() GuardView {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := GuardView{Tripped: r.guard.tripped}
	if !g.Tripped {
		return g
	}
	for _, u := range r.users {
		if pendingLogout(u) && !u.EndExpected {
			g.Held = append(g.Held, u.Name)
		}
	}
	slices.Sort(g.Held)
	return g
}

// Audit returns the latest logout audit records, newest first, at most limit.
func (r *Refresher) Audit(ctx context.Context, limit int) ([]store.Logout, error) {
	return r.store.RecentLogouts(ctx, limit)
}

// RefreshNow refreshes the user's tokens now, whatever their schedule, as
// a sweep would: through the user's single flight, so a grant in flight
// is joined rather than repeated.
func (r *Refresher) RefreshNow(ctx context.Context, name string) error {
	always := func(string, AuthState, time.Time) bool { return true }
	_, err := r.do(ctx, name, always)
	r.logFailure(name, err)
	return err
}

// ErrNotLoggedOut says LogoutEverywhere cleared nothing in the hub: the
// user had no tokens, or is a hub admin, whose auth_state only an admin
// may write (their Keycloak session is ended all the same, and the hub
// logs them out at its next refresh).
var ErrNotLoggedOut = errors.New("the hub holds no tokens tokenkeeper may clear for this user")

// LogoutEverywhere logs the user out at the request of by (the user, or
// an admin): out of the hub as any logout does (auth_state cleared, with
// the configured actions: browser-session tokens revoked, servers stopped,
// every Keycloak session ended), out of the Keycloak session the hub held
// (EndSession, after the hub's logout, so that Keycloak's back-channel
// logout finds nothing left to do), and the servers' token-file keepers
// waiting in WaitLogout are told at once and remove their files. The
// servers are stopped when the settings stop them at every logout
// (stop_servers).
func (r *Refresher) LogoutEverywhere(ctx context.Context, name, by string) error {
	reason := "logged out everywhere by " + by
	if by == name {
		reason = "logged out everywhere by the user"
	}
	var held AuthState
	out, err := r.logoutIf(ctx, name, reason, func(st AuthState) bool { held = st; return true })
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	if end := r.opts.Actions.EndSession; end != nil && held.Refresh != "" {
		if err := end(ctx, held.Refresh); err != nil {
			errs = append(errs, fmt.Errorf("logout %q: end the Keycloak session: %w", name, err))
		}
	}
	if !out && err == nil {
		r.ends.loggedOut(name, r.now()) // the keepers remove their files all the same
		if held.Refresh == "" {
			errs = append(errs, ErrNotLoggedOut)
		}
	}
	return errors.Join(errs...)
}

// logoutWatch tells waiters when users are logged out. Its zero value is
// ready.
type logoutWatch struct {
	mu   sync.Mutex
	last map[string]time.Time // by user: the latest logout
	next chan struct{}        // closed at the next logout
}

// loggedOut records that name was logged out at t and wakes the waiters.
func (w *logoutWatch) loggedOut(name string, t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		w.last = make(map[string]time.Time)
	}
	w.last[name] = t
	if w.next != nil {
		close(w.next)
		w.next = nil
	}
}

// since reports whether name was logged out at or after t, and a channel
// closed at the next logout of anyone.
func (w *logoutWatch) since(name string, t time.Time) (bool, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if at, ok := w.last[name]; ok && !at.Before(t) {
		return true, nil
	}
	if w.next == nil {
		w.next = make(chan struct{})
	}
	return false, w.next
}

// WaitLogout waits until the user is logged out at or after since, ctx
// ends or wait passes, and reports whether a logout came, and the time on
// the refresher's clock to pass as since next (so that a logout between
// two waits is not missed). Logouts are remembered in memory: one before a
// restart is not reported after it (the keeper then learns of it from
// fresh-token).
func (r *Refresher) WaitLogout(ctx context.Context, name string, since time.Time, wait time.Duration) (bool, time.Time) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		now := r.now()
		ended, next := r.ends.since(name, since)
		if ended {
			return true, now
		}
		select {
		case <-next:
		case <-ctx.Done():
			return false, now
		}
	}
}
