// Package refresh keeps users' Keycloak tokens in JupyterHub's auth_state
// fresh: it schedules each user by their access token's expiry, spends the
// refresh token with the hub's own OAuth client, writes the new tokens back in
// OAuthenticator's layout, and sorts grant failures into transient, terminal
// (the SSO session ended) and operator (configuration) problems.
package refresh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
)

// Errors Fresh returns besides ErrNoTokens and *MalformedError.
var (
	// ErrSessionEnded means Keycloak ended the user's SSO session.
	ErrSessionEnded = errors.New("the Keycloak session has ended: log in again")
	// ErrUnavailable means no fresh token can be had right now (Keycloak
	// unreachable or misconfigured) and the current one has expired.
	ErrUnavailable = errors.New("keycloak is unavailable and the current token has expired")
)

// Hub is the part of the JupyterHub API the refresher uses.
type Hub interface {
	Users(ctx context.Context, q hubclient.UserQuery) iter.Seq2[hubclient.User, error]
	User(ctx context.Context, name string) (hubclient.User, error)
	SetAuthState(ctx context.Context, name string, state json.RawMessage) error
}

// GrantFunc spends a refresh token and returns the new token set.
type GrantFunc func(ctx context.Context, refresh config.Secret) (*oauth2.Token, error)

// Options tune a Refresher.
type Options struct {
	// Keep is config.KeepRunning or config.KeepAll.
	Keep string
	// Window is the least time left at which a token is refreshed.
	Window time.Duration
	// Recheck is how long users without usable tokens wait before their
	// auth_state is read again.
	Recheck time.Duration
	// Concurrency bounds the users refreshed at once by a sweep.
	Concurrency int
	// GrantTimeout bounds one user's read, grant and write-back.
	GrantTimeout time.Duration
	// Actions are what a logout does besides clearing auth_state.
	Actions LogoutActions
	// Guard pauses logouts on mass failure.
	Guard Guard
	// Seal encrypts the write-back journal.
	Seal *Sealer
	// Metrics, when set, counts grants and logouts.
	Metrics *Metrics
	Now     func() time.Time
	Rand    *rand.Rand
	Logger  *slog.Logger
}

// Tokens is a user's current access token as handed out by fresh-token.
type Tokens struct {
	Access config.Secret
	Expiry time.Time
	Type   string
}

// Refresher refreshes users' tokens; see the package documentation.
type Refresher struct {
	hub      Hub
	sessions SessionHub
	grant    GrantFunc
	store    *Store
	opts     Options
	log      *slog.Logger
	flight   singleflight.Group

	mu       sync.Mutex // guards the fields below
	users    map[string]*UserState
	cache    map[string]Tokens
	operator error // set while refreshing is stopped for an operator problem
	hubErr   error // set while the hub cannot be listed
	guard    error // set while logouts are paused by the mass-failure guard
	rand     *rand.Rand
}

// New returns a Refresher whose schedule is restored from store. hub and
// sessions are usually the same *hubclient.Client.
func New(ctx context.Context, hub Hub, sessions SessionHub, grant GrantFunc, store *Store, opts Options) (*Refresher, error) {
	states, err := store.Users(ctx)
	if err != nil {
		return nil, err
	}
	r := &Refresher{
		hub: hub, sessions: sessions, grant: grant, store: store, opts: opts, log: opts.Logger,
		users: make(map[string]*UserState, len(states)),
		cache: make(map[string]Tokens),
		rand:  opts.Rand,
	}
	for _, s := range states {
		r.users[s.Name] = &s
	}
	return r, nil
}

// Health returns nil while tokenkeeper can do its job, or the reason it cannot.
func (r *Refresher) Health() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.operator, r.hubErr, r.guard)
}

// Sweep lists the users to keep fresh, forgets users no longer listed, and
// refreshes every user whose token is due. A sweep with nothing due costs the
// hub only the list pages and Keycloak nothing.
func (r *Refresher) Sweep(ctx context.Context) error {
	names, err := r.listUsers(ctx)
	r.mu.Lock()
	r.hubErr = err
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	due := r.sync(ctx, names)
	results := make([]error, len(due))
	var g errgroup.Group
	g.SetLimit(r.opts.Concurrency)
	for i, name := range due {
		g.Go(func() error {
			_, results[i] = r.do(ctx, name, r.scheduled)
			r.logFailure(name, results[i])
			return nil
		})
	}
	_ = g.Wait() // the goroutines return no errors; failures are in results
	ended := map[string]string{}
	for i, err := range results {
		if errors.Is(err, ErrSessionEnded) {
			ended[due[i]] = err.Error()
		}
	}
	r.logoutEnded(ctx, ended, len(due))
	return nil
}

// Replay writes back every journaled token set left by a crash between a
// grant and its write-back. It runs once at start, before the first sweep.
func (r *Refresher) Replay(ctx context.Context) error {
	names, err := r.store.PendingUsers(ctx)
	if err != nil {
		return err
	}
	for _, name := range names {
		_, err := r.do(ctx, name, r.scheduled)
		r.logFailure(name, err)
	}
	return nil
}

func (r *Refresher) listUsers(ctx context.Context) (map[string]bool, error) {
	q := hubclient.UserQuery{}
	if r.opts.Keep == config.KeepRunning {
		q.State = "active"
	}
	names := map[string]bool{}
	for u, err := range r.hub.Users(ctx, q) {
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		names[u.Name] = true
	}
	return names, nil
}

// sync adds newly listed users (due at once), forgets unlisted ones, and
// returns the names that are due.
func (r *Refresher) sync(ctx context.Context, names map[string]bool) []string {
	now := r.opts.Now()
	var due, gone []string
	var added []UserState
	r.mu.Lock()
	for name := range names {
		if _, ok := r.users[name]; !ok {
			u := &UserState{Name: name, Due: now, Status: StatusNew}
			r.users[name] = u
			added = append(added, *u)
		}
	}
	for name, u := range r.users {
		switch {
		case !names[name]:
			gone = append(gone, name)
			delete(r.users, name)
			delete(r.cache, name)
		case !u.Due.After(now):
			due = append(due, name)
		}
	}
	r.mu.Unlock()
	for _, u := range added {
		r.save(ctx, u)
	}
	if err := r.store.Delete(ctx, gone...); err != nil {
		r.log.Error("forget users", "err", err)
	}
	return due
}

// Fresh returns the user's access token with at least minValid left (or as
// much as Keycloak's token lifetime allows), refreshing it first when needed.
// Concurrent calls for one user share one grant. While Keycloak cannot be
// reached the current token is returned as long as it is valid.
func (r *Refresher) Fresh(ctx context.Context, name string, minValid time.Duration) (Tokens, error) {
	if t, ok := r.cached(name, minValid); ok {
		return t, nil
	}
	need := func(name string, c Claims, now time.Time) bool {
		return needs(c, now, minValid)
	}
	t, err := r.do(ctx, name, need)
	if err == nil && needs(Claims{Expiry: t.Expiry}, r.opts.Now(), minValid) {
		// Joined a sweep's flight that did not need a grant; ask once more.
		t, err = r.do(ctx, name, need)
	}
	r.logFailure(name, err)
	if err == nil {
		r.mu.Lock()
		r.cache[name] = t // from now on kept current by every refresh of name
		r.mu.Unlock()
	}
	return t, err
}

// needs reports whether a token must be refreshed to have minValid left; a
// token is never asked for more than half its own lifetime.
func needs(c Claims, now time.Time, minValid time.Duration) bool {
	left := c.Expiry.Sub(now)
	if !c.IssuedAt.IsZero() {
		minValid = min(minValid, c.Expiry.Sub(c.IssuedAt)/2)
	}
	return left < minValid
}

func (r *Refresher) cached(name string, minValid time.Duration) (Tokens, bool) {
	r.mu.Lock()
	t, ok := r.cache[name]
	r.mu.Unlock()
	if !ok || t.Expiry.Sub(r.opts.Now()) < minValid {
		return Tokens{}, false
	}
	return t, true
}

// scheduled is the sweep's test: the token has reached its due time.
func (r *Refresher) scheduled(name string, c Claims, now time.Time) bool {
	return !now.Before(Due(name, c, r.opts.Window))
}

type needFunc func(name string, c Claims, now time.Time) bool

// do runs update for name under the user's single flight. The work is
// detached from the caller's cancellation so that one impatient caller does
// not abort a grant others are waiting for.
func (r *Refresher) do(ctx context.Context, name string, need needFunc) (Tokens, error) {
	ch := r.flight.DoChan(name, func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.GrantTimeout)
		defer cancel()
		return r.update(ctx, name, need)
	})
	select {
	case res := <-ch:
		t, _ := res.Val.(Tokens)
		return t, res.Err
	case <-ctx.Done():
		return Tokens{}, ctx.Err()
	}
}

// update reads the user's auth_state, refreshes it when need says so, writes
// it back and reschedules the user.
func (r *Refresher) update(ctx context.Context, name string, need needFunc) (Tokens, error) {
	u, err := r.hub.User(ctx, name)
	if err != nil {
		r.reschedule(ctx, name, StatusNew, "hub: "+err.Error())
		return Tokens{}, fmt.Errorf("read auth_state: %w", err)
	}
	state, err := r.replay(ctx, name, u.AuthState)
	if err != nil {
		return Tokens{}, err
	}
	st, err := ParseAuthState(state)
	if err != nil {
		return Tokens{}, r.unusable(ctx, name, err)
	}
	if !need(name, st.AccessClaims, r.opts.Now()) {
		return r.remember(ctx, name, st, ""), nil
	}
	start := time.Now()
	tok, err := r.grant(ctx, st.Refresh)
	if err != nil {
		r.opts.Metrics.grant(Classify(err).String(), time.Since(start))
		return r.grantFailed(ctx, name, st, err)
	}
	r.opts.Metrics.grant("success", time.Since(start))
	return r.writeBack(ctx, name, st, tok)
}

// writeBack journals the new token set, writes it to the hub, and then
// drops the journal entry. If the hub write fails the entry stays, the new
// token is served from memory, and the write is retried soon.
func (r *Refresher) writeBack(ctx context.Context, name string, st AuthState, tok *oauth2.Token) (Tokens, error) {
	state, err := st.Apply(tok)
	if err != nil {
		return Tokens{}, fmt.Errorf("encode auth_state: %w", err)
	}
	next, err := ParseAuthState(state)
	if err != nil {
		return Tokens{}, fmt.Errorf("keycloak returned unusable tokens: %w", err)
	}
	r.setOperator(nil)
	p := Pending{User: name, State: state, Spent: digest(st.Refresh.Reveal()), Created: r.opts.Now()}
	if err := r.store.PutPending(ctx, r.opts.Seal, p); err != nil {
		r.log.Error("journal write failed; writing to the hub anyway", "user", name, "err", err)
	}
	if err := r.hub.SetAuthState(ctx, name, state); err != nil {
		r.log.Warn("write-back failed; will retry", "user", name, "err", err)
		t := r.remember(ctx, name, next, "write-back pending")
		r.put(ctx, UserState{Name: name, Status: StatusBackoff, Failures: 1, Reason: "write-back pending",
			Due: r.opts.Now().Add(backoffBase), AccessExpiry: t.Expiry, RefreshExpiry: next.RefreshExpiry})
		return t, nil
	}
	if err := r.store.DeletePending(ctx, name); err != nil {
		r.log.Error("journal cleanup failed", "user", name, "err", err)
	}
	t := r.remember(ctx, name, next, "")
	r.log.Info("refreshed", "user", name, "expires_at", t.Expiry.UTC().Format(time.RFC3339))
	return t, nil
}

// replay finishes a journaled write-back for name, if any, and returns the
// auth_state to work from. An entry is written only while the hub still holds
// the refresh token its grant spent; if the user has logged in again since,
// the entry is dropped.
func (r *Refresher) replay(ctx context.Context, name string, current json.RawMessage) (json.RawMessage, error) {
	p, ok, err := r.store.Pending(ctx, r.opts.Seal, name)
	if err != nil || !ok {
		return current, err
	}
	cur, _ := ParseAuthState(current)
	if digest(cur.Refresh.Reveal()) != p.Spent {
		r.log.Info("dropped a pending write-back: auth_state changed since", "user", name)
		return current, r.store.DeletePending(ctx, name)
	}
	if err := r.hub.SetAuthState(ctx, name, p.State); err != nil {
		return nil, fmt.Errorf("replay write-back: %w", err)
	}
	r.log.Info("replayed pending write-back", "user", name)
	return p.State, r.store.DeletePending(ctx, name)
}

// remember schedules the user's next refresh and updates their cached token.
// Only users someone has asked a token for are cached, so memory for users
// nobody asks about is the schedule alone.
func (r *Refresher) remember(ctx context.Context, name string, st AuthState, reason string) Tokens {
	t := Tokens{Access: st.Access, Expiry: st.AccessClaims.Expiry, Type: "Bearer"}
	u := UserState{
		Name: name, Status: StatusFresh, Reason: reason,
		Due:           Due(name, st.AccessClaims, r.opts.Window),
		AccessExpiry:  st.AccessClaims.Expiry,
		RefreshExpiry: st.RefreshExpiry,
	}
	r.mu.Lock()
	if _, ok := r.cache[name]; ok {
		r.cache[name] = t
	}
	r.mu.Unlock()
	r.put(ctx, u)
	c := st.AccessClaims
	if err := r.store.PutSession(ctx, c.SessionID, c.Subject, name, r.opts.Now()); err != nil {
		r.log.Error("remember session", "user", name, "err", err)
	}
	return t
}

// unusable records a user whose auth_state has no usable tokens.
func (r *Refresher) unusable(ctx context.Context, name string, err error) error {
	status := StatusEmpty
	var merr *MalformedError
	if errors.As(err, &merr) {
		status = StatusMalformed
	}
	r.mu.Lock()
	prev := r.users[name]
	r.mu.Unlock()
	if prev == nil || prev.Reason != err.Error() {
		reason := "no tokens in auth_state; waiting for a new login"
		if merr != nil {
			reason = merr.Reason
		}
		r.log.Warn("skipping user", "user", name, "reason", reason)
	}
	r.reschedule(ctx, name, status, err.Error())
	return err
}

// reschedule records a status and looks at the user again after Recheck.
func (r *Refresher) reschedule(ctx context.Context, name string, status Status, reason string) {
	r.mu.Lock()
	delete(r.cache, name)
	prev := r.users[name]
	r.mu.Unlock()
	u := UserState{Name: name, Status: status, Reason: reason, Due: r.opts.Now().Add(r.opts.Recheck)}
	if prev != nil {
		u.AccessExpiry, u.RefreshExpiry = prev.AccessExpiry, prev.RefreshExpiry
	}
	r.put(ctx, u)
}

// grantFailed handles a failed grant according to its class.
func (r *Refresher) grantFailed(ctx context.Context, name string, st AuthState, err error) (Tokens, error) {
	switch Classify(err) {
	case Terminal:
		return r.terminal(ctx, name, st, err)
	case Operator:
		r.setOperator(err)
		r.backoff(ctx, name, st, err)
	default:
		r.backoff(ctx, name, st, err)
	}
	if st.AccessClaims.Expiry.After(r.opts.Now()) {
		return Tokens{Access: st.Access, Expiry: st.AccessClaims.Expiry, Type: "Bearer"}, nil
	}
	return Tokens{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// terminal handles invalid_grant: if someone else refreshed meanwhile the
// new tokens are adopted; otherwise the SSO session has ended.
func (r *Refresher) terminal(ctx context.Context, name string, st AuthState, grantErr error) (Tokens, error) {
	u, err := r.hub.User(ctx, name)
	if err != nil {
		r.backoff(ctx, name, st, grantErr)
		return Tokens{}, fmt.Errorf("re-read auth_state after %w: %w", grantErr, err)
	}
	now, nerr := ParseAuthState(u.AuthState)
	if nerr == nil && now.Refresh != st.Refresh {
		r.log.Info("adopted tokens refreshed elsewhere", "user", name)
		return r.remember(ctx, name, now, ""), nil
	}
	r.mu.Lock()
	delete(r.cache, name)
	r.mu.Unlock()
	// Due at once: the next sweep logs the user out, subject to the guard.
	r.put(ctx, UserState{Name: name, Status: StatusEnded, Reason: grantErr.Error(), Due: r.opts.Now()})
	r.log.Warn("keycloak session ended", "user", name, "reason", grantErr.Error())
	return Tokens{}, fmt.Errorf("%w (%w)", ErrSessionEnded, grantErr)
}

// ended records a logged-out user; their auth_state is read again later in
// case they log in again.
func (r *Refresher) ended(ctx context.Context, name, reason string) {
	r.mu.Lock()
	delete(r.cache, name)
	r.mu.Unlock()
	r.put(ctx, UserState{Name: name, Status: StatusEnded, Reason: reason, Due: r.opts.Now().Add(r.opts.Recheck)})
}

// backoff schedules a retry after a failed grant, exponential in the number
// of consecutive failures and never past the token's expiry.
func (r *Refresher) backoff(ctx context.Context, name string, st AuthState, err error) {
	now := r.opts.Now()
	r.mu.Lock()
	failures := 1
	if prev := r.users[name]; prev != nil && prev.Status == StatusBackoff {
		failures = prev.Failures + 1
	}
	next := Retry(now, failures, st.AccessClaims.Expiry, r.rand)
	r.mu.Unlock()
	r.put(ctx, UserState{
		Name: name, Status: StatusBackoff, Failures: failures, Reason: err.Error(), Due: next,
		AccessExpiry: st.AccessClaims.Expiry, RefreshExpiry: st.RefreshExpiry,
	})
}

func (r *Refresher) setOperator(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err != nil && r.operator == nil:
		r.log.Error("refreshing stopped: fix the configuration; nobody is logged out", "err", err)
	case err == nil && r.operator != nil:
		r.log.Info("refreshing resumed")
	}
	r.operator = err
}

// put updates the in-memory schedule and the store.
func (r *Refresher) put(ctx context.Context, u UserState) {
	r.mu.Lock()
	r.users[u.Name] = &u
	r.mu.Unlock()
	r.save(ctx, u)
}

func (r *Refresher) save(ctx context.Context, u UserState) {
	if err := r.store.Put(ctx, u); err != nil {
		r.log.Error("save schedule", "user", u.Name, "err", err)
	}
}

// logFailure writes one line for a failed update.
func (r *Refresher) logFailure(name string, err error) {
	var merr *MalformedError
	switch {
	case err == nil, errors.Is(err, ErrNoTokens), errors.Is(err, ErrSessionEnded),
		errors.Is(err, context.Canceled), errors.As(err, &merr):
	default:
		r.log.Warn("refresh failed", "user", name, "err", err)
	}
}

// UserStatus is what tokenkeeper knows about one user, without tokens.
type UserStatus struct {
	UserState
	// Subject is the user's Keycloak id, when their tokens are known.
	Subject string
}

// Status returns the user's schedule state and Keycloak id.
func (r *Refresher) Status(ctx context.Context, name string) (UserStatus, error) {
	r.mu.Lock()
	u, ok := r.users[name]
	r.mu.Unlock()
	var s UserStatus
	if ok {
		s.UserState = *u
	}
	user, err := r.hub.User(ctx, name)
	if err != nil {
		return s, fmt.Errorf("read user: %w", err)
	}
	s.Name = name
	if st, err := ParseAuthState(user.AuthState); err == nil {
		s.Subject = st.AccessClaims.Subject
	}
	return s, nil
}
