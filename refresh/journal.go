package refresh

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Sealer encrypts journal entries with AES-256-GCM. The user's name is the
// additional data, so an entry cannot be replayed onto another user.
type Sealer struct{ aead cipher.AEAD }

// NewSealer returns a Sealer for a 32-byte key.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("state key: want 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("state key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("state key: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plaintext for user; the nonce is prepended.
func (s *Sealer) Seal(user string, plaintext []byte) []byte {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // rand.Read does not fail on supported systems
	}
	return s.aead.Seal(nonce, nonce, plaintext, []byte(user))
}

// Open decrypts what Seal produced for user.
func (s *Sealer) Open(user string, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return nil, errors.New("journal entry too short")
	}
	out, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(user))
	if err != nil {
		return nil, fmt.Errorf("journal entry for %q: wrong state key or corrupt: %w", user, err)
	}
	return out, nil
}

// Pending is a token set obtained from Keycloak but not yet written to the
// hub. With refresh-token rotation the old refresh token is already spent, so
// losing this would end the user's session.
type Pending struct {
	User string
	// State is the complete new auth_state.
	State json.RawMessage
	// Spent is a digest of the refresh token the grant spent; the entry is
	// replayed only while the hub still holds that token.
	Spent   [32]byte
	Created time.Time
}

const journalSchema = `
CREATE TABLE IF NOT EXISTS journal (
	name    TEXT PRIMARY KEY,
	created INTEGER NOT NULL,
	spent   BLOB NOT NULL,
	sealed  BLOB NOT NULL
);`

// digest identifies a refresh token without keeping it.
func digest(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// PutPending records p, encrypted, before its write-back to the hub.
func (s *Store) PutPending(ctx context.Context, seal *Sealer, p Pending) error {
	_, err := s.db.ExecContext(ctx,
		`INSERT OR REPLACE INTO journal (name, created, spent, sealed) VALUES (?, ?, ?, ?)`,
		p.User, millis(p.Created), p.Spent[:], seal.Seal(p.User, p.State))
	if err != nil {
		return fmt.Errorf("journal %q: %w", p.User, err)
	}
	return nil
}

// DeletePending removes a user's entry once the hub holds it.
func (s *Store) DeletePending(ctx context.Context, user string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM journal WHERE name = ?`, user); err != nil {
		return fmt.Errorf("journal %q: delete: %w", user, err)
	}
	return nil
}

// Pending returns the user's entry, or ok=false when there is none.
func (s *Store) Pending(ctx context.Context, seal *Sealer, user string) (p Pending, ok bool, err error) {
	var created int64
	var spent, sealed []byte
	err = s.db.QueryRowContext(ctx, `SELECT created, spent, sealed FROM journal WHERE name = ?`, user).
		Scan(&created, &spent, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return p, false, nil
	}
	if err != nil {
		return p, false, fmt.Errorf("journal %q: %w", user, err)
	}
	p = Pending{User: user, Created: fromMillis(created)}
	copy(p.Spent[:], spent)
	p.State, err = seal.Open(user, sealed)
	return p, err == nil, err
}

// PendingUsers lists users with an entry.
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
