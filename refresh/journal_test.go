package refresh

import (
	"bytes"
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
	pending := store.Pending{User: "alice", Sealed: keys.Seal("alice", state), Spent: digest(stateRefresh), Created: stateIAT}
	if err := s.Apply(t.Context(), store.Change{Pending: &pending}); err != nil {
		t.Fatal(err)
	}
	// The entry reads back (so it really is in the file), then close to
	// flush the WAL.
	got, ok, err := s.Pending(t.Context(), "alice")
	if err != nil || !ok {
		t.Fatalf("Pending(alice) = %t, %v; want the stored entry", ok, err)
	}
	if plain, err := keys.Open("alice", got.Sealed); err != nil || !bytes.Equal(plain, state) {
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
