// Package store keeps tokenkeeper's durable state in SQLite: each user's
// refresh schedule, the encrypted write-back journal, the intents written
// before each grant, the fences of logouts decided and not yet carried out,
// the mass-failure guard's state, which Keycloak session
// belongs to which hub user, the back-channel logout token ids already acted
// on, and the logout audit. It holds no plaintext token: journal entries are
// sealed by the caller before they reach the store.
//
// The schema carries a version (PRAGMA user_version) and is migrated forward
// at Open. Everything one user update writes is applied in one transaction
// (Apply), and rows that only matter for a while are pruned (Prune).
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
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
	StatusEnded     Status = "ended"     // SSO session ended; logged out or about to be
	StatusStuck     Status = "stuck"     // new tokens the hub refuses to store
	StatusAdmin     Status = "admin"     // a hub admin: the hub refreshes their tokens
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
	// EndedOn is the digest of the refresh token whose grant found the
	// session ended; a logout goes ahead only while the hub still holds it.
	EndedOn Digest
	// EndExpected says the refresh token's own expiry predicted the end
	// (SSO idle or maximum), so it does not count toward the mass-failure guard.
	EndExpected bool
	// Kept and Activity are what the hub's user list last said: whether the
	// user's tokens are kept fresh (keep=all, or a running server), and
	// their last_activity, which a login moves.
	Kept     bool
	Activity string
	// Issued is when the access token the hub holds was issued (its iat,
	// on Keycloak's clock): the last refresh, or the login.
	Issued time.Time
}

// Digest identifies a refresh token without keeping it (SHA-256).
type Digest [32]byte

// Store is tokenkeeper's SQLite database.
type Store struct {
	db *sql.DB
}

// Open opens (creating if needed) the SQLite database at path, readable by
// its owner only, and migrates its schema to the current version.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := ownerOnly(path); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db, err := sql.Open("sqlite3", DSN(path))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := migrate(ctx, db); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// DSN returns the go-sqlite3 data source name for path, with the characters
// SQLite's URI syntax gives a meaning ('%', '?', '#') escaped.
func DSN(path string) string {
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	return "file:" + esc + "?_journal_mode=WAL&_busy_timeout=5000&_foreign_keys=on&_synchronous=NORMAL"
}

// ownerOnly creates path with mode 0600 if it is missing and narrows an
// existing file to 0600. SQLite gives its -wal and -shm files the database
// file's mode.
func ownerOnly(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if info.Mode().Perm()&0o077 != 0 {
		return f.Chmod(0o600)
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// userColumns are the users table's columns, as scanUser reads them.
const userColumns = `name, due, access_expiry, refresh_expiry, failures, status, reason, ended_on, end_expected, kept, activity, issued`

// scanUser reads one row of userColumns.
func scanUser(row interface{ Scan(...any) error }) (UserState, error) {
	var u UserState
	var due, aexp, rexp, issued int64
	var ended []byte
	if err := row.Scan(&u.Name, &due, &aexp, &rexp, &u.Failures, &u.Status, &u.Reason, &ended, &u.EndExpected, &u.Kept, &u.Activity, &issued); err != nil {
		return UserState{}, err
	}
	u.Due, u.AccessExpiry, u.RefreshExpiry, u.Issued = fromMillis(due), fromMillis(aexp), fromMillis(rexp), fromMillis(issued)
	copy(u.EndedOn[:], ended)
	return u, nil
}

// Users returns every stored user state.
func (s *Store) Users(ctx context.Context) ([]UserState, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+userColumns+` FROM users`)
	if err != nil {
		return nil, fmt.Errorf("load users: %w", err)
	}
	defer rows.Close()
	var out []UserState
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("load users: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// User returns one user's stored state; ok is false when there is none.
func (s *Store) User(ctx context.Context, name string) (u UserState, ok bool, err error) {
	u, err = scanUser(s.db.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE name = ?`, name))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return UserState{}, false, nil
	case err != nil:
		return UserState{}, false, fmt.Errorf("load user %q: %w", name, err)
	}
	return u, true, nil
}

// Put inserts or replaces one user's state.
func (s *Store) Put(ctx context.Context, u UserState) error {
	return s.Apply(ctx, Change{User: &u})
}

// Delete forgets users the hub no longer has: their schedule state,
// journal entries, intents, fences and the sessions that map to them (so a
// later back-channel logout names nobody).
func (s *Store) Delete(ctx context.Context, names ...string) error {
	var errs []error
	for _, n := range names {
		for _, q := range []string{`DELETE FROM users WHERE name = ?`, `DELETE FROM journal WHERE name = ?`, `DELETE FROM intents WHERE name = ?`, `DELETE FROM fences WHERE name = ?`, `DELETE FROM sessions WHERE name = ?`} {
			if _, err := s.db.ExecContext(ctx, q, n); err != nil {
				errs = append(errs, fmt.Errorf("delete user %q: %w", n, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Change is everything one update of one user writes. Apply writes it in
// one transaction, so a crash leaves either all of it or none.
type Change struct {
	// User, when set, replaces the user's schedule state.
	User *UserState
	// Session, when set, records which hub user a Keycloak session is.
	Session *Session
	// Pending, when set, replaces the user's journal entry.
	Pending *Pending
	// DropPending removes the user's journal entry (named by DropPending).
	DropPending string
	// Logout, when set, appends an audit record.
	Logout *Logout
	// Intent, when set, replaces the user's intent to spend a refresh token.
	Intent *Intent
	// DropIntent removes the user's intent (named by DropIntent).
	DropIntent string
	// Fence, when set, adds a fence, replacing one of the same user and sid.
	Fence *Fence
	// DropFence removes every fence of the user named by DropFence.
	DropFence string
	// DropFences removes these fences (by user and sid) and no others.
	DropFences []Fence
}

// Apply writes c in one transaction.
func (s *Store) Apply(ctx context.Context, c Change) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // a no-op after Commit
	for _, step := range []func(context.Context, *sql.Tx) error{
		c.putUser, c.putSession, c.dropIntent, c.putIntent, c.putPending, c.dropPending, c.dropFence, c.putFence, c.addLogout,
	} {
		if err := step(ctx, tx); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

func (c Change) putUser(ctx context.Context, tx *sql.Tx) error {
	u := c.User
	if u == nil {
		return nil
	}
	var ended []byte
	if u.EndedOn != (Digest{}) {
		ended = u.EndedOn[:]
	}
	_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO users
		(name, due, access_expiry, refresh_expiry, failures, status, reason, ended_on, end_expected, kept, activity, issued)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		u.Name, millis(u.Due), millis(u.AccessExpiry), millis(u.RefreshExpiry), u.Failures, u.Status, u.Reason, ended,
		u.EndExpected, u.Kept, u.Activity, millis(u.Issued))
	if err != nil {
		return fmt.Errorf("save user %q: %w", u.Name, err)
	}
	return nil
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
