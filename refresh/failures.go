package refresh

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tokenkeeper/tokenkeeper/keycloak"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// grantFailed handles a failed grant according to its class.
func (r *Refresher) grantFailed(ctx context.Context, name string, st AuthState, err error) (Tokens, error) {
	switch keycloak.Classify(err) {
	case keycloak.Terminal:
		return r.terminal(ctx, name, st, err)
	case keycloak.Operator:
		r.setOperator(err)
		r.backoff(ctx, name, st, err)
	default:
		r.backoff(ctx, name, st, err)
	}
	return r.current(st, err)
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
		return r.settle(ctx, name, now, "", ""), nil
	}
	if t, done, err := r.carryOutFence(ctx, name, st, false); done {
		return t, err // Keycloak's back-channel logout told why the grant failed
	}
	return Tokens{}, r.markEnded(ctx, name, st, grantErr, nearExpiry(st, r.now(), r.kc.margin()))
}

// expirySkew allows for what is left of the clock difference between
// tokenkeeper and Keycloak once the grants have shown it (kcClock).
const expirySkew = 10 * time.Second

// errRefreshExpired is the reason for a session whose refresh token expired
// before anyone tried it: its SSO idle or maximum time passed.
var errRefreshExpired = errors.New("the refresh token expired: the SSO session reached its idle or maximum time")

// expired reports whether st's refresh token has surely expired by its own
// exp, which is when Keycloak's SSO idle or maximum time ends the session:
// later than exp by the clock skew allowed, so that a session a grant could
// still keep alive is never given up early.
func expired(st AuthState, now time.Time, margin time.Duration) bool {
	return !st.RefreshExpiry.IsZero() && !now.Before(st.RefreshExpiry.Add(margin))
}

// nearExpiry reports whether a grant refused at now was refused because the
// refresh token reached its exp, allowing for the clock skew either way: an
// expected ending, not one for the mass-failure guard.
func nearExpiry(st AuthState, now time.Time, margin time.Duration) bool {
	return !st.RefreshExpiry.IsZero() && !now.Before(st.RefreshExpiry.Add(-margin))
}

// markEnded records that name's session ended, with the refresh token the
// decision was made on, so that the logout goes ahead only while the hub
// still holds that token. An ending the refresh token's expiry predicted is
// expected; any other counts toward the mass-failure guard.
func (r *Refresher) markEnded(ctx context.Context, name string, st AuthState, reason error, expected bool) error {
	now := r.now()
	due := now // an expected ending is logged out by the next sweep
	r.mu.Lock()
	r.forget(name)
	var probes []*store.UserState
	if !expected {
		r.guard.fail(now)
		// An unexpected one waits until the failed access token has
		// expired, so that the guard can see a realm-wide loss first.
		if exp := st.AccessClaims.Expiry; exp.After(due) {
			due = exp
		}
		probes = r.probeOthers(name, now)
	}
	r.mu.Unlock()
	for _, p := range probes {
		r.save(ctx, store.Change{User: p})
	}
	r.put(ctx, store.UserState{Name: name, Status: store.StatusEnded, Reason: reason.Error(), Due: due,
		EndedOn: digest(st.Refresh.Reveal()), EndExpected: expected,
		AccessExpiry: st.AccessClaims.Expiry, RefreshExpiry: st.RefreshExpiry})
	r.log.Warn("keycloak session ended", "user", name, "reason", reason.Error(), "expected", expected)
	return fmt.Errorf("%w (%w)", ErrSessionEnded, reason)
}

// probeOthers makes up to Guard.Min other kept users with fresh tokens due
// at once, so that the next sweep refreshes them early: if Keycloak lost
// every session, their grants fail too, and the guard sees the loss within
// a sweep instead of over a token's lifetime. If not, they were refreshed a
// little early. The caller holds r.mu; it returns the states to save.
func (r *Refresher) probeOthers(name string, now time.Time) []*store.UserState {
	var out []*store.UserState
	for _, other := range slices.Sorted(maps.Keys(r.users)) { // name order: a seeded simulation replays
		u := r.users[other]
		if len(out) >= r.opts.Guard.Min {
			break
		}
		if other == name || !u.Kept || u.Status != store.StatusFresh || !u.Due.After(now) {
			continue
		}
		c := *u
		c.Due = now
		r.users[other] = &c
		r.probing[other] = true
		out = append(out, &c)
	}
	return out
}

// backoff schedules a retry after a failed grant, exponential in the number
// of consecutive failures and never past the token's expiry.
func (r *Refresher) backoff(ctx context.Context, name string, st AuthState, err error) {
	now := r.now()
	r.mu.Lock()
	failures := 1
	if prev := r.users[name]; prev != nil && prev.Status == store.StatusBackoff {
		failures = prev.Failures + 1
	}
	next := Retry(now, failures, retryBy(st, now, r.opts.Schedule.Margin), r.jitter(name, failures))
	r.mu.Unlock()
	r.log.Debug("backed off", "user", name, "failures", failures, "next", next.UTC().Format(time.RFC3339), "err", err)
	r.put(ctx, store.UserState{
		Name: name, Status: store.StatusBackoff, Failures: failures, Reason: err.Error(), Due: next,
		AccessExpiry: st.AccessClaims.Expiry, RefreshExpiry: st.RefreshExpiry,
	})
}

// jitter is the randomness of one retry of name: drawn from the refresher's
// seed, the user and the attempt, so that users spread apart however many
// back off at the same moment, and in whatever order they do.
func (r *Refresher) jitter(name string, attempt int) *rand.Rand {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s/%d", name, attempt)
	return rand.New(rand.NewPCG(r.seed, h.Sum64()))
}

// retryBy is the last moment a retry for st helps: before its access token
// expires, while it is still served, and in any case before its refresh
// token does (less the clock skew allowed and lead, the time a retry takes
// to be picked up by a sweep and answered: the schedule's margin), after
// which no grant can keep the session. A grant whose answer was lost may
// have moved the session's idle time on; only a grant with the old token,
// within Max Reuse and before that token's own expiry, recovers it.
func retryBy(st AuthState, now time.Time, lead time.Duration) time.Time {
	by := st.AccessClaims.Expiry
	if st.RefreshExpiry.IsZero() {
		return by
	}
	if last := st.RefreshExpiry.Add(-expirySkew - lead); !by.After(now) || last.Before(by) {
		by = last
	}
	return by
}

// ErrOperatorHold means refreshing is stopped for a configuration problem
// and this user's grant was not attempted.
var ErrOperatorHold = errors.New("refreshing is stopped until the configuration problem is fixed")

// operatorHold returns ErrOperatorHold while an operator problem stops
// refreshing, except for one probing grant at a time, spaced by the backoff
// (takeOperatorProbe).
// So a wrong client secret costs Keycloak one grant per backoff step, not
// one per due user.
func (r *Refresher) operatorHold() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.operator == nil || !r.now().Before(r.probeAt) {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrOperatorHold, r.operator)
}

// holdForOperator records a due user whose grant an operator problem holds
// back: the problem is not theirs, so their own backoff does not grow; they
// are due again when the next probe may go, and before their tokens' last
// chance (retryBy).
func (r *Refresher) holdForOperator(ctx context.Context, name string, st AuthState, err error) {
	now := r.now()
	r.mu.Lock()
	due, failures := r.probeAt, 0
	if prev := r.users[name]; prev != nil && prev.Status == store.StatusBackoff {
		failures = prev.Failures
	}
	r.mu.Unlock()
	if last := retryBy(st, now, r.opts.Schedule.Margin).Add(-backoffBase); last.After(now) && due.After(last) {
		due = last
	}
	if due.Before(now) {
		due = now
	}
	r.put(ctx, store.UserState{Name: name, Status: store.StatusBackoff, Failures: failures, Reason: err.Error(), Due: due,
		AccessExpiry: st.AccessClaims.Expiry, RefreshExpiry: st.RefreshExpiry})
}

// takeOperatorProbe counts a grant made while an operator problem stands:
// it probes whether the problem is fixed, and the next probe waits longer.
func (r *Refresher) takeOperatorProbe() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.operator == nil {
		return
	}
	now := r.now()
	r.probes++
	r.probeAt = Retry(now, r.probes, now.Add(backoffCap*2), r.rand)
}

func (r *Refresher) setOperator(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err != nil && r.operator == nil:
		r.log.Error("refreshing stopped: fix the configuration; nobody is logged out", "err", err)
	case err == nil && r.operator != nil:
		r.log.Info("refreshing resumed")
		r.probes, r.probeAt = 0, r.now()
		now := r.now()
		for _, u := range r.users { // those the problem held back go at the next sweep
			if u.Status == store.StatusBackoff && u.Due.After(now) {
				u.Due = now
			}
		}
	}
	r.operator = err
	if err != nil && r.probes == 0 {
		r.probes = 1
		r.probeAt = Retry(r.now(), 1, r.now().Add(backoffCap*2), r.rand)
	}
}

// logFailure writes one line for a failed update.
func (r *Refresher) logFailure(name string, err error) {
	var merr *MalformedError
	switch {
	case err == nil, errors.Is(err, ErrNoTokens), errors.Is(err, ErrSessionEnded), errors.Is(err, ErrStopping),
		errors.Is(err, ErrOperatorHold), errors.Is(err, ErrHubAdmin), errors.Is(err, ErrUserGone),
		errors.Is(err, context.Canceled), errors.As(err, &merr):
	default:
		r.log.Warn("refresh failed", "user", name, "err", err)
	}
}

// UserStatus is what tokenkeeper knows about one user, without tokens.
type UserStatus struct {
	store.UserState
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
