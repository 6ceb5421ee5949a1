package refresh

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/store"
)

// dbBytes returns the bytes of the database and its WAL files.
func dbBytes(t *testing.T, path string) []byte {
	t.Helper()
	matches, err := filepath.Glob(path + "*")
	if err != nil || len(matches) == 0 {
		t.Fatalf("no database files at %s: %v", path, err)
	}
	var all []byte
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

// TestStoreFileHoldsNoTokens writes schedule state and an encrypted
// write-back entry whose auth_state is full of tokens, and searches the raw
// database files for them.
func TestStoreFileHoldsNoTokens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokenkeeper.db")
	s, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseAuthState([]byte(oauthenticatorState()))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), store.UserState{
		Name: "alice", Due: stateIAT.Add(200 * time.Second), AccessExpiry: st.AccessClaims.Expiry,
		RefreshExpiry: st.RefreshExpiry, Status: store.StatusFresh,
	}); err != nil {
		t.Fatal(err)
	}
	keys, err := NewKeyring(bytes.Repeat([]byte{0x42}, 32))
	if err != nil {
		t.Fatal(err)
	}
	state := []byte(oauthenticatorState())
	pending := store.Pending{User: "alice", Spent: digest(stateRefresh), Created: stateIAT}
	pending.Sealed = keys.Seal(pending, state)
	if err := s.Apply(t.Context(), store.Change{Pending: &pending}); err != nil {
		t.Fatal(err)
	}
	// The entry reads back (so it really is in the file), then close to
	// flush the WAL.
	got, ok, err := s.Pending(t.Context(), "alice")
	if err != nil || !ok {
		t.Fatalf("Pending(alice) = %t, %v; want the stored entry", ok, err)
	}
	if plain, err := keys.Open(got); err != nil || !bytes.Equal(plain, state) {
		t.Fatalf("Open(entry) = %v; want the stored state", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw := dbBytes(t, path)
	if !bytes.Contains(raw, []byte("alice")) {
		t.Fatalf("database files do not contain the user name; the search below would prove nothing")
	}
	for _, needle := range []string{
		stateAccess, stateRefresh, stateID,
		stateAccess[:40], stateRefresh[len(stateRefresh)-40:],
		"eyJ", // the start of every JWT header and payload
		"access_token", "refresh_token", "oauth_user", "sess-1",
	} {
		if bytes.Contains(raw, []byte(needle)) {
			t.Errorf("database files contain %.40q", needle)
		}
	}
}

// The entry's spent digest and creation time are bound to it: changed in the
// database, the entry no longer opens. An entry sealed with the user name
// alone (before they were bound) still opens.
func TestJournalBindsSpentAndCreated(t *testing.T) {
	keys, err := NewKeyring(bytes.Repeat([]byte{0x42}, 32))
	if err != nil {
		t.Fatal(err)
	}
	p := store.Pending{User: "alice", Spent: digest("rt-1"), Created: stateIAT}
	p.Sealed = keys.Seal(p, []byte(`{"refresh_token": "rt-2"}`))
	if _, err := keys.Open(p); err != nil {
		t.Fatalf("Open(entry as sealed) = %v", err)
	}
	for name, change := range map[string]func(*store.Pending){
		"spent rolled back":   func(q *store.Pending) { q.Spent = digest("rt-0") },
		"created moved":       func(q *store.Pending) { q.Created = q.Created.Add(time.Hour) },
		"moved to other user": func(q *store.Pending) { q.User = "bob" },
	} {
		q := p
		change(&q)
		if _, err := keys.Open(q); !errors.Is(err, ErrNoKeyOpens) {
			t.Errorf("%s: Open = %v, want ErrNoKeyOpens", name, err)
		}
	}
	aead, _ := newAEAD(bytes.Repeat([]byte{0x42}, 32))
	nonce := make([]byte, aead.NonceSize())
	legacy := p
	legacy.Sealed = aead.Seal(nonce, nonce, []byte("old"), []byte("alice"))
	if got, err := keys.Open(legacy); err != nil || string(got) != "old" {
		t.Errorf("Open(an entry sealed with the user name alone) = %q, %v; want it opened", got, err)
	}
}
