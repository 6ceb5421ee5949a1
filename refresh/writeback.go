package refresh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// writeBack journals the new token set, writes it to the hub, and then
// drops the journal entry. If the hub write fails the entry stays, the new
// token is served from memory, and the write is retried at the user's next
// update. sent is when the grant that returned tok was sent (Options.Now).
// The caller holds the user's lock.
func (r *Refresher) writeBack(ctx context.Context, name string, st AuthState, tok *oauth2.Token, sent time.Time) (Tokens, error) {
	state, err := st.Apply(tok)
	if err != nil {
		return Tokens{}, fmt.Errorf("encode auth_state: %w", err)
	}
	next, err := ParseAuthState(state)
	if err != nil {
		return Tokens{}, fmt.Errorf("keycloak returned unusable tokens: %w", err)
	}
	r.kc.issued(next.AccessClaims.IssuedAt, sent, r.opts.Now())
	p := store.Pending{User: name, Spent: digest(st.Refresh.Reveal()), Created: r.now().Truncate(time.Millisecond)}
	p.Sealed = r.opts.Keys.Seal(p, state)
	// The tokens are journaled even when the update's time is up or Stop
	// cancelled it: the refresh token they replace is spent.
	if err := r.store.Apply(context.WithoutCancel(ctx), store.Change{Pending: &p, DropIntent: name}); err != nil {
		r.log.Error("journal write failed; keeping the new tokens in memory until the hub has them", "user", name, "err", err)
		r.mu.Lock()
		r.unsaved[name] = p
		r.mu.Unlock()
	}
	w := r.observeWrite(ctx, name, st)
	switch decideWrite(w) {
	case writeLater:
		return r.writeFailed(ctx, name, next, fmt.Errorf("re-read auth_state before the write-back: %w", w.ReadErr))
	case writeAdopt:
		return r.adopt(ctx, name, w)
	case writeFence:
		// A back-channel logout arrived during the grant: its tokens are
		// not written back, and the logout is carried out now.
		r.log.Info("not written back: the session was logged out during the grant", "user", name)
		if err := r.dropPending(ctx, name); err != nil {
			r.log.Error("journal cleanup failed", "user", name, "err", err)
		}
		t, _, err := r.carryOutFence(ctx, name, st, false)
		return t, err
	}
	if err := r.hub.SetAuthState(ctx, name, state); err != nil {
		return r.writeFailed(ctx, name, next, err)
	}
	r.mu.Lock()
	delete(r.capped, name)
	if atSessionMax(st, next) {
		r.capped[name] = digest(next.Refresh.Reveal())
	}
	r.mu.Unlock()
	t := r.settle(ctx, name, next, "", name)
	r.log.Info("refreshed", "user", name, "expires_at", t.Expiry.UTC().Format(time.RFC3339))
	return t, nil
}

// atSessionMax reports whether a refresh from st to next no longer moved the
// refresh token's expiry although time passed: the session is at its SSO
// maximum. A refresh made seconds after the last one moves it by those
// seconds only, which says nothing.
func atSessionMax(st, next AuthState) bool {
	if st.RefreshExpiry.IsZero() {
		return false
	}
	passed := next.AccessClaims.IssuedAt.Sub(st.AccessClaims.IssuedAt)
	return passed >= 4*time.Second && next.RefreshExpiry.Sub(st.RefreshExpiry).Abs() <= passed/4
}

// observeWrite re-reads the user's auth_state before the write-back of the
// tokens a grant with spent's refresh token returned (compare-and-set), and
// whether a logout of spent's session was recorded meanwhile. The caller
// holds the user's lock.
func (r *Refresher) observeWrite(ctx context.Context, name string, spent AuthState) writeView {
	w := writeView{Spent: spent}
	u, err := r.hub.User(ctx, name)
	if err != nil {
		w.ReadErr = err
		return w
	}
	w.Now, w.NowErr = ParseAuthState(u.AuthState)
	_, w.Fenced = r.fenceFor(name, spent)
	return w
}

// adopt handles a write-back whose user's auth_state changed during the
// grant: the user logged in again (or was logged out) meanwhile, and what
// the hub holds wins: the journal entry is dropped and the hub's tokens are
// adopted.
func (r *Refresher) adopt(ctx context.Context, name string, w writeView) (Tokens, error) {
	r.log.Info("not written back: auth_state changed during the grant", "user", name)
	if err := r.dropPending(ctx, name); err != nil {
		r.log.Error("journal cleanup failed", "user", name, "err", err)
	}
	if w.NowErr != nil {
		return Tokens{}, r.unusable(ctx, name, w.NowErr)
	}
	return r.settle(ctx, name, w.Now, "", ""), nil
}

// writeFailed handles a refused or failed write-back of next, whose tokens
// are journaled: a refusal (4xx) makes the user stuck until an admin acts or
// the user logs in again; anything else is retried soon.
func (r *Refresher) writeFailed(ctx context.Context, name string, next AuthState, err error) (Tokens, error) {
	t := tokensOf(next)
	r.cacheIfAsked(name, t)
	u := store.UserState{Name: name, Status: store.StatusBackoff, Failures: 1, Reason: "write-back pending: " + err.Error(),
		Due: r.now().Add(backoffBase), AccessExpiry: t.Expiry, RefreshExpiry: next.RefreshExpiry}
	if refused(err) {
		r.stuck(ctx, name, err)
		return t, nil
	}
	r.log.Warn("write-back failed; will retry", "user", name, "err", err)
	r.put(ctx, u)
	return t, nil
}

// refused reports whether the hub refused a write for good (a 4xx other
// than 429), as it does for a hub admin's auth_state.
func refused(err error) bool {
	var apiErr *hubclient.APIError
	return errors.As(err, &apiErr) && apiErr.Status >= 400 && apiErr.Status < 500 && apiErr.Status != http.StatusTooManyRequests
}

// stuck records a user whose journaled tokens the hub refuses to store.
// Health reports stuck users so that an admin learns of them while the
// session lives; the entry is retried after Recheck.
func (r *Refresher) stuck(ctx context.Context, name string, err error) {
	r.mu.Lock()
	prev := r.users[name]
	r.mu.Unlock()
	if prev == nil || prev.Status != store.StatusStuck {
		r.log.Error("the hub refuses to store this user's new tokens; they are kept in the journal", "user", name, "err", err)
	}
	u := store.UserState{Name: name, Status: store.StatusStuck, Reason: "the hub refused the write-back: " + err.Error(),
		Due: r.now().Add(r.opts.Recheck)}
	if prev != nil {
		u.Failures = prev.Failures + 1
		u.AccessExpiry, u.RefreshExpiry = prev.AccessExpiry, prev.RefreshExpiry
	}
	r.put(ctx, u)
}

// replay finishes a journaled write-back: the hub still holds the refresh
// token its grant spent (decideUpdate checked), so its tokens are written,
// and the entry dropped.
func (r *Refresher) replay(ctx context.Context, name string, state json.RawMessage) error {
	if err := r.hub.SetAuthState(ctx, name, state); err != nil {
		if refused(err) {
			r.stuck(ctx, name, err)
		}
		return fmt.Errorf("replay write-back: %w", err)
	}
	r.log.Info("replayed pending write-back", "user", name)
	return r.dropPending(ctx, name)
}

// pending returns the user's journal entry, from the store or, when the
// store failed to take it, from memory.
func (r *Refresher) pending(ctx context.Context, name string) (store.Pending, bool, error) {
	r.mu.Lock()
	p, ok := r.unsaved[name]
	r.mu.Unlock()
	if ok {
		return p, true, nil
	}
	return r.store.Pending(ctx, name)
}

func (r *Refresher) dropPending(ctx context.Context, name string) error {
	r.mu.Lock()
	delete(r.unsaved, name)
	r.mu.Unlock()
	return r.store.Apply(context.WithoutCancel(ctx), store.Change{DropPending: name})
}

// settle schedules the user's next refresh from st, updates their cached
// token, records their session and, when drop names them, drops their
// journal entry, all in one store transaction. Only users someone has asked
// a token for are cached, so memory for users nobody asks about is the
// schedule alone.
func (r *Refresher) settle(ctx context.Context, name string, st AuthState, reason, drop string) Tokens {
	t := tokensOf(st)
	u := store.UserState{
		Name: name, Status: store.StatusFresh, Reason: reason,
		Due:           r.due(name, st),
		AccessExpiry:  st.AccessClaims.Expiry,
		RefreshExpiry: st.RefreshExpiry,
		Issued:        st.AccessClaims.IssuedAt,
	}
	if !r.kept(name) && !st.RefreshExpiry.IsZero() {
		// Idle: not refreshed, only looked at again once the session's
		// idle time is over, when the hub shows activity, or, with
		// introspection, within idleCheck (checkIdle).
		u.Due = st.RefreshExpiry.Add(r.kc.margin())
		if check := r.now().Add(idleCheck); r.opts.Introspect != nil && check.Before(u.Due) {
			u.Due = check
		}
	}
	r.mu.Lock()
	r.guard.lifetime(st.AccessClaims.Expiry.Sub(st.AccessClaims.IssuedAt))
	r.unmiss(name)
	r.mu.Unlock()
	r.cacheIfAsked(name, t)
	if drop != "" {
		r.mu.Lock()
		delete(r.unsaved, drop)
		r.mu.Unlock()
	}
	u = r.setUser(u)
	r.noteSession(name, st)
	r.save(ctx, store.Change{User: &u, DropPending: drop,
		Session: &store.Session{SID: st.Session, Sub: st.Subject, Name: name, Updated: r.now()}})
	return t
}

func (r *Refresher) cacheIfAsked(name string, t Tokens) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cache[name]; ok {
		r.cache[name] = t
	}
}

// hubAdmin records a hub admin, whose tokens the hub refreshes, and returns
// their current token while it is valid. Their refresh token is never spent:
// the hub would refuse the write-back.
func (r *Refresher) hubAdmin(ctx context.Context, name string, st AuthState) (Tokens, error) {
	r.mu.Lock()
	prev := r.users[name]
	r.mu.Unlock()
	if prev == nil || prev.Status != store.StatusAdmin {
		r.log.Info("hub admin: the hub refreshes this user's tokens", "user", name)
	} else {
		r.log.Debug("skipped: hub admin", "user", name)
	}
	r.put(ctx, store.UserState{Name: name, Status: store.StatusAdmin, Reason: "hub admin",
		Due: r.now().Add(r.opts.Recheck), AccessExpiry: st.AccessClaims.Expiry, RefreshExpiry: st.RefreshExpiry})
	return r.current(st, ErrHubAdmin)
}

// unreadable records a failed read of the user.
func (r *Refresher) unreadable(ctx context.Context, name string, err error) error {
	r.mu.Lock()
	prev := r.users[name]
	r.mu.Unlock()
	if prev != nil && (prev.Status == store.StatusStuck || prev.Status == store.StatusEnded) {
		return fmt.Errorf("read auth_state: %w", err) // keep what it says; retried at the next sweep
	}
	r.reschedule(ctx, name, store.StatusNew, "hub: "+err.Error())
	return fmt.Errorf("read auth_state: %w", err)
}

// unusable records a user whose auth_state has no usable tokens.
func (r *Refresher) unusable(ctx context.Context, name string, err error) error {
	status := store.StatusEmpty
	var merr *MalformedError
	if errors.As(err, &merr) {
		status = store.StatusMalformed
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
func (r *Refresher) reschedule(ctx context.Context, name string, status store.Status, reason string) {
	r.mu.Lock()
	r.forget(name)
	prev := r.users[name]
	r.mu.Unlock()
	u := store.UserState{Name: name, Status: status, Reason: reason, Due: r.now().Add(r.opts.Recheck)}
	if prev != nil {
		u.AccessExpiry, u.RefreshExpiry = prev.AccessExpiry, prev.RefreshExpiry
	}
	r.put(ctx, u)
}

// put updates the in-memory schedule and the store.
func (r *Refresher) put(ctx context.Context, u store.UserState) {
	u = r.setUser(u)
	r.save(ctx, store.Change{User: &u})
}

// setUser updates the in-memory schedule and returns u as stored: what the
// hub's user list said of the user (Kept, Activity) is carried over, since
// only sync changes it, and so is the last refresh (Issued) unless u has
// newer tokens.
func (r *Refresher) setUser(u store.UserState) store.UserState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.setUserLocked(u)
}

// setUserLocked is setUser for a caller holding r.mu.
func (r *Refresher) setUserLocked(u store.UserState) store.UserState {
	u.Kept, u.Activity = true, ""
	if prev := r.users[u.Name]; prev != nil {
		u.Kept, u.Activity = prev.Kept, prev.Activity
		if u.Issued.IsZero() {
			u.Issued = prev.Issued
		}
	}
	r.users[u.Name] = &u
	return u
}

// save applies c to the store. A local write is never cut short by the
// caller's context (a stop, a caller that gave up): what was decided is kept.
func (r *Refresher) save(ctx context.Context, c store.Change) {
	if err := r.store.Apply(context.WithoutCancel(ctx), c); err != nil {
		r.log.Error("save schedule", "err", err)
	}
}
