package store

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
)

// unversioned is the schema databases had before it carried a version.
const unversioned = `
CREATE TABLE users (name TEXT PRIMARY KEY, due INTEGER NOT NULL, access_expiry INTEGER NOT NULL DEFAULT 0,
	refresh_expiry INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL,
	reason TEXT NOT NULL DEFAULT '');
CREATE TABLE logouts (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, at INTEGER NOT NULL,
	reason TEXT NOT NULL, actions TEXT NOT NULL);
CREATE TABLE journal (name TEXT PRIMARY KEY, created INTEGER NOT NULL, spent BLOB NOT NULL, sealed BLOB NOT NULL);
CREATE TABLE sessions (sid TEXT PRIMARY KEY, sub TEXT NOT NULL, name TEXT NOT NULL, updated INTEGER NOT NULL);
CREATE TABLE seen_jti (jti TEXT PRIMARY KEY, expires INTEGER NOT NULL);
INSERT INTO users (name, due, status) VALUES ('alice', 1763800000000, 'fresh');
INSERT INTO journal VALUES ('bob', 1763800000000, x'00', x'01');`

func TestOpenMigratesUnversionedDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := sql.Open("sqlite3", DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(unversioned); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := reopenTestStore(t, path)
	var v int
	if err := s.db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil || v != SchemaVersion {
		t.Errorf("user_version after Open = %d, %v; want %d", v, err, SchemaVersion)
	}
	users, err := s.Users(t.Context())
	want := []UserState{{Name: "alice", Due: time.UnixMilli(1763800000000), Status: StatusFresh, Kept: true}}
	if diff := gocmp.Diff(want, users); err != nil || diff != "" {
		t.Errorf("Users() after migration: %v (-want +got):\n%s", err, diff)
	}
	if _, ok, err := s.Pending(t.Context(), "bob"); !ok || err != nil {
		t.Errorf("Pending(bob) after migration = %t, %v; want the old entry kept", ok, err)
	}
	s.Close()
	reopenTestStore(t, path) // migrating again is a no-op
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.db")
	db, err := sql.Open("sqlite3", DSN(path))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA user_version = 999`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if s, err := Open(t.Context(), path); err == nil {
		s.Close()
		t.Fatal("Open of a database from a newer tokenkeeper succeeded, want an error")
	}
}

func TestOpenMakesFilesOwnerOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tk.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil { // as an older version left it
		t.Fatal(err)
	}
	s := reopenTestStore(t, path)
	if err := s.Put(t.Context(), UserState{Name: "alice", Status: StatusNew}); err != nil {
		t.Fatal(err)
	}
	matches, _ := filepath.Glob(path + "*")
	if len(matches) < 2 {
		t.Fatalf("database files = %v, want the database and its WAL", matches)
	}
	for _, m := range matches {
		info, err := os.Stat(m)
		if err != nil {
			t.Fatal(err)
		}
		if perm := info.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %o, want 600", filepath.Base(m), perm)
		}
	}
}

func TestOpenPathWithURIMetacharacters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a?b#c%20d")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tk.db?mode=ro")
	s := reopenTestStore(t, path)
	if err := s.Put(t.Context(), UserState{Name: "alice", Status: StatusNew}); err != nil {
		t.Fatalf("Put in a store at %q: %v", path, err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the database is not at the path given: %v", err)
	}
}

func TestApplyIsOneTransaction(t *testing.T) {
	s, _ := openTestStore(t)
	u := UserState{Name: "alice", Status: StatusFresh}
	p := Pending{User: "alice", Sealed: []byte{1}}
	if err := s.Apply(t.Context(), Change{User: &u, Pending: &p}); err != nil {
		t.Fatal(err)
	}
	// The audit insert fails (the table is gone), so the user update and
	// the journal drop that come with it must not happen either.
	if _, err := s.db.Exec(`DROP TABLE logouts`); err != nil {
		t.Fatal(err)
	}
	ended := UserState{Name: "alice", Status: StatusEnded}
	err := s.Apply(t.Context(), Change{User: &ended, DropPending: "alice", Logout: &Logout{User: "alice"}})
	if err == nil {
		t.Fatal("Apply with a failing step succeeded")
	}
	users, _ := s.Users(t.Context())
	if len(users) != 1 || users[0].Status != StatusFresh {
		t.Errorf("users after a failed Apply = %+v, want alice still fresh", users)
	}
	if _, ok, _ := s.Pending(t.Context(), "alice"); !ok {
		t.Error("journal entry dropped by a failed Apply")
	}
}

func TestPruneKeepsWhatIsStillNeeded(t *testing.T) {
	s, _ := openTestStore(t)
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	r := Retention{Sessions: time.Hour, Audit: 24 * time.Hour}
	for _, c := range []Change{
		{Session: &Session{SID: "old", Sub: "s1", Name: "alice", Updated: now.Add(-2 * time.Hour)}},
		{Session: &Session{SID: "new", Sub: "s2", Name: "bob", Updated: now.Add(-time.Minute)}},
		{Logout: &Logout{User: "carol", At: now.Add(-48 * time.Hour)}},
		{Logout: &Logout{User: "dave", At: now.Add(-time.Hour)}},
	} {
		if err := s.Apply(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SpendJTI(t.Context(), "gone", now.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.SpendJTI(t.Context(), "kept", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.Prune(t.Context(), now, r); err != nil {
		t.Fatal(err)
	}
	for sid, want := range map[string]int{"old": 0, "new": 1} {
		if got, _ := s.UsersForSession(t.Context(), sid, ""); len(got) != want {
			t.Errorf("session %q after prune: %v, want %d users", sid, got, want)
		}
	}
	audit, _ := s.Logouts(t.Context())
	if len(audit) != 1 || audit[0].User != "dave" {
		t.Errorf("audit after prune = %+v, want dave's only", audit)
	}
	if err := s.SeenJTI(t.Context(), "gone"); err != nil {
		t.Errorf("SeenJTI(expired id) = %v, want nil: pruned", err)
	}
	if err := s.SeenJTI(t.Context(), "kept"); !errors.Is(err, ErrReplayedLogout) {
		t.Errorf("SeenJTI(live id) = %v, want ErrReplayedLogout", err)
	}
}

func TestSpendJTIOnce(t *testing.T) {
	s, _ := openTestStore(t)
	exp := time.Now().Add(time.Minute)
	if err := s.SeenJTI(t.Context(), "j1"); err != nil {
		t.Fatalf("SeenJTI before spending = %v, want nil", err)
	}
	if err := s.SpendJTI(t.Context(), "j1", exp); err != nil {
		t.Fatal(err)
	}
	if err := s.SpendJTI(t.Context(), "j1", exp); !errors.Is(err, ErrReplayedLogout) {
		t.Errorf("second SpendJTI = %v, want ErrReplayedLogout", err)
	}
}
