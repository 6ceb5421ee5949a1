package refresh

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the sqlite3 driver
)

// Status is where a user stands with tokenkeeper.
type Status string

// User statuses.
const (
	StatusNew       Status = "new"       // seen, auth_state not read yet
	StatusFresh     Status = "fresh"     // tokens known and scheduled
	StatusEmpty     Status = "empty"     // no tokens: the user must log in
	StatusMalformed Status = "malformed" // auth_state unusable; skipped
	StatusBackoff   Status = "backoff"   // last grant failed transiently
	StatusEnded     Status = "ended"     // SSO session ended; logged out
)

// UserState is the per-user schedule state kept across restarts. It holds no
// token bytes.
type UserState struct {
	Name          string
	Due           time.Time
	AccessExpiry  time.Time
	RefreshExpiry time.Time
	Failures      int
	Status        Status
	// Reason is the last failure or skip reason, for logs and the status view.
	Reason string
}

// Store keeps UserState in SQLite.
type Store struct {
	db *sql.DB
}

const schema = `
CREATE TABLE IF NOT EXISTS users (
	name           TEXT PRIMARY KEY,
	due            INTEGER NOT NULL,
	access_expiry  INTEGER NOT NULL DEFAULT 0,
	refresh_expiry INTEGER NOT NULL DEFAULT 0,
	failures       INTEGER NOT NULL DEFAULT 0,
	status         TEXT NOT NULL,
	reason         TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS logouts (
	id      INTEGER PRIMARY KEY AUTOINCREMENT,
	name    TEXT NOT NULL,
	at      INTEGER NOT NULL,
	reason  TEXT NOT NULL,
	actions TEXT NOT NULL
);` + journalSchema + sessionSchema

// OpenStore opens (creating if needed) the SQLite database at path.
func OpenStore(ctx context.Context, path string) (*Store, error) {
	db, err := sql.Open("sqlite3", "file:"+path+"?_journal_mode=WAL&_busy_timeout=5000&_foreign_keys=on")
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: migrate: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Users returns every stored user state.
func (s *Store) Users(ctx context.Context) ([]UserState, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT name, due, access_expiry, refresh_expiry, failures, status, reason FROM users`)
	if err != nil {
		return nil, fmt.Errorf("load users: %w", err)
	}
	defer rows.Close()
	var out []UserState
	for rows.Next() {
		var u UserState
		var due, aexp, rexp int64
		if err := rows.Scan(&u.Name, &due, &aexp, &rexp, &u.Failures, &u.Status, &u.Reason); err != nil {
			return nil, fmt.Errorf("load users: %w", err)
		}
		u.Due, u.AccessExpiry, u.RefreshExpiry = fromMillis(due), fromMillis(aexp), fromMillis(rexp)
		out = append(out, u)
	}
	return out, rows.Err()
}

// Put inserts or replaces one user's state.
func (s *Store) Put(ctx context.Context, u UserState) error {
	_, err := s.db.ExecContext(ctx, `INSERT OR REPLACE INTO users
		(name, due, access_expiry, refresh_expiry, failures, status, reason) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		u.Name, millis(u.Due), millis(u.AccessExpiry), millis(u.RefreshExpiry), u.Failures, u.Status, u.Reason)
	if err != nil {
		return fmt.Errorf("save user %q: %w", u.Name, err)
	}
	return nil
}

// Logout is one audit record of a user logged out by tokenkeeper.
type Logout struct {
	User    string
	At      time.Time
	Reason  string
	Actions string
}

// AddLogout appends an audit record.
func (s *Store) AddLogout(ctx context.Context, l Logout) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO logouts (name, at, reason, actions) VALUES (?, ?, ?, ?)`,
		l.User, millis(l.At), l.Reason, l.Actions)
	if err != nil {
		return fmt.Errorf("audit logout of %q: %w", l.User, err)
	}
	return nil
}

// Logouts returns the audit records, oldest first.
func (s *Store) Logouts(ctx context.Context) ([]Logout, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, at, reason, actions FROM logouts ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("logouts: %w", err)
	}
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

// Delete forgets users.
func (s *Store) Delete(ctx context.Context, names ...string) error {
	var errs []error
	for _, n := range names {
		if _, err := s.db.ExecContext(ctx, `DELETE FROM users WHERE name = ?`, n); err != nil {
			errs = append(errs, fmt.Errorf("delete user %q: %w", n, err))
		}
	}
	return errors.Join(errs...)
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
