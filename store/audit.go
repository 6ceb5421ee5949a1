package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Logout is one audit record of a user logged out by tokenkeeper.
type Logout struct {
	User    string
	At      time.Time
	Reason  string
	Actions string
}

func (c Change) addLogout(ctx context.Context, tx *sql.Tx) error {
	l := c.Logout
	if l == nil {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO logouts (name, at, reason, actions) VALUES (?, ?, ?, ?)`,
		l.User, millis(l.At), l.Reason, l.Actions)
	if err != nil {
		return fmt.Errorf("audit logout of %q: %w", l.User, err)
	}
	return nil
}

// AddLogout appends an audit record.
func (s *Store) AddLogout(ctx context.Context, l Logout) error {
	return s.Apply(ctx, Change{Logout: &l})
}

// Logouts returns the audit records, oldest first.
func (s *Store) Logouts(ctx context.Context) ([]Logout, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, at, reason, actions FROM logouts ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("logouts: %w", err)
	}
	return scanLogouts(rows)
}

func scanLogouts(rows *sql.Rows) ([]Logout, error) {
	defer rows.Close()
	var out []Logout
	for rows.Next() {
		var l Logout
		var at int64
		if err := rows.Scan(&l.User, &at, &l.Reason, &l.Actions); err != nil {
			return nil, fmt.Errorf("logouts: %w", err)
		}
		l.At = fromMillis(at)
		out = append(out, l)
	}
	return out, rows.Err()
}

// RecentLogouts returns at most limit audit records, newest first.
func (s *Store) RecentLogouts(ctx context.Context, limit int) ([]Logout, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, at, reason, actions FROM logouts ORDER BY id DESC LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("recent logouts: %w", err)
	}
	return scanLogouts(rows)
}

// Retention says how long rows that only matter for a while are kept.
type Retention struct {
	// Sessions not seen for this long are forgotten.
	Sessions time.Duration
	// Audit records older than this are deleted.
	Audit time.Duration
}

// DefaultRetention keeps sessions for 30 days and the audit for a year.
var DefaultRetention = Retention{Sessions: 30 * 24 * time.Hour, Audit: 365 * 24 * time.Hour}

// Prune deletes sessions, audit records and logout token ids past their
// retention at now.
func (s *Store) Prune(ctx context.Context, now time.Time, r Retention) error {
	var errs []error
	for _, q := range []struct {
		sql    string
		before time.Time
	}{
		{`DELETE FROM sessions WHERE updated < ?`, now.Add(-r.Sessions)},
		{`DELETE FROM logouts WHERE at < ?`, now.Add(-r.Audit)},
		{`DELETE FROM seen_jti WHERE expires < ?`, now},
	} {
		if _, err := s.db.ExecContext(ctx, q.sql, millis(q.before)); err != nil {
			errs = append(errs, fmt.Errorf("prune: %w", err))
		}
	}
	return errors.Join(errs...)
}
