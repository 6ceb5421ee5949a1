//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The tests in this file disturb the shared stack (Keycloak down, a wrong
// client secret, tokenkeeper killed, a short SSO maximum). They do not call
// t.Parallel, so Go runs them one by one before the parallel tests.

// logLine is one of tokenkeeper's JSON log lines in the hub log.
type logLine struct {
	Msg     string `json:"msg"`
	User    string `json:"user"`
	Reason  string `json:"reason"`
	Problem string `json:"problem"`
}

// tokenkeeperLog returns tokenkeeper's log lines with msg (all when empty) for user (any when empty).
func tokenkeeperLog(t *testing.T, msg, user string) []logLine {
	t.Helper()
	b, err := os.ReadFile(stack.HubLog())
	if err != nil {
		t.Fatal(err)
	}
	var out []logLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		if !bytes.HasPrefix(sc.Bytes(), []byte("{")) || json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		if (msg == "" || l.Msg == msg) && (user == "" || l.User == user) {
			out = append(out, l)
		}
	}
	return out
}

// stopServerAtEnd stops user's server when the test ends, so later tests do
// not sweep it.
func stopServerAtEnd(t *testing.T, user string) {
	t.Cleanup(func() {
		if err := stack.StopServer(context.Background(), user); err != nil {
			t.Error(err)
		}
	})
}

// waitNewToken polls auth_state until user's access token differs from old.
func waitNewToken(t *testing.T, user, old string, limit time.Duration) string {
	t.Helper()
	var at string
	err := Poll(context.Background(), limit, 500*time.Millisecond, func() (bool, error) {
		st, err := stack.AuthState(context.Background(), user)
		at, _ = st["access_token"].(string)
		return err == nil && at != "" && at != old, err
	})
	if err != nil {
		t.Fatalf("%s: no new access token in auth_state: %v", user, err)
	}
	return at
}

func assertNotLoggedOut(t *testing.T, user string) {
	t.Helper()
	if l := tokenkeeperLog(t, "logged out", user); len(l) != 0 {
		t.Errorf("%s was logged out: %+v", user, l)
	}
	if rt := mustRefreshToken(t, user); rt == "" {
		t.Errorf("%s lost their refresh token", user)
	}
}

func health(t *testing.T) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get(stack.ServiceURL() + "health")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// jupyterhubClient returns the Keycloak id of the hub's client.
func jupyterhubClient(t *testing.T) string {
	t.Helper()
	var clients []struct {
		ID string `json:"id"`
	}
	if err := stack.KeycloakAdmin(context.Background(), http.MethodGet, "/clients?clientId=jupyterhub", nil, &clients); err != nil || len(clients) != 1 {
		t.Fatalf("find the jupyterhub client: %v", err)
	}
	return clients[0].ID
}

func setClientSecret(t *testing.T, id, secret string) {
	t.Helper()
	if err := stack.KeycloakAdmin(context.Background(), http.MethodPut, "/clients/"+id, map[string]any{"secret": secret}, nil); err != nil {
		t.Fatalf("set client secret: %v", err)
	}
}

func TestWrongClientSecretLogsOutNobodyAndRecovers(t *testing.T) {
	ctx := context.Background()
	login(t, "grace")
	startServer(t, "grace")
	stopServerAtEnd(t, "grace")
	id := jupyterhubClient(t)
	setClientSecret(t, id, "not-the-secret")
	t.Cleanup(func() { setClientSecret(t, id, stack.ClientSecret) })
	err := Poll(ctx, 60*time.Second, 500*time.Millisecond, func() (bool, error) {
		status, _ := health(t)
		return status == http.StatusServiceUnavailable, nil
	})
	if err != nil {
		t.Fatalf("health never reported the wrong secret: %v", err)
	}
	// Health names the class of the problem; Keycloak's own text stays in the log.
	_, body := health(t)
	if got := fmt.Sprint(body["problems"]); !strings.Contains(got, "keycloak_client") || strings.Contains(got, "Invalid client") {
		t.Errorf("health problems = %v, want the keycloak_client class and no Keycloak text", got)
	}
	if b, err := os.ReadFile(stack.HubLog()); err != nil || !bytes.Contains(b, []byte("Invalid client credentials")) {
		t.Errorf("tokenkeeper's log does not name Keycloak's client-credentials error (%v)", err)
	}
	before, _ := accessToken(t, "grace")
	setClientSecret(t, id, stack.ClientSecret)
	err = Poll(ctx, 60*time.Second, 500*time.Millisecond, func() (bool, error) {
		status, _ := health(t)
		return status == http.StatusOK, nil
	})
	if err != nil {
		t.Fatalf("health did not recover once the secret was fixed: %v", err)
	}
	assertUserinfoOK(t, waitNewToken(t, "grace", before, 60*time.Second))
	assertNotLoggedOut(t, "grace")
}

func TestKeycloakOutageLogsOutNobody(t *testing.T) {
	ctx := context.Background()
	login(t, "heidi")
	startServer(t, "heidi")
	stopServerAtEnd(t, "heidi")
	_, exp := accessToken(t, "heidi")
	stack.StopKeycloak()
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = stack.StartKeycloak(ctx)
		}
	})
	// Down for longer than an access token's lifetime.
	err := Poll(ctx, 2*time.Minute, time.Second, func() (bool, error) {
		return time.Now().After(exp.Add(10 * time.Second)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	heidiToken, err := stack.UserToken(ctx, "heidi", "access:services!service=tokenkeeper")
	if err != nil {
		t.Fatal(err)
	}
	if status, body := freshToken(t, heidiToken, ""); status != http.StatusServiceUnavailable {
		t.Errorf("fresh-token with Keycloak down and the token expired: %d %v, want 503", status, body)
	}
	// Health says Keycloak does not answer (degraded, unhealthy after 2 min).
	unanswered := func(s healthSample) bool {
		return slices.ContainsFunc(s.Body.Problems, func(p healthProblem) bool {
			return p.Class == "keycloak_unanswered" || p.Class == "keycloak_unreachable"
		})
	}
	var last healthSample
	if err := Poll(ctx, 30*time.Second, 250*time.Millisecond, func() (bool, error) {
		var err error
		last, err = healthAt(ctx, stack.ServiceURL()+"health")
		return err == nil && unanswered(last), err
	}); err != nil {
		t.Errorf("health while Keycloak is down: %v (last %d %+v), want keycloak_unanswered", err, last.Status, last.Body)
	}
	old, _ := accessToken(t, "heidi")
	restarted = true
	if err := stack.StartKeycloak(ctx); err != nil {
		t.Fatal(err)
	}
	assertUserinfoOK(t, waitNewToken(t, "heidi", old, 90*time.Second))
	assertNotLoggedOut(t, "heidi")
	if s, err := healthAt(ctx, stack.ServiceURL()+"health"); err != nil || unanswered(s) {
		t.Errorf("health once Keycloak answers again: %v %+v, want no keycloak problem", err, s.Body)
	}
}

// tokenkeeperPID finds the running tokenkeeper of this stack.
func tokenkeeperPID(t *testing.T) int {
	t.Helper()
	needle := []byte("TOKENKEEPER_DATABASE=" + stack.StateDir() + "/")
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if bytes.Contains(env, needle) {
			return pid
		}
	}
	t.Fatal("tokenkeeper is not running")
	return 0
}

func TestKilledBetweenGrantAndWriteBackKeepsSession(t *testing.T) {
	login(t, "ivan")
	startServer(t, "ivan")
	stopServerAtEnd(t, "ivan")
	old, _ := accessToken(t, "ivan")
	held := hubProxy.Hold("ivan")
	defer hubProxy.Release()
	select {
	case <-held: // the grant is done and journaled; its write-back is waiting
	case <-time.After(60 * time.Second):
		t.Fatal("tokenkeeper never wrote back ivan's tokens")
	}
	pid := tokenkeeperPID(t)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	hubProxy.Release()
	// The hub restarts its managed service (it polls every 30 s); the new
	// process replays the journal.
	now := waitNewToken(t, "ivan", old, 2*time.Minute)
	if got := tokenkeeperPID(t); got == pid {
		t.Errorf("tokenkeeper pid %d unchanged after SIGKILL", pid)
	}
	if l := tokenkeeperLog(t, "replayed pending write-back", "ivan"); len(l) != 1 {
		t.Errorf("replay log lines for ivan = %d, want 1", len(l))
	}
	assertUserinfoOK(t, now)
	// Rotation is on: another refresh proves the replayed refresh token is the live one.
	assertUserinfoOK(t, waitNewToken(t, "ivan", now, 60*time.Second))
	assertNotLoggedOut(t, "ivan")
}

// assertLoggedOut checks every sign of a hub logout for user.
func assertLoggedOut(t *testing.T, user string, browser *http.Client, apiToken string) {
	t.Helper()
	st, err := stack.AuthState(context.Background(), user)
	if err != nil || len(st) != 0 {
		t.Errorf("%s auth_state = %v, %v; want {}", user, st, err)
	}
	if status, body := freshToken(t, apiToken, ""); !slices.Contains(loggedOutTokenStatuses(), status) {
		t.Errorf("fresh-token for logged-out %s: %d %v, want one of %v", user, status, body, loggedOutTokenStatuses())
	}
	err = Poll(context.Background(), 30*time.Second, 500*time.Millisecond, func() (bool, error) {
		resp, err := browser.Get(stack.HubURL() + "/hub/home")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		u := resp.Request.URL
		return u.Port() == strconv.Itoa(stack.cfg.PortBase+80) || u.Path == "/hub/login", nil
	})
	if err != nil {
		t.Errorf("%s's browser was not sent to the login page: %v", user, err)
	}
}

func TestSSOMaxLifespanLogsOut(t *testing.T) {
	ctx := context.Background()
	set := func(v int) {
		t.Helper()
		if err := stack.KeycloakAdmin(ctx, http.MethodPut, "", map[string]any{"ssoSessionMaxLifespan": v}, nil); err != nil {
			t.Fatalf("set ssoSessionMaxLifespan: %v", err)
		}
	}
	var realm struct {
		SSOSessionMaxLifespan int `json:"ssoSessionMaxLifespan"`
	}
	if err := stack.KeycloakAdmin(ctx, http.MethodGet, "", nil, &realm); err != nil {
		t.Fatalf("read the realm: %v", err)
	}
	set(40)
	t.Cleanup(func() { set(realm.SSOSessionMaxLifespan) })
	browser := login(t, "judy")
	startServer(t, "judy")
	stopServerAtEnd(t, "judy")
	judyToken, err := stack.UserToken(ctx, "judy", "access:services!service=tokenkeeper")
	if err != nil {
		t.Fatal(err)
	}
	err = Poll(ctx, 2*time.Minute, 500*time.Millisecond, func() (bool, error) {
		st, err := stack.AuthState(ctx, "judy")
		return err == nil && len(st) == 0, err
	})
	if err != nil {
		t.Fatalf("judy was not logged out after the SSO maximum: %v", err)
	}
	assertLoggedOut(t, "judy", browser, judyToken)
	if l := tokenkeeperLog(t, "logged out", "judy"); len(l) != 1 {
		t.Errorf("logout log lines for judy = %d, want 1", len(l))
	}
}

func TestConcurrentFreshTokenCallsMakeOneGrant(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	login(t, "leo")
	token, err := stack.UserToken(ctx, "leo", "access:services!service=tokenkeeper")
	if err != nil {
		t.Fatal(err)
	}
	id, err := stack.KeycloakUserID(ctx, "leo")
	if err != nil {
		t.Fatal(err)
	}
	_, exp := accessToken(t, "leo")
	// Wait until fewer than 15 s are left, so min_valid=20 needs a grant.
	if err := Poll(ctx, time.Minute, 250*time.Millisecond, func() (bool, error) {
		return time.Until(exp) < 14*time.Second, nil
	}); err != nil {
		t.Fatal(err)
	}
	before, err := stack.RefreshEvents(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	statuses := make([]int, 50)
	tokens := make([]string, 50)
	for i := range statuses {
		wg.Go(func() {
			var body map[string]any
			statuses[i], body = freshToken(t, token, "?min_valid=20")
			tokens[i], _ = body["access_token"].(string)
		})
	}
	wg.Wait()
	for i, s := range statuses {
		if s != http.StatusOK || tokens[i] != tokens[0] {
			t.Fatalf("call %d: status %d, same token %v", i, s, tokens[i] == tokens[0])
		}
	}
	var after int
	_ = Poll(ctx, 10*time.Second, 250*time.Millisecond, func() (bool, error) {
		after, err = stack.RefreshEvents(ctx, id)
		return err == nil && after > before, err
	})
	if after-before != 1 {
		t.Errorf("Keycloak refresh grants for 50 concurrent calls = %d, want 1", after-before)
	}
}
