package refresh

import (
	"errors"
	"time"
)

// A miss is a fresh-token call that found nothing to serve: a hub admin's
// expired token, a user with no tokens, a session ended, a user the hub no
// longer has, Keycloak unavailable while the user backs off. Repeating the
// call before something changes costs the hub a read (and, with Keycloak
// down, Keycloak a grant) for the same answer, and a caller can make
// thousands: token-file keepers of every running server after a mass
// logout. So the answer is remembered for the user until something changes
// it: their tokens are read anew (settle), a login shows in the hub's user
// list (sync), a logout, or, for an unavailable Keycloak, the user's next
// retry time; at the longest, Recheck.
type miss struct {
	err   error
	until time.Time
}

// missed returns the remembered answer for name, if one holds.
func (r *Refresher) missed(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.misses[name]
	if !ok || !r.now().Before(m.until) {
		delete(r.misses, name)
		return nil
	}
	return m.err
}

// remember records a miss for name, if err is one.
func (r *Refresher) remember(name string, err error) {
	var merr *MalformedError
	now := r.now()
	until := now.Add(r.opts.Recheck)
	switch {
	case errors.Is(err, ErrUnavailable):
		r.mu.Lock()
		if u := r.users[name]; u != nil && u.Due.After(now) && u.Due.Before(until) {
			until = u.Due
		}
		r.mu.Unlock()
	case errors.Is(err, ErrHubAdmin), errors.Is(err, ErrNoTokens), errors.Is(err, ErrSessionEnded),
		errors.Is(err, ErrUserGone), errors.As(err, &merr):
	default:
		return
	}
	r.mu.Lock()
	r.misses[name] = miss{err: err, until: until}
	r.mu.Unlock()
}

// unmiss forgets name's miss: something that can change the answer
// happened. The caller holds r.mu.
func (r *Refresher) unmiss(name string) { delete(r.misses, name) }
