package refresh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// TestReloginBeforeSweepLogoutKeepsNewLogin: the sweep finds alice's session
// ended, and alice logs in again before the sweep logs her out. The logout
// compares the refresh token it decided on and leaves the new login alone.
func TestReloginBeforeSweepLogoutKeepsNewLogin(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.addUser("alice", true, f.now.Add(-290*time.Second), "rt-alice")
	f.grant.fail = func(string) error { return grantError(400, "invalid_grant", "Session not active") }
	var reads atomic.Int32
	f.hub.onRead = func(name string) {
		// Read 1: the update; read 2: the terminal re-read; read 3: the
		// logout's compare-and-set. The new login lands before read 3.
		if reads.Add(1) == 3 {
			f.addUser("alice", true, f.clock(), "rt-new-login")
		}
	}
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	f.advance(5 * time.Minute) // the logout waits until the failed access token expired
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.hub.state(t, "alice").Refresh.Reveal(); got != "rt-new-login" {
		t.Errorf("alice's refresh token after the sweep = %q, want the new login's", got)
	}
	if got := f.hub.writes.Load(); got != 0 {
		t.Errorf("hub writes = %d, want 0: the new login must not be touched", got)
	}
	if audit, _ := f.store.Logouts(ctx); len(audit) != 0 {
		t.Errorf("audit = %+v, want no logout", audit)
	}
}

// TestLogoutWinsOverWriteBackInFlight: a back-channel logout arrives while a
// grant for the same user is in flight. It is answered at once, without
// waiting for the grant (Keycloak may be sending it while handling that very
// grant), and the user's token is no longer served; when the grant ends its
// tokens are not written back and the logout is carried out.
func TestLogoutWinsOverWriteBackInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		ctx := context.Background()
		s := newLogoutSigner(t, f.clock)
		f.addUser("alice", true, f.now.Add(-200*time.Second), "rt-alice") // sid "s1", 100 s left
		if _, err := f.r.Fresh(ctx, "alice", time.Minute); err != nil {
			t.Fatal(err)
		}
		release := make(chan struct{})
		f.grant.fail = func(string) error { <-release; return nil }
		var wg sync.WaitGroup
		var freshErr error
		wg.Go(func() { _, freshErr = f.r.Fresh(ctx, "alice", 2*time.Minute) }) // forces a grant
		synctest.Wait()
		if got := f.grant.calls.Load(); got != 1 {
			t.Fatalf("grants in flight = %d, want 1", got)
		}
		got, err := f.r.BackchannelLogout(ctx, s.token(t, logoutClaims(f.clock(), "j1", "s1", "jupyterhub")), s.verify)
		if err != nil || len(got) != 0 {
			t.Fatalf("BackchannelLogout during a grant = %v, %v; want it answered at once, carried out later", got, err)
		}
		close(release)
		wg.Wait()
		if !errors.Is(freshErr, ErrSessionEnded) {
			t.Errorf("Fresh whose grant met the logout = %v, want ErrSessionEnded, not the grant's token", freshErr)
		}
		f.hub.mu.Lock()
		state := string(f.hub.states["alice"])
		f.hub.mu.Unlock()
		if state != "{}" {
			t.Errorf("auth_state after logout and write-back = %s, want {}", state)
		}
		if _, err := f.r.Fresh(ctx, "alice", time.Minute); !errors.Is(err, ErrNoTokens) && !errors.Is(err, ErrSessionEnded) {
			t.Errorf("Fresh after logout = %v, want ErrNoTokens or ErrSessionEnded", err)
		}
	})
}

// TestCancelledSweepStartsNoGrantAndStopWaits: 40 users are due with
// concurrency 4. The sweep is cancelled while 4 grants are in flight: no
// further grant starts, Stop waits for the 4, and each is journaled and
// written back before Stop returns.
func TestCancelledSweepStartsNoGrantAndStopWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		for i := range 40 {
			f.addUser(fmt.Sprintf("u%02d", i), true, f.now.Add(-290*time.Second), fmt.Sprintf("rt-%02d", i))
		}
		release := make(chan struct{})
		f.grant.fail = func(string) error { <-release; return nil }
		ctx, cancel := context.WithCancel(context.Background())
		swept := make(chan error, 1)
		go func() { swept <- f.r.Sweep(ctx) }()
		synctest.Wait()
		cancel()
		if err := <-swept; !errors.Is(err, context.Canceled) {
			t.Errorf("Sweep after cancel = %v, want context.Canceled", err)
		}
		stopped := make(chan error, 1)
		go func() { stopped <- f.r.Stop(context.Background()) }()
		synctest.Wait()
		select {
		case err := <-stopped:
			t.Fatalf("Stop returned %v while grants were in flight", err)
		default:
		}
		close(release)
		if err := <-stopped; err != nil {
			t.Fatal(err)
		}
		if got := f.grant.calls.Load(); got != 4 {
			t.Errorf("grants started = %d, want 4 (the concurrency)", got)
		}
		if got := f.hub.writes.Load(); got != 4 {
			t.Errorf("write-backs = %d, want 4", got)
		}
		if _, err := f.r.Fresh(context.Background(), "u39", time.Hour); !errors.Is(err, ErrStopping) && err == nil {
			t.Errorf("Fresh after Stop = %v, want no new grant", err)
		}
		if got := f.grant.calls.Load(); got != 4 {
			t.Errorf("grants after Stop = %d, want still 4", got)
		}
	})
}

// TestHubAdminRefreshTokenNeverSpent: the hub refuses to store an admin's
// auth_state for a non-admin service, so tokenkeeper serves the admin's
// current token and never spends their refresh token.
func TestHubAdminRefreshTokenNeverSpent(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.addUser("root", true, f.now.Add(-250*time.Second), "rt-root")
	f.hub.admins["root"] = true
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	tok, err := f.r.Fresh(ctx, "root", time.Minute)
	if err != nil || tok.Access != f.hub.state(t, "root").Access {
		t.Errorf("Fresh(admin) = %v; want the hub's current token", err)
	}
	f.advance(time.Minute)
	if _, err := f.r.Fresh(ctx, "root", time.Minute); !errors.Is(err, ErrHubAdmin) {
		t.Errorf("Fresh(admin) with an expired token = %v, want ErrHubAdmin", err)
	}
	if got := f.grant.calls.Load(); got != 0 {
		t.Errorf("grants for a hub admin = %d, want 0", got)
	}
	if got := f.hub.writes.Load(); got != 0 {
		t.Errorf("writes for a hub admin = %d, want 0", got)
	}
	if h := f.r.Health(); h.State() != HealthOK {
		t.Errorf("Health() = %+v, want ok: admins are not stuck", h)
	}
}

// TestRefusedWriteBackIsStuckAndVisible: with RefreshAdmins on but the hub
// still refusing (the service lacks the admin role), the new tokens stay in
// the journal and health reports the stuck user.
func TestRefusedWriteBackIsStuckAndVisible(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.RefreshAdmins = true })
	ctx := context.Background()
	f.addUser("root", true, f.now.Add(-250*time.Second), "rt-root")
	f.hub.admins["root"] = true
	tok, err := f.r.Fresh(ctx, "root", time.Minute)
	if err != nil {
		t.Fatalf("Fresh = %v, want the new token served from memory", err)
	}
	h := f.r.Health()
	if h.State() != HealthDegraded || !hasProblem(h, ProblemStuckUsers) || h.Problems[0].Users != 1 {
		t.Errorf("Health() = %+v, want degraded with 1 stuck user", h)
	}
	if names, _ := f.store.PendingUsers(ctx); len(names) != 1 {
		t.Errorf("journal = %v, want root's entry kept", names)
	}
	if tok.Access == f.hub.state(t, "root").Access {
		t.Errorf("the hub holds the new token although it refused it")
	}
	// The entry is retried, not re-granted: the journaled refresh token is the live one.
	f.advance(2 * time.Minute)
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.grant.calls.Load(); got != 1 {
		t.Errorf("grants = %d, want 1: a stuck user's journaled token is not spent again", got)
	}
}

// TestStateKeyRotation: an entry sealed with the old key opens with
// [new, old]; with only [new] it is dropped with one log line and the user
// is read again instead of failing at every sweep.
func TestStateKeyRotation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.addUser("alice", true, f.now.Add(-290*time.Second), "rt-alice")
	f.hub.failWrite = &hubclient.APIError{Method: "PATCH", Path: "/users/alice", Status: 503}
	if _, err := f.r.Fresh(ctx, "alice", time.Minute); err != nil {
		t.Fatal(err)
	}
	f.hub.failWrite = nil
	newKey := []byte(strings.Repeat("n", 32))
	rotated := f.newRefresher(t, func(o *Options) { o.Keys, _ = NewKeyring(newKey, testKey) })
	if err := rotated.Replay(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.hub.state(t, "alice").Refresh.Reveal(); got != "rt-1" {
		t.Errorf("after replay with [new, old] the hub holds %q, want the journaled rt-1", got)
	}

	f.addUser("bob", true, f.now.Add(-250*time.Second), "rt-bob")
	f.hub.failWrite = &hubclient.APIError{Method: "PATCH", Path: "/users/bob", Status: 503}
	if _, err := f.r.Fresh(ctx, "bob", time.Minute); err != nil {
		t.Fatal(err)
	}
	f.hub.failWrite = nil
	f.logs.Reset()
	lost := f.newRefresher(t, func(o *Options) { o.Keys, _ = NewKeyring(newKey) })
	for range 3 {
		if _, err := lost.Fresh(ctx, "bob", time.Second); err != nil && !errors.Is(err, ErrSessionEnded) {
			t.Fatalf("Fresh(bob) with an unopenable entry = %v, want it read from the hub", err)
		}
	}
	if names, _ := f.store.PendingUsers(ctx); len(names) != 0 {
		t.Errorf("journal = %v, want the unopenable entry dropped", names)
	}
	if got := strings.Count(f.logs.String(), "dropped a journal entry that no state key opens"); got != 1 {
		t.Errorf("log lines about the unopenable entry = %d, want 1:\n%s", got, f.logs)
	}
}

// TestBackchannelLogoutNotLostWhenHubFails: the hub cannot be read, so the
// logout cannot be carried out now; it is recorded, the user's token is not
// served meanwhile, and the first sweep after the hub is back logs the user
// out, also after a restart. A redelivery is a replay.
func TestBackchannelLogoutNotLostWhenHubFails(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	s := newLogoutSigner(t, f.clock)
	f.addUser("alice", true, f.now, "rt-alice")
	if _, err := f.r.Fresh(ctx, "alice", time.Minute); err != nil {
		t.Fatal(err)
	}
	raw := s.token(t, logoutClaims(f.now, "j1", "s1", "jupyterhub"))
	f.hub.failRead = &hubclient.APIError{Method: "GET", Path: "/users/alice", Status: 502}
	if got, err := f.r.BackchannelLogout(ctx, raw, s.verify); err != nil || len(got) != 0 {
		t.Fatalf("BackchannelLogout with the hub down = %v, %v; want it recorded", got, err)
	}
	if _, err := f.r.Fresh(ctx, "alice", time.Second); err == nil {
		t.Error("Fresh served alice's token after her session's back-channel logout")
	}
	f.r = f.newRefresher(t) // a restart before the hub is back
	f.hub.failRead = nil
	if _, err := f.r.Fresh(ctx, "alice", time.Second); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("Fresh after the restart = %v, want ErrSessionEnded", err)
	}
	if !f.loggedOut("alice") {
		t.Error("alice not logged out once the hub answered")
	}
	if _, err := f.r.BackchannelLogout(ctx, raw, s.verify); !errors.Is(err, ErrReplayedLogout) {
		t.Errorf("redelivery = %v, want ErrReplayedLogout", err)
	}
}

// TestOperatorErrorSpendsOneGrantNotOnePerUser: while Keycloak refuses the
// client, one probing grant runs per backoff step, not one per due user.
func TestOperatorErrorSpendsOneGrantNotOnePerUser(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for i := range 10 {
		f.addUser(fmt.Sprintf("u%d", i), true, f.now.Add(-290*time.Second), fmt.Sprintf("rt-%d", i))
	}
	f.grant.fail = func(string) error {
		return grantError(401, "unauthorized_client", "Invalid client or Invalid client credentials")
	}
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	// Grants already under way when the first refusal arrives (at most the
	// concurrency, 4) finish; none starts after it.
	first := f.grant.calls.Load()
	if first > 4 {
		t.Errorf("grants in a sweep with a refused client = %d, want at most the concurrency (4), not one per due user (10)", first)
	}
	// The next sweeps within the probe's backoff start no grant at all.
	for range 3 {
		f.advance(100 * time.Millisecond)
		if err := f.r.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.grant.calls.Load(); got != first {
		t.Errorf("grants in the sweeps after the refusal = %d, want 0", got-first)
	}
	states, _ := f.store.Users(ctx)
	for _, u := range states {
		if u.Status != store.StatusBackoff {
			t.Errorf("%s: status %q, want backoff", u.Name, u.Status)
		}
	}
}

// Keycloak sends one back-channel logout per session, at once: a logout of
// an older session arriving after the current one's, while a grant holds
// the user, must not replace the current session's fence.
func TestTwoBackchannelLogoutsForOneUserBothHold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		ctx := context.Background()
		s := newLogoutSigner(t, f.clock)
		iat := f.now.Add(-200 * time.Second)
		at := jwt(map[string]any{"iat": iat.Unix(), "exp": iat.Add(5 * time.Minute).Unix(), "sid": "s1", "sub": "sub-1"})
		st, _ := json.Marshal(map[string]any{"access_token": at, "refresh_token": "rt-alice"})
		f.hub.mu.Lock()
		f.hub.states["alice"], f.hub.active["alice"] = st, true
		f.hub.mu.Unlock()
		if _, err := f.r.Fresh(ctx, "alice", time.Minute); err != nil {
			t.Fatal(err)
		}
		release := make(chan struct{})
		f.grant.fail = func(string) error { <-release; return nil }
		var wg sync.WaitGroup
		wg.Go(func() { f.r.Fresh(ctx, "alice", 2*time.Minute) })
		synctest.Wait()
		for i, sid := range []string{"s1", "s0"} { // s0: an older session of the same Keycloak user
			if _, err := f.r.BackchannelLogout(ctx, s.token(t, logoutClaims(f.clock(), fmt.Sprint("j", i), sid, "jupyterhub")), s.verify); err != nil {
				t.Fatalf("BackchannelLogout(%s) = %v", sid, err)
			}
		}
		close(release)
		wg.Wait()
		if !f.loggedOut("alice") {
			t.Error("alice not logged out: the older session's logout replaced the current one's")
		}
	})
}

// TestHeldUserWhoLogsInAgainKeepsTheNewSession: while the guard holds an
// unexpected ending back, the user logs in again (the hub shows activity):
// the next sweep looks at them at once, keeps the new session and refreshes
// it on its schedule, whatever the guard holds. (Before, the held user was
// looked at again only at the hold's backoff, up to five minutes later,
// and the new session's token expired unrefreshed meanwhile.)
func TestHeldUserWhoLogsInAgainKeepsTheNewSession(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for i := range 6 {
		f.addUser(fmt.Sprintf("u%d", i), true, f.now.Add(-290*time.Second), fmt.Sprintf("rt-%d-old", i))
	}
	f.grant.fail = func(string) error { return grantError(400, "invalid_grant", "Session not active") }
	f.sweep(t)
	if h := f.r.Health(); !hasProblem(h, ProblemLogoutsPaused) {
		t.Fatalf("Health() = %+v, want the guard holding", h)
	}
	for range 8 { // held for a while: the hold's backoff grows to minutes
		f.advance(5 * time.Minute)
		f.sweep(t)
	}
	f.grant.fail = nil
	f.advance(15 * time.Second)
	f.addUser("u0", true, f.clock(), "rt-0-new")
	f.hub.mu.Lock()
	f.hub.activity["u0"] = f.clock().Format(time.RFC3339)
	f.hub.mu.Unlock()
	f.sweep(t)
	if u, _ := f.r.user("u0"); u.Status != store.StatusFresh {
		t.Errorf("u0 after a new login while held: status %q (due %s), want fresh", u.Status, u.Due)
	}
	f.advance(4 * time.Minute) // the new token is due, well within the hold's backoff
	f.sweep(t)
	if got := f.hub.state(t, "u0").Refresh.Reveal(); got == "rt-0-new" {
		t.Error("the new session was not refreshed on its schedule while the guard holds")
	}
	if audit, _ := f.store.Logouts(ctx); len(audit) != 0 {
		t.Errorf("audit = %+v, want no logout", audit)
	}
}

// TestRetryNeverWaitsPastTheRefreshTokensExpiry: a user whose access token
// has expired and whose refresh token expires in a minute is retried before
// the refresh token expires (less the skew allowed), however long their
// backoff has grown: a grant whose answer was lost may have moved the
// session on, and only a retry with the old token recovers it.
func TestRetryNeverWaitsPastTheRefreshTokensExpiry(t *testing.T) {
	f := newFixture(t)
	now := f.clock()
	st := AuthState{AccessClaims: Claims{IssuedAt: now.Add(-10 * time.Minute), Expiry: now.Add(-time.Minute)}, RefreshExpiry: now.Add(time.Minute)}
	for failures := 1; failures <= 12; failures++ {
		f.r.mu.Lock()
		f.r.users["alice"] = &store.UserState{Name: "alice", Status: store.StatusBackoff, Failures: failures}
		f.r.mu.Unlock()
		f.r.backoff(context.Background(), "alice", st, errors.New("no answer"))
		u, _ := f.r.user("alice")
		if last := st.RefreshExpiry.Add(-expirySkew - f.r.opts.Schedule.Margin); u.Due.After(last) {
			t.Errorf("failures %d: retry at %s, after the last chance %s", failures+1, u.Due.Sub(now), last.Sub(now))
		}
	}
	st.RefreshExpiry = now.Add(time.Hour)
	st.AccessClaims.Expiry = now.Add(2 * time.Minute)
	if got := retryBy(st, now, 0); !got.Equal(st.AccessClaims.Expiry) {
		t.Errorf("retryBy with a valid access token = %s, want its expiry", got.Sub(now))
	}
}
