package refresh

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenkeeper/tokenkeeper/store"
)

// intentStep is what to do about a user's intent to spend a refresh token,
// given the refresh token the hub holds now.
type intentStep int

const (
	// intentNone: no intent; refresh as usual.
	intentNone intentStep = iota
	// intentStale: the intent is for a token the hub no longer holds (its
	// tokens were written back, or the user logged in again); drop it.
	intentStale
	// intentRetry: the last grant's outcome is unknown and the realm's Max
	// Reuse allows spending the token again: do so at once.
	intentRetry
	// intentProbe: the outcome is unknown and spending again could exceed
	// Max Reuse, which makes Keycloak end the client's session: ask
	// Keycloak's introspection whether the token is still good instead.
	intentProbe
)

// afterIntent decides what an intent means. Its safety rule: a refresh
// token whose grants' outcomes are unknown is spent again only while the
// spends so far are within maxReuse (Keycloak accepts a token 1 + Max Reuse
// times).
func afterIntent(in store.Intent, ok bool, held store.Digest, maxReuse int) intentStep {
	switch {
	case !ok:
		return intentNone
	case in.Spent != held:
		return intentStale
	case in.Spends <= maxReuse:
		return intentRetry
	default:
		return intentProbe
	}
}

// errOutcomeUnknown is the reason recorded while a grant's outcome is
// unknown and cannot yet be settled.
var errOutcomeUnknown = errors.New("the answer to a refresh grant was lost; its outcome is unknown")

// unknownOutcome handles a grant whose answer never arrived: Keycloak may
// have spent the refresh token. Once per update (retry), within the realm's
// Max Reuse the token is spent again at once; beyond it introspection
// decides. Otherwise the user is retried with backoff: the intent stays, so
// the next update settles it the same way.
func (r *Refresher) unknownOutcome(ctx context.Context, name string, st AuthState, in store.Intent, grantErr error, retry bool) (Tokens, error) {
	r.log.Warn("refresh grant outcome unknown", "user", name, "spends", in.Spends, "max_reuse", r.opts.MaxReuse, "err", grantErr)
	if !retry || ctx.Err() != nil || r.work.isStopping() {
		r.backoff(ctx, name, st, fmt.Errorf("%w: %w", errOutcomeUnknown, grantErr))
		return r.current(st, grantErr)
	}
	if afterIntent(in, true, in.Spent, r.opts.MaxReuse) == intentRetry {
		return r.spend(ctx, name, st, in.Spends, false)
	}
	return r.probe(ctx, name, st)
}

// probe settles an unknown outcome that Max Reuse does not allow to retry:
// Keycloak's introspection says whether the refresh token is still good. If
// it is, the lost grant never took effect and the token is spent; if not, it
// did (or the session ended meanwhile), the tokens in the hub are dead, and
// the user's session is treated as ended. While introspection cannot answer,
// the user is retried with backoff and their current token served while
// valid.
func (r *Refresher) probe(ctx context.Context, name string, st AuthState) (Tokens, error) {
	if r.opts.Introspect == nil {
		err := fmt.Errorf("%w, and spending the token again would exceed the realm's refresh token max reuse", errOutcomeUnknown)
		r.backoff(ctx, name, st, err)
		return r.current(st, err)
	}
	active, err := r.introspect(ctx, st)
	switch {
	case err != nil:
		err = fmt.Errorf("%w; introspection failed: %w", errOutcomeUnknown, err)
		r.backoff(ctx, name, st, err)
		return r.current(st, err)
	case active:
		r.log.Info("introspection: the refresh token is still good; the lost grant did not take effect", "user", name)
		return r.spend(ctx, name, st, 0, false)
	}
	r.save(ctx, store.Change{DropIntent: name})
	return Tokens{}, r.markEnded(ctx, name, st, errors.New("a grant's answer was lost and Keycloak no longer accepts the refresh token"), false)
}

// introspect asks Keycloak's introspection about st's refresh token, with a
// deadline of its own (GrantTimeout) that Stop's cancellation also ends.
func (r *Refresher) introspect(ctx context.Context, st AuthState) (bool, error) {
	ctx, cancel := r.detached(ctx, r.opts.GrantTimeout)
	defer cancel()
	return r.opts.Introspect(ctx, st.Refresh)
}

// idleCheck is how often an idle user's session is checked with
// introspection, so that a session an admin ended without a back-channel
// logout is logged out within it rather than at the refresh token's expiry.
const idleCheck = 5 * time.Minute

// idleCheckDue reports whether name is an idle user (tokens not kept fresh)
// whose scheduled look has come, and introspection can check their session.
func (r *Refresher) idleCheckDue(name string) bool {
	if r.opts.Introspect == nil || r.kept(name) {
		return false
	}
	u, ok := r.user(name)
	return ok && !u.Due.After(r.now())
}

// errIdleEnded is the reason for an idle user whose session Keycloak no
// longer has, found by introspection.
var errIdleEnded = errors.New("keycloak no longer accepts the idle session's refresh token: the session was ended")

// checkIdle asks Keycloak's introspection whether an idle user's session
// still accepts their refresh token. Introspection spends nothing and leaves
// the session's idle timer alone, which a grant would not. A session no
// longer accepted is marked ended (an unexpected ending, which the guard
// counts); when Keycloak cannot answer, the next check is the next try. The
// caller holds the user's lock.
func (r *Refresher) checkIdle(ctx context.Context, name string, st AuthState) error {
	active, err := r.introspect(ctx, st)
	switch {
	case err != nil:
		r.log.Debug("idle check: introspection failed; next check later", "user", name, "err", err)
		return nil
	case active:
		return nil
	}
	return r.markEnded(ctx, name, st, errIdleEnded, false)
}
