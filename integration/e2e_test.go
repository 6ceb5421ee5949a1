//go:build integration

package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/refresh"
)

var (
	loginMu sync.Mutex
	logins  = map[string]*http.Client{}
)

// login signs user in once per test run through the real OAuth flow.
func login(t *testing.T, user string) *http.Client {
	t.Helper()
	loginMu.Lock()
	defer loginMu.Unlock()
	if c, ok := logins[user]; ok {
		return c
	}
	c, err := Login(context.Background(), stack.HubURL(), user, user+"-pw")
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	logins[user] = c
	return c
}

// accessToken returns the access token in a user's auth_state and its expiry.
func accessToken(t *testing.T, user string) (string, time.Time) {
	t.Helper()
	st, err := stack.AuthState(context.Background(), user)
	if err != nil {
		t.Fatalf("auth_state of %s: %v", user, err)
	}
	at, _ := st["access_token"].(string)
	c, err := refresh.ParseClaims(at)
	if err != nil {
		t.Fatalf("auth_state of %s: access token: %v", user, err)
	}
	return at, c.Expiry
}

// startServer starts user's default server through the hub API and waits until it is ready.
func startServer(t *testing.T, user string) {
	t.Helper()
	if err := stack.StartServer(context.Background(), user); err != nil {
		t.Fatal(err)
	}
}

func assertUserinfoOK(t *testing.T, token string) {
	t.Helper()
	status, err := stack.Userinfo(context.Background(), token)
	if err != nil || status != http.StatusOK {
		t.Errorf("Keycloak userinfo with the token = %d, %v; want 200", status, err)
	}
}

func TestRunningUserIsRefreshedBeforeExpiry(t *testing.T) {
	t.Parallel()
	login(t, "alice")
	startServer(t, "alice")
	ctx := context.Background()
	seen := map[string]bool{}
	prev, prevExp := accessToken(t, "alice")
	seen[prev] = true
	for i := range 3 {
		err := Poll(ctx, 45*time.Second, 500*time.Millisecond, func() (bool, error) {
			at, _ := accessToken(t, "alice")
			return !seen[at], nil
		})
		if err != nil {
			t.Fatalf("refresh %d: auth_state kept the old access token: %v", i+1, err)
		}
		at, exp := accessToken(t, "alice")
		if now := time.Now(); !now.Before(prevExp) {
			t.Errorf("refresh %d arrived at %s, after the old token expired at %s", i+1, now, prevExp)
		}
		if !exp.After(prevExp) {
			t.Errorf("refresh %d: new expiry %s not after the old %s", i+1, exp, prevExp)
		}
		assertUserinfoOK(t, at)
		seen[at], prevExp = true, exp
	}
	assertLayout(t, "alice")
}

// assertLayout checks auth_state keeps OAuthenticator's layout.
func assertLayout(t *testing.T, user string) {
	t.Helper()
	st, err := stack.AuthState(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"access_token", "refresh_token", "id_token", "scope", "token_response", "oauth_user"} {
		if st[k] == nil {
			t.Errorf("auth_state lost %q", k)
		}
	}
	tr, _ := st["token_response"].(map[string]any)
	if tr["access_token"] != st["access_token"] || tr["refresh_token"] != st["refresh_token"] {
		t.Errorf("token_response does not match the top-level tokens")
	}
	if tr["token_type"] == nil {
		t.Errorf("token_response has no token_type")
	}
}

// freshToken calls tokenkeeper's fresh-token with a hub token.
func freshToken(t *testing.T, token, query string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, stack.ServiceURL()+"fresh-token"+query, nil)
	req.Header.Set("Authorization", "token "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("fresh-token: %v", err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("fresh-token: body is not JSON: %v", err)
	}
	if _, ok := body["refresh_token"]; ok {
		t.Errorf("fresh-token returned a refresh token")
	}
	return resp.StatusCode, body
}

func TestFreshTokenServesOwnTokenAndGuardsOthers(t *testing.T) {
	t.Parallel()
	login(t, "bob")
	login(t, "dave")
	ctx := context.Background()
	bobToken, err := stack.UserToken(ctx, "bob", "access:services!service=tokenkeeper")
	if err != nil {
		t.Fatal(err)
	}
	status, body := freshToken(t, bobToken, "")
	if status != http.StatusOK || body["user"] != "bob" {
		t.Fatalf("own token: %d %v, want 200 for bob", status, body["error"])
	}
	assertUserinfoOK(t, body["access_token"].(string))

	if status, body := freshToken(t, bobToken, "?user=dave"); status != http.StatusForbidden {
		t.Errorf("bob's token for ?user=dave: %d %v, want 403", status, body)
	}
	status, body = freshToken(t, stack.TestToken, "?user=dave")
	if status != http.StatusOK || body["user"] != "dave" {
		t.Fatalf("token with custom:tokenkeeper:tokens for ?user=dave: %d %v, want 200", status, body)
	}
	assertUserinfoOK(t, body["access_token"].(string))
	if status, _ := freshToken(t, "not-a-token", ""); status != http.StatusUnauthorized {
		t.Errorf("invalid token: %d, want 401", status)
	}
	if status, _ := freshToken(t, stack.TestToken, "?user=nobody-here"); status != http.StatusNotFound {
		t.Errorf("unknown user: %d, want 404", status)
	}
}

// serverEnv reads the environment the hub gave user's server.
func serverEnv(t *testing.T, user string) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(stack.StateDir(), "env-"+user))
	if err != nil {
		t.Fatalf("server environment: %v", err)
	}
	defer f.Close()
	env := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	return env
}

func TestSpawnedServerHasFreshTokenInEnvironment(t *testing.T) {
	t.Parallel()
	login(t, "carol")
	startServer(t, "carol")
	env := serverEnv(t, "carol")
	at := env["KEYCLOAK_ACCESS_TOKEN"]
	c, err := refresh.ParseClaims(at)
	if err != nil {
		t.Fatalf("KEYCLOAK_ACCESS_TOKEN in the server's environment: %v", err)
	}
	if !c.Expiry.After(time.Now()) {
		t.Errorf("the spawn token expired at %s", c.Expiry)
	}
	assertUserinfoOK(t, at)
	if env["TOKENKEEPER_URL"] == "" {
		t.Errorf("TOKENKEEPER_URL not set in the server's environment")
	}
	if strings.Contains(strings.Join(mapValues(env), "\n"), mustRefreshToken(t, "carol")) {
		t.Errorf("the server's environment holds the refresh token")
	}
}

func TestTokenCommandInsideServer(t *testing.T) {
	t.Parallel()
	login(t, "erin")
	startServer(t, "erin")
	env := serverEnv(t, "erin")
	cmd := exec.Command(filepath.Join("..", "bin", "tokenkeeper"), "token", "--min-valid", "20s")
	cmd.Env = []string{"JUPYTERHUB_API_TOKEN=" + env["JUPYTERHUB_API_TOKEN"], "TOKENKEEPER_URL=" + env["TOKENKEEPER_URL"]}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tokenkeeper token: %v", err)
	}
	token := strings.TrimSpace(string(out))
	assertUserinfoOK(t, token)
	if c, err := refresh.ParseClaims(token); err != nil || time.Until(c.Expiry) < 15*time.Second {
		t.Errorf("token from tokenkeeper token: expiry %v, %v; want at least 20 s left", c.Expiry, err)
	}
	t.Run("python", func(t *testing.T) { testPythonClientInsideServer(t, env) })
}

// testPythonClientInsideServer runs the notebook package's console script
// and `python -m tokenkeeper` from the server's virtualenv with exactly the
// environment the hub gave the server.
func testPythonClientInsideServer(t *testing.T, env map[string]string) {
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	bin := filepath.Join(stack.venv(), "bin")
	for _, argv := range [][]string{
		{filepath.Join(bin, "tokenkeeper-token"), "--min-valid", "10s"},
		{filepath.Join(bin, "python"), "-m", "tokenkeeper", "--min-valid", "10"},
	} {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = environ
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, stderr.String())
		}
		if stderr.Len() != 0 {
			t.Errorf("%s wrote to stderr: %s", strings.Join(argv, " "), stderr.String())
		}
		token := strings.TrimSpace(string(out))
		assertUserinfoOK(t, token)
		if c, err := refresh.ParseClaims(token); err != nil || time.Until(c.Expiry) < 5*time.Second {
			t.Errorf("%s: expiry %v, %v; want at least 10 s left", strings.Join(argv, " "), c.Expiry, err)
		}
	}
}

func mustRefreshToken(t *testing.T, user string) string {
	st, err := stack.AuthState(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	rt, _ := st["refresh_token"].(string)
	if rt == "" {
		t.Fatalf("%s has no refresh token", user)
	}
	return rt
}

func mapValues(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func TestLoginWithWrongPasswordSaysWhy(t *testing.T) {
	t.Parallel()
	_, err := Login(context.Background(), stack.HubURL(), "dave", "not-dave-pw")
	if err == nil || !strings.Contains(err.Error(), "Invalid username or password") {
		t.Errorf("Login with a wrong password: %v; want Keycloak's message", err)
	}
}
