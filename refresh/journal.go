package refresh

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/tokenkeeper/tokenkeeper/store"
)

// ErrNoKeyOpens means no state key opens a journal entry: it was sealed
// with a key that has since been removed, or it is corrupt.
var ErrNoKeyOpens = errors.New("no state key opens the journal entry")

// Keyring seals journal entries with AES-256-GCM under the newest of its
// keys and opens them with any. The user's name, the spent token's digest
// and the entry's creation time are the additional data (see Seal).
type Keyring struct{ aeads []cipher.AEAD }

// NewKeyring returns a Keyring for one or more 32-byte keys, newest first.
func NewKeyring(keys ...[]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("state key: none given")
	}
	k := &Keyring{}
	for i, key := range keys {
		aead, err := newAEAD(key)
		if err != nil {
			return nil, fmt.Errorf("state key %d: %w", i+1, err)
		}
		k.aeads = append(k.aeads, aead)
	}
	return k, nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("want 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts plaintext, the new auth_state of entry p, under the newest
// key; the nonce is prepended. The user, the spent token's digest and the
// creation time are the additional data, so that an entry cannot be moved to
// another user, and its replay condition (Spent) or age cannot be rolled
// back, by whoever can write the database.
func (k *Keyring) Seal(p store.Pending, plaintext []byte) []byte {
	aead := k.aeads[0]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // rand.Read does not fail on supported systems
	}
	return aead.Seal(nonce, nonce, plaintext, boundData(p))
}

// Open decrypts entry p's sealed state with whichever key opens it. Entries
// sealed before the additional data bound more than the user name still
// open.
func (k *Keyring) Open(p store.Pending) ([]byte, error) {
	for _, ad := range [][]byte{boundData(p), []byte(p.User)} {
		for _, aead := range k.aeads {
			n := aead.NonceSize()
			if len(p.Sealed) < n {
				break
			}
			if out, err := aead.Open(nil, p.Sealed[:n], p.Sealed[n:], ad); err == nil {
				return out, nil
			}
		}
	}
	return nil, fmt.Errorf("journal entry for %q: %w", p.User, ErrNoKeyOpens)
}

// boundData is the additional data of a journal entry: a version, the
// user, the spent token's digest and the creation time in milliseconds (as
// the store keeps it).
func boundData(p store.Pending) []byte {
	return fmt.Appendf(nil, "tokenkeeper-journal-v2\x00%s\x00%x\x00%d", p.User, p.Spent, p.Created.UnixMilli())
}

// digest identifies a refresh token without keeping it.
func digest(token string) store.Digest { return sha256.Sum256([]byte(token)) }
