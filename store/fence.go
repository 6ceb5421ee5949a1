package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Fence is a logout decided and not yet carried out (a back-channel logout
// that met a busy user or a failing hub): until it is, the user's tokens of
// that session are not served, and every update of the user carries it out
// first.
type Fence struct {
	User string
	// SID and Sub name the session ended: its sid, else every session of
	// the subject.
	SID, Sub string
	Reason   string
	Created  time.Time
}

func (c Change) putFence(ctx context.Context, tx *sql.Tx) error {
	f := c.Fence
	if f == nil {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO fences (name, sid, sub, reason, created) VALUES (?, ?, ?, ?, ?)`,
		f.User, f.SID, f.Sub, f.Reason, millis(f.Created))
	if err != nil {
		return fmt.Errorf("fence %q: %w", f.User, err)
	}
	return nil
}

func (c Change) dropFence(ctx context.Context, tx *sql.Tx) error {
	for _, f := range c.DropFences {
		if _, err := tx.ExecContext(ctx, `DELETE FROM fences WHERE name = ? AND sid = ?`, f.User, f.SID); err != nil {
			return fmt.Errorf("fence %q: delete: %w", f.User, err)
		}
	}
	if c.DropFence == "" {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM fences WHERE name = ?`, c.DropFence); err != nil {
		return fmt.Errorf("fence %q: delete: %w", c.DropFence, err)
	}
	return nil
}

// Fences returns every fence.
func (s *Store) Fences(ctx context.Context) ([]Fence, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT name, sid, sub, reason, created FROM fences`)
	if err != nil {
		return nil, fmt.Errorf("fences: %w", err)
	}
	defer rows.Close()
	var out []Fence
	for rows.Next() {
		var f Fence
		var created int64
		if err := rows.Scan(&f.User, &f.SID, &f.Sub, &f.Reason, &created); err != nil {
			return nil, fmt.Errorf("fences: %w", err)
		}
		f.Created = fromMillis(created)
		out = append(out, f)
	}
	return out, rows.Err()
}
