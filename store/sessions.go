package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Session records that a Keycloak session (sid) of a subject (sub) belongs
// to a hub user.
type Session struct {
	SID, Sub, Name string
	Updated        time.Time
}

func (c Change) putSession(ctx context.Context, tx *sql.Tx) error {
	s := c.Session
	if s == nil || (s.SID == "" && s.Sub == "") {
		return nil
	}
	key := s.SID
	if key == "" {
		key = "sub:" + s.Sub
	}
	_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO sessions (sid, sub, name, updated) VALUES (?, ?, ?, ?)`,
		key, s.Sub, s.Name, millis(s.Updated))
	if err != nil {
		return fmt.Errorf("remember session of %q: %w", s.Name, err)
	}
	return nil
}

// PutSession remembers which hub user a Keycloak session belongs to.
func (s *Store) PutSession(ctx context.Context, sess Session) error {
	return s.Apply(ctx, Change{Session: &sess})
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

// Subject returns the Keycloak subject (sub) of the hub user's latest
// recorded session, "" when none is recorded.
func (s *Store) Subject(ctx context.Context, name string) (string, error) {
	var sub string
	err := s.db.QueryRowContext(ctx, `SELECT sub FROM sessions WHERE name = ? AND sub != '' ORDER BY updated DESC LIMIT 1`, name).Scan(&sub)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("subject of %q: %w", name, err)
	}
	return sub, nil
}

// ErrReplayedLogout means a logout token's jti was acted on before.
var ErrReplayedLogout = errors.New("logout token replayed")

// SeenJTI returns ErrReplayedLogout if the logout token id was recorded.
func (s *Store) SeenJTI(ctx context.Context, jti string) error {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM seen_jti WHERE jti = ?`, jti).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("look up jti: %w", err)
	}
	return ErrReplayedLogout
}

// SpendJTI records a logout token id until expires, once its logout took
// effect; a second spend of the same id returns ErrReplayedLogout.
func (s *Store) SpendJTI(ctx context.Context, jti string, expires time.Time) error {
	res, err := s.db.ExecContext(ctx, `INSERT OR IGNORE INTO seen_jti (jti, expires) VALUES (?, ?)`, jti, millis(expires))
	if err != nil {
		return fmt.Errorf("record jti: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrReplayedLogout
	}
	return nil
}
