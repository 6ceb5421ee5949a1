//go:build integration

package integration

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/refresh"
)

// The tests in this file check that tokenkeeper loses no session and logs
// nobody out wrongly when it races with the hub: a hub admin whose
// auth_state only the hub may write, a user who logs in again while
// tokenkeeper logs them out, and tokenkeeper stopped or killed in the middle
// of its sweeps. Keycloak's refresh-token rotation is on in the test realm,
// so a refresh token spent and not kept is a session lost. The tests disturb
// the shared stack (gates in the hub proxy, restarts of tokenkeeper, other
// settings) and do not call t.Parallel.

// hubAdmin is the hub admin of the test stack (c.Authenticator.admin_users).
const hubAdmin = "mallory"

// watchWrites counts tokenkeeper's writes of user's auth_state, passing each on.
func watchWrites(t *testing.T, user string) *atomic.Int64 {
	var n atomic.Int64
	g := hubProxy.Gate(func(q *GatedRequest) bool { return q.User == user && q.Method == http.MethodPatch })
	done := make(chan struct{})
	go func() {
		for {
			select {
			case q := <-g.Requests():
				n.Add(1)
				q.Forward()
			case <-done:
				return
			}
		}
	}()
	t.Cleanup(func() { g.Close(); close(done) })
	return &n
}

// browse opens the hub's home page in browser and reports where it ended.
func browse(browser *http.Client) (int, string, error) {
	resp, err := browser.Get(stack.HubURL() + "/hub/home")
	if err != nil {
		return 0, "", err
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Request.URL.Path, nil
}

// hubLogLines returns the hub's own log lines (not tokenkeeper's, which the
// hub log holds too) that contain any of needles.
func hubLogLines(t *testing.T, needles ...string) []string {
	t.Helper()
	f, err := os.Open(stack.HubLog())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if !strings.HasPrefix(sc.Text(), "[") {
			continue
		}
		for _, n := range needles {
			if strings.Contains(sc.Text(), n) {
				out = append(out, sc.Text())
				break
			}
		}
	}
	return out
}

// TestHubAdminSessionStaysIntact keeps a hub admin's browser busy and asks
// tokenkeeper for their token over three access-token lifetimes. The hub
// refuses a non-admin service's writes of an admin's auth_state, so
// tokenkeeper must never spend an admin's refresh token (a spent one it
// cannot store is a session lost); the hub refreshes admins itself on their
// own requests.
func TestHubAdminSessionStaysIntact(t *testing.T) {
	ctx := context.Background()
	if err := stack.CreateKeycloakUser(ctx, hubAdmin, hubAdmin+"-pw"); err != nil {
		t.Fatal(err)
	}
	writes := watchWrites(t, hubAdmin)
	browser := login(t, hubAdmin)
	startServer(t, hubAdmin)
	stopServerAtEnd(t, hubAdmin)
	var model struct {
		Admin bool `json:"admin"`
	}
	if err := stack.API(ctx, http.MethodGet, "/users/"+hubAdmin, nil, &model); err != nil || !model.Admin {
		t.Fatalf("%s is not a hub admin (%v): check admin_users in jupyterhub_config.py", hubAdmin, err)
	}
	serverToken := serverEnv(t, hubAdmin)["JUPYTERHUB_API_TOKEN"]
	start := time.Now()
	tokens := map[string]bool{}
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for time.Since(start) < 3*30*time.Second || len(tokens) < 3 {
		if time.Since(start) > 150*time.Second {
			t.Errorf("fresh-token served %d distinct tokens in %s, want at least 3", len(tokens), time.Since(start).Round(time.Second))
			break
		}
		if status, path, err := browse(browser); err != nil || status != http.StatusOK || path != "/hub/home" {
			t.Errorf("%s's browser at %s: %d at %s, %v; want 200 at /hub/home", hubAdmin, time.Since(start).Round(time.Second), status, path, err)
		}
		if status, body := health(t); status != http.StatusOK || body["status"] != "ok" {
			t.Errorf("tokenkeeper's health at %s: %d %v, want 200 ok", time.Since(start).Round(time.Second), status, body)
		}
		// fresh-token is asked while the hub's copy has time left: tokenkeeper
		// does not refresh an admin, the hub does on the admin's next request.
		if c, ok, _ := authClaims(ctx, hubAdmin); ok && time.Until(c.Expiry) >= 10*time.Second {
			status, body := freshToken(t, serverToken, "?min_valid=5")
			at, _ := body["access_token"].(string)
			if status != http.StatusOK {
				t.Errorf("fresh-token for %s at %s: %d %v, want 200", hubAdmin, time.Since(start).Round(time.Second), status, body)
			} else if !tokens[at] {
				tokens[at] = true
				assertUserinfoOK(t, at)
			}
		}
		<-tick.C
	}
	if s, err := stack.KeycloakSessions(ctx, hubAdmin); err != nil || len(s) != 1 {
		t.Errorf("%s's Keycloak sessions at the end: %d, %v; want 1", hubAdmin, len(s), err)
	}
	if n := writes.Load(); n != 0 {
		t.Errorf("tokenkeeper wrote %s's auth_state %d times, want 0", hubAdmin, n)
	}
	if l := hubLogLines(t, "Only admins can modify other admins"); len(l) != 0 {
		t.Errorf("the hub refused %d writes of %s's auth_state, want 0; first: %s", len(l), hubAdmin, l[0])
	}
	if l := tokenkeeperLog(t, "logged out", hubAdmin); len(l) != 0 {
		t.Errorf("%s was logged out: %+v", hubAdmin, l)
	}
	if l := auditedLogouts(t, hubAdmin); len(l) != 0 {
		t.Errorf("logouts recorded for %s: %v", hubAdmin, l)
	}
}

// nextHeld returns the next request the gate holds, or ends the test.
func nextHeld(t *testing.T, g *Gate, limit time.Duration, what string) *GatedRequest {
	t.Helper()
	select {
	case q := <-g.Requests():
		return q
	case <-time.After(limit):
		t.Fatalf("no request from tokenkeeper within %s: %s", limit, what)
		return nil
	}
}

// refreshErrors counts the failed refresh grants Keycloak recorded in session sid.
func refreshErrors(t *testing.T, sid string) int {
	t.Helper()
	events, err := stack.KeycloakEvents(context.Background(), "REFRESH_TOKEN_ERROR")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range events {
		if e.SessionID == sid {
			n++
		}
	}
	return n
}

// TestReloginDuringLogoutKeepsNewSession ends a user's Keycloak session
// without telling tokenkeeper, lets tokenkeeper find out through its failed
// grant and decide to log the user out, and logs the user in again right
// after that decision, before tokenkeeper acts on it. The hub proxy holds
// tokenkeeper's requests for the user one by one, so the new login lands
// there every time. tokenkeeper must leave the new login alone: a logout
// compares the refresh token it found spent with the one auth_state holds
// when it clears it, and must not end the new Keycloak session either
// (end_keycloak_sessions is on).
func TestReloginDuringLogoutKeepsNewSession(t *testing.T) {
	ctx := context.Background()
	user := testUsers(t, "relogin", 1)[0]
	useSettings(t, map[string]any{"keep": "all", "end_keycloak_sessions": true})
	quietBackchannel(t)
	g := hubProxy.Gate(func(q *GatedRequest) bool { return q.User == user })
	defer g.Close()
	if _, err := Login(ctx, stack.HubURL(), user, user+"-pw"); err != nil {
		t.Fatal(err)
	}
	first, ok, err := authClaims(ctx, user)
	if !ok || first.SessionID == "" {
		t.Fatalf("%s's auth_state after login: %v, %v", user, first, err)
	}
	if err := stack.EndKeycloakSession(ctx, first.SessionID); err != nil {
		t.Fatal(err)
	}
	q := stepToDecision(t, g, user, first)
	wantLogouts := 0
	if q.Method == http.MethodGet {
		// Between the decision and the logout: log in again now.
		t.Logf("logging in again while tokenkeeper's %s %s waits", q.Method, q.Path)
	} else {
		// The logout clears auth_state right after the read it decided on;
		// nothing can come in between. Log in again once it is done.
		t.Logf("tokenkeeper cleared auth_state right after its decision (%s %s); logging in again after the logout", q.Method, q.Path)
		<-q.Forward()
		g.Close()
		wantLogouts = 1
		waitAudited(t, user, 1)
	}
	browser, err := Login(ctx, stack.HubURL(), user, user+"-pw")
	if err != nil {
		t.Fatal(err)
	}
	relogin, ok, err := authClaims(ctx, user)
	if !ok || relogin.SessionID == "" || relogin.SessionID == first.SessionID {
		t.Fatalf("%s's auth_state after logging in again: sid %q (first %q), %v", user, relogin.SessionID, first.SessionID, err)
	}
	loginToken, _ := accessToken(t, user)
	if wantLogouts == 0 {
		q.Forward()
		g.Close()
	}
	assertNewSessionKept(t, user, browser, loginToken, relogin.SessionID)
	if n := refreshErrors(t, first.SessionID); n != 1 {
		t.Errorf("failed refresh grants in %s's ended session: %d, want 1", user, n)
	}
	if l := tokenkeeperLog(t, "logged out", user); len(l) != wantLogouts {
		t.Errorf("logout log lines for %s: %+v, want %d", user, l, wantLogouts)
	}
	if l := auditedLogouts(t, user); len(l) != wantLogouts {
		t.Errorf("logouts recorded for %s: %v, want %d", user, l, wantLogouts)
	}
}

// quietBackchannel points Keycloak's back-channel logout for the hub's
// client at a closed loopback port until the test ends, so that tokenkeeper
// learns of an ended session only from its own failed grant.
func quietBackchannel(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	nowhere := fmt.Sprintf("http://127.0.0.1:%d/nowhere", stack.cfg.PortBase+97)
	if err := stack.SetBackchannelLogoutURL(ctx, nowhere); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stack.SetBackchannelLogoutURL(ctx, stack.BackchannelLogoutURL()); err != nil {
			t.Error(err)
		}
	})
}

// stepToDecision passes on tokenkeeper's requests for user, whose session
// ended, up to its decision: reads of a token not due yet, the read before
// the grant that fails, and the read after it, on which tokenkeeper decides
// that the session ended. It returns the next request, still held.
func stepToDecision(t *testing.T, g *Gate, user string, first refresh.Claims) *GatedRequest {
	t.Helper()
	// A read in the first half of the token's life (tokenkeeper looking at
	// a new user) finds it not due yet (due at ⅔–80 %): no grant follows.
	halfLife := first.IssuedAt.Add(first.Expiry.Sub(first.IssuedAt) / 2)
	q := nextHeld(t, g, time.Minute, "a read of "+user)
	for time.Now().Before(halfLife) {
		if q.Method != http.MethodGet {
			t.Fatalf("tokenkeeper sent %s %s before %s's token was due", q.Method, q.Path, user)
		}
		q.Forward()
		q = nextHeld(t, g, time.Minute, "the read of "+user+" when due")
	}
	if q.Method != http.MethodGet {
		t.Fatalf("tokenkeeper's first request when %s was due: %s %s, want a read", user, q.Method, q.Path)
	}
	q.Forward()
	// The grant fails (the session is gone); tokenkeeper reads again and decides.
	nextHeld(t, g, 30*time.Second, "the read after the failed grant").Forward()
	return nextHeld(t, g, 30*time.Second, "the logout of "+user)
}

// waitAudited waits until tokenkeeper has recorded n logouts of user.
func waitAudited(t *testing.T, user string, n int) {
	t.Helper()
	err := Poll(context.Background(), 30*time.Second, 200*time.Millisecond, func() (bool, error) {
		return len(auditedLogouts(t, user)) == n, nil
	})
	if err != nil {
		t.Fatalf("logouts of %s recorded: %d, want %d: %v", user, len(auditedLogouts(t, user)), n, err)
	}
}

// assertNewSessionKept checks that user's login in session sid (access
// token loginToken) survives: tokenkeeper refreshes it in auth_state,
// Keycloak lists it as the user's only session and accepts its token, and
// the browser still reaches the hub's home page.
func assertNewSessionKept(t *testing.T, user string, browser *http.Client, loginToken, sid string) {
	t.Helper()
	ctx := context.Background()
	var now string
	var c refresh.Claims
	var ok bool
	err := Poll(ctx, 60*time.Second, 250*time.Millisecond, func() (bool, error) {
		var err error
		c, ok, err = authClaims(ctx, user)
		if err != nil || !ok {
			return !ok && err == nil, err // cleared: no need to wait longer
		}
		now, _ = accessToken(t, user)
		return now != loginToken, nil
	})
	if err != nil || !ok {
		t.Errorf("no refresh of %s's new session (auth_state cleared: %v): %v", user, !ok, err)
	}
	if c.SessionID != sid {
		t.Errorf("%s's auth_state holds session %q, want the new %q", user, c.SessionID, sid)
	}
	sessions, err := stack.KeycloakSessions(ctx, user)
	if err != nil || len(sessions) != 1 || sessions[0].ID != sid {
		t.Errorf("%s's Keycloak sessions: %+v, %v; want only the new %s", user, sessions, err, sid)
	}
	if ok {
		assertUserinfoOK(t, now)
	}
	if status, path, err := browse(browser); err != nil || status != http.StatusOK || path != "/hub/home" {
		t.Errorf("%s's new browser: %d at %s, %v; want 200 at /hub/home", user, status, path, err)
	}
}

// userSet makes a set of names.
func userSet(users []string) map[string]bool {
	in := make(map[string]bool, len(users))
	for _, u := range users {
		in[u] = true
	}
	return in
}

// waitAllDue waits until every user's access token is due: past 80 % of
// its lifetime, the latest point of tokenkeeper's schedule.
func waitAllDue(t *testing.T, users []string) {
	t.Helper()
	ctx := context.Background()
	var last time.Time
	for _, u := range users {
		c, ok, err := authClaims(ctx, u)
		if !ok {
			t.Fatalf("%s has no tokens after login: %v", u, err)
		}
		if d := c.IssuedAt.Add(c.Expiry.Sub(c.IssuedAt) * 4 / 5); d.After(last) {
			last = d
		}
	}
	if err := Poll(ctx, time.Minute, 100*time.Millisecond, func() (bool, error) {
		return time.Now().After(last), nil
	}); err != nil {
		t.Fatal(err)
	}
}

// countLog counts tokenkeeper's log lines with msg about users.
func countLog(t *testing.T, msg string, users map[string]bool) int {
	n := 0
	for _, l := range tokenkeeperLog(t, msg, "") {
		if users[l.User] {
			n++
		}
	}
	return n
}

// TestSIGTERMDuringRefreshLosesNoSession stops tokenkeeper with SIGTERM, as
// the hub does at every restart, in the middle of a sweep that refreshes 50
// due users, 16 at a time. The users log in while tokenkeeper cannot reach
// the hub, so that all are due when it can again. The hub proxy then holds
// the first four write-backs; once each of the other twelve places has
// started its next user, the signal comes: four grants are then between
// grant and write-back, a dozen at Keycloak, and over twenty users not
// started. After the hub starts tokenkeeper again, every user must still
// have a working session: no refresh token may be spent and forgotten.
func TestSIGTERMDuringRefreshLosesNoSession(t *testing.T) {
	const (
		concurrency = 16 // users refreshed at once
		held        = 4  // write-backs held when the signal comes
	)
	users := testUsers(t, "term", 50)
	useSettings(t, map[string]any{"keep": "all", "concurrency": concurrency})
	g := hubProxy.Gate(func(*GatedRequest) bool { return true })
	defer g.Close()
	s := &sigtermSweep{in: userSet(users), held: held, read: 2*concurrency - held,
		reachable: make(chan struct{}), signalled: make(chan sigtermAt, 1), stop: make(chan struct{})}
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		s.run(g)
	}()
	loginAll(t, users, 4)
	waitAllDue(t, users)
	close(s.reachable)
	var sig sigtermAt
	select {
	case sig = <-s.signalled:
	case <-time.After(time.Minute):
		t.Fatalf("the sweep of %d due users did not get under way", len(users))
	}
	if sig.err != nil {
		t.Fatal(sig.err)
	}
	t.Logf("SIGTERM after %d reads and %d write-backs of %d due users, %d write-backs held", sig.reads, sig.writes, len(users), held)
	waitRestarted(t, sig.pid)
	close(s.stop)
	<-consumed
	g.Close()
	assertNoSessionLost(t, users, sig.at)
	t.Logf("replayed write-backs: %d", countLog(t, "replayed pending write-back", s.in))
}

// sigtermAt says when and where a sigtermSweep stopped tokenkeeper.
type sigtermAt struct {
	pid           int
	at            time.Time
	reads, writes int
	err           error
}

// sigtermSweep decides on every request tokenkeeper sends the hub. Until
// reachable closes it fails them all: the hub is unreachable. Then it
// passes them on, except that it holds the first write-backs (as many as
// held) of the users in; once the hub has answered the read-th read of
// those users it sends tokenkeeper SIGTERM, fails the held writes
// (tokenkeeper journaled them; the hub never sees them), and passes
// everything on until stop.
type sigtermSweep struct {
	in              map[string]bool
	held, read      int
	reachable, stop chan struct{}
	signalled       chan sigtermAt
}

func (s *sigtermSweep) run(g *Gate) {
	var heldWrites []*GatedRequest
	var sig sigtermAt
	for {
		var q *GatedRequest
		select {
		case q = <-g.Requests():
		case <-s.stop:
			return
		}
		select {
		case <-s.reachable:
		default:
			q.Fail()
			continue
		}
		if !sig.at.IsZero() || !s.in[q.User] {
			q.Forward()
			continue
		}
		if q.Method == http.MethodPatch && len(heldWrites) < s.held {
			heldWrites = append(heldWrites, q)
			continue
		}
		if q.Method == http.MethodPatch {
			sig.writes++
			q.Forward()
			continue
		}
		sig.reads++
		answered := q.Forward()
		if sig.reads == s.read {
			<-answered // its grant comes next
			sig.pid, sig.err = killTokenkeeper(syscall.SIGTERM)
			sig.at = time.Now()
			for _, h := range heldWrites {
				h.Fail()
			}
			s.signalled <- sig
		}
	}
}

// killPoint is a moment at which the random-kill test kills tokenkeeper:
// when a request that match selects reaches the hub proxy, or, with
// answered, once the hub's answer to it has been passed back.
type killPoint struct {
	name     string
	match    func(q *GatedRequest, users map[string]bool) bool
	answered bool
}

var killPoints = []killPoint{
	{name: "sweep's user list", match: func(q *GatedRequest, _ map[string]bool) bool {
		return q.Method == http.MethodGet && q.Path == "/users"
	}},
	{name: "read of a due user", match: func(q *GatedRequest, in map[string]bool) bool {
		return q.Method == http.MethodGet && in[q.User]
	}},
	{name: "write-back (grant done, hub not written)", match: func(q *GatedRequest, in map[string]bool) bool {
		return q.Method == http.MethodPatch && in[q.User]
	}},
	{name: "answered write-back", match: func(q *GatedRequest, in map[string]bool) bool {
		return q.Method == http.MethodPatch && in[q.User]
	}, answered: true},
}

// testSeed returns TK_TEST_SEED, or a new seed.
func testSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("TK_TEST_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("TK_TEST_SEED: %v", err)
		}
		seed = s
	}
	t.Logf("seed %d (TK_TEST_SEED=%d repeats the choices)", seed, seed)
	return seed
}

// TestRandomSIGKILLsDuringSweepsLoseNothing kills tokenkeeper with SIGKILL
// 20 times, each at a random moment of its sweeps of 20 users, and lets the
// hub restart it each time; no session may be lost. A SIGKILL while a grant
// is at Keycloak loses that grant's tokens whatever tokenkeeper does (with
// rotation the new refresh token exists only in Keycloak's answer), so
// tokenkeeper runs one refresh at a time and every kill lands while it waits
// on the hub: at a random one of its requests (the sweep's user list, a read
// before a grant, a write-back after a grant), chosen after a random delay.
func TestRandomSIGKILLsDuringSweepsLoseNothing(t *testing.T) {
	rng := rand.New(rand.NewPCG(testSeed(t), 0))
	users := testUsers(t, "kill", 20)
	in := userSet(users)
	useSettings(t, map[string]any{"keep": "all", "concurrency": 1})
	// Logged in in four waves over most of a token's life, the users are
	// due at moments spread over every sweep cycle.
	for i := 0; i < len(users); i += 5 {
		if i > 0 {
			<-time.After(5 * time.Second) // spacing the waves, not a synchronisation
		}
		loginAll(t, users[i:i+5], 5)
	}
	var last time.Time
	for i := range 20 {
		p := killPoints[rng.IntN(len(killPoints))]
		delay := time.Duration(rng.Int64N(int64(time.Second)))
		<-time.After(delay) // a random moment, not a synchronisation
		start := time.Now()
		last = killAt(t, p, in)
		t.Logf("kill %d after %s at the %s (reached in %s, restarted in %s)", i+1, delay.Round(time.Millisecond),
			p.name, last.Sub(start).Round(time.Millisecond), time.Since(last).Round(time.Millisecond))
	}
	assertNoSessionLost(t, users, last)
	t.Logf("replayed write-backs: %d", countLog(t, "replayed pending write-back", in))
}

// killAt holds every request tokenkeeper sends the hub, passing them on
// until p's, kills tokenkeeper there, and waits for the hub to restart it.
// With one refresh at a time, a held request means no grant is at Keycloak.
func killAt(t *testing.T, p killPoint, in map[string]bool) time.Time {
	t.Helper()
	g := hubProxy.Gate(func(*GatedRequest) bool { return true })
	defer g.Close()
	for {
		q := nextHeld(t, g, time.Minute, "the "+p.name)
		if !p.match(q, in) {
			q.Forward()
			continue
		}
		if p.answered {
			select {
			case <-q.Forward():
			case <-time.After(30 * time.Second):
				t.Fatalf("the hub did not answer %s %s", q.Method, q.Path)
			}
		}
		pid := signalTokenkeeper(t, syscall.SIGKILL)
		killed := time.Now()
		if !p.answered {
			q.Fail() // the request died with tokenkeeper; the hub never sees it
		}
		g.Close()
		waitRestarted(t, pid)
		return killed
	}
}
