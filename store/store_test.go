package store

import (
	"cmp"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
)

// openTestStore opens a store in a fresh temporary directory and closes it
// at the end of the test. It returns the database path for reopening.
func openTestStore(tb testing.TB) (*Store, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "tokenkeeper.db")
	return reopenTestStore(tb, path), path
}

func reopenTestStore(tb testing.TB, path string) *Store {
	tb.Helper()
	s, err := Open(context.Background(), path)
	if err != nil {
		tb.Fatalf("Open(%q): %v", path, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func sortedUsers(t *testing.T, s *Store) []UserState {
	t.Helper()
	users, err := s.Users(t.Context())
	if err != nil {
		t.Fatalf("Users(): %v", err)
	}
	slices.SortFunc(users, func(a, b UserState) int { return cmp.Compare(a.Name, b.Name) })
	return users
}

// ms drops t's precision to what the store keeps.
func ms(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()) }

func TestStoreRoundTrip(t *testing.T) {
	s, path := openTestStore(t)
	base := time.Unix(1_763_800_000, 123_456_789)
	alice := UserState{
		Name:          "alice",
		Due:           base.Add(200 * time.Second),
		AccessExpiry:  base.Add(300 * time.Second),
		RefreshExpiry: base.Add(1800 * time.Second),
		Issued:        base.Add(-60 * time.Second),
		Status:        StatusFresh,
	}
	bob := UserState{
		Name:     "bob@example.org",
		Due:      base.Add(7 * time.Second),
		Failures: 3,
		Status:   StatusBackoff,
		Reason:   "refresh grant: Post \"https://kc\": connection refused",
	}
	carol := UserState{Name: "carol", Due: base, Status: StatusNew}
	for _, u := range []UserState{alice, bob, carol} {
		if err := s.Put(t.Context(), u); err != nil {
			t.Fatalf("Put(%q): %v", u.Name, err)
		}
	}
	want := []UserState{
		{Name: "alice", Due: ms(alice.Due), AccessExpiry: ms(alice.AccessExpiry), RefreshExpiry: ms(alice.RefreshExpiry), Issued: ms(alice.Issued), Status: StatusFresh},
		{Name: "bob@example.org", Due: ms(bob.Due), Failures: 3, Status: StatusBackoff, Reason: bob.Reason},
		{Name: "carol", Due: ms(carol.Due), Status: StatusNew},
	}
	if diff := gocmp.Diff(want, sortedUsers(t, s)); diff != "" {
		t.Errorf("Users() after Put mismatch (-want +got):\n%s", diff)
	}

	// Put replaces.
	ended := UserState{Name: "alice", Due: base.Add(time.Hour), Status: StatusEnded, Reason: "Session not active"}
	if err := s.Put(t.Context(), ended); err != nil {
		t.Fatalf("Put(alice again): %v", err)
	}
	want[0] = UserState{Name: "alice", Due: ms(ended.Due), Status: StatusEnded, Reason: "Session not active"}
	if diff := gocmp.Diff(want, sortedUsers(t, s)); diff != "" {
		t.Errorf("Users() after replacing alice mismatch (-want +got):\n%s", diff)
	}

	// Delete several, including one that is not there.
	if err := s.Delete(t.Context(), "carol", "nobody"); err != nil {
		t.Fatalf("Delete(carol, nobody): %v", err)
	}
	if err := s.Delete(t.Context()); err != nil {
		t.Fatalf("Delete(): %v", err)
	}
	want = want[:2]
	if diff := gocmp.Diff(want, sortedUsers(t, s)); diff != "" {
		t.Errorf("Users() after Delete mismatch (-want +got):\n%s", diff)
	}

	// The data survives closing and reopening the file.
	if err := s.Close(); err != nil {
		t.Fatalf("Close(): %v", err)
	}
	s2 := reopenTestStore(t, path)
	if diff := gocmp.Diff(want, sortedUsers(t, s2)); diff != "" {
		t.Errorf("Users() after reopening mismatch (-want +got):\n%s", diff)
	}
}

func TestStoreEmpty(t *testing.T) {
	s, _ := openTestStore(t)
	users, err := s.Users(t.Context())
	if err != nil || len(users) != 0 {
		t.Errorf("Users() on a new store = %v, %v; want none, nil", users, err)
	}
}

func TestStoreMillisecondPrecision(t *testing.T) {
	s, _ := openTestStore(t)
	now := time.Now()
	tests := []struct {
		name string
		due  time.Time
		want time.Time
	}{
		{name: "whole seconds", due: time.Unix(1_763_800_000, 0), want: time.Unix(1_763_800_000, 0)},
		{name: "milliseconds kept", due: time.Unix(1_763_800_000, 987_000_000), want: time.Unix(1_763_800_000, 987_000_000)},
		{name: "sub-millisecond dropped", due: time.Unix(1_763_800_000, 1_999_999), want: time.Unix(1_763_800_000, 1_000_000)},
		{name: "other location", due: time.Date(2026, 11, 22, 12, 0, 0, 5_000_000, time.FixedZone("X", 3600)), want: time.Date(2026, 11, 22, 11, 0, 0, 5_000_000, time.UTC)},
		{name: "wall clock with monotonic reading", due: now, want: time.UnixMilli(now.UnixMilli())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Put(t.Context(), UserState{Name: tt.name, Due: tt.due, Status: StatusFresh}); err != nil {
				t.Fatal(err)
			}
			users, err := s.Users(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(users, func(u UserState) bool { return u.Name == tt.name })
			if i < 0 {
				t.Fatalf("Users() has no %q", tt.name)
			}
			if got := users[i].Due; !got.Equal(tt.want) {
				t.Errorf("Put(Due=%v) then Users() Due = %v, want %v", tt.due, got, tt.want)
			}
		})
	}
}

func TestStoreUsersColumns(t *testing.T) {
	s, _ := openTestStore(t)
	rows, err := s.db.QueryContext(t.Context(), `SELECT name FROM pragma_table_info('users') ORDER BY cid`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var cols []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, c)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"name", "due", "access_expiry", "refresh_expiry", "failures", "status", "reason", "ended_on", "end_expected", "kept", "activity", "issued"}
	if diff := gocmp.Diff(want, cols); diff != "" {
		t.Errorf("users columns mismatch (-want +got):\n%s", diff)
	}
}

func TestStoreLogouts(t *testing.T) {
	s, path := openTestStore(t)
	at := time.Unix(1_763_800_000, 250_000_000)
	in := []Logout{
		{User: "alice", At: at, Reason: "Session not active", Actions: "auth_state cleared; 2 tokens revoked"},
		{User: "bob", At: at.Add(time.Second), Reason: "User disabled", Actions: "auth_state cleared"},
	}
	for _, l := range in {
		if err := s.AddLogout(t.Context(), l); err != nil {
			t.Fatalf("AddLogout(%q): %v", l.User, err)
		}
	}
	s.Close()
	got, err := reopenTestStore(t, path).Logouts(t.Context())
	if err != nil {
		t.Fatalf("Logouts(): %v", err)
	}
	if diff := gocmp.Diff(in, got); diff != "" {
		t.Errorf("Logouts() after reopening mismatch (-want +got):\n%s", diff)
	}
}

func TestOpenStoreFailsOnDirectory(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(t.Context(), dir)
	if err == nil {
		s.Close()
		t.Fatalf("Open(%q) on a directory: error = nil, want one", dir)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("Open(%q) error = %v, want it to name the path", dir, err)
	}
}

// TestRecentLogouts: the newest audit records first, at most limit.
func TestRecentLogouts(t *testing.T) {
	s, _ := openTestStore(t)
	at := time.Unix(1_763_800_000, 0)
	for i, u := range []string{"alice", "bob", "carol"} {
		if err := s.AddLogout(t.Context(), Logout{User: u, At: at.Add(time.Duration(i) * time.Second), Reason: "r", Actions: "a"}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.RecentLogouts(t.Context(), 2)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range got {
		names = append(names, l.User)
	}
	if diff := gocmp.Diff([]string{"carol", "bob"}, names); diff != "" {
		t.Errorf("RecentLogouts(2) (-want +got):\n%s", diff)
	}
}

// TestSubject: the subject of a user's latest session; "" for a user
// without one.
func TestSubject(t *testing.T) {
	s, _ := openTestStore(t)
	at := time.Unix(1_763_800_000, 0)
	for _, sess := range []Session{
		{SID: "s1", Sub: "old-sub", Name: "alice", Updated: at},
		{SID: "s2", Sub: "new-sub", Name: "alice", Updated: at.Add(time.Minute)},
		{SID: "s3", Sub: "bob-sub", Name: "bob", Updated: at.Add(time.Hour)},
	} {
		if err := s.PutSession(t.Context(), sess); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]string{"alice": "new-sub", "bob": "bob-sub", "carol": ""} {
		if got, err := s.Subject(t.Context(), name); got != want || err != nil {
			t.Errorf("Subject(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
}

// TestStoreUser: one user's state as Users has it; none for a user the
// store does not hold.
func TestStoreUser(t *testing.T) {
	s, _ := openTestStore(t)
	alice := UserState{Name: "alice", Due: ms(time.Unix(1_763_800_000, 0)), Status: StatusFresh, Kept: true, Issued: ms(time.Unix(1_763_799_940, 0))}
	if err := s.Put(t.Context(), alice); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.User(t.Context(), "alice")
	if err != nil || !ok {
		t.Fatalf("User(alice) = %v, %v", ok, err)
	}
	if diff := gocmp.Diff(alice, got); diff != "" {
		t.Errorf("User(alice) (-want +got):\n%s", diff)
	}
	if _, ok, err := s.User(t.Context(), "bob"); ok || err != nil {
		t.Errorf("User(bob) = %v, %v; want none", ok, err)
	}
}
