//go:build integration

package integration

import (
	"context"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/refresh"
)

// TestBaseURLSpawnTokenAndLogout restarts the hub with c.JupyterHub.base_url
// /jhub/ (configure() called after it, as an admin's configuration does)
// and checks the three paths that carry the service's prefix: the
// pre-spawn hook asks tokenkeeper under /jhub/services/tokenkeeper/ (a
// spawn fails if it gets 404), the server asks it at the TOKENKEEPER_URL
// the hook gave it, and Keycloak's back-channel logout, sent to the public
// URL under the base URL (what an admin puts into the client), logs the
// user out. Like the hub-restart tests, it does not call t.Parallel.
func TestBaseURLSpawnTokenAndLogout(t *testing.T) {
	ctx := context.Background()
	const base, user = "/jhub/", "basil"
	if err := stack.CreateKeycloakUser(ctx, user, user+"-pw"); err != nil {
		t.Fatal(err)
	}
	restoreClient := clientUnderBaseURL(t, base)
	t.Cleanup(func() {
		if err := stack.RestartHubAt(context.Background(), "/"); err != nil {
			t.Errorf("restore the hub at /: %v", err)
			return
		}
		waitHealthy(t)
		restoreClient()
	})
	// tokenkeeper reaches the hub's API through the tests' proxy, under the base URL.
	api := strings.TrimSuffix(hubProxy.URL(), "/hub/api") + base + "hub/api"
	if err := stack.RestartHubAt(ctx, base, "TOKENKEEPER_HUB_API_URL="+api); err != nil {
		t.Fatal(err)
	}
	if got := stack.ServiceURL(); !strings.HasSuffix(got, base+"services/tokenkeeper/") {
		t.Fatalf("the stack's tokenkeeper URL %q is not under %s", got, base)
	}
	public := stack.HubBaseURL() + "/services/tokenkeeper/"
	if err := Poll(ctx, time.Minute, 250*time.Millisecond, func() (bool, error) {
		s, err := healthAt(ctx, public+"health")
		return err == nil && s.Status == http.StatusOK, nil
	}); err != nil {
		t.Fatalf("tokenkeeper does not answer under the base URL through the proxy (%shealth): %v", public, err)
	}

	browser, err := Login(ctx, stack.HubBaseURL(), user, user+"-pw")
	if err != nil {
		t.Fatalf("login under %s: %v", base, err)
	}
	// The spawn succeeds only if the pre-spawn hook got a token.
	if err := stack.StartServer(ctx, user); err != nil {
		t.Fatalf("spawn under %s (the pre-spawn hook asks tokenkeeper): %v", base, err)
	}
	env := serverEnv(t, user)
	assertUserinfoOK(t, env["KEYCLOAK_ACCESS_TOKEN"])
	if want := stack.ServiceURL(); env["TOKENKEEPER_URL"] != want {
		t.Errorf("the server's TOKENKEEPER_URL = %q, want %q (under the base URL)", env["TOKENKEEPER_URL"], want)
	}

	// The server asks tokenkeeper for a fresh token with what the hub gave it:
	// the notebook package's client and tokenkeeper's own.
	for _, argv := range [][]string{
		{filepath.Join(stack.venv(), "bin", "tokenkeeper-token"), "--min-valid", "10s"},
		{filepath.Join("..", "bin", "tokenkeeper"), "token", "--min-valid", "10s"},
	} {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = []string{"JUPYTERHUB_API_TOKEN=" + env["JUPYTERHUB_API_TOKEN"], "TOKENKEEPER_URL=" + env["TOKENKEEPER_URL"]}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s inside the server: %v: %s", filepath.Base(argv[0]), err, stderr.String())
		}
		token := strings.TrimSpace(string(out))
		assertUserinfoOK(t, token)
		if c, err := refresh.ParseClaims(token); err != nil || time.Until(c.Expiry) < 5*time.Second {
			t.Errorf("%s: expiry %v, %v; want at least 10 s left", filepath.Base(argv[0]), c.Expiry, err)
		}
	}

	// RP-initiated logout at Keycloak: its back-channel logout reaches
	// tokenkeeper through the proxy under the base URL.
	token, err := stack.UserToken(ctx, user, "access:services!service=tokenkeeper")
	if err != nil {
		t.Fatal(err)
	}
	st, err := stack.AuthState(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	idToken, _ := st["id_token"].(string)
	q := url.Values{
		"id_token_hint":            {idToken},
		"post_logout_redirect_uri": {stack.HubBaseURL() + "/hub/"},
		"client_id":                {"jupyterhub"},
	}
	start := time.Now()
	resp, err := browser.Get(stack.Issuer() + "/protocol/openid-connect/logout?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitLoggedOut(t, user, start)
	if status, body := freshToken(t, token, ""); !slices.Contains(loggedOutTokenStatuses(), status) {
		t.Errorf("fresh-token for logged-out %s: %d %v, want one of %v", user, status, body, loggedOutTokenStatuses())
	}
	login := base + "hub/login"
	if err := Poll(ctx, 30*time.Second, 500*time.Millisecond, func() (bool, error) {
		resp, err := browser.Get(stack.HubBaseURL() + "/hub/home")
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.Request.URL.Path == login, nil
	}); err != nil {
		t.Errorf("%s's browser was not sent to %s: %v", user, login, err)
	}
}

// clientUnderBaseURL registers the hub's URLs under base with the realm's
// jupyterhub client, beside the stack's own: the login callback, the
// post-logout redirect, and the back-channel logout URL on the public
// route, as an admin whose hub runs under base sets them. It returns the
// function that restores the client.
func clientUnderBaseURL(t *testing.T, base string) func() {
	t.Helper()
	ctx := context.Background()
	id, err := stack.KeycloakClientUUID(ctx, "jupyterhub")
	if err != nil {
		t.Fatal(err)
	}
	var was struct {
		RedirectURIs []string          `json:"redirectUris"`
		Attributes   map[string]string `json:"attributes"`
	}
	if err := stack.keycloakAdmin(ctx, http.MethodGet, "/clients/"+id, nil, &was); err != nil {
		t.Fatalf("read the jupyterhub client: %v", err)
	}
	under := stack.HubURL() + strings.TrimSuffix(base, "/")
	body := map[string]any{
		"redirectUris": append(slices.Clone(was.RedirectURIs), under+"/hub/oauth_callback"),
		"attributes": map[string]string{
			"post.logout.redirect.uris": was.Attributes["post.logout.redirect.uris"] + "##" + under + "/hub/",
			"backchannel.logout.url":    under + "/services/tokenkeeper/backchannel-logout",
		},
	}
	if err := stack.keycloakAdmin(ctx, http.MethodPut, "/clients/"+id, body, nil); err != nil {
		t.Fatalf("register the hub's URLs under %s: %v", base, err)
	}
	return func() {
		body := map[string]any{
			"redirectUris": was.RedirectURIs,
			"attributes": map[string]string{
				"post.logout.redirect.uris": was.Attributes["post.logout.redirect.uris"],
				"backchannel.logout.url":    was.Attributes["backchannel.logout.url"],
			},
		}
		if err := stack.keycloakAdmin(context.Background(), http.MethodPut, "/clients/"+id, body, nil); err != nil {
			t.Errorf("restore the jupyterhub client: %v", err)
		}
	}
}
