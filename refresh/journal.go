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
// keys and opens them with any. The user's name is the additional data, so
// an entry cannot be replayed onto another user.
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

// Seal encrypts plaintext for user under the newest key; the nonce is prepended.
func (k *Keyring) Seal(user string, plaintext []byte) []byte {
	aead := k.aeads[0]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // rand.Read does not fail on supported systems
	}
	return aead.Seal(nonce, nonce, plaintext, []byte(user))
}

// Open decrypts what Seal produced for user with whichever key opens it.
func (k *Keyring) Open(user string, sealed []byte) ([]byte, error) {
	for _, aead := range k.aeads {
		n := aead.NonceSize()
		if len(sealed) < n {
			break
		}
		if out, err := aead.Open(nil, sealed[:n], sealed[n:], []byte(user)); err == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("journal entry for %q: %w", user, ErrNoKeyOpens)
}

// digest identifies a refresh token without keeping it.
func digest(token string) store.Digest { return sha256.Sum256([]byte(token)) }
