package refresh

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/tokenkeeper/tokenkeeper/store"
)

// sameSession reports whether st belongs to the session a logout names: by
// sid when both have one, else by subject, which covers every session of
// the user (tokens that carry no sid leave nothing finer to match on).
func sameSession(st AuthState, sid, sub string) bool {
	if sid != "" && st.Session != "" {
		return st.Session == sid
	}
	return sub != "" && st.Subject == sub
}

// fence records a logout decided for name's session (sid, else every
// session of sub) before it is carried out: durably, so that a restart
// carries it out, and at once in memory, so that the user's tokens of that
// session are no longer served. The user's cached tokens are dropped. A user
// may have fences for several sessions at once (Keycloak sends one logout
// per session).
func (r *Refresher) fence(ctx context.Context, name, sid, sub, reason string) error {
	f := store.Fence{User: name, SID: sid, Sub: sub, Reason: reason, Created: r.now()}
	if err := r.store.Apply(context.WithoutCancel(ctx), store.Change{Fence: &f}); err != nil {
		return fmt.Errorf("record the logout of %q: %w", name, err)
	}
	r.mu.Lock()
	fs := slices.DeleteFunc(r.fences[name], func(o store.Fence) bool { return o.SID == sid })
	r.fences[name] = append(fs, f)
	r.forget(name)
	r.mu.Unlock()
	return nil
}

// fenceOf returns one of name's fences, if any.
func (r *Refresher) fenceOf(name string) (store.Fence, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if fs := r.fences[name]; len(fs) > 0 {
		return fs[0], true
	}
	return store.Fence{}, false
}

// fenceFor returns name's fence of the session st belongs to, if any.
func (r *Refresher) fenceFor(name string, st AuthState) (store.Fence, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.fences[name] {
		if sameSession(st, f.SID, f.Sub) {
			return f, true
		}
	}
	return store.Fence{}, false
}

// settleFences drops, in memory, name's fences that a logout of session sid
// of sub carried out (sameSession), and returns them, for the store.
func (r *Refresher) settleFences(name, sid, sub string) []store.Fence {
	r.mu.Lock()
	defer r.mu.Unlock()
	var settled []store.Fence
	loggedOut := AuthState{Session: sid, Subject: sub}
	kept := slices.DeleteFunc(r.fences[name], func(f store.Fence) bool {
		done := sameSession(loggedOut, f.SID, f.Sub)
		if done {
			settled = append(settled, f)
		}
		return done
	})
	if len(kept) == 0 {
		delete(r.fences, name)
	} else {
		r.fences[name] = kept
	}
	return settled
}

// dropFence drops every fence of name.
func (r *Refresher) dropFence(ctx context.Context, name string) {
	r.mu.Lock()
	_, ok := r.fences[name]
	delete(r.fences, name)
	r.mu.Unlock()
	if ok {
		r.save(ctx, store.Change{DropFence: name})
	}
}

// carryOutFence carries out name's fence, if any, on st, the auth_state the
// hub holds, as decideFence says: it logs the user out if st is the fenced
// session, and drops a fence the user's newer login outlived. A hub admin
// (whose session the hub checks itself) keeps their auth_state, but
// tokenkeeper serves none of that session's tokens. done reports whether
// the update ends here. The caller holds the user's lock.
func (r *Refresher) carryOutFence(ctx context.Context, name string, st AuthState, admin bool) (Tokens, bool, error) {
	v := updateView{St: st, Admin: admin, RefreshAdmins: r.opts.RefreshAdmins}
	_, v.Fenced = r.fenceOf(name)
	_, v.FenceMatches = r.fenceFor(name, st)
	step, ok := decideFence(v)
	if !ok {
		return Tokens{}, false, nil
	}
	return r.performFence(ctx, name, st, step)
}

// performFence carries out a step decideFence chose. done reports whether
// the update ends here.
func (r *Refresher) performFence(ctx context.Context, name string, st AuthState, step updateStep) (Tokens, bool, error) {
	f, _ := r.fenceFor(name, st)
	switch step {
	case stepDropFence:
		r.log.Info("logout not carried out: the user holds a newer session", "user", name)
		r.dropFence(ctx, name)
		return Tokens{}, false, nil
	case stepAdminFenced:
		return Tokens{}, true, fmt.Errorf("%w (%s; a hub admin, whose session the hub ends itself)", ErrSessionEnded, f.Reason)
	}
	if err := r.logout(ctx, name, st, f.Reason); err != nil {
		return Tokens{}, true, err
	}
	return Tokens{}, true, fmt.Errorf("%w (%s)", ErrSessionEnded, f.Reason)
}

// tryFence carries out name's fence now if nobody holds the user's lock. A
// grant in flight holds it: its update carries the fence out when it ends
// (the grant's tokens are not written back), so a back-channel logout never
// waits for a grant, whose Keycloak request may be the very one that sent
// it. Otherwise, or when the hub fails, the next sweep does. It reports
// whether the user was logged out now. With auth_state already cleared,
// an unfinished logout (the user was fenced before this one) is finished;
// otherwise the user was logged out already (Keycloak sends its
// back-channel logout after a logout tokenkeeper made, such as "log out
// everywhere"): the fence is dropped, with no second audit row.
func (r *Refresher) tryFence(ctx context.Context, name string, unfinished bool) bool {
	unlock, ok := r.locks.tryLock(name)
	if !ok {
		r.dueNow(ctx, name)
		return false
	}
	defer unlock()
	u, err := r.hub.User(ctx, name)
	if notFound(err) {
		_ = r.userGone(ctx, name, err) // nothing left to log out
		return false
	}
	if err != nil {
		r.log.Warn("logout recorded; the hub could not be read, the next sweep carries it out", "user", name, "err", err)
		r.dueNow(ctx, name)
		return false
	}
	st, err := ParseAuthState(u.AuthState)
	if f, ok := r.fenceOf(name); ok && unfinished && errors.Is(err, ErrNoTokens) {
		// A logout cleared auth_state and stopped before it finished
		// (decideUpdate's stepFinishLogout): finish it.
		return r.finishLogout(ctx, name, f.SID, f.Sub, f.Reason) == nil
	}
	if err != nil {
		r.dropFence(ctx, name) // nothing left to log out
		return false
	}
	_, done, err := r.carryOutFence(ctx, name, st, u.Admin)
	if err != nil && !isEnded(err) {
		r.log.Warn("logout recorded; the next sweep carries it out", "user", name, "err", err)
		r.dueNow(ctx, name)
		return false
	}
	return done && !u.Admin
}

// isEnded reports whether err says the user's session ended.
func isEnded(err error) bool { return errors.Is(err, ErrSessionEnded) }

// noteSession records whether name's tokens carry a sid; health warns while
// some do not, since a back-channel logout then matches by subject only.
func (r *Refresher) noteSession(name string, st AuthState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st.Session == "" {
		r.noSID[name] = true
	} else {
		delete(r.noSID, name)
	}
}
