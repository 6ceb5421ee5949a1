//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// crossUsers take part in the cross-user test and in no other test. fay is a
// hub admin (integration/stack/jupyterhub_config.py).
var crossUsers = []string{"ann", "ben", "cleo", "dirk", "edna", "fay"}

// crossRunning are the cross users whose servers run during the test, so
// their server tokens attack too.
var crossRunning = []string{"ann", "ben", "cleo"}

// crossAdmin is the hub admin among crossUsers. Whether tokenkeeper serves an
// admin's own token is the admin tests' business; here fay only attacks and
// is attacked.
const crossAdmin = "fay"

// caller is one hub token of a user: the server's JUPYTERHUB_API_TOKEN, or a
// token the user's browser session made for itself (with all of the user's
// permissions).
type caller struct {
	user, kind, token string
}

// TestCrossUserNoTokenOrStatusOfAnother logs in six users (one a hub admin),
// starts three servers, and has every user, with every token they hold, ask
// tokenkeeper for every other user's access token and status, for the
// service account's token and for job status. Every such request must be
// refused with 403 and carry no access token; every non-admin's own request
// must return that user's own Keycloak token.
func TestCrossUserNoTokenOrStatusOfAnother(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	subjects := map[string]string{}
	var callers []caller
	for _, u := range crossUsers {
		callers = append(callers, caller{u, "session", sessionToken(t, login(t, u), u)})
		id, err := stack.KeycloakUserID(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		subjects[u] = id
	}
	for _, u := range crossRunning {
		startServer(t, u)
		stopServerAtEnd(t, u)
		callers = append(callers, caller{u, "server", serverEnv(t, u)["JUPYTERHUB_API_TOKEN"]})
	}
	for _, c := range callers {
		assertHoldsNoTokenScope(t, c)
	}
	known := knownAccessTokens(t)
	type refusal struct {
		by   caller
		path string
		body []byte
	}
	var refused []refusal
	for _, a := range callers {
		for _, path := range crossPaths(a.user) {
			status, body := callTokenkeeper(t, a.token, path)
			if status != http.StatusForbidden {
				t.Errorf("%s's %s token, GET %s: %d (%s); want 403", a.user, a.kind, path, status, describe(body))
			}
			refused = append(refused, refusal{a, path, body})
		}
		if a.user != crossAdmin {
			assertOwnToken(t, a, subjects[a.user], known)
		}
	}
	// Tokens may have been refreshed meanwhile: check every answer against
	// every token seen from start to end.
	for u, tokens := range knownAccessTokens(t) {
		known[u] = append(known[u], tokens...)
	}
	for _, r := range refused {
		assertNoAccessToken(t, r.by, r.path, r.body, known)
	}
	t.Logf("%d cross-user requests by %d tokens of %d users, each answered 403 without a token", len(refused), len(callers), len(crossUsers))
}

// crossPaths are the requests a user must be refused: every other user's
// token and status, and the service account's token and job status.
func crossPaths(self string) []string {
	paths := []string{"service-token", "job-status?system=daint&job_id=42"}
	for _, b := range crossUsers {
		if b == self {
			continue
		}
		q := url.QueryEscape(b)
		paths = append(paths,
			"fresh-token?user="+q,
			"fresh-token?min_valid=0&user="+q,
			"status?user="+q,
			"job-status?system=daint&job_id=42&user="+q,
		)
	}
	return paths
}

// sessionToken has user's logged-in browser make a hub API token for itself,
// as the token page does: with the session's XSRF cookie, and no scopes
// named, so the token has all of the user's permissions.
func sessionToken(t *testing.T, browser *http.Client, user string) string {
	t.Helper()
	if _, err := get(context.Background(), browser, stack.HubURL()+"/hub/token"); err != nil {
		t.Fatalf("%s's token page: %v", user, err)
	}
	api, _ := url.Parse(stack.HubURL() + "/hub/api/users/" + url.PathEscape(user) + "/tokens")
	var xsrf string
	for _, c := range browser.Jar.Cookies(api) {
		if c.Name == "_xsrf" {
			xsrf = c.Value
		}
	}
	if xsrf == "" {
		t.Fatalf("%s's browser has no _xsrf cookie for %s", user, api)
	}
	req, _ := http.NewRequest(http.MethodPost, api.String(), strings.NewReader(`{"note": "cross-user test", "expires_in": 3600}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-XSRFToken", xsrf)
	resp, err := browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Token string `json:"token"`
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &out) != nil || out.Token == "" {
		t.Fatalf("%s's browser session making a token: %d %s", user, resp.StatusCode, b)
	}
	return out.Token
}

// callTokenkeeper sends GET path to tokenkeeper with a hub token and returns
// the status and raw body.
func callTokenkeeper(t *testing.T, token, path string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, stack.ServiceURL()+path, nil)
	req.Header.Set("Authorization", "token "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// hubIdentity is what the hub says about a token (GET /hub/api/user).
type hubIdentity struct {
	Kind   string   `json:"kind"`
	Name   string   `json:"name"`
	Admin  bool     `json:"admin"`
	Scopes []string `json:"scopes"`
}

func whoami(t *testing.T, token string) hubIdentity {
	t.Helper()
	var id hubIdentity
	if err := HubAPI(context.Background(), stack.HubAPI(), token, http.MethodGet, "/user", nil, &id); err != nil {
		t.Fatalf("GET /hub/api/user: %v", err)
	}
	return id
}

// assertHoldsNoTokenScope checks the hub gives c's token access to
// tokenkeeper and no form of custom:tokenkeeper:tokens.
func assertHoldsNoTokenScope(t *testing.T, c caller) {
	t.Helper()
	id := whoami(t, c.token)
	if id.Kind != "user" || id.Name != c.user {
		t.Errorf("%s's %s token belongs to %s %q", c.user, c.kind, id.Kind, id.Name)
	}
	if !slices.Contains(id.Scopes, "access:services!service=tokenkeeper") && !slices.Contains(id.Scopes, "access:services") {
		t.Errorf("%s's %s token cannot call tokenkeeper: scopes %v", c.user, c.kind, id.Scopes)
	}
	for _, s := range id.Scopes {
		if strings.HasPrefix(s, "custom:tokenkeeper:") {
			t.Errorf("%s's %s token holds %s", c.user, c.kind, s)
		}
	}
}

// knownAccessTokens returns every cross user's current access token, from
// their auth_state.
func knownAccessTokens(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, u := range crossUsers {
		st, err := stack.AuthState(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		if at, _ := st["access_token"].(string); at != "" {
			out[u] = append(out[u], at)
		}
	}
	return out
}

// assertNoAccessToken checks a refused answer carries no access token: no
// access_token key and none of another user's known tokens.
func assertNoAccessToken(t *testing.T, a caller, path string, body []byte, known map[string][]string) {
	t.Helper()
	if bytes.Contains(body, []byte(`"access_token"`)) {
		t.Errorf("%s's %s token, GET %s: the answer carries an access token", a.user, a.kind, path)
	}
	for u, tokens := range known {
		for _, tok := range tokens {
			if u != a.user && bytes.Contains(body, []byte(signature(tok))) {
				t.Errorf("%s's %s token, GET %s: the answer holds %s's access token", a.user, a.kind, path, u)
			}
		}
	}
}

// describe summarises an answer for a failure message without any token in
// it: its error code and message, or whose answer it is.
func describe(body []byte) string {
	var b struct {
		Error, Message, User string
		AccessToken          string `json:"access_token"`
	}
	if json.Unmarshal(body, &b) != nil {
		return fmt.Sprintf("%d bytes, not JSON", len(body))
	}
	if b.Error != "" {
		return b.Error + ": " + b.Message
	}
	return fmt.Sprintf("answer for user %q, access token included: %t", b.User, b.AccessToken != "")
}

// signature is a JWT's last part, unique to the token.
func signature(jwt string) string { return jwt[strings.LastIndex(jwt, ".")+1:] }

// assertOwnToken checks a's own fresh-token, with and without ?user=,
// returns a's Keycloak token.
func assertOwnToken(t *testing.T, a caller, subject string, known map[string][]string) {
	t.Helper()
	for _, path := range []string{"fresh-token", "fresh-token?user=" + url.QueryEscape(a.user)} {
		status, body := callTokenkeeper(t, a.token, path)
		var resp struct {
			User        string `json:"user"`
			AccessToken string `json:"access_token"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &resp) != nil {
			t.Errorf("%s's %s token, GET %s: %d (%s); want 200", a.user, a.kind, path, status, describe(body))
			continue
		}
		var claims struct {
			PreferredUsername string `json:"preferred_username"`
			Sub               string `json:"sub"`
		}
		if err := decodeClaims(resp.AccessToken, &claims); err != nil {
			t.Errorf("%s's %s token, GET %s: access token: %v", a.user, a.kind, path, err)
		}
		if resp.User != a.user || claims.PreferredUsername != a.user || claims.Sub != subject {
			t.Errorf("%s's %s token, GET %s: user %q, token of %q (sub %s); want %s's (sub %s)",
				a.user, a.kind, path, resp.User, claims.PreferredUsername, claims.Sub, a.user, subject)
		}
		assertUserinfoOK(t, resp.AccessToken)
		known[a.user] = append(known[a.user], resp.AccessToken)
	}
}

// TestTokenkeeperHoldsLeastScopes reads tokenkeeper's own hub token from its
// environment and checks the hub gives it exactly the scopes its settings
// need: no tokens, no admin, no servers beyond reading them. The test stack
// runs with revoke_tokens, stop_servers and refresh_admins off, as
// configure() defaults to; a run that turns one on through the stack's
// environment gets that option's scopes added to the expectation, and the
// test says so.
func TestTokenkeeperHoldsLeastScopes(t *testing.T) {
	t.Parallel()
	env := processEnv(t, tokenkeeperPID(t))
	id := whoami(t, env["JUPYTERHUB_API_TOKEN"])
	want := []string{
		"admin:auth_state", "admin:users", "delete:users", "list:users", "read:roles:users", "read:servers",
		"read:users", "read:users:activity", "read:users:groups", "read:users:name", "users", "users:activity",
	}
	if on(env, "TOKENKEEPER_REVOKE_TOKENS") {
		t.Log("revoke_tokens is on in this stack: tokenkeeper holds read:tokens and tokens")
		want = append(want, "read:tokens", "tokens")
	}
	if on(env, "TOKENKEEPER_STOP_SERVERS") {
		t.Log("stop_servers is on in this stack: tokenkeeper holds delete:servers")
		want = append(want, "delete:servers")
	}
	if on(env, "TOKENKEEPER_REFRESH_ADMINS") {
		t.Skip("refresh_admins is on in this stack: tokenkeeper holds the admin role by design")
	}
	var got []string
	for _, s := range id.Scopes {
		if !strings.HasSuffix(s, "!service=tokenkeeper") { // its own identity and access scopes
			got = append(got, s)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if id.Kind != "service" || id.Name != "tokenkeeper" || id.Admin {
		t.Errorf("tokenkeeper's hub token: kind %q name %q admin %t; want service tokenkeeper, not admin", id.Kind, id.Name, id.Admin)
	}
	if !slices.Equal(got, want) {
		t.Errorf("tokenkeeper's hub scopes:\n got %v\nwant %v", got, want)
	}
	assertNoOneElseMayReadTokens(t)
}

// assertNoOneElseMayReadTokens checks the hub runs no service but
// tokenkeeper and the tests' own: no spawn-hook service whose token reads
// every user's token. (Users' and servers' tokens are checked in
// TestCrossUserNoTokenOrStatusOfAnother.)
func assertNoOneElseMayReadTokens(t *testing.T) {
	t.Helper()
	var services map[string]json.RawMessage
	if err := stack.API(context.Background(), http.MethodGet, "/services", nil, &services); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(services))
	for n := range services {
		names = append(names, n)
	}
	slices.Sort(names)
	if want := []string{"tk-test-admin", "tokenkeeper"}; !slices.Equal(names, want) {
		t.Errorf("hub services = %v, want %v", names, want)
	}
}

// processEnv reads a process's environment.
func processEnv(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if k, v, ok := strings.Cut(string(kv), "="); ok {
			env[k] = v
		}
	}
	return env
}

// on reports whether a boolean variable is set to true.
func on(env map[string]string, key string) bool {
	v, _ := strconv.ParseBool(env[key])
	return v
}
