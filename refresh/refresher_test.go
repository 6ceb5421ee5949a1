package refresh

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/keycloak"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// fakeHub is an in-memory JupyterHub that counts calls.
type fakeHub struct {
	mu        sync.Mutex
	states    map[string]json.RawMessage
	active    map[string]bool
	tokens    map[string][]hubclient.Token
	deleted   []string
	failWrite error
	failRead  error
	// lostWrite, when set, is returned by a write that took effect, as
	// when its answer is lost.
	lostWrite error
	admins    map[string]bool
	activity  map[string]string
	// onRead, when set, runs before each read of a user, outside the lock.
	onRead func(name string)
	lists  atomic.Int32
	reads  atomic.Int32
	writes atomic.Int32
}

func newFakeHub() *fakeHub {
	return &fakeHub{states: map[string]json.RawMessage{}, active: map[string]bool{}, tokens: map[string][]hubclient.Token{},
		admins: map[string]bool{}, activity: map[string]string{}}
}

func (h *fakeHub) Users(ctx context.Context, q hubclient.UserQuery) iter.Seq2[hubclient.User, error] {
	h.lists.Add(1)
	return func(yield func(hubclient.User, error) bool) {
		h.mu.Lock()
		var users []hubclient.User
		for name := range h.states {
			if q.State == "active" && !h.active[name] {
				continue
			}
			u := hubclient.User{Name: name, Admin: h.admins[name], LastActivity: h.activity[name]}
			if h.active[name] {
				u.Servers = map[string]hubclient.Server{"": {Ready: true}}
			}
			users = append(users, u)
		}
		h.mu.Unlock()
		for _, u := range users {
			if !yield(u, nil) {
				return
			}
		}
	}
}

func (h *fakeHub) User(ctx context.Context, name string) (hubclient.User, error) {
	h.reads.Add(1)
	if h.onRead != nil {
		h.onRead(name)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failRead != nil {
		return hubclient.User{}, h.failRead
	}
	st, ok := h.states[name]
	if !ok {
		return hubclient.User{}, &hubclient.APIError{Method: "GET", Path: "/users/" + name, Status: 404, Message: "no such user"}
	}
	return hubclient.User{Name: name, Admin: h.admins[name], AuthState: st}, nil
}

func (h *fakeHub) SetAuthState(ctx context.Context, name string, state json.RawMessage) error {
	h.writes.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failWrite != nil {
		return h.failWrite
	}
	if h.admins[name] {
		return &hubclient.APIError{Method: "PATCH", Path: "/users/" + name, Status: 403, Message: "Only admins can modify other admins"}
	}
	if state == nil {
		state = json.RawMessage(`{}`)
	}
	h.states[name] = state
	return h.lostWrite
}

func (h *fakeHub) Tokens(ctx context.Context, user string) ([]hubclient.Token, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.tokens[user], nil
}

func (h *fakeHub) DeleteToken(ctx context.Context, user, id string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.deleted = append(h.deleted, user+"/"+id)
	return nil
}

func (h *fakeHub) StopServer(ctx context.Context, user, server string) error { return nil }

func (h *fakeHub) state(t *testing.T, name string) AuthState {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	st, err := ParseAuthState(h.states[name])
	if err != nil {
		t.Fatalf("auth_state of %s: %v", name, err)
	}
	return st
}

// jwt returns an unsigned token with the given claims.
func jwt(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString(b) + ".sig"
}

// authState returns an OAuthenticator-layout auth_state whose access token
// was issued at iat and lives life.
func authState(iat time.Time, life time.Duration, refresh string) json.RawMessage {
	at := jwt(map[string]any{"iat": iat.Unix(), "exp": iat.Add(life).Unix(), "sid": "s1"})
	b, _ := json.Marshal(map[string]any{
		"access_token": at, "refresh_token": refresh, "id_token": nil, "scope": []string{"openid"},
		"token_response": map[string]any{"access_token": at, "token_type": "Bearer", "expires_in": int(life.Seconds())},
		"oauth_user":     map[string]any{"preferred_username": "u"},
	})
	return b
}

// fakeGrant issues tokens like Keycloak with rotation on: each refresh token
// works once.
type fakeGrant struct {
	now  func() time.Time
	life time.Duration
	// refreshLife, when set, makes new refresh tokens JWTs that expire after
	// it (SSO idle), but never after sessionMax when that is set.
	refreshLife time.Duration
	sessionMax  time.Time
	mu          sync.Mutex
	spent       map[string]bool
	uses        map[string]int // grants that spent each token, when maxReuse is set
	maxReuse    int            // Keycloak accepts a token 1 + maxReuse times
	calls       atomic.Int32
	fail        func(refresh string) error
	// lose, when it returns true for the grant's number, makes the grant
	// take effect and its answer a proxy's 502 page.
	lose func(n int32) bool
}

// active is Keycloak's introspection of a refresh token: would a grant with
// it succeed now?
func (g *fakeGrant) active(_ context.Context, refresh config.Secret) (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.spent[refresh.Reveal()] || g.uses[refresh.Reveal()] <= g.maxReuse, nil
}

func (g *fakeGrant) grant(ctx context.Context, refresh config.Secret) (*oauth2.Token, error) {
	n := g.calls.Add(1)
	if g.fail != nil {
		if err := g.fail(refresh.Reveal()); err != nil {
			return nil, err
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.spent[refresh.Reveal()] && g.uses[refresh.Reveal()] > g.maxReuse {
		return nil, grantError(400, "invalid_grant", "Maximum allowed refresh token reuse exceeded")
	}
	g.spent[refresh.Reveal()] = true
	if g.uses == nil {
		g.uses = map[string]int{}
	}
	g.uses[refresh.Reveal()]++
	now := g.now()
	rt := fmt.Sprintf("rt-%d", n)
	if g.refreshLife > 0 || !g.sessionMax.IsZero() {
		exp := now.Add(cmpOr(g.refreshLife, 30*time.Minute))
		if !g.sessionMax.IsZero() && g.sessionMax.Before(exp) {
			exp = g.sessionMax
		}
		rt = jwt(map[string]any{"exp": exp.Unix(), "typ": "Refresh", "n": n})
	}
	aexp := now.Add(g.life)
	if !g.sessionMax.IsZero() && g.sessionMax.Before(aexp) {
		aexp = g.sessionMax // Keycloak's access tokens end with the session's maximum too
	}
	tok := &oauth2.Token{
		AccessToken:  jwt(map[string]any{"iat": now.Unix(), "exp": aexp.Unix(), "n": n, "sid": "s1"}),
		RefreshToken: rt, TokenType: "Bearer", ExpiresIn: int64(g.life.Seconds()),
	}
	if g.lose != nil && g.lose(n) {
		return nil, proxyPage(http.StatusBadGateway)
	}
	return tok.WithExtra(map[string]any{"refresh_expires_in": 1800.0, "scope": "openid profile"}), nil
}

// proxyPage is a reverse proxy's error page in place of Keycloak's answer.
func proxyPage(status int) error {
	return fmt.Errorf("refresh grant: %w", &oauth2.RetrieveError{
		Response: &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {"text/html"}}},
		Body:     []byte(fmt.Sprintf("<html><body><h1>%d %s</h1></body></html>\n", status, http.StatusText(status))),
	})
}

func grantError(status int, code, desc string) error {
	return fmt.Errorf("refresh grant: %w", &oauth2.RetrieveError{
		Response: &http.Response{StatusCode: status}, ErrorCode: code, ErrorDescription: desc,
		Body: []byte(fmt.Sprintf(`{"error":%q,"error_description":%q}`, code, desc)),
	})
}

type fixture struct {
	hub   *fakeHub
	grant *fakeGrant
	store *store.Store
	r     *Refresher
	logs  *bytes.Buffer
	now   time.Time
	mu    sync.Mutex
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

var testKey = bytes.Repeat([]byte{7}, 32)

func newFixture(t testing.TB, mutate ...func(*Options)) *fixture {
	t.Helper()
	f := &fixture{hub: newFakeHub(), logs: &bytes.Buffer{}, now: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
	f.grant = &fakeGrant{now: f.clock, life: 5 * time.Minute, spent: map[string]bool{}}
	db, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "tk.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f.store = db
	f.r = f.newRefresher(t, mutate...)
	return f
}

func (f *fixture) newRefresher(t testing.TB, mutate ...func(*Options)) *Refresher {
	t.Helper()
	keys, err := NewKeyring(testKey)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{
		Keep: config.KeepRunning, Schedule: Schedule{Window: 30 * time.Second, Margin: 20 * time.Second}, Recheck: time.Minute, Concurrency: 4,
		GrantTimeout: 10 * time.Second, Actions: LogoutActions{RevokeTokens: true},
		Guard: Guard{Min: 5, Fraction: 0.5}, Keys: keys, Now: f.clock, Rand: rand.New(rand.NewPCG(1, 2)),
		Logger:         slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		KeycloakOffset: new(time.Duration), // the fixture's Keycloak shares its clock
	}
	for _, m := range mutate {
		m(&opts)
	}
	r, err := New(context.Background(), f.hub, f.hub, f.grant.grant, f.store, opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *fixture) addUser(name string, active bool, iat time.Time, refresh string) {
	f.hub.mu.Lock()
	defer f.hub.mu.Unlock()
	f.hub.states[name] = authState(iat, 5*time.Minute, refresh)
	f.hub.active[name] = active
}

func TestSweepRefreshesOnlyDueRunningUsers(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.addUser("alice", true, f.now, "rt-alice")
	f.addUser("bob", false, f.now, "rt-bob")
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.grant.calls.Load(); got != 0 {
		t.Fatalf("grants after a sweep with fresh tokens = %d, want 0", got)
	}
	reads := f.hub.reads.Load()
	f.advance(30 * time.Second)
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.hub.reads.Load(); got != reads {
		t.Errorf("hub reads by a sweep with nothing due = %d, want 0", got-reads)
	}
	f.advance(5 * time.Minute * 80 / 100)
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.grant.calls.Load(); got != 1 {
		t.Fatalf("grants after the due time = %d, want 1 (alice only)", got)
	}
	if got := f.hub.state(t, "alice").Refresh.Reveal(); got != "rt-1" {
		t.Errorf("alice's refresh token = %q, want the new rt-1", got)
	}
	if got := f.hub.state(t, "bob").Refresh.Reveal(); got != "rt-bob" {
		t.Errorf("bob (no server) was refreshed: refresh token %q", got)
	}
}

func TestFreshConcurrentCallersShareOneGrant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		f.addUser("alice", true, f.now.Add(-290*time.Second), "rt-alice")
		release := make(chan struct{})
		f.grant.fail = func(string) error { <-release; return nil }
		var wg sync.WaitGroup
		errs := make([]error, 50)
		for i := range errs {
			wg.Go(func() { _, errs[i] = f.r.Fresh(context.Background(), "alice", time.Minute) })
		}
		synctest.Wait()
		close(release)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
		}
		if got := f.grant.calls.Load(); got != 1 {
			t.Errorf("grants for 50 concurrent calls = %d, want 1", got)
		}
	})
}

func TestFreshServesCachedTokenWithoutHubCalls(t *testing.T) {
	f := newFixture(t)
	f.addUser("alice", true, f.now, "rt-alice")
	first, err := f.r.Fresh(context.Background(), "alice", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	reads := f.hub.reads.Load()
	second, err := f.r.Fresh(context.Background(), "alice", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if second.Access != first.Access || f.hub.reads.Load() != reads {
		t.Errorf("second call read the hub or changed the token")
	}
}

func TestTerminalErrorAdoptsTokensRefreshedElsewhere(t *testing.T) {
	f := newFixture(t)
	f.addUser("alice", true, f.now.Add(-290*time.Second), "rt-alice")
	f.grant.fail = func(string) error {
		f.addUser("alice", true, f.clock(), "rt-from-hub") // the hub refreshed meanwhile
		return grantError(400, "invalid_grant", "Stale token")
	}
	tok, err := f.r.Fresh(context.Background(), "alice", time.Minute)
	if err != nil {
		t.Fatalf("Fresh = %v, want the adopted token", err)
	}
	if want := f.hub.state(t, "alice").Access; tok.Access != want {
		t.Errorf("Fresh returned a token other than the adopted one")
	}
	if got := f.hub.writes.Load(); got != 0 {
		t.Errorf("hub writes = %d, want 0 (nobody logged out)", got)
	}
}

func TestEndedSessionIsLoggedOutAtNextSweep(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.addUser("alice", true, f.now.Add(-290*time.Second), "rt-alice")
	sid := "browser-1"
	f.hub.tokens["alice"] = []hubclient.Token{{ID: "a1", SessionID: &sid}, {ID: "server"}}
	f.grant.fail = func(string) error { return grantError(400, "invalid_grant", "Session not active") }
	if _, err := f.r.Fresh(ctx, "alice", time.Minute); !errors.Is(err, ErrSessionEnded) {
		t.Fatalf("Fresh = %v, want ErrSessionEnded", err)
	}
	f.advance(15 * time.Second) // the failed access token has expired
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	f.hub.mu.Lock()
	state, deleted := string(f.hub.states["alice"]), strings.Join(f.hub.deleted, ",")
	f.hub.mu.Unlock()
	if state != "{}" {
		t.Errorf("auth_state after logout = %s, want {}", state)
	}
	if deleted != "alice/a1" {
		t.Errorf("revoked tokens = %q, want only the browser session's alice/a1", deleted)
	}
	audit, err := f.store.Logouts(ctx)
	if err != nil || len(audit) != 1 || !strings.Contains(audit[0].Reason, "Session not active") {
		t.Errorf("audit = %+v, %v; want one logout with Keycloak's reason", audit, err)
	}
	if _, err := f.r.Fresh(ctx, "alice", time.Minute); !errors.Is(err, ErrNoTokens) {
		t.Errorf("Fresh after logout = %v, want ErrNoTokens", err)
	}
}

func TestGuardPausesMassLogout(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for i := range 6 {
		f.addUser(fmt.Sprintf("u%d", i), true, f.now.Add(-290*time.Second), fmt.Sprintf("rt-%d-old", i))
	}
	f.grant.fail = func(string) error { return grantError(400, "invalid_grant", "Session not active") }
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := f.hub.writes.Load(); got != 0 {
		t.Errorf("hub writes = %d, want 0: nobody may be logged out", got)
	}
	if h := f.r.Health(); !hasProblem(h, ProblemLogoutsPaused) || h.State() != HealthUnhealthy {
		t.Errorf("Health() = %+v, want logouts paused", h)
	}
}

func TestTransientFailureKeepsServingValidToken(t *testing.T) {
	f := newFixture(t)
	f.addUser("alice", true, f.now.Add(-250*time.Second), "rt-alice")
	f.grant.fail = func(string) error { return fmt.Errorf("refresh grant: %w: connection refused", keycloak.ErrNotSent) }
	tok, err := f.r.Fresh(context.Background(), "alice", 2*time.Minute)
	if err != nil {
		t.Fatalf("Fresh = %v, want the still-valid token", err)
	}
	if want := f.hub.state(t, "alice").Access; tok.Access != want {
		t.Errorf("Fresh did not return the current token")
	}
	if h := f.r.Health(); h.State() != HealthDegraded || !hasProblem(h, ProblemKeycloakSlow) {
		t.Errorf("Health() = %+v after a grant without Keycloak's answer, want degraded keycloak_unanswered", h)
	}
	f.advance(unreachableFor)
	if h := f.r.Health(); h.State() != HealthUnhealthy || !hasProblem(h, ProblemKeycloakUnreachable) {
		t.Errorf("Health() = %+v %s after grants failed unanswered, want unhealthy keycloak_unreachable", h, unreachableFor)
	}
	f.grant.fail = nil
	f.advance(time.Minute)
	if _, err := f.r.Fresh(context.Background(), "alice", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if h := f.r.Health(); h.State() != HealthOK {
		t.Errorf("Health() = %+v once Keycloak answers again, want ok", h)
	}
}

func TestOperatorErrorStopsAndRecovers(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.addUser("alice", true, f.now.Add(-290*time.Second), "rt-alice")
	bad := true
	f.grant.fail = func(string) error {
		if bad {
			return grantError(401, "invalid_client", "Invalid client or Invalid client credentials")
		}
		return nil
	}
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if h := f.r.Health(); !hasProblem(h, ProblemKeycloakClient) {
		t.Fatalf("Health() = %+v after invalid_client, want keycloak_client", h)
	}
	if got := f.hub.writes.Load(); got != 0 {
		t.Errorf("hub writes = %d, want 0: nobody logged out", got)
	}
	bad = false
	f.advance(2 * time.Minute)
	if err := f.r.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if h := f.r.Health(); h.State() != HealthOK {
		t.Errorf("Health() = %+v after the grant works again, want ok", h)
	}
}

func TestFailedWriteBackIsReplayedAfterRestart(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.addUser("alice", true, f.now.Add(-290*time.Second), "rt-alice")
	f.hub.failWrite = &hubclient.APIError{Method: "PATCH", Path: "/users/alice", Status: 503}
	tok, err := f.r.Fresh(ctx, "alice", time.Minute)
	if err != nil {
		t.Fatalf("Fresh = %v, want the new token served from memory", err)
	}
	f.hub.failWrite = nil
	// A new process: nothing in memory, only the journal.
	r2 := f.newRefresher(t)
	if err := r2.Replay(ctx); err != nil {
		t.Fatal(err)
	}
	st := f.hub.state(t, "alice")
	if st.Access != tok.Access || st.Refresh.Reveal() != "rt-1" {
		t.Errorf("after replay the hub holds refresh %q, want the journaled rt-1", st.Refresh.Reveal())
	}
	if names, _ := f.store.PendingUsers(ctx); len(names) != 0 {
		t.Errorf("journal after replay = %v, want empty", names)
	}
}

func TestMalformedUserSkippedWithOneLogLine(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.addUser("alice", true, f.now.Add(-290*time.Second), "rt-alice")
	f.hub.states["mallory"] = json.RawMessage(`{"access_token": "not-a-jwt", "refresh_token": "x"}`)
	f.hub.active["mallory"] = true
	for range 3 {
		if err := f.r.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		f.advance(2 * time.Minute)
	}
	if got := strings.Count(f.logs.String(), `"user":"mallory"`); got != 1 {
		t.Errorf("log lines about mallory = %d, want 1:\n%s", got, f.logs)
	}
	if got := f.hub.state(t, "alice").Refresh.Reveal(); got == "rt-alice" {
		t.Errorf("alice was not refreshed next to a malformed user")
	}
}

func TestLogsHoldNoTokens(t *testing.T) {
	f := newFixture(t)
	f.addUser("alice", true, f.now.Add(-290*time.Second), "rt-alice")
	if _, err := f.r.Fresh(context.Background(), "alice", time.Minute); err != nil {
		t.Fatal(err)
	}
	st := f.hub.state(t, "alice")
	for _, secret := range []string{"rt-alice", st.Refresh.Reveal(), st.Access.Reveal()} {
		if strings.Contains(f.logs.String(), secret) {
			t.Errorf("logs contain a token")
		}
	}
}

// hasProblem reports whether h lists a problem of class c.
func hasProblem(h Health, c ProblemClass) bool {
	for _, p := range h.Problems {
		if p.Class == c {
			return true
		}
	}
	return false
}

func cmpOr(a, b time.Duration) time.Duration {
	if a != 0 {
		return a
	}
	return b
}
