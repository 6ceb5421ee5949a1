package refresh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/store"
)

// addSession gives name an auth_state whose access token lives access from
// iat and whose refresh token (a JWT, as Keycloak's are) expires at rexp.
func (f *fixture) addSession(name string, active bool, iat time.Time, access time.Duration, rexp time.Time, tag string) {
	f.hub.mu.Lock()
	defer f.hub.mu.Unlock()
	rt := jwt(map[string]any{"exp": rexp.Unix(), "typ": "Refresh", "user": name, "tag": tag})
	f.hub.states[name] = authState(iat, access, rt)
	f.hub.active[name] = active
}

func (f *fixture) sweep(t *testing.T) {
	t.Helper()
	if err := f.r.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) loggedOut(name string) bool {
	f.hub.mu.Lock()
	defer f.hub.mu.Unlock()
	return string(f.hub.states[name]) == "{}"
}

// TestIdleUserLoggedOutAtRefreshExpiryWithoutGrant: a user with no server is
// never refreshed by the sweep (that would keep the session alive); once
// their refresh token's expiry (SSO idle) has passed they are logged out,
// without a grant, and the ending does not count toward the guard.
func TestIdleUserLoggedOutAtRefreshExpiryWithoutGrant(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Guard = Guard{Min: 1, Fraction: 0.01} })
	f.addSession("idle", false, f.now, 5*time.Minute, f.now.Add(2*time.Minute), "a")
	f.sweep(t)
	reads := f.hub.reads.Load()
	for range 7 { // 105 s: before the idle time is over
		f.advance(15 * time.Second)
		f.sweep(t)
	}
	if f.loggedOut("idle") || f.hub.reads.Load() != reads {
		t.Fatalf("idle user touched before the refresh token expired (reads %d → %d)", reads, f.hub.reads.Load())
	}
	for range 3 {
		f.advance(15 * time.Second)
		f.sweep(t)
	}
	if !f.loggedOut("idle") {
		t.Errorf("idle user not logged out 30 s after the refresh token expired")
	}
	if got := f.grant.calls.Load(); got != 0 {
		t.Errorf("grants = %d, want 0: an idle session is never extended", got)
	}
	if h := f.r.Health(); h.State() != HealthOK {
		t.Errorf("Health() = %+v, want ok: an expected ending does not trip the guard", h)
	}
}

// TestAccessLongerThanIdleRefreshesBeforeIdle: 300 s access tokens with a
// 120 s SSO idle: a running user is refreshed before the refresh token
// expires, every time, and never logged out.
func TestAccessLongerThanIdleRefreshesBeforeIdle(t *testing.T) {
	f := newFixture(t)
	f.addSession("alice", true, f.now, 5*time.Minute, f.now.Add(2*time.Minute), "a")
	f.grant.refreshLife = 2 * time.Minute
	for range 40 { // 10 minutes in 15 s sweeps
		f.advance(15 * time.Second)
		f.sweep(t)
		st := f.hub.state(t, "alice")
		if !st.RefreshExpiry.After(f.clock()) {
			t.Fatalf("at %v alice's refresh token expired at %v: the schedule let the SSO idle time pass", f.clock(), st.RefreshExpiry)
		}
	}
	if f.loggedOut("alice") {
		t.Error("alice was logged out")
	}
}

// TestCohortReachingSSOMaxLoggedOutTogether: ten users who logged in
// together reach the SSO maximum together. Their refresh tokens' expiry
// predicted it, so all are logged out in one sweep and the guard stays open.
func TestCohortReachingSSOMaxLoggedOutTogether(t *testing.T) {
	f := newFixture(t)
	max := f.now.Add(10 * time.Minute)
	for i := range 10 {
		f.addSession(fmt.Sprintf("u%d", i), true, f.now, 5*time.Minute, max, "a")
	}
	f.grant.sessionMax = max
	f.grant.fail = func(string) error {
		if !f.clock().Before(max) {
			return grantError(400, "invalid_grant", "Session not active")
		}
		return nil
	}
	for f.clock().Before(max.Add(30 * time.Second)) {
		f.advance(15 * time.Second)
		f.sweep(t)
	}
	for i := range 10 {
		if name := fmt.Sprintf("u%d", i); !f.loggedOut(name) {
			t.Errorf("%s not logged out 30 s after the SSO maximum", name)
		}
	}
	if h := f.r.Health(); h.State() != HealthOK {
		t.Errorf("Health() = %+v, want ok", h)
	}
	// Once a user's access token lives to the session's maximum, no grant
	// can give a longer one: none is made until the session has ended
	// (the one then finds it ended).
	if got := f.grant.calls.Load(); got > 10*3 {
		t.Errorf("grants = %d for 10 users over a 10-minute session of 5-minute tokens, want at most 30", got)
	}
}

// TestGuardSeesLossSpreadOverSweeps: Keycloak loses every session at once,
// and the schedule's jitter spreads the failures over many sweeps. Counted
// over a window as long as a token's life, the loss trips the guard;
// nobody is logged out until an admin releases it.
func TestGuardSeesLossSpreadOverSweeps(t *testing.T) {
	f := newFixture(t)
	for i := range 20 {
		f.addSession(fmt.Sprintf("u%02d", i), true, f.now.Add(-time.Duration(i)*10*time.Second), 5*time.Minute, f.now.Add(time.Hour), "a")
	}
	f.sweep(t)
	f.grant.fail = func(string) error { return grantError(400, "invalid_grant", "Session not active") }
	for range 24 { // 6 minutes: everyone has been due once
		f.advance(15 * time.Second)
		f.sweep(t)
	}
	for i := range 20 {
		if name := fmt.Sprintf("u%02d", i); f.loggedOut(name) {
			t.Errorf("%s logged out although Keycloak lost every session", name)
		}
	}
	h := f.r.Health()
	if !hasProblem(h, ProblemLogoutsPaused) || h.State() != HealthUnhealthy {
		t.Fatalf("Health() = %+v, want logouts paused", h)
	}
	if err := f.r.ReleaseGuard(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.advance(15 * time.Second)
	f.sweep(t)
	for i := range 20 {
		if name := fmt.Sprintf("u%02d", i); !f.loggedOut(name) {
			t.Errorf("%s not logged out in the sweep after the guard was released", name)
		}
	}
}

// TestFreshTokenSessionEndLeadsToLogout: fresh-token finds an idle user's
// session ended (409); the next sweep logs them out.
func TestFreshTokenSessionEndLeadsToLogout(t *testing.T) {
	f := newFixture(t)
	f.addSession("idle", false, f.now.Add(-290*time.Second), 5*time.Minute, f.now.Add(time.Hour), "a")
	f.sweep(t)
	f.grant.fail = func(string) error { return grantError(400, "invalid_grant", "Session not active") }
	if _, err := f.r.Fresh(context.Background(), "idle", time.Minute); !errors.Is(err, ErrSessionEnded) {
		t.Fatalf("Fresh = %v, want ErrSessionEnded", err)
	}
	f.advance(15 * time.Second)
	f.sweep(t)
	if !f.loggedOut("idle") {
		t.Error("user not logged out in the sweep after fresh-token found the session ended")
	}
	if u, _ := f.r.user("idle"); u.Status != store.StatusEmpty && u.Status != store.StatusEnded {
		t.Errorf("status after logout = %q", u.Status)
	}
}

// TestIdleUserReadAgainWhenActivityMoves: an idle user who logs in again
// (the hub's last_activity moves) is read again at the next sweep, so their
// new session's expiry is the one watched.
func TestIdleUserReadAgainWhenActivityMoves(t *testing.T) {
	f := newFixture(t)
	f.addSession("idle", false, f.now, 5*time.Minute, f.now.Add(2*time.Minute), "a")
	f.sweep(t)
	f.advance(time.Minute)
	f.addSession("idle", false, f.clock(), 5*time.Minute, f.clock().Add(30*time.Minute), "b")
	f.hub.mu.Lock()
	f.hub.activity["idle"] = "2026-11-01T12:01:00Z"
	f.hub.mu.Unlock()
	reads := f.hub.reads.Load()
	f.sweep(t)
	if got := f.hub.reads.Load() - reads; got != 1 {
		t.Errorf("reads in the sweep after the hub showed activity = %d, want 1", got)
	}
	for range 8 { // past the first session's idle time
		f.advance(15 * time.Second)
		f.sweep(t)
	}
	if f.loggedOut("idle") {
		t.Error("a user who logged in again was logged out at the old session's idle time")
	}
}

// TestInvalidGrantAtRefreshExpiryIsExpected: a grant refused as the refresh
// token reaches its expiry (Keycloak's clock a little ahead) is an expected
// ending, logged out at the next sweep, not one for the guard.
func TestInvalidGrantAtRefreshExpiryIsExpected(t *testing.T) {
	f := newFixture(t)
	f.addSession("alice", true, f.now.Add(-290*time.Second), 5*time.Minute, f.now.Add(15*time.Second), "a")
	f.grant.fail = func(string) error {
		f.advance(10 * time.Second) // the refresh token reaches its expiry during the grant
		return grantError(400, "invalid_grant", "Token is not active")
	}
	if _, err := f.r.Fresh(context.Background(), "alice", time.Minute); !errors.Is(err, ErrSessionEnded) {
		t.Fatalf("Fresh = %v, want ErrSessionEnded", err)
	}
	if u, _ := f.r.user("alice"); !u.EndExpected || u.Due.After(f.clock()) {
		t.Errorf("state = %+v, want an expected ending due now", u)
	}
}

// TestBackchannelLogoutForUnseenSession: a user logs in and Keycloak ends
// the session before any sweep read them. The logout reads new logins
// first, so it finds and logs out the user.
func TestBackchannelLogoutForUnseenSession(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	s := newLogoutSigner(t, f.clock)
	f.addUser("alice", false, f.now, "rt-alice") // session s1
	f.sweep(t)
	// bob logs in after the sweep, in session s-bob.
	at := jwt(map[string]any{"iat": f.now.Unix(), "exp": f.now.Add(5 * time.Minute).Unix(), "sid": "s-bob", "sub": "sub-bob"})
	f.hub.mu.Lock()
	f.hub.states["bob"] = json.RawMessage(`{"access_token":"` + at + `","refresh_token":"rt-bob"}`)
	f.hub.mu.Unlock()
	got, err := f.r.BackchannelLogout(ctx, s.token(t, logoutClaims(f.now, "j1", "s-bob", "jupyterhub")), s.verify)
	if err != nil || len(got) != 1 || got[0] != "bob" {
		t.Fatalf("BackchannelLogout for bob's unseen session = %v, %v; want [bob]", got, err)
	}
	if !f.loggedOut("bob") {
		t.Error("bob's auth_state was not cleared")
	}
	if n := f.grant.calls.Load(); n != 0 {
		t.Errorf("grants = %d, want 0", n)
	}
	if f.loggedOut("alice") {
		t.Error("alice, in another session, was logged out")
	}
}

// TestDebugLogsSweepsAndDecisions: at debug level each sweep logs a summary
// and each user read logs its decision.
func TestDebugLogsSweepsAndDecisions(t *testing.T) {
	f := newFixture(t)
	f.addUser("alice", true, f.now, "rt-alice")
	f.grant.fail = func(string) error { return fmt.Errorf("refresh grant: %w", context.DeadlineExceeded) }
	f.sweep(t)
	f.advance(250 * time.Second)
	f.sweep(t)
	for _, want := range []string{`"level":"DEBUG","msg":"sweep"`, `"msg":"not due","user":"alice"`, `"msg":"backed off","user":"alice"`} {
		if !strings.Contains(f.logs.String(), want) {
			t.Errorf("debug log lacks %s:\n%s", want, f.logs)
		}
	}
}

// TestFreshCachesWithMinValidBeyondHalfTheLife: asking for more than half a
// token's life (the pre-spawn hook asks 300 s of 5-minute tokens) is capped
// the same way in the cache as in the refresh decision, so repeated calls
// read the hub no more than once per refresh.
func TestFreshCachesWithMinValidBeyondHalfTheLife(t *testing.T) {
	f := newFixture(t)
	f.addUser("alice", true, f.now, "rt-alice")
	for _, minValid := range []time.Duration{time.Second, time.Minute, 5 * time.Minute, 24 * time.Hour} {
		reads, grants := f.hub.reads.Load(), f.grant.calls.Load()
		for range 100 {
			if _, err := f.r.Fresh(context.Background(), "alice", minValid); err != nil {
				t.Fatal(err)
			}
		}
		if got := f.hub.reads.Load() - reads; got > 1 {
			t.Errorf("min_valid=%v: 100 calls read the hub %d times, want at most 1", minValid, got)
		}
		if got := f.grant.calls.Load() - grants; got > 1 {
			t.Errorf("min_valid=%v: 100 calls made %d grants, want at most 1", minValid, got)
		}
	}
}

// TestHubBudgetShortfallInHealth: 100 users due whose tokens expire in 10 s
// cannot all be refreshed at 20 hub requests per second (3 each): health
// says so; at 1,000 per second it does not.
func TestHubBudgetShortfallInHealth(t *testing.T) {
	for _, tt := range []struct {
		rps  float64
		want string
	}{{20, HealthDegraded}, {1000, HealthOK}} {
		f := newFixture(t, func(o *Options) { o.HubRPS = tt.rps })
		for i := range 100 {
			f.addUser(fmt.Sprintf("u%03d", i), true, f.now.Add(-290*time.Second), fmt.Sprintf("rt-%d", i))
		}
		f.sweep(t) // learns the users: all due now
		f.r.mu.Lock()
		var due []string
		for name, u := range f.r.users {
			u.Due, u.AccessExpiry = f.now, f.now.Add(10*time.Second)
			due = append(due, name)
		}
		f.r.mu.Unlock()
		f.r.budget(due)
		if h := f.r.Health(); h.State() != tt.want || (tt.want == HealthDegraded && !hasProblem(h, ProblemHubBudget)) {
			t.Errorf("hub_max_rps %v: Health() = %+v, want %s", tt.rps, h, tt.want)
		}
	}
}

// TestEndedSessionNotServedWhileItsLogoutWaits: once a grant found the
// session ended, fresh-token answers ErrSessionEnded even to a caller whose
// min_valid the old access token still meets, and the pending logout stays.
func TestEndedSessionNotServedWhileItsLogoutWaits(t *testing.T) {
	f := newFixture(t)
	f.addUser("alice", true, f.now.Add(-200*time.Second), "rt-alice") // 100 s left
	f.grant.fail = func(string) error { return grantError(400, "invalid_grant", "Session not active") }
	if _, err := f.r.Fresh(context.Background(), "alice", 2*time.Minute); !errors.Is(err, ErrSessionEnded) {
		t.Fatalf("Fresh forcing a grant = %v, want ErrSessionEnded", err)
	}
	if _, err := f.r.Fresh(context.Background(), "alice", time.Second); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("Fresh with a min_valid the old token meets = %v, want ErrSessionEnded", err)
	}
	if u, _ := f.r.user("alice"); u.Status != store.StatusEnded {
		t.Errorf("status = %q, want ended (the logout still pending)", u.Status)
	}
}

// TestKeptUserActivityCostsNoReads: a kept user whose hub activity moves at
// every sweep (a notebook asking for tokens) is read only when refreshed.
// When they log in again and Keycloak then ends the new session, the
// back-channel logout still finds them.
func TestKeptUserActivityCostsNoReads(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.addUser("alice", true, f.now, "rt-alice")
	f.sweep(t)
	reads, grants := f.hub.reads.Load(), f.grant.calls.Load()
	for i := range 40 { // 10 minutes: two token lifetimes
		f.advance(15 * time.Second)
		f.hub.mu.Lock()
		f.hub.activity["alice"] = f.clock().Format(time.RFC3339) + fmt.Sprint(i)
		f.hub.mu.Unlock()
		f.sweep(t)
	}
	refreshes := f.grant.calls.Load() - grants
	if got := f.hub.reads.Load() - reads; refreshes < 2 || got > 2*refreshes {
		t.Errorf("10 minutes of activity: %d reads for %d refreshes, want at most 2 per refresh", got, refreshes)
	}
	s := newLogoutSigner(t, f.clock)
	at := jwt(map[string]any{"iat": f.clock().Unix(), "exp": f.clock().Add(5 * time.Minute).Unix(), "sid": "s-new", "sub": "sub-alice"})
	f.hub.mu.Lock()
	f.hub.states["alice"] = json.RawMessage(`{"access_token":"` + at + `","refresh_token":"rt-new"}`)
	f.hub.activity["alice"] = "logged in again"
	f.hub.mu.Unlock()
	f.advance(15 * time.Second)
	f.sweep(t) // sees the activity, does not read yet
	got, err := f.r.BackchannelLogout(ctx, s.token(t, logoutClaims(f.clock(), "j1", "s-new", "jupyterhub")), s.verify)
	if err != nil || len(got) != 1 || got[0] != "alice" {
		t.Fatalf("BackchannelLogout for alice's new session = %v, %v; want [alice]", got, err)
	}
	if !f.loggedOut("alice") {
		t.Error("alice's auth_state was not cleared")
	}
}
