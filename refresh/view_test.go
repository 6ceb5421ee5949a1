package refresh

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// TestSessionState: every stored status has its name on the page; an
// unexpected ending is held only while the guard is tripped.
func TestSessionState(t *testing.T) {
	ended := store.UserState{Status: store.StatusEnded, EndedOn: store.Digest{1}}
	expected := ended
	expected.EndExpected = true
	tests := []struct {
		name    string
		u       store.UserState
		tripped bool
		want    SessionState
	}{
		{"fresh", store.UserState{Status: store.StatusFresh}, false, SessionFresh},
		{"backoff", store.UserState{Status: store.StatusBackoff}, false, SessionRefreshing},
		{"ended", ended, false, SessionEnded},
		{"held", ended, true, SessionHeld},
		{"expected ending not held", expected, true, SessionEnded},
		{"logged out", store.UserState{Status: store.StatusEnded}, true, SessionEnded},
		{"stuck", store.UserState{Status: store.StatusStuck}, false, SessionStuck},
		{"admin", store.UserState{Status: store.StatusAdmin}, false, SessionAdmin},
		{"empty", store.UserState{Status: store.StatusEmpty}, false, SessionNone},
		{"new", store.UserState{Status: store.StatusNew}, false, SessionUnknown},
		{"malformed", store.UserState{Status: store.StatusMalformed}, false, SessionUnknown},
	}
	for _, tt := range tests {
		if got := sessionState(tt.u, tt.tripped); got != tt.want {
			t.Errorf("%s: sessionState = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestSessionsComeFromTheStore: the page's table is what the store holds,
// with the last refresh (the access token's iat) kept across a failure,
// and costs the hub nothing.
func TestSessionsComeFromTheStore(t *testing.T) {
	f := newFixture(t)
	issued := f.now
	f.addUser("alice", true, issued, "rt-alice")
	f.addUser("bob", false, f.now, "rt-bob")
	f.sweep(t)
	f.advance(4 * time.Minute) // alice is due; Keycloak fails her grant
	f.grant.fail = func(string) error { return grantError(503, "", "") }
	f.sweep(t)
	reads := f.hub.reads.Load()
	got, err := f.r.Sessions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n := f.hub.reads.Load() - reads; n != 0 {
		t.Errorf("Sessions read the hub %d times, want 0", n)
	}
	names := []string{}
	for _, v := range got {
		names = append(names, v.Name)
	}
	if diff := cmp.Diff([]string{"alice", "bob"}, names); diff != "" {
		t.Fatalf("Sessions names (-want +got):\n%s", diff)
	}
	alice := got[0]
	if alice.State != SessionRefreshing || alice.Failures != 1 || alice.LastOutcome == "ok" {
		t.Errorf("alice after a failed grant = %+v, want refreshing, 1 failure, its reason", alice)
	}
	if !alice.LastRefresh.Equal(issued.Truncate(time.Second)) {
		t.Errorf("alice's last refresh = %v, want her token's iat %v kept across the failure", alice.LastRefresh, issued)
	}
	if bob := got[1]; bob.State != SessionFresh || bob.LastOutcome != "ok" || bob.Kept {
		t.Errorf("bob = %+v, want fresh, ok, not kept", bob)
	}
}

// TestGuardStateNamesHeldUsers: the tripped guard's view names the users
// whose logouts it holds.
func TestGuardStateNamesHeldUsers(t *testing.T) {
	f := newFixture(t)
	if g := f.r.GuardState(); g.Tripped || len(g.Held) != 0 {
		t.Fatalf("GuardState before = %+v, want not tripped", g)
	}
	tripGuard(t, f, 6)
	g := f.r.GuardState()
	if !g.Tripped || len(g.Held) == 0 || !slices.IsSorted(g.Held) {
		t.Fatalf("GuardState = %+v, want tripped, holding users in order", g)
	}
	if h := f.r.Health(); h.Problems[0].Users != len(g.Held) {
		t.Errorf("GuardState holds %d users, health says %d", len(g.Held), h.Problems[0].Users)
	}
}

// TestLogoutEverywhere: the hub's tokens are cleared with the audit row
// naming who asked, the Keycloak session the hub held is ended with its
// refresh token, after the hub's logout, and a keeper waiting for the
// user's logout is woken.
func TestLogoutEverywhere(t *testing.T) {
	var ended []string
	f := newFixture(t)
	f.r = f.newRefresher(t, func(o *Options) {
		o.Actions.EndSession = func(ctx context.Context, refresh config.Secret) error {
			if !f.loggedOut("alice") {
				t.Error("the Keycloak session was ended before the hub's logout")
			}
			ended = append(ended, refresh.Reveal())
			return nil
		}
	})
	f.addUser("alice", true, f.now, "rt-alice")
	f.sweep(t)
	since := f.now
	woke := make(chan bool, 1)
	go func() {
		ok, _ := f.r.WaitLogout(context.Background(), "alice", since, time.Minute)
		woke <- ok
	}()
	if err := f.r.LogoutEverywhere(context.Background(), "alice", "admin"); err != nil {
		t.Fatal(err)
	}
	if !f.loggedOut("alice") {
		t.Error("alice's auth_state was not cleared")
	}
	if diff := cmp.Diff([]string{"rt-alice"}, ended); diff != "" {
		t.Errorf("Keycloak sessions ended (-want +got):\n%s", diff)
	}
	logs, err := f.r.Audit(context.Background(), 10)
	if err != nil || len(logs) != 1 || logs[0].User != "alice" || logs[0].Reason != "logged out everywhere by admin" {
		t.Errorf("Audit = %+v, %v; want one row for alice by admin", logs, err)
	}
	select {
	case ok := <-woke:
		if !ok {
			t.Error("WaitLogout returned without the logout")
		}
	case <-time.After(30 * time.Second):
		t.Error("WaitLogout did not wake at the logout")
	}
	if err := f.r.LogoutEverywhere(context.Background(), "alice", "alice"); err == nil {
		t.Error("a second LogoutEverywhere with nothing to clear did not say so")
	}
}

// TestWaitLogout: a logout at or after since ends the wait at once, an
// older one does not, and the wait ends after wait with the time to pass
// as since next.
func TestWaitLogout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &Refresher{opts: Options{Now: time.Now}}
		start := time.Now()
		r.ends.loggedOut("alice", start.Add(-time.Second))
		if ok, _ := r.WaitLogout(context.Background(), "alice", start.Add(-time.Second), time.Minute); !ok {
			t.Error("a logout at since was not reported")
		}
		ok, next := r.WaitLogout(context.Background(), "alice", start, time.Minute)
		if ok || time.Since(start) != time.Minute || !next.Equal(start) {
			t.Errorf("WaitLogout after an older logout = %t, next %v after %v; want false after the whole minute, next = start",
				ok, next.Sub(start), time.Since(start))
		}
		go func() {
			time.Sleep(10 * time.Second)
			r.ends.loggedOut("bob", time.Now())
			time.Sleep(10 * time.Second)
			r.ends.loggedOut("alice", time.Now())
		}()
		start = time.Now()
		ok, _ = r.WaitLogout(context.Background(), "alice", start, time.Minute)
		if !ok || time.Since(start) != 20*time.Second {
			t.Errorf("WaitLogout = %t after %v, want true after 20s (bob's logout does not end alice's wait)", ok, time.Since(start))
		}
	})
}

// TestBackchannelAfterLogoutEverywhereAuditsOnce: Keycloak's back-channel
// logout of the session "log out everywhere" just ended finds the user
// logged out already: no second audit row, no fence left.
func TestBackchannelAfterLogoutEverywhereAuditsOnce(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	s := newLogoutSigner(t, f.clock)
	f.addUser("alice", true, f.now, "rt-alice") // its access token carries sid "s1"
	f.sweep(t)
	if err := f.r.LogoutEverywhere(ctx, "alice", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.BackchannelLogout(ctx, s.token(t, logoutClaims(f.now, "j1", "s1", "jupyterhub")), s.verify); err != nil {
		t.Fatal(err)
	}
	logs, err := f.r.Audit(ctx, 10)
	if err != nil || len(logs) != 1 || logs[0].Reason != "logged out everywhere by the user" {
		t.Errorf("Audit = %+v, %v; want the one row of log out everywhere", logs, err)
	}
	if _, fenced := f.r.fenceOf("alice"); fenced {
		t.Error("a fence is left for a user logged out already")
	}
}
