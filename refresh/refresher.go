// Package refresh is the engine that keeps users' Keycloak tokens in
// JupyterHub's auth_state fresh: it schedules each user by their access
// token's expiry, has the refresh token spent (package keycloak speaks to
// Keycloak), writes the new tokens back in OAuthenticator's layout, acts on
// failed grants by their class (transient, terminal: the SSO session ended,
// operator: configuration), logs out users whose session ended, and serves
// users' access tokens and tokens derived from them (exchanged for another
// audience, or an external identity provider's) from caches a logout clears.
//
// Every change to a user's auth_state (write-back, journal replay, logout)
// runs holding that user's lock, and each is compare-and-set: it acts only
// while the hub still holds the refresh token the decision was made on.
package refresh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/keycloak"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// Errors Fresh returns besides ErrNoTokens and *MalformedError.
var (
	// ErrSessionEnded means Keycloak ended the user's SSO session.
	ErrSessionEnded = errors.New("the Keycloak session has ended: log in again")
	// ErrUnavailable means no fresh token can be had right now (Keycloak
	// unreachable or misconfigured) and the current one has expired.
	ErrUnavailable = errors.New("keycloak is unavailable and the current token has expired")
	// ErrUserGone means the hub no longer has the user: deleted, or renamed.
	ErrUserGone = errors.New("the hub has no such user (deleted or renamed)")
	// ErrHubAdmin means the user is a hub admin, whose tokens the hub
	// refreshes itself (see Options.RefreshAdmins), and the current one has
	// expired.
	ErrHubAdmin = errors.New("this user is a hub admin: the hub refreshes their tokens on their own hub requests, " +
		"and the current token has expired")
)

// Hub is the part of the JupyterHub API the refresher uses.
type Hub interface {
	Users(ctx context.Context, q hubclient.UserQuery) iter.Seq2[hubclient.User, error]
	User(ctx context.Context, name string) (hubclient.User, error)
	SetAuthState(ctx context.Context, name string, state json.RawMessage) error
}

// GrantFunc spends a refresh token and returns the new token set.
type GrantFunc func(ctx context.Context, refresh config.Secret) (*oauth2.Token, error)

// IntrospectFunc reports whether Keycloak would accept a refresh token now
// (its session alive, its reuse within the realm's limit), without spending
// it and without moving the session's idle timer.
type IntrospectFunc func(ctx context.Context, refresh config.Secret) (bool, error)

// Options tune a Refresher.
type Options struct {
	// Keep is config.KeepRunning or config.KeepAll.
	Keep string
	// Schedule decides when users are due.
	Schedule Schedule
	// Recheck is how long users without usable tokens wait before their
	// auth_state is read again.
	Recheck time.Duration
	// Concurrency bounds the users refreshed at once by a sweep.
	Concurrency int
	// HubRPS is the refresher's hub request budget per second (its share
	// of hubclient's rate limit: hubclient.RefresherRate), zero when
	// unlimited. Due users are refreshed soonest-expiring
	// first, users the budget could not otherwise reach in time are started
	// early, and health says when it cannot reach them all in time.
	HubRPS float64
	// SweepInterval is the time between sweeps, for the budget's plan.
	SweepInterval time.Duration
	// GrantTimeout bounds one user's read, grant and write-back, and,
	// separately, the grant itself, so that a slow hub read leaves the grant
	// its whole time.
	GrantTimeout time.Duration
	// MaxReuse is the realm's Refresh Token Max Reuse. After a grant whose
	// outcome is unknown (its answer lost, or tokenkeeper stopped while
	// waiting for it) the same refresh token is spent again at most this many
	// times; beyond that, Introspect decides.
	MaxReuse int
	// Introspect asks Keycloak whether spending a refresh token would now
	// succeed, without spending it. Nil: a user whose grant outcome is
	// unknown beyond MaxReuse waits for a new login or their token's expiry.
	Introspect IntrospectFunc
	// RefreshAdmins lets tokenkeeper spend hub admins' refresh tokens. The
	// hub lets only admin callers write an admin's auth_state, so this needs
	// tokenkeeper's service to hold the admin role; without it admins are
	// left to the hub's own refresh.
	RefreshAdmins bool
	// Actions are what a logout does besides clearing auth_state.
	Actions LogoutActions
	// Guard pauses logouts on mass failure.
	Guard Guard
	// Keys seal the write-back journal.
	Keys *Keyring
	// Exchange trades a user's access token for one narrowed to an
	// audience; Audiences are those Derived serves.
	Exchange  DeriveFunc
	Audiences []string
	// ProviderToken returns a user's token at an external identity
	// provider; Providers are the aliases Derived serves.
	ProviderToken DeriveFunc
	Providers     []string
	// ExcessScopes are the powerful hub scopes tokenkeeper's token holds
	// beyond what its settings need; health reports them.
	ExcessScopes []string
	// UserGone, when set, is called with the name of a user the hub no
	// longer has, so that the cached identities of their tokens go too.
	UserGone func(name string)
	// Metrics, when set, counts grants, derived tokens and logouts.
	Metrics *Metrics
	Now     func() time.Time
	Rand    *rand.Rand
	// KeycloakOffset, when set, is how far Keycloak's clock is known to be
	// ahead of Now from the start; unset, the refresher learns it from its
	// grants and allows unknownSkew either way until then.
	KeycloakOffset *time.Duration
	Logger         *slog.Logger
}

// Tokens is a user's current access token as handed out by fresh-token.
type Tokens struct {
	Access config.Secret
	Expiry time.Time
	Type   string
	// Issued is the access token's iat, zero when unknown.
	Issued time.Time
	// Session is Keycloak's sid of the user's session the token belongs to.
	Session string
}

// tokensOf returns st's access token as Tokens.
func tokensOf(st AuthState) Tokens {
	c := st.AccessClaims
	return Tokens{Access: st.Access, Expiry: c.Expiry, Type: "Bearer", Issued: c.IssuedAt, Session: st.Session}
}

// claims returns what needs looks at.
func (t Tokens) claims() Claims { return Claims{IssuedAt: t.Issued, Expiry: t.Expiry} }

// Refresher refreshes users' tokens; see the package documentation.
type Refresher struct {
	hub      Hub
	sessions SessionHub
	grant    GrantFunc
	store    *store.Store
	opts     Options
	log      *slog.Logger
	flight   singleflight.Group
	locks    userLocks
	kc       kcClock // Keycloak's clock, as the grants show it
	work     tracker
	halt     context.Context    // ends when Stop stops waiting: work in flight is cancelled
	abort    context.CancelFunc // ends halt
	stopOnce sync.Once
	catching chan struct{} // holds one token during a back-channel catch-up
	ends     logoutWatch   // logouts, for the servers' token-file keepers waiting on them (view.go)
	stopErr  error

	mu          sync.Mutex // guards the fields below
	users       map[string]*store.UserState
	cache       map[string]Tokens
	derived     map[string]map[Target]Tokens // by user: tokens made for users someone asked Derived
	epochs      map[string]uint64            // by user: how often their tokens were forgotten
	unsaved     map[string]store.Pending     // journal entries the store failed to take
	operator    error                        // set while refreshing is stopped for an operator problem
	probeAt     time.Time                    // while operator is set: when the next grant may probe
	probes      int
	hubErr      error                    // set while the hub cannot be listed
	guard       guardWindow              // counts unexpected session endings
	held        int                      // logouts the tripped guard holds back
	short       int                      // due users the hub budget cannot reach before expiry
	panicked    time.Time                // when a sweep last panicked
	unreachable time.Time                // since when every grant failed without Keycloak's answer (reach.go)
	capped      map[string]store.Digest  // refresh tokens whose grant did not move the refresh token's expiry
	probing     map[string]bool          // users the next sweep refreshes whatever their schedule: the guard's probes, users the budget brings forward
	moved       map[string]bool          // kept users whose hub activity moved since they were last read
	fences      map[string][]store.Fence // logouts decided and not yet carried out, by user
	noSID       map[string]bool          // users whose tokens carry no sid
	badNames    map[string]bool          // hub user names refused, logged once each
	misses      map[string]miss          // fresh-token answers with nothing to serve, by user (miss.go)
	rand        *rand.Rand
	seed        uint64 // the jitter of each user's retries (jitter)
}

// New returns a Refresher whose schedule is restored from st. hub and
// sessions are usually the same *hubclient.Client.
func New(ctx context.Context, hub Hub, sessions SessionHub, grant GrantFunc, st *store.Store, opts Options) (*Refresher, error) {
	states, err := st.Users(ctx)
	if err != nil {
		return nil, err
	}
	r := &Refresher{
		hub: hub, sessions: sessions, grant: grant, store: st, opts: opts, log: opts.Logger,
		users:    make(map[string]*store.UserState, len(states)),
		cache:    make(map[string]Tokens),
		derived:  make(map[string]map[Target]Tokens),
		epochs:   make(map[string]uint64),
		unsaved:  make(map[string]store.Pending),
		capped:   make(map[string]store.Digest),
		probing:  make(map[string]bool),
		moved:    make(map[string]bool),
		fences:   make(map[string][]store.Fence),
		noSID:    make(map[string]bool),
		badNames: make(map[string]bool),
		misses:   make(map[string]miss),
		catching: make(chan struct{}, 1),
		rand:     opts.Rand,
		seed:     opts.Rand.Uint64(),
	}
	r.halt, r.abort = context.WithCancel(context.Background())
	if off := opts.KeycloakOffset; off != nil {
		r.kc.offset.Store(int64(*off))
		r.kc.known.Store(true)
	}
	for _, s := range states {
		r.users[s.Name] = &s
	}
	g, err := st.Guard(ctx)
	if err != nil {
		return nil, err
	}
	fences, err := st.Fences(ctx)
	if err != nil {
		return nil, err
	}
	for _, f := range fences {
		r.fences[f.User] = append(r.fences[f.User], f)
	}
	r.guard.tripped = g.Tripped
	r.setHeld(g.Tripped)
	return r, nil
}

// abortWait is how long Stop waits for cancelled work to record what it
// knows: a grant's tokens in the journal, or its intent left as unknown.
const abortWait = 2 * time.Second

// Stop starts no new grant or logout from now on and waits, until ctx ends,
// for those in flight to finish and be journaled. If ctx ends first, the
// work in flight is cancelled and given abortWait to record what it knows: a
// grant cancelled while waiting for Keycloak's answer leaves its intent,
// which the next start settles as an unknown outcome. Only the first call
// waits; later calls return its result. Close the store after it.
func (r *Refresher) Stop(ctx context.Context) error {
	r.stopOnce.Do(func() { r.stopErr = r.stop(ctx) })
	return r.stopErr
}

func (r *Refresher) stop(ctx context.Context) error {
	err := r.work.stop(ctx)
	if err == nil {
		return nil
	}
	r.abort()
	wait, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortWait)
	defer cancel()
	if err := r.work.stop(wait); err != nil {
		return fmt.Errorf("stop: work still in flight after cancelling it: %w", err)
	}
	r.log.Warn("stopped: work in flight was cancelled; grants whose answer did not arrive are settled at the next start", "err", err)
	return nil
}

// Sweep lists the hub's users, forgets users no longer there, refreshes
// every user whose token is due, checks idle users whose refresh token has
// expired, and logs out those whose session ended. A sweep with nothing due
// costs the hub only the list pages and Keycloak nothing. Once ctx ends no
// further user is started.
func (r *Refresher) Sweep(ctx context.Context) (err error) {
	defer r.recoverSweep(&err)
	r.kc.apply()
	users, err := r.listUsers(ctx)
	r.mu.Lock()
	r.hubErr = err
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	due, ended := r.sync(ctx, users)
	due = r.budget(due)
	failed := r.refreshAll(ctx, due)
	r.log.Debug("sweep", "users", len(users), "due", len(due), "sessions_ended", len(failed), "awaiting_logout", len(ended))
	r.logoutEnded(ctx, append(ended, failed...))
	if err := r.store.Prune(ctx, r.now(), store.DefaultRetention); err != nil {
		r.log.Error("prune store", "err", err)
	}
	return ctx.Err()
}

// recoverSweep turns a panic in the sweep's own goroutine into an error,
// logged at error with its stack and shown in health for
// sweepPanicShown, instead of a sweep that silently did nothing.
func (r *Refresher) recoverSweep(err *error) {
	p := recover()
	if p == nil {
		return
	}
	r.log.Error("sweep panicked; the next sweep starts afresh", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	r.mu.Lock()
	r.panicked = r.now()
	r.mu.Unlock()
	*err = fmt.Errorf("sweep: panic: %v", p)
}

// refreshAll updates the due users, at most Concurrency at once, and
// returns those whose session ended.
func (r *Refresher) refreshAll(ctx context.Context, due []string) []string {
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
	var ended []string
	for i, err := range results {
		if errors.Is(err, ErrSessionEnded) {
			ended = append(ended, due[i])
		}
	}
	return ended
}

// Replay writes back every journaled token set left by a crash between a
// grant and its write-back, and settles every grant whose outcome a crash or
// stop left unknown (an intent without an outcome). It runs once at start,
// before the first sweep.
func (r *Refresher) Replay(ctx context.Context) error {
	pending, err := r.store.PendingUsers(ctx)
	if err != nil {
		return err
	}
	intents, err := r.store.IntentUsers(ctx)
	if err != nil {
		return err
	}
	for _, name := range slices.Compact(slices.Sorted(slices.Values(append(pending, intents...)))) {
		_, err := r.do(ctx, name, r.scheduled)
		r.logFailure(name, err)
	}
	return nil
}

// listed is what the hub's user list says of a user.
type listed struct {
	// kept: the user's tokens are kept fresh (keep=all, or a running server).
	kept bool
	// activity is the hub's last_activity, which a login moves.
	activity string
}

// listUsers lists every hub user, one request per page.
func (r *Refresher) listUsers(ctx context.Context) (map[string]listed, error) {
	users := map[string]listed{}
	for u, err := range r.hub.Users(ctx, hubclient.UserQuery{}) {
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		if err := hubclient.CheckName(u.Name); err != nil {
			r.refuseName(u.Name, err)
			continue
		}
		users[u.Name] = listed{kept: r.opts.Keep == config.KeepAll || u.Active(), activity: u.LastActivity}
	}
	return users, nil
}

// refuseName logs, once per name, a hub user whose name cannot be used as
// one; tokenkeeper leaves that user alone.
func (r *Refresher) refuseName(name string, err error) {
	r.mu.Lock()
	seen := r.badNames[name]
	r.badNames[name] = true
	r.mu.Unlock()
	if !seen {
		r.log.Error("hub user skipped: the name cannot be used", "err", err)
	}
}

// sync adds newly listed users (due at once), makes users whose server
// started or stopped, and idle users whose activity moved (they may have
// logged in again), due, notes kept users whose activity moved, forgets users the hub no
// longer has, and returns the users that are due: those to update, and
// those whose session ended and who wait for their logout.
func (r *Refresher) sync(ctx context.Context, users map[string]listed) (due, ended []string) {
	now := r.now()
	var gone []string
	var changed []store.UserState
	r.mu.Lock()
	for name, l := range users {
		u, ok := r.users[name]
		switch {
		case !ok:
			u = &store.UserState{Name: name, Due: now, Status: store.StatusNew, Kept: l.kept, Activity: l.activity}
			r.users[name] = u
			changed = append(changed, *u)
		case u.Activity != l.activity || u.Kept != l.kept:
			r.unmiss(name) // a login, or a server started or stopped
			switch {
			case pendingLogout(u) && !u.Due.After(now):
			case pendingLogout(u):
				// An ending waiting for its logout (or held by the guard):
				// the user may have logged in again, which ends the wait.
				u.Due = now
			case u.Kept == l.kept && u.Kept && u.Status == store.StatusFresh:
				// A kept user's activity moves with every hub request they
				// make, and a notebook asking for tokens makes many. Their
				// next refresh reads them anyway, so a possible new login
				// waits for it, unless a back-channel logout names a
				// session tokenkeeper has not seen (catchUp).
				r.moved[name] = true
			default:
				u.Due = now // a login, or a server started or stopped: read again
			}
			u.Activity, u.Kept = l.activity, l.kept
			changed = append(changed, *u)
		}
	}
	for name, u := range r.users {
		_, listedNow := users[name]
		switch {
		case !listedNow:
			gone = append(gone, name)
			r.drop(name)
		case len(r.fences[name]) > 0:
			due = append(due, name) // a logout recorded and not yet carried out
		case u.Due.After(now):
		case pendingLogout(u):
			ended = append(ended, name)
		default:
			due = append(due, name)
		}
	}
	r.mu.Unlock()
	// In name order, so that the same hub gives the same sweep: a seeded
	// simulation replays.
	slices.Sort(due)
	slices.Sort(ended)
	for _, u := range changed {
		r.save(ctx, store.Change{User: &u})
	}
	if err := r.store.Delete(ctx, gone...); err != nil {
		r.log.Error("forget users", "err", err)
	}
	for _, name := range gone {
		if r.opts.UserGone != nil {
			r.opts.UserGone(name)
		}
		r.log.Info("the hub no longer has this user (deleted or renamed); forgotten", "user", name)
	}
	return due, ended
}

// notFound reports whether the hub answered 404: it has no such user.
func notFound(err error) bool {
	var apiErr *hubclient.APIError
	return errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound
}

// drop forgets what memory holds of a user the hub no longer has: their
// schedule, flags, fences and cached tokens. The caller holds r.mu.
func (r *Refresher) drop(name string) {
	delete(r.users, name)
	delete(r.capped, name)
	delete(r.probing, name)
	delete(r.moved, name)
	delete(r.fences, name)
	delete(r.noSID, name)
	r.forget(name)
}

// userGone forgets a user the hub no longer has, at its first 404: their
// cached and derived tokens, schedule, journal entry, intent and fence, and
// (through UserGone) the cached identities of their tokens. One log line
// says so, the first time.
func (r *Refresher) userGone(ctx context.Context, name string, err error) error {
	r.mu.Lock()
	_, known := r.users[name]
	r.drop(name)
	r.mu.Unlock()
	if derr := r.store.Delete(ctx, name); derr != nil {
		r.log.Error("forget a user the hub no longer has", "user", name, "err", derr)
	}
	if r.opts.UserGone != nil {
		r.opts.UserGone(name)
	}
	if known {
		r.log.Info("the hub no longer has this user (deleted or renamed); forgotten", "user", name)
	}
	return fmt.Errorf("%w: %w", ErrUserGone, err)
}

// pendingLogout reports whether u's session ended and u waits to be
// logged out.
func pendingLogout(u *store.UserState) bool {
	return u.Status == store.StatusEnded && u.EndedOn != store.Digest{}
}

// kept reports whether name's tokens are kept fresh by the sweep; users
// never listed (asked for before the first sweep) are.
func (r *Refresher) kept(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	u, ok := r.users[name]
	return !ok || u.Kept
}

// Fresh returns the user's access token with at least minValid left (or as
// much as Keycloak's token lifetime allows), refreshing it first when needed.
// Concurrent calls for one user share one grant. While Keycloak cannot be
// reached the current token is returned as long as it is valid.
func (r *Refresher) Fresh(ctx context.Context, name string, minValid time.Duration) (Tokens, error) {
	if t, ok := r.cached(name, minValid); ok {
		return t, nil
	}
	if err := r.missed(name); err != nil {
		return Tokens{}, err
	}
	need := func(name string, st AuthState, now time.Time) bool {
		return needs(st.AccessClaims, now.Add(r.kc.early()), minValid)
	}
	r.mu.Lock()
	if _, ok := r.cache[name]; !ok {
		// From now on every update of name, under the user's lock, keeps
		// this entry current, and a logout removes it.
		r.cache[name] = Tokens{}
	}
	r.mu.Unlock()
	t, err := r.do(ctx, name, need)
	if err == nil && needs(t.claims(), r.servingNow(), minValid) {
		// Joined a sweep's flight that did not need a grant; ask once more.
		t, err = r.do(ctx, name, need)
	}
	r.logFailure(name, err)
	r.remember(name, err)
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
	if !ok || t.Expiry.IsZero() || needs(t.claims(), r.servingNow(), minValid) {
		return Tokens{}, false
	}
	return t, true
}

// due is when name's tokens st are due: by the schedule, or, when the last
// refresh no longer moved the refresh token's expiry (the session is at its
// SSO maximum, and refreshing on every sweep until then would gain nothing),
// by the access token alone and just after the refresh token expires, to
// log the user out; once the access token itself lives to that maximum,
// only when it ends.
func (r *Refresher) due(name string, st AuthState) time.Time {
	r.mu.Lock()
	capped := r.capped[name] == digest(st.Refresh.Reveal())
	r.mu.Unlock()
	if !capped {
		// Until a grant has shown Keycloak's clock, it may be ahead by
		// unknownSkew: refresh that much sooner.
		return r.opts.Schedule.Due(name, st.AccessClaims, st.RefreshExpiry).Add(-r.kc.unknown())
	}
	end := st.RefreshExpiry.Add(r.kc.margin())
	if !st.AccessClaims.Expiry.Before(st.RefreshExpiry) {
		// The access token already lives to the session's maximum: no grant
		// can give a longer one. Look again when the session ends: the grant
		// then finds it ended, an expected ending, logged out at once.
		return st.RefreshExpiry
	}
	due := r.opts.Schedule.Due(name, st.AccessClaims, time.Time{})
	if end.Before(due) {
		due = end
	}
	return due
}

// scheduled is the sweep's test: the tokens of a kept user have reached
// their due time. Idle users are never refreshed by the sweep: refreshing
// would keep their SSO session alive.
func (r *Refresher) scheduled(name string, st AuthState, now time.Time) bool {
	r.mu.Lock()
	probe := r.probing[name]
	r.mu.Unlock()
	return r.kept(name) && (probe || !now.Before(r.due(name, st)))
}

// dropProbe ends a request to refresh name whatever their schedule: the
// update that saw it has run.
func (r *Refresher) dropProbe(name string) {
	r.mu.Lock()
	delete(r.probing, name)
	r.mu.Unlock()
}

type needFunc func(name string, st AuthState, now time.Time) bool

// do runs update for name under the user's single flight. The work is
// detached from the caller's cancellation so that one impatient caller does
// not abort a grant others are waiting for; it is bounded by GrantTimeout
// and counted, so that Stop waits for it. No work starts once ctx has ended
// or Stop has begun.
func (r *Refresher) do(ctx context.Context, name string, need needFunc) (Tokens, error) {
	return r.inFlight(ctx, flightKey(name, Target{}), func(ctx context.Context) (Tokens, error) {
		return r.update(ctx, name, need)
	})
}

// inFlight runs work once for all callers of key at the same time, detached
// from their cancellation, bounded by GrantTimeout and counted for Stop.
func (r *Refresher) inFlight(ctx context.Context, key string, work func(context.Context) (Tokens, error)) (Tokens, error) {
	if err := ctx.Err(); err != nil {
		return Tokens{}, err
	}
	ch := r.flight.DoChan(key, func() (any, error) {
		if !r.work.start() {
			return Tokens{}, ErrStopping
		}
		defer r.work.done()
		ctx, cancel := r.detached(ctx, r.opts.GrantTimeout)
		defer cancel()
		return work(ctx)
	})
	select {
	case res := <-ch:
		t, _ := res.Val.(Tokens)
		return t, res.Err
	case <-ctx.Done():
		return Tokens{}, ctx.Err()
	}
}

// detached returns a context that outlives ctx's cancellation (one caller
// giving up does not abort work others wait for), ends after d, and ends
// when Stop gives up waiting.
func (r *Refresher) detached(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
	stop := context.AfterFunc(r.halt, cancel)
	return ctx, func() { stop(); cancel() }
}

// update reads the user's auth_state and, holding the user's lock, performs
// the steps decideUpdate chooses from what it observed (finishing a
// journaled write-back, carrying out a recorded logout, settling an unknown
// outcome, refreshing when need says so, writing back and rescheduling),
// observing again after each step that does not end the update.
func (r *Refresher) update(ctx context.Context, name string, need needFunc) (Tokens, error) {
	unlock, err := r.locks.lock(ctx, name)
	if err != nil {
		return Tokens{}, err
	}
	defer unlock()
	defer r.dropProbe(name)
	u, err := r.hub.User(ctx, name)
	if err != nil && notFound(err) {
		return Tokens{}, r.userGone(ctx, name, err)
	}
	if err != nil {
		return Tokens{}, r.unreadable(ctx, name, err)
	}
	v, err := r.observe(ctx, name, u.Admin, u.AuthState, need)
	if err != nil {
		return Tokens{}, err
	}
	for range maxSteps {
		t, next, err := r.perform(ctx, name, v, decideUpdate(v), need)
		if next == nil {
			return t, err
		}
		v = *next
	}
	return Tokens{}, fmt.Errorf("update of %q did not settle in %d steps", name, maxSteps)
}

// maxSteps bounds the steps of one update: each step that decides again
// removes what chose it (a journal entry, a fence, an intent, a due idle
// check), so four are the most an update can take.
const maxSteps = 8

// observe builds the view of name's update from the hub's answer (admin,
// state), the journal, the store's intent and the refresher's own state.
func (r *Refresher) observe(ctx context.Context, name string, admin bool, state json.RawMessage, need needFunc) (updateView, error) {
	v := updateView{Admin: admin, RefreshAdmins: r.opts.RefreshAdmins, MaxReuse: r.opts.MaxReuse}
	p, ok, err := r.pending(ctx, name)
	if err != nil {
		return v, err
	}
	if ok {
		j := &journalView{Spent: p.Spent}
		j.State, j.OpenErr = r.opts.Keys.Open(p)
		v.Journal = j
	}
	v.Intent, v.HasIntent, v.IntentErr = r.store.Intent(ctx, name)
	return r.observeState(name, v, state, need), nil
}

// observeState completes v for state, the auth_state the hub holds.
func (r *Refresher) observeState(name string, v updateView, state json.RawMessage, need needFunc) updateView {
	v.Now, v.Margin = r.now(), r.kc.margin()
	v.St, v.ParseErr = ParseAuthState(state)
	if v.ParseErr == nil {
		r.kc.read(v.St.AccessClaims.IssuedAt, r.opts.Now())
	}
	_, v.Fenced = r.fenceOf(name)
	_, v.FenceMatches = r.fenceFor(name, v.St)
	u, ok := r.user(name)
	v.EndedOnHeld = ok && pendingLogout(&u) && u.EndedOn == v.held()
	v.Backoff = r.backingOff(name)
	v.IdleDue = r.idleCheckDue(name)
	v.Stopping = r.work.isStopping()
	v.Held = r.operatorHold()
	if v.ParseErr == nil {
		v.Need = need(name, v.St, v.Now)
	}
	return v
}

// perform carries out step of name's update, observed as v. It returns the
// view to decide on again, or nil when the update ends with t and err.
func (r *Refresher) perform(ctx context.Context, name string, v updateView, step updateStep, need needFunc) (Tokens, *updateView, error) {
	switch step {
	case stepDropJournal:
		if v.Journal.OpenErr != nil {
			r.log.Error("dropped a journal entry that no state key opens; using the hub's auth_state", "user", name, "err", v.Journal.OpenErr)
		} else {
			r.log.Info("dropped a pending write-back: auth_state changed since", "user", name)
		}
		if err := r.dropPending(ctx, name); err != nil {
			return Tokens{}, nil, err
		}
		v.Journal = nil
		return Tokens{}, &v, nil
	case stepReplay:
		if err := r.replay(ctx, name, v.Journal.State); err != nil {
			return Tokens{}, nil, err
		}
		next := r.observeState(name, v, v.Journal.State, need)
		next.Journal = nil
		return Tokens{}, &next, nil
	case stepFinishLogout:
		f, _ := r.fenceOf(name)
		return Tokens{}, nil, errors.Join(ErrNoTokens, r.finishLogout(ctx, name, f.SID, f.Sub, f.Reason))
	case stepUnusable:
		r.dropFence(ctx, name) // nothing left to log out
		return Tokens{}, nil, r.unusable(ctx, name, v.ParseErr)
	case stepDropFence, stepAdminFenced, stepLogout:
		t, done, err := r.performFence(ctx, name, v.St, step)
		if !done {
			v.Fenced, v.FenceMatches = false, false
			return t, &v, err
		}
		return t, nil, err
	case stepHubAdmin:
		t, err := r.hubAdmin(ctx, name, v.St)
		return t, nil, err
	case stepExpired:
		return Tokens{}, nil, r.markEnded(ctx, name, v.St, errRefreshExpired, true)
	case stepEndedPending:
		// A grant with these very tokens found the session ended; the logout
		// is pending. Its access token is not served meanwhile.
		u, _ := r.user(name)
		return Tokens{}, nil, fmt.Errorf("%w (%s)", ErrSessionEnded, u.Reason)
	}
	return r.performSpend(ctx, name, v, step)
}

// performSpend carries out the steps about spending the refresh token.
func (r *Refresher) performSpend(ctx context.Context, name string, v updateView, step updateStep) (Tokens, *updateView, error) {
	var t Tokens
	var err error
	switch step {
	case stepIntentUnread:
		t, err = r.current(v.St, fmt.Errorf("read intent: %w", v.IntentErr))
	case stepDropIntent:
		r.save(ctx, store.Change{DropIntent: name})
		v.HasIntent = false
		return Tokens{}, &v, nil
	case stepWaitIntent, stepBackingOff:
		t, err = r.current(v.St, v.Backoff)
	case stepRetrySpend:
		r.log.Info("spending a refresh token again after a grant whose outcome is unknown", "user", name, "spends", v.Intent.Spends)
		t, err = r.spend(ctx, name, v.St, v.Intent.Spends, false)
	case stepProbe:
		t, err = r.probe(ctx, name, v.St)
	case stepIdleCheck:
		if err := r.checkIdle(ctx, name, v.St); err != nil {
			return Tokens{}, nil, err
		}
		v.IdleDue = false
		return Tokens{}, &v, nil
	case stepSettle:
		t = r.settle(ctx, name, v.St, "", "")
		r.log.Debug("not due", "user", name, "kept", r.kept(name), "access_expires_at", t.Expiry.UTC().Format(time.RFC3339))
	case stepStopping:
		t, err = r.current(v.St, ErrStopping)
	case stepHeld:
		r.holdForOperator(ctx, name, v.St, v.Held)
		t, err = r.current(v.St, v.Held)
	case stepGrant:
		r.takeOperatorProbe()
		t, err = r.spend(ctx, name, v.St, 0, true)
	default:
		err = fmt.Errorf("update of %q: no step %d", name, step)
	}
	return t, nil, err
}

// spend makes the refresh grant and handles its answer. Before the grant
// is sent, the intent to spend the token is made durable (with prior, the
// grants already sent with it whose outcome is unknown), so that a crash or
// stop while waiting for the answer leaves a known unknown. The grant has
// its own deadline. retry allows one more grant in this update when the
// outcome is unknown.
func (r *Refresher) spend(ctx context.Context, name string, st AuthState, prior int, retry bool) (Tokens, error) {
	in := store.Intent{User: name, Spent: digest(st.Refresh.Reveal()), Spends: prior + 1, Created: r.now()}
	if err := r.store.Apply(context.WithoutCancel(ctx), store.Change{Intent: &in}); err != nil {
		err = fmt.Errorf("no grant: its intent could not be recorded: %w", err)
		r.backoff(ctx, name, st, err)
		return r.current(st, err)
	}
	r.mu.Lock()
	r.guard.attempt(r.now())
	r.mu.Unlock()
	start, sent := time.Now(), r.opts.Now()
	gctx, cancel := r.detached(ctx, r.opts.GrantTimeout)
	tok, err := r.grant(gctx, st.Refresh)
	cancel()
	r.noteKeycloak(err)
	if err != nil {
		class := keycloak.Classify(err)
		r.opts.Metrics.grant(class.String(), time.Since(start))
		if class == keycloak.Unknown {
			return r.unknownOutcome(ctx, name, st, in, err, retry)
		}
		if class == keycloak.Terminal {
			r.setOperator(nil) // Keycloak judged the grant, so it accepted tokenkeeper's client
		}
		r.save(ctx, store.Change{DropIntent: name})
		return r.grantFailed(ctx, name, st, err)
	}
	r.opts.Metrics.grant("success", time.Since(start))
	r.setOperator(nil)
	return r.writeBack(ctx, name, st, tok, sent)
}

// backingOff returns why name is backing off, if it is: a caller asking
// again does not cut the backoff short. Keycloak (or the hub) failed this
// user's last attempt, and is asked again at the user's due time.
func (r *Refresher) backingOff(name string) error {
	u, ok := r.user(name)
	if !ok || u.Status != store.StatusBackoff || !u.Due.After(r.now()) {
		return nil
	}
	return fmt.Errorf("retrying at %s: %s", u.Due.UTC().Format(time.RFC3339), u.Reason)
}

// current returns st's access token while it is valid, else err.
func (r *Refresher) current(st AuthState, err error) (Tokens, error) {
	if st.AccessClaims.Expiry.After(r.servingNow()) {
		return tokensOf(st), nil
	}
	return Tokens{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
}
