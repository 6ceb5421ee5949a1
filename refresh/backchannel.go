package refresh

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/sync/errgroup"

	"github.com/tokenkeeper/tokenkeeper/store"
)

// ErrReplayedLogout means a logout token's jti was acted on before.
var ErrReplayedLogout = store.ErrReplayedLogout

// LogoutTokenError means a back-channel logout token failed verification.
type LogoutTokenError struct{ Err error }

func (e *LogoutTokenError) Error() string { return "invalid logout token: " + e.Err.Error() }
func (e *LogoutTokenError) Unwrap() error { return e.Err }

// maxJTIRetention bounds how long a logout token id is remembered, whatever
// the token's exp says.
const maxJTIRetention = 10 * time.Minute

// LogoutVerifier verifies a raw back-channel logout token.
type LogoutVerifier func(ctx context.Context, raw string) (*oidc.LogoutToken, error)

// BackchannelLogout handles Keycloak's back-channel logout: it verifies the
// token, refuses a jti already acted on, finds the hub users of the session
// (sid) or subject (sub), and fences each: the logout is recorded durably
// and their tokens of that session are no longer served. Then the jti is
// spent and each logout carried out at once where nobody holds the user's
// lock; a grant in flight carries it out when it ends (discarding its
// tokens), and a failing hub leaves it to the next sweep. So the answer
// never waits for a grant (Keycloak may send the logout while handling
// tokenkeeper's own grant) and a failing hub loses no logout. It returns the
// users logged out now.
func (r *Refresher) BackchannelLogout(ctx context.Context, raw string, verify LogoutVerifier) ([]string, error) {
	lt, err := verify(ctx, raw)
	if err != nil {
		return nil, &LogoutTokenError{Err: err}
	}
	if err := r.store.SeenJTI(ctx, lt.TokenID); err != nil {
		return nil, err
	}
	names, err := r.usersForSession(ctx, lt.SessionID, lt.Subject)
	if err != nil {
		return nil, err
	}
	unfinished := map[string]bool{} // users whose logout was fenced before this one: it may have been cut short
	for _, name := range names {
		_, unfinished[name] = r.fenceOf(name)
		if err := r.fence(ctx, name, lt.SessionID, lt.Subject, ReasonBackchannel); err != nil {
			return nil, fmt.Errorf("back-channel logout not recorded: %w", err)
		}
	}
	expires := lt.Expiry
	if limit := r.now().Add(maxJTIRetention); expires.After(limit) {
		expires = limit
	}
	if err := r.store.SpendJTI(ctx, lt.TokenID, expires); err != nil {
		return nil, err
	}
	var out []string
	for _, name := range names {
		if r.tryFence(ctx, name, unfinished[name]) {
			out = append(out, name)
		}
	}
	return out, nil
}

// usersForSession returns the hub users of a session or subject. When
// tokenkeeper knows neither (the user logged in since the last sweep), it
// first reads the users who are new or whose hub activity moved.
func (r *Refresher) usersForSession(ctx context.Context, sid, sub string) ([]string, error) {
	names, err := r.store.UsersForSession(ctx, sid, sub)
	if err != nil || len(names) > 0 {
		return names, err
	}
	// One catch-up at a time: a second logout arriving meanwhile (Keycloak
	// sends one per session at once) waits for the first to record the
	// sessions it reads, instead of finding nothing left to read.
	select {
	case r.catching <- struct{}{}:
		defer func() { <-r.catching }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if names, err := r.store.UsersForSession(ctx, sid, sub); err != nil || len(names) > 0 {
		return names, err
	}
	if err := r.catchUp(ctx); err != nil {
		return nil, fmt.Errorf("back-channel logout: read new logins: %w", err)
	}
	names, err = r.store.UsersForSession(ctx, sid, sub)
	if err == nil && len(names) == 0 {
		r.log.Info("back-channel logout for a session no hub user holds", "sid", sid)
	}
	return names, err
}

// catchUp reads the users who are new or whose hub activity moved, which
// records their sessions, without refreshing anyone.
func (r *Refresher) catchUp(ctx context.Context) error {
	users, err := r.listUsers(ctx)
	if err != nil {
		return err
	}
	due, _ := r.sync(ctx, users)
	r.mu.Lock()
	for name := range r.moved {
		if !slices.Contains(due, name) {
			due = append(due, name)
		}
	}
	clear(r.moved)
	r.mu.Unlock()
	never := func(string, AuthState, time.Time) bool { return false }
	var g errgroup.Group
	g.SetLimit(r.opts.Concurrency)
	for _, name := range due {
		if r.locks.busy(name) {
			// Being updated now, which records the session: waiting for it
			// could wait for a grant whose Keycloak request sent this logout.
			continue
		}
		g.Go(func() error {
			_, err := r.do(ctx, name, never)
			r.logFailure(name, err)
			return nil
		})
	}
	return g.Wait()
}

// dueNow makes a known user due at the next sweep.
func (r *Refresher) dueNow(ctx context.Context, name string) {
	r.mu.Lock()
	prev := r.users[name]
	var u store.UserState
	if prev != nil {
		u = *prev
		u.Due = r.now()
	}
	r.mu.Unlock()
	if prev != nil {
		r.put(ctx, u)
	}
}
