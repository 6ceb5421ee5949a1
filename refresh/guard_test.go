package refresh

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// tripGuard gives n kept users sessions that Keycloak then loses, and
// sweeps until the guard has tripped.
func tripGuard(t *testing.T, f *fixture, n int) {
	t.Helper()
	for i := range n {
		f.addSession(fmt.Sprintf("u%02d", i), true, f.now.Add(-time.Duration(i)*10*time.Second), 5*time.Minute, f.now.Add(time.Hour), "a")
	}
	f.sweep(t)
	f.grant.fail = func(string) error { return grantError(400, "invalid_grant", "Session not active") }
	for range 24 {
		f.advance(15 * time.Second)
		f.sweep(t)
	}
	if !hasProblem(f.r.Health(), ProblemLogoutsPaused) {
		t.Fatalf("Health() = %+v, want logouts paused", f.r.Health())
	}
}

// The tripped guard, and the users it holds, survive a restart: the new
// process logs none of them out and says why.
func TestGuardHoldsAcrossRestart(t *testing.T) {
	f := newFixture(t)
	tripGuard(t, f, 10)
	f.r = f.newRefresher(t) // a restart on the same database
	if h := f.r.Health(); !hasProblem(h, ProblemLogoutsPaused) || h.Problems[0].Users != 10 {
		t.Errorf("Health() after restart = %+v, want logouts paused for 10 users", h)
	}
	for range 8 {
		f.advance(time.Minute)
		f.sweep(t)
	}
	for i := range 10 {
		if name := fmt.Sprintf("u%02d", i); f.loggedOut(name) {
			t.Errorf("%s logged out after a restart while the guard held", name)
		}
	}
}

// aliveSet is Keycloak's introspection over a set of refresh tokens still
// accepted.
type aliveSet struct {
	mu    sync.Mutex
	alive map[string]bool
	calls int
}

func (a *aliveSet) introspect(_ context.Context, rt config.Secret) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	return a.alive[rt.Reveal()], nil
}

// Users the guard holds are asked about again (by introspection, which
// spends nothing): those Keycloak accepts once more are kept and no longer
// held; after a release only sessions still ended are logged out.
func TestHeldUsersProbedAndReleaseLogsOutOnlyEnded(t *testing.T) {
	f := newFixture(t)
	kc := &aliveSet{alive: map[string]bool{}}
	f.r = f.newRefresher(t, func(o *Options) { o.Introspect = kc.introspect })
	tripGuard(t, f, 10)
	kc.mu.Lock()
	for i := 0; i < 10; i += 2 { // Keycloak finds the even users' sessions again
		kc.alive[f.hub.state(t, fmt.Sprintf("u%02d", i)).Refresh.Reveal()] = true
	}
	kc.mu.Unlock()
	f.grant.fail = nil
	for range 8 {
		f.advance(time.Minute)
		f.sweep(t)
	}
	if h := f.r.Health(); h.Problems[0].Users != 5 {
		t.Errorf("held after Keycloak recovered half = %+v, want 5", h)
	}
	if err := f.r.ReleaseGuard(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.advance(15 * time.Second)
	f.sweep(t)
	for i := range 10 {
		name := fmt.Sprintf("u%02d", i)
		if want := i%2 == 1; f.loggedOut(name) != want {
			t.Errorf("%s logged out = %t, want %t", name, f.loggedOut(name), want)
		}
	}
	if !strings.Contains(f.logs.String(), "Keycloak still accepts the refresh token") {
		t.Error("no log line for the sessions found alive")
	}
}

// A logout is durable from its decision to its last action: when clearing
// auth_state took effect but its answer was lost, the actions and the audit
// row are not skipped; the next sweep finishes them, once.
func TestLogoutFinishedAfterItsClearLostItsAnswer(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.addUser("alice", true, f.now, "rt-alice")
	sid := "hub-session-1"
	f.hub.tokens["alice"] = []hubclient.Token{{ID: "t1", SessionID: &sid}}
	f.sweep(t)
	f.hub.lostWrite = &hubclient.APIError{Method: "PATCH", Path: "/users/alice", Status: 502}
	if err := f.r.Logout(ctx, "alice", "ended by an admin"); err == nil {
		t.Fatal("Logout with the clear's answer lost = nil, want an error")
	}
	f.hub.lostWrite = nil
	if audit, _ := f.store.Logouts(ctx); len(audit) != 0 || len(f.hub.deleted) != 0 {
		t.Fatalf("after the lost answer: audit %v, revoked %v; want neither yet", audit, f.hub.deleted)
	}
	f.advance(15 * time.Second)
	f.sweep(t)
	f.advance(15 * time.Second)
	f.sweep(t)
	audit, err := f.store.Logouts(ctx)
	if err != nil || len(audit) != 1 || audit[0].Reason != "ended by an admin" {
		t.Errorf("audit after the next sweeps = %+v, %v; want one row for the admin's logout", audit, err)
	}
	if diff := cmp.Diff([]string{"alice/t1"}, f.hub.deleted); diff != "" {
		t.Errorf("session tokens revoked (-want +got):\n%s", diff)
	}
}

// TestHoldAgainLeavesAUserWhoseActivityMovedDue: an ending looked at while
// a back-channel catch-up's listing saw the user's activity move (a new
// login) is not put off by the hold's backoff; one whose activity stayed
// is.
func TestHoldAgainLeavesAUserWhoseActivityMovedDue(t *testing.T) {
	for _, tc := range []struct {
		name      string
		activity  string
		wantLater bool
	}{
		{"activity moved meanwhile", "login", false},
		{"activity unchanged", "server start", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			looked := store.UserState{Name: "alice", Status: store.StatusEnded, EndedOn: store.Digest{1}, Due: f.now, Kept: true, Activity: "server start"}
			now := looked
			now.Activity = tc.activity
			f.r.mu.Lock()
			f.r.users["alice"] = &now
			f.r.mu.Unlock()
			f.r.holdAgain(context.Background(), looked)
			u, _ := f.r.user("alice")
			if later := u.Due.After(f.now); later != tc.wantLater {
				t.Errorf("after holdAgain alice is due at %v (now %v), later = %t, want %t", u.Due, f.now, later, tc.wantLater)
			}
		})
	}
}
