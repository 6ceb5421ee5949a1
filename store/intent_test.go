package store

import (
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
)

// An intent survives a reopen (a crash after it was written), is replaced
// by the next, and is dropped with the journal entry that settles it, in
// one transaction.
func TestIntentIsDurableAndSettledWithTheJournal(t *testing.T) {
	ctx := t.Context()
	s, path := openTestStore(t)
	at := time.UnixMilli(1_700_000_000_000)
	in := Intent{User: "alice", Spent: Digest{1}, Spends: 1, Created: at}
	if err := s.Apply(ctx, Change{Intent: &in}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = reopenTestStore(t, path)
	got, ok, err := s.Intent(ctx, "alice")
	if err != nil || !ok {
		t.Fatalf("Intent(alice) after reopen = %v, %v", ok, err)
	}
	if diff := gocmp.Diff(in, got); diff != "" {
		t.Errorf("intent after reopen (-want +got):\n%s", diff)
	}
	again := Intent{User: "alice", Spent: Digest{1}, Spends: 2, Created: at}
	if err := s.Apply(ctx, Change{Intent: &again}); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.Intent(ctx, "alice"); got.Spends != 2 {
		t.Errorf("Spends after the second intent = %d, want 2", got.Spends)
	}
	p := Pending{User: "alice", Spent: Digest{1}, Sealed: []byte("sealed"), Created: at}
	if err := s.Apply(ctx, Change{Pending: &p, DropIntent: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Intent(ctx, "alice"); ok {
		t.Error("intent still present after its journal entry was written")
	}
	if _, ok, _ := s.Pending(ctx, "alice"); !ok {
		t.Error("journal entry missing")
	}
	if users, _ := s.IntentUsers(ctx); len(users) != 0 {
		t.Errorf("IntentUsers = %v, want none", users)
	}
}

// Deleting a user the hub no longer has drops their intent too.
func TestDeleteDropsIntents(t *testing.T) {
	ctx := t.Context()
	s, _ := openTestStore(t)
	for _, name := range []string{"alice", "bob"} {
		if err := s.Apply(ctx, Change{Intent: &Intent{User: name, Spends: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	users, err := s.IntentUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := gocmp.Diff([]string{"bob"}, users); diff != "" {
		t.Errorf("IntentUsers after Delete(alice) (-want +got):\n%s", diff)
	}
}

// The guard's state survives a reopen; a new database holds it open.
func TestGuardStateSurvivesReopen(t *testing.T) {
	ctx := t.Context()
	s, path := openTestStore(t)
	if g, err := s.Guard(ctx); err != nil || g.Tripped {
		t.Fatalf("Guard() on a new database = %+v, %v; want open", g, err)
	}
	want := GuardState{Tripped: true, Since: time.UnixMilli(1_700_000_000_000)}
	if err := s.PutGuard(ctx, want); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = reopenTestStore(t, path)
	got, err := s.Guard(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := gocmp.Diff(want, got); diff != "" {
		t.Errorf("guard after reopen (-want +got):\n%s", diff)
	}
}

// A fence survives a reopen and goes with the logout that carries it out.
func TestFenceIsDurableUntilTheLogout(t *testing.T) {
	ctx := t.Context()
	s, path := openTestStore(t)
	f := Fence{User: "alice", SID: "s1", Sub: "sub-a", Reason: "keycloak back-channel logout", Created: time.UnixMilli(1_700_000_000_000)}
	if err := s.Apply(ctx, Change{Fence: &f}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = reopenTestStore(t, path)
	got, err := s.Fences(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := gocmp.Diff([]Fence{f}, got); diff != "" {
		t.Errorf("fences after reopen (-want +got):\n%s", diff)
	}
	if err := s.Apply(ctx, Change{DropFence: "alice", Logout: &Logout{User: "alice", At: f.Created}}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Fences(ctx); len(got) != 0 {
		t.Errorf("fences after the logout = %v, want none", got)
	}
}
