package refresh

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// ErrReplayedLogout means a logout token's jti was seen before.
var ErrReplayedLogout = errors.New("logout token replayed")

// LogoutTokenError means a back-channel logout token failed verification.
type LogoutTokenError struct{ Err error }

func (e *LogoutTokenError) Error() string { return "invalid logout token: " + e.Err.Error() }
func (e *LogoutTokenError) Unwrap() error { return e.Err }

const sessionSchema = `
CREATE TABLE IF NOT EXISTS sessions (
	sid     TEXT PRIMARY KEY,
	sub     TEXT NOT NULL,
	name    TEXT NOT NULL,
	updated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_sub ON sessions (sub);
CREATE TABLE IF NOT EXISTS seen_jti (
	jti     TEXT PRIMARY KEY,
	expires INTEGER NOT NULL
);`

// PutSession remembers which hub user a Keycloak session (sid) and subject belong to.
func (s *Store) PutSession(ctx context.Context, sid, sub, name string, now time.Time) error {
	if sid == "" && sub == "" {
		return nil
	}
	_, err := s.db.ExecContext(ctx, `INSERT OR REPLACE INTO sessions (sid, sub, name, updated) VALUES (?, ?, ?, ?)`,
		firstNonEmpty(sid, "sub:"+sub), sub, name, millis(now))
	if err != nil {
		return fmt.Errorf("remember session of %q: %w", name, err)
	}
	return nil
}

// UsersForSession returns the hub users of a session id, or else of a subject.
func (s *Store) UsersForSession(ctx context.Context, sid, sub string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT DISTINCT name FROM sessions WHERE (? != '' AND sid = ?) OR (? != '' AND sub = ?)`,
		sid, sid, sub, sub)
	if err != nil {
		return nil, fmt.Errorf("find session: %w", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("find session: %w", err)
		}
		names = append(names, n)
	}
	return names, rows.Err()
}

// SeeJTI records a logout token id until it expires; a second sighting
// returns ErrReplayedLogout. Expired ids are pruned.
func (s *Store) SeeJTI(ctx context.Context, jti string, expires, now time.Time) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM seen_jti WHERE expires < ?`, millis(now)); err != nil {
		return fmt.Errorf("prune jti: %w", err)
	}
	res, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO seen_jti (jti, expires) VALUES (?, ?)`, jti, millis(expires))
	if err != nil {
		return fmt.Errorf("record jti: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrReplayedLogout
	}
	return nil
}

// LogoutVerifier verifies a raw back-channel logout token.
type LogoutVerifier func(ctx context.Context, raw string) (*oidc.LogoutToken, error)

// BackchannelLogout handles Keycloak's back-channel logout: it verifies the
// token, refuses a replayed jti, finds the hub users of the session (sid) or
// subject (sub), and logs them out at once. It returns the users logged out.
func (r *Refresher) BackchannelLogout(ctx context.Context, raw string, verify LogoutVerifier) ([]string, error) {
	lt, err := verify(ctx, raw)
	if err != nil {
		return nil, &LogoutTokenError{Err: err}
	}
	if err := r.store.SeeJTI(ctx, lt.TokenID, lt.Expiry, r.opts.Now()); err != nil {
		return nil, err
	}
	names, err := r.store.UsersForSession(ctx, lt.SessionID, lt.Subject)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		r.log.Info("back-channel logout for a session tokenkeeper does not know", "sid", lt.SessionID)
	}
	var out []string
	var errs []error
	for _, name := range names {
		if !r.holdsSession(ctx, name, lt.SessionID) {
			continue
		}
		out = append(out, name)
		errs = append(errs, r.Logout(ctx, name, ReasonBackchannel))
	}
	return out, errors.Join(errs...)
}

// holdsSession reports whether the user's current tokens belong to the
// session sid (any session when sid is empty). A user who has logged in again
// since holds a newer session and is left alone.
func (r *Refresher) holdsSession(ctx context.Context, name, sid string) bool {
	u, err := r.hub.User(ctx, name)
	if err != nil {
		r.log.Warn("back-channel logout: cannot read user", "user", name, "err", err)
		return false
	}
	st, err := ParseAuthState(u.AuthState)
	if err != nil {
		return false // nothing to log out
	}
	return sid == "" || st.AccessClaims.SessionID == sid
}
