package refresh

import (
	"context"
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
	// LastRefresh is when a grant last gave the user new tokens; LastOutcome
	// is the last update's outcome ("ok" or the reason it failed).
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

// Sessions lists every user tokenkeeper's store holds, by name.
func (r *Refresher) Sessions(ctx context.Context) ([]SessionView, error) {
	return nil, nil
}

// Session returns one user's view; ok is false when the store does not
// know the user.
func (r *Refresher) Session(ctx context.Context, name string) (SessionView, bool, error) {
	return SessionView{}, false, nil
}

// GuardState returns the guard's state.
func (r *Refresher) GuardState() GuardView { return GuardView{} }

// Audit returns the latest logout audit records, newest first, at most limit.
func (r *Refresher) Audit(ctx context.Context, limit int) ([]store.Logout, error) {
	return nil, nil
}

// RefreshNow refreshes the user's tokens now, whatever their schedule, as
// a sweep would.
func (r *Refresher) RefreshNow(ctx context.Context, name string) error { return nil }

// LogoutEverywhere logs the user out of the hub and of their Keycloak
// session at the request of by (the user, or an admin), removes their
// token files through the servers' keepers, and stops their servers when
// stopServers is set and the service may.
func (r *Refresher) LogoutEverywhere(ctx context.Context, name, by string, stopServers bool) error {
	return nil
}

// WaitLogout waits until the user is logged out after since, ctx ends or
// wait passes, and reports whether a logout came, and the time on the
// refresher's clock to pass as since next.
func (r *Refresher) WaitLogout(ctx context.Context, name string, since time.Time, wait time.Duration) (bool, time.Time) {
	return false, r.now()
}
