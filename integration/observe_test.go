//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokenkeeper/tokenkeeper/refresh"
)

// The helpers in this file serve the tests that change the realm or restart
// the hub: timed log lines, realm settings restored at the end, users who
// log in and start servers together, and health watched in the background.

// sweepInterval is the test stack's TOKENKEEPER_SWEEP_INTERVAL
// (integration/stack/jupyterhub_config.py).
const sweepInterval = 2 * time.Second

// busySlack is how much later than its own bound the suite accepts an
// action due within a sweep or two: the suite's stacks share a 2-core
// machine, and a sweep, a grant or a hub request may wait seconds for a
// core while another stack starts servers or logs users in. Every bound
// that adds it stays well below the failure it guards against: an ending
// found only when a 30 s token falls due, or never.
const busySlack = 8 * time.Second

// timedLine is one of tokenkeeper's JSON log lines with its time.
type timedLine struct {
	Time     time.Time `json:"time"`
	Msg      string    `json:"msg"`
	User     string    `json:"user"`
	Reason   string    `json:"reason"`
	Expected *bool     `json:"expected"`
	Problem  string    `json:"problem"`
	// ExpiresAt is a "refreshed" line's new access token's exp: when
	// Keycloak issued it, plus the token's lifetime.
	ExpiresAt time.Time `json:"expires_at"`
}

// linesSince returns tokenkeeper's log lines written at or after since, in
// the order written, keeping those whose msg is among msgs (all when none
// is given).
func linesSince(t *testing.T, since time.Time, msgs ...string) []timedLine {
	t.Helper()
	b, err := os.ReadFile(stack.HubLog())
	if err != nil {
		t.Fatal(err)
	}
	var out []timedLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l timedLine
		if !bytes.HasPrefix(sc.Bytes(), []byte("{")) || json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		if !l.Time.Before(since) && (len(msgs) == 0 || slices.Contains(msgs, l.Msg)) {
			out = append(out, l)
		}
	}
	return out
}

// byUser keeps the lines about user.
func byUser(lines []timedLine, user string) []timedLine {
	var out []timedLine
	for _, l := range lines {
		if l.User == user {
			out = append(out, l)
		}
	}
	return out
}

// setRealm sets realm attributes through Keycloak's admin API and puts their
// earlier values back when the test ends.
func setRealm(t *testing.T, settings map[string]any) {
	t.Helper()
	ctx := context.Background()
	var realm map[string]any
	if err := stack.KeycloakAdmin(ctx, http.MethodGet, "", nil, &realm); err != nil {
		t.Fatalf("read the realm: %v", err)
	}
	old := map[string]any{}
	for k := range settings {
		old[k] = realm[k]
	}
	t.Cleanup(func() {
		if err := stack.KeycloakAdmin(ctx, http.MethodPut, "", old, nil); err != nil {
			t.Errorf("restore the realm's %v: %v", slices.Sorted(maps.Keys(old)), err)
		}
	})
	if err := stack.KeycloakAdmin(ctx, http.MethodPut, "", settings, nil); err != nil {
		t.Fatalf("set the realm's %v: %v", settings, err)
	}
}

// loginTogether logs users in through the real OAuth flow all at once, as
// a class does at the start of a lesson, and keeps their browsers for login.
func loginTogether(t *testing.T, users []string) map[string]*http.Client {
	t.Helper()
	browsers := make([]*http.Client, len(users))
	errs := make([]error, len(users))
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Go(func() { browsers[i], errs[i] = Login(context.Background(), stack.HubURL(), u, u+"-pw") })
	}
	wg.Wait()
	out := map[string]*http.Client{}
	loginMu.Lock()
	defer loginMu.Unlock()
	for i, u := range users {
		if errs[i] != nil {
			t.Fatalf("login: %v", errs[i])
		}
		logins[u], out[u] = browsers[i], browsers[i]
	}
	return out
}

// startServers starts the users' servers at once, waits until all are
// ready, and stops them when the test ends.
func startServers(t *testing.T, users []string) {
	t.Helper()
	errs := make([]error, len(users))
	var wg sync.WaitGroup
	for i, u := range users {
		stopServerAtEnd(t, u)
		wg.Go(func() { errs[i] = stack.StartServer(context.Background(), u) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// tokens are the claims of the tokens in a user's auth_state.
type tokens struct {
	Access, Refresh refresh.Claims
	// RefreshToken is the refresh token itself, to tell rotations apart.
	RefreshToken string
}

// guardHolding is health while the mass-failure guard holds n users'
// logouts and nothing else is wrong.
func guardHolding(n int) healthBody {
	return healthBody{Status: "unhealthy", Problems: []healthProblem{{
		Class:   "logouts_paused",
		Message: "Logouts are paused: many sessions ended at once. Nobody is logged out until an admin releases the guard.",
		Users:   n,
	}}}
}

// awaitHealth polls health every 250 ms, for up to limit, until it is
// exactly want; it returns the last answer.
func awaitHealth(ctx context.Context, want healthBody, limit time.Duration) (healthSample, error) {
	var last healthSample
	err := Poll(ctx, limit, 250*time.Millisecond, func() (bool, error) {
		var err error
		last, err = healthAt(ctx, stack.ServiceURL()+"health")
		return err == nil && cmp.Equal(want, last.Body), err
	})
	return last, err
}

// awaitLoggedOut polls every every, for up to limit, until none of users'
// auth_states holds tokens; the error names one that still does.
func awaitLoggedOut(ctx context.Context, t *testing.T, users []string, limit, every time.Duration) error {
	t.Helper()
	return Poll(ctx, limit, every, func() (bool, error) {
		for _, u := range users {
			if _, ok := tokensOf(t, u); ok {
				return false, fmt.Errorf("%s still holds tokens", u)
			}
		}
		return true, nil
	})
}

// tokensOf reads user's auth_state; ok is false when it holds no tokens.
func tokensOf(t *testing.T, user string) (tok tokens, ok bool) {
	t.Helper()
	st, err := stack.AuthState(context.Background(), user)
	if err != nil {
		t.Fatalf("auth_state of %s: %v", user, err)
	}
	at, _ := st["access_token"].(string)
	rt, _ := st["refresh_token"].(string)
	if at == "" && rt == "" {
		return tokens{}, false
	}
	if tok.Access, err = refresh.ParseClaims(at); err != nil {
		t.Fatalf("auth_state of %s: access token: %v", user, err)
	}
	if tok.Refresh, err = refresh.ParseClaims(rt); err != nil {
		t.Fatalf("auth_state of %s: refresh token: %v", user, err)
	}
	tok.RefreshToken = rt
	return tok, true
}

// healthSample is one answer of tokenkeeper's health.
type healthSample struct {
	At     time.Time
	Status int
	Body   healthBody
}

// healthBody is tokenkeeper's health answer.
type healthBody struct {
	Status   string          `json:"status"`
	Problems []healthProblem `json:"problems"`
}

type healthProblem struct {
	Class   string `json:"class"`
	Message string `json:"message"`
	Users   int    `json:"users,omitempty"`
}

// healthAt asks tokenkeeper's health at url.
func healthAt(ctx context.Context, url string) (healthSample, error) {
	s := healthSample{At: time.Now()}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	s.Status = resp.StatusCode
	if err := json.Unmarshal(b, &s.Body); err != nil {
		return s, fmt.Errorf("health %d: not JSON: %.200s", resp.StatusCode, b)
	}
	return s, nil
}

// proxiedHealth is tokenkeeper's health as the hub's proxy serves it.
func proxiedHealth() string { return stack.HubURL() + "/services/tokenkeeper/health" }

// watchHealth asks tokenkeeper's health every half second until the
// returned function is called, which returns every answer.
func watchHealth(t *testing.T) func() []healthSample {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var samples []healthSample
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			if s, err := healthAt(ctx, stack.ServiceURL()+"health"); err == nil {
				samples = append(samples, s)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	stop := func() []healthSample {
		once.Do(func() { cancel(); <-done })
		return samples
	}
	t.Cleanup(func() { stop() })
	return stop
}

// refreshExpiries returns, for every hub user but those in except who holds
// tokens, when their refresh token expires: a logout of theirs after that is
// their own session's end, not the test's doing.
func refreshExpiries(t *testing.T, except []string) map[string]time.Time {
	t.Helper()
	var users []struct {
		Name string `json:"name"`
	}
	if err := stack.API(context.Background(), http.MethodGet, "/users?limit=1000", nil, &users); err != nil {
		t.Fatalf("list hub users: %v", err)
	}
	out := map[string]time.Time{}
	for _, u := range users {
		if slices.Contains(except, u.Name) {
			continue
		}
		st, err := stack.AuthState(context.Background(), u.Name)
		if err != nil {
			t.Fatalf("auth_state of %s: %v", u.Name, err)
		}
		rt, _ := st["refresh_token"].(string)
		if c, err := refresh.ParseClaims(rt); err == nil {
			out[u.Name] = c.Expiry
		}
	}
	return out
}

// assertNoOtherLogout checks that no user outside the test was logged out
// since since, except users whose own refresh token had expired by then
// (expiries from refreshExpiries at the start).
func assertNoOtherLogout(t *testing.T, since time.Time, expiries map[string]time.Time, mine []string) {
	t.Helper()
	for _, l := range linesSince(t, since, "logged out") {
		if slices.Contains(mine, l.User) {
			continue
		}
		if exp, ok := expiries[l.User]; ok && !l.Time.Before(exp) {
			continue // their own session reached its idle or maximum time
		}
		t.Errorf("%s, who takes no part in this test, was logged out at %s (%s)", l.User, l.Time.Format(time.TimeOnly), l.Reason)
	}
}

// restartHub restarts the hub with env added to its environment and, when
// the test ends, restarts it with the stack's own settings and waits until
// tokenkeeper is healthy, so later tests find the stack as it was.
func restartHub(t *testing.T, env ...string) {
	t.Helper()
	t.Cleanup(func() {
		if err := stack.RestartHub(context.Background()); err != nil {
			t.Errorf("restore the hub: %v", err)
			return
		}
		waitHealthy(t)
	})
	if err := stack.RestartHub(context.Background(), env...); err != nil {
		t.Fatal(err)
	}
}

// waitHealthy waits until tokenkeeper, through the hub's proxy, answers
// health with 200 ok.
func waitHealthy(t *testing.T) {
	t.Helper()
	var last healthSample
	err := Poll(context.Background(), time.Minute, 250*time.Millisecond, func() (bool, error) {
		s, err := healthAt(context.Background(), proxiedHealth())
		last = s
		return err == nil && s.Status == http.StatusOK && s.Body.Status == "ok", err
	})
	if err != nil {
		t.Fatalf("tokenkeeper is not healthy after the hub's restart: %v (last %d %+v)", err, last.Status, last.Body)
	}
}
