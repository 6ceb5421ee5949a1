package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Pending is a sealed token set obtained from Keycloak but not yet written
// to the hub. With refresh-token rotation the refresh token it replaced is
// already spent, so losing the entry would end the user's session.
type Pending struct {
	User string
	// Spent is the digest of the refresh token the grant spent; the entry is
	// replayed only while the hub still holds that token.
	Spent Digest
	// Sealed is the new auth_state, encrypted by the caller.
	Sealed  []byte
	Created time.Time
}

func (c Change) putPending(ctx context.Context, tx *sql.Tx) error {
	p := c.Pending
	if p == nil {
		return nil
	}
	_, err := tx.ExecContext(ctx,
		`INSERT OR REPLACE INTO journal (name, created, spent, sealed) VALUES (?, ?, ?, ?)`,
		p.User, millis(p.Created), p.Spent[:], p.Sealed)
	if err != nil {
		return fmt.Errorf("journal %q: %w", p.User, err)
	}
	return nil
}

func (c Change) dropPending(ctx context.Context, tx *sql.Tx) error {
	if c.DropPending == "" {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM journal WHERE name = ?`, c.DropPending); err != nil {
		return fmt.Errorf("journal %q: delete: %w", c.DropPending, err)
	}
	return nil
}

// Pending returns the user's entry, or ok=false when there is none.
func (s *Store) Pending(ctx context.Context, user string) (p Pending, ok bool, err error) {
	var created int64
	var spent []byte
	err = s.db.QueryRowContext(ctx, `SELECT created, spent, sealed FROM journal WHERE name = ?`, user).
		Scan(&created, &spent, &p.Sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return Pending{}, false, nil
	}
	if err != nil {
		return Pending{}, false, fmt.Errorf("journal %q: %w", user, err)
	}
	p.User, p.Created = user, fromMillis(created)
	copy(p.Spent[:], spent)
	return p, true, nil
}

// PendingUsers lists users with an entry, oldest first.
func (s *Store) PendingUsers(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name FROM journal ORDER BY created`)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		names = append(names, n)
	}
	return names, rows.Err()
}
