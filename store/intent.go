package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Intent records that a refresh token is about to be spent, written before
// the grant is sent. An intent still present after the grant means its
// outcome is unknown: the answer was lost, or tokenkeeper stopped or crashed
// while waiting for it. With refresh-token rotation Keycloak may then have
// spent the token already, so it is spent again only as far as the realm's
// Max Reuse allows.
type Intent struct {
	User string
	// Spent is the digest of the refresh token the grant spends.
	Spent Digest
	// Spends counts the grants sent with this token whose outcome is unknown,
	// this one included.
	Spends  int
	Created time.Time
}

func (c Change) putIntent(ctx context.Context, tx *sql.Tx) error {
	in := c.Intent
	if in == nil {
		return nil
	}
	_, err := tx.ExecContext(ctx,
		`INSERT OR REPLACE INTO intents (name, spent, spends, created) VALUES (?, ?, ?, ?)`,
		in.User, in.Spent[:], in.Spends, millis(in.Created))
	if err != nil {
		return fmt.Errorf("intent %q: %w", in.User, err)
	}
	return nil
}

func (c Change) dropIntent(ctx context.Context, tx *sql.Tx) error {
	if c.DropIntent == "" {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM intents WHERE name = ?`, c.DropIntent); err != nil {
		return fmt.Errorf("intent %q: delete: %w", c.DropIntent, err)
	}
	return nil
}

// Intent returns the user's intent, or ok=false when there is none.
func (s *Store) Intent(ctx context.Context, user string) (in Intent, ok bool, err error) {
	var created int64
	var spent []byte
	err = s.db.QueryRowContext(ctx, `SELECT spent, spends, created FROM intents WHERE name = ?`, user).
		Scan(&spent, &in.Spends, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Intent{}, false, nil
	}
	if err != nil {
		return Intent{}, false, fmt.Errorf("intent %q: %w", user, err)
	}
	in.User, in.Created = user, fromMillis(created)
	copy(in.Spent[:], spent)
	return in, true, nil
}

// IntentUsers lists users with an intent, oldest first.
func (s *Store) IntentUsers(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name FROM intents ORDER BY created`)
	if err != nil {
		return nil, fmt.Errorf("intents: %w", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, fmt.Errorf("intents: %w", err)
		}
		names = append(names, n)
	}
	return names, rows.Err()
}

// GuardState is the mass-failure guard's durable state: while Tripped,
// logouts of unexpected session endings wait for an admin's release, across
// restarts.
type GuardState struct {
	Tripped bool
	Since   time.Time
}

// Guard returns the guard's state; a database that never recorded one
// holds an open guard.
func (s *Store) Guard(ctx context.Context) (GuardState, error) {
	var g GuardState
	var since int64
	err := s.db.QueryRowContext(ctx, `SELECT tripped, since FROM guard WHERE id = 1`).Scan(&g.Tripped, &since)
	if errors.Is(err, sql.ErrNoRows) {
		return GuardState{}, nil
	}
	if err != nil {
		return GuardState{}, fmt.Errorf("guard: %w", err)
	}
	g.Since = fromMillis(since)
	return g, nil
}

// PutGuard records the guard's state.
func (s *Store) PutGuard(ctx context.Context, g GuardState) error {
	_, err := s.db.ExecContext(ctx, `INSERT OR REPLACE INTO guard (id, tripped, since) VALUES (1, ?, ?)`,
		g.Tripped, millis(g.Since))
	if err != nil {
		return fmt.Errorf("guard: %w", err)
	}
	return nil
}
