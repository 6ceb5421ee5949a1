//go:build integration

package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/refresh"
)

// getJSON calls a tokenkeeper endpoint with a hub token and decodes the JSON answer.
func getJSON(t *testing.T, token, path string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, stack.ServiceURL()+path, nil)
	req.Header.Set("Authorization", "token "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET %s: body is not JSON: %v", path, err)
	}
	return resp.StatusCode, body
}

func TestServiceTokenAndJobStatusNeedTheScope(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	login(t, "olga")
	olga, err := stack.UserToken(ctx, "olga", "access:services!service=tokenkeeper")
	if err != nil {
		t.Fatal(err)
	}
	if status, _ := getJSON(t, olga, "service-token"); status != http.StatusForbidden {
		t.Errorf("service-token without the scope: %d, want 403", status)
	}
	if status, _ := getJSON(t, olga, "job-status?system=daint&job_id=42"); status != http.StatusForbidden {
		t.Errorf("job-status without the scope: %d, want 403", status)
	}
	status, body := getJSON(t, stack.TestToken, "service-token")
	if status != http.StatusOK {
		t.Fatalf("service-token with the scope: %d %v", status, body)
	}
	var claims struct {
		Azp string `json:"azp"`
	}
	if err := decodeClaims(body["access_token"].(string), &claims); err != nil || claims.Azp != "tokenkeeper-sa" {
		t.Errorf("service-token azp = %q, %v; want tokenkeeper-sa", claims.Azp, err)
	}
	for id, want := range map[string][2]any{"42": {"running", true}, "43": {"completed", false}, "44": {"pending", true}} {
		status, body := getJSON(t, stack.TestToken, "job-status?system=daint&job_id="+id)
		if status != http.StatusOK || body["state"] != want[0] || body["running"] != want[1] {
			t.Errorf("job %s: %d state=%v running=%v, want %v", id, status, body["state"], body["running"], want)
		}
	}
	calls := jobService.calls.Load()
	getJSON(t, stack.TestToken, "job-status?system=daint&job_id=42")
	if jobService.calls.Load() != calls {
		t.Errorf("a poll within the poll interval reached the job API; want it served from cache")
	}
	if status, _ := getJSON(t, stack.TestToken, "job-status?system=daint&job_id=999"); status != http.StatusNotFound {
		t.Errorf("unknown job: %d, want 404", status)
	}
}

// decodeClaims reads a JWT's claims without verifying it.
func decodeClaims(jwt string, v any) error {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return os.ErrInvalid
	}
	b, err := decodeSegment(parts[1])
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func TestBackchannelLogoutFromKeycloakAdmin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	browser := login(t, "kim")
	startServer(t, "kim")
	stopServerAtEnd(t, "kim")
	token, err := stack.UserToken(ctx, "kim", "access:services!service=tokenkeeper")
	if err != nil {
		t.Fatal(err)
	}
	if sessions, err := stack.KeycloakSessions(ctx, "kim"); err != nil || len(sessions) == 0 {
		t.Fatalf("kim's Keycloak sessions before the logout: %v, %v; want at least one", sessions, err)
	}
	start := time.Now()
	if err := stack.KeycloakLogout(ctx, "kim"); err != nil {
		t.Fatal(err)
	}
	waitLoggedOut(t, "kim", start)
	assertLoggedOut(t, "kim", browser, token)
	if sessions, err := stack.KeycloakSessions(ctx, "kim"); err != nil || len(sessions) != 0 {
		t.Errorf("kim's Keycloak sessions after the logout: %v, %v; want none", sessions, err)
	}
}

func TestBackchannelLogoutFromRPInitiatedLogout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	browser := login(t, "nick")
	startServer(t, "nick")
	stopServerAtEnd(t, "nick")
	token, err := stack.UserToken(ctx, "nick", "access:services!service=tokenkeeper")
	if err != nil {
		t.Fatal(err)
	}
	st, err := stack.AuthState(ctx, "nick")
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{
		"id_token_hint":            {st["id_token"].(string)},
		"post_logout_redirect_uri": {stack.HubURL() + "/hub/"},
		"client_id":                {"jupyterhub"},
	}
	start := time.Now()
	resp, err := browser.Get(stack.Issuer() + "/protocol/openid-connect/logout?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitLoggedOut(t, "nick", start)
	assertLoggedOut(t, "nick", browser, token)
}

// waitLoggedOut waits for user's auth_state to be cleared and checks it
// took at most 2 seconds from start, and busySlack more on a busy machine.
func waitLoggedOut(t *testing.T, user string, start time.Time) {
	t.Helper()
	err := Poll(context.Background(), 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		st, err := stack.AuthState(context.Background(), user)
		return err == nil && len(st) == 0, err
	})
	if err != nil {
		t.Fatalf("%s not logged out: %v", user, err)
	}
	if d := time.Since(start); d > 2*time.Second+busySlack {
		t.Errorf("%s logged out after %s, want within 2 s (and %s for a busy machine)", user, d, busySlack)
	}
	// The line follows the cleared auth_state once the logout's audit row
	// is written.
	var l []logLine
	_ = Poll(context.Background(), 5*time.Second, 50*time.Millisecond, func() (bool, error) {
		l = tokenkeeperLog(t, "logged out", user)
		return len(l) > 0, nil
	})
	if len(l) != 1 || l[0].Reason != "keycloak back-channel logout" {
		t.Errorf("logout log lines for %s = %+v, want one back-channel logout", user, l)
	}
}

func TestTokenFileStaysFreshAcrossLifetimes(t *testing.T) {
	t.Parallel()
	login(t, "pete")
	startServer(t, "pete")
	stopServerAtEnd(t, "pete")
	env := serverEnv(t, "pete")
	file := filepath.Join(t.TempDir(), "token")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join("..", "bin", "tokenkeeper"), "token", "--file", file, "--watch", "--min-valid", "10s")
	cmd.Env = []string{"JUPYTERHUB_API_TOKEN=" + env["JUPYTERHUB_API_TOKEN"], "TOKENKEEPER_URL=" + env["TOKENKEEPER_URL"]}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cancel() // stop the watcher before waiting for it
		_ = cmd.Wait()
	}()
	seen := map[string]bool{}
	deadline := time.Now().Add(75 * time.Second)
	for len(seen) < 3 && time.Now().Before(deadline) {
		var tok string
		err := Poll(ctx, 40*time.Second, 250*time.Millisecond, func() (bool, error) {
			b, err := os.ReadFile(file)
			tok = strings.TrimSpace(string(b))
			return err == nil && tok != "" && !seen[tok], err
		})
		if err != nil {
			t.Fatalf("token file not rewritten: %v", err)
		}
		if c, err := refresh.ParseClaims(tok); err != nil || !c.Expiry.After(time.Now()) {
			t.Errorf("token file holds an expired or unreadable token: %v", err)
		}
		assertUserinfoOK(t, tok)
		seen[tok] = true
	}
	if len(seen) < 3 {
		t.Errorf("token file had %d distinct tokens over two lifetimes, want 3", len(seen))
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
}

// decodeSegment decodes a base64url JWT segment, padded or not.
func decodeSegment(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
