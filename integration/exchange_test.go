//go:build integration

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// tokenClaims are the claims the derived-token tests compare.
type tokenClaims struct {
	Iss               string          `json:"iss"`
	Sub               string          `json:"sub"`
	Sid               string          `json:"sid"`
	Azp               string          `json:"azp"`
	Jti               string          `json:"jti"`
	Exp               int64           `json:"exp"`
	Aud               json.RawMessage `json:"aud"`
	PreferredUsername string          `json:"preferred_username"`
}

func claimsOf(t *testing.T, jwt string) tokenClaims {
	t.Helper()
	var c tokenClaims
	if err := decodeClaims(jwt, &c); err != nil {
		t.Fatalf("token claims: %v", err)
	}
	return c
}

// introspectAs asks Keycloak's introspection endpoint about token,
// authenticating as the confidential client id.
func introspectAs(t *testing.T, issuer, id, secret, token string) map[string]any {
	t.Helper()
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	req, _ := http.NewRequest(http.MethodPost, issuer+"/protocol/openid-connect/token/introspect", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(id, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("introspect: %v", err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("introspect: %d, %v", resp.StatusCode, err)
	}
	return out
}

// userinfoAt calls the userinfo endpoint of issuer with token and returns
// the status and the preferred_username.
func userinfoAt(t *testing.T, issuer, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, issuer+"/protocol/openid-connect/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	defer resp.Body.Close()
	var info struct {
		PreferredUsername string `json:"preferred_username"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&info)
	return resp.StatusCode, info.PreferredUsername
}

// lastAccess returns the lastAccess (ms) of user's only Keycloak session.
func lastAccess(t *testing.T, user string) int64 {
	t.Helper()
	sessions, err := stack.KeycloakSessions(context.Background(), user)
	if err != nil || len(sessions) != 1 {
		t.Fatalf("%s's Keycloak sessions: %+v, %v; want one", user, sessions, err)
	}
	return sessions[0].LastAccess
}

// waitPast waits until the wall clock is more than a second past the given
// time in ms, so that Keycloak's second-resolution timestamps can tell a
// later access apart.
func waitPast(t *testing.T, ms int64) {
	t.Helper()
	deadline := time.UnixMilli(ms).Add(1100 * time.Millisecond)
	if err := Poll(context.Background(), time.Minute, 100*time.Millisecond, func() (bool, error) {
		return time.Now().After(deadline), nil
	}); err != nil {
		t.Fatal(err)
	}
}

// loggedIn logs user in (the hub's own login, or through the identity
// provider alias) and returns a hub token of theirs that may call
// tokenkeeper.
func loggedIn(t *testing.T, alias, user string) string {
	t.Helper()
	ctx := context.Background()
	if alias == "" {
		login(t, user)
	} else if _, err := LoginVia(ctx, stack.HubURL(), alias, user, user+"-pw"); err != nil {
		t.Fatal(err)
	}
	token, err := stack.UserToken(ctx, user, "access:services!service=tokenkeeper")
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// aroundDerived asks fresh-token with query (and min_valid=0, so that the
// user's own token is not refreshed) at least two seconds after the user's
// session was last active, and returns the session's lastAccess before and
// after, and the answer.
func aroundDerived(t *testing.T, token, user, query string) (before, after int64, body map[string]any) {
	t.Helper()
	if status, body := freshToken(t, token, "?min_valid=25"); status != http.StatusOK {
		t.Fatalf("fresh-token: %d %v", status, body)
	}
	own, _ := accessToken(t, user)
	before = lastAccess(t, user)
	waitPast(t, before+2000)
	status, body := freshToken(t, token, query+"&min_valid=0")
	if status != http.StatusOK {
		t.Fatalf("fresh-token%s: %d %v", query, status, body)
	}
	if now, _ := accessToken(t, user); now != own {
		t.Fatal("the user's own token was refreshed; the measurement needs it untouched")
	}
	after = lastAccess(t, user)
	t.Logf("%s's session lastAccess: %d before fresh-token%s, %d after it (%d ms later)",
		user, before, query, after, time.Now().UnixMilli()-before)
	return before, after, body
}

// assertNowhereStored checks that no token's signature is in tokenkeeper's
// log lines or its SQLite files.
func assertNowhereStored(t *testing.T, tokens ...string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(stack.StateDir(), "tokenkeeper.db*"))
	places := map[string][]byte{"the log": tokenkeeperLines(t)}
	for _, f := range files {
		places[filepath.Base(f)], _ = os.ReadFile(f)
	}
	for _, tok := range tokens {
		for place, b := range places {
			if bytes.Contains(b, []byte(tok[strings.LastIndex(tok, ".")+1:])) {
				t.Errorf("%s holds a derived token's bytes", place)
			}
		}
	}
}

func accessTokenOf(t *testing.T, body map[string]any) string {
	t.Helper()
	tok, _ := body["access_token"].(string)
	if tok == "" {
		t.Fatalf("no access_token in %v", body["error"])
	}
	return tok
}

// TestFreshTokenAudience: a user's token exchanged for the audience trino
// has trino alone as its audience and belongs to the user's session; other
// audiences and identity providers are refused.
func TestFreshTokenAudience(t *testing.T) {
	t.Parallel()
	token := loggedIn(t, "", "xaud")
	status, body := freshToken(t, token, "")
	if status != http.StatusOK {
		t.Fatalf("fresh-token: %d %v", status, body)
	}
	base := claimsOf(t, accessTokenOf(t, body))
	if aud := audiences(t, accessTokenOf(t, body)); len(aud) < 2 || !slices.Contains(aud, "trino") {
		t.Fatalf("the user's own token's aud = %q, want trino among others (the realm's audience mapper)", aud)
	}
	status, body = freshToken(t, token, "?audience=trino")
	if status != http.StatusOK || body["audience"] != "trino" || body["user"] != "xaud" {
		t.Fatalf("fresh-token?audience=trino: %d %v", status, body)
	}
	exchanged := accessTokenOf(t, body)
	got := claimsOf(t, exchanged)
	if aud := audiences(t, exchanged); len(aud) != 1 || aud[0] != "trino" {
		t.Errorf("exchanged token's aud = %q, want exactly [trino]", aud)
	}
	if got.Sid == "" || got.Sid != base.Sid || got.Sub != base.Sub || got.Azp != "jupyterhub" || got.Jti == base.Jti {
		t.Errorf("exchanged token sid %q sub %q azp %q; want the user's session %q and subject %q, azp jupyterhub, a token of its own",
			got.Sid, got.Sub, got.Azp, base.Sid, base.Sub)
	}
	t.Logf("the user's token expires at %d, the exchanged one at %d", base.Exp, got.Exp)
	in := introspectAs(t, stack.Issuer(), "jupyterhub", stack.ClientSecret, exchanged)
	if in["active"] != true || in["sid"] != base.Sid || in["sub"] != base.Sub {
		t.Errorf("Keycloak's introspection of the exchanged token: active %v sid %v sub %v; want active, sid %q, sub %q",
			in["active"], in["sid"], in["sub"], base.Sid, base.Sub)
	}
	if status, again := freshToken(t, token, "?audience=trino"); status != http.StatusOK || again["access_token"] != exchanged {
		t.Errorf("second fresh-token?audience=trino: %d, same token %t; want the cached token", status, again["access_token"] == exchanged)
	}
	for query, code := range map[string]string{
		"?audience=account": "audience_not_allowed", "?audience=realm-management": "audience_not_allowed",
		"?audience=tokenkeeper-sa": "audience_not_allowed", "?audience=jupyterhub": "audience_not_allowed",
		"?idp=github": "identity_provider_not_allowed",
	} {
		if status, body := freshToken(t, token, query); status != http.StatusForbidden || body["error"] != code {
			t.Errorf("fresh-token%s: %d %v, want 403 %s", query, status, body, code)
		}
	}
	// xaud never logged in through the external provider, and holds no
	// broker read-token role: Keycloak's refusal, with its reason.
	status, body = freshToken(t, token, "?idp=external")
	if msg, _ := body["message"].(string); status != http.StatusBadGateway || body["error"] != "idp_token_refused" ||
		!strings.Contains(msg, "not authorized to retrieve tokens from identity provider [external]") {
		t.Errorf("fresh-token?idp=external for a user of the realm itself: %d %v, want 502 idp_token_refused with Keycloak's reason", status, body)
	}
	assertNowhereStored(t, exchanged)
}

// TestExchangeLeavesTheSessionIdleTimerAlone measures, with the admin API's
// lastAccess of the user's session, that Keycloak's token exchange does not
// count as activity of the session, while a refresh does.
func TestExchangeLeavesTheSessionIdleTimerAlone(t *testing.T) {
	t.Parallel()
	token := loggedIn(t, "", "xidle")
	first, afterExchange, _ := aroundDerived(t, token, "xidle", "?audience=trino")
	if afterExchange != first {
		t.Errorf("lastAccess moved from %d to %d with a token exchange, want it untouched", first, afterExchange)
	}
	// The control: a refresh of the user's own token moves it. A token is
	// refreshed for a caller once less than half its life is left.
	own, exp := accessToken(t, "xidle")
	waitPast(t, exp.Add(-14*time.Second).UnixMilli())
	if status, body := freshToken(t, token, ""); status != http.StatusOK {
		t.Fatalf("fresh-token: %d %v", status, body)
	}
	if after, _ := accessToken(t, "xidle"); after == own {
		t.Fatal("the user's own token was not refreshed for the control")
	}
	if afterRefresh := lastAccess(t, "xidle"); afterRefresh <= afterExchange {
		t.Errorf("lastAccess after a refresh = %d, want later than %d: the measurement cannot see activity", afterRefresh, afterExchange)
	}
}

// TestBrokeredLoginGetsTheProvidersToken: a user who logs in through the
// external identity provider gets that provider's token from
// fresh-token?idp=external; the provider's userinfo accepts it, the realm's
// does not, asking for it leaves the session's idle timer alone, and it is
// renewed (by Keycloak, with the provider's refresh token) once it expires.
func TestBrokeredLoginGetsTheProvidersToken(t *testing.T) {
	t.Parallel()
	token := loggedIn(t, "external", "xavier")
	first, after, body := aroundDerived(t, token, "xavier", "?idp=external")
	if body["idp"] != "external" || body["user"] != "xavier" {
		t.Fatalf("fresh-token?idp=external: %v", body)
	}
	if after != first {
		t.Errorf("lastAccess moved from %d to %d when the provider's token was read, want it untouched", first, after)
	}
	idpToken := accessTokenOf(t, body)
	if c := claimsOf(t, idpToken); c.Iss != stack.ExternalIssuer() || c.PreferredUsername != "xavier" {
		t.Errorf("the provider's token: iss %q user %q, want %q and xavier", c.Iss, c.PreferredUsername, stack.ExternalIssuer())
	}
	if status, user := userinfoAt(t, stack.ExternalIssuer(), idpToken); status != http.StatusOK || user != "xavier" {
		t.Errorf("the external realm's userinfo with the provider's token: %d %q, want 200 xavier", status, user)
	}
	if status, _ := userinfoAt(t, stack.Issuer(), idpToken); status != http.StatusUnauthorized {
		t.Errorf("the test realm's userinfo with the provider's token: %d, want 401", status)
	}

	// The external realm's tokens live 40 s; Keycloak renews the stored one.
	exp := time.Unix(claimsOf(t, idpToken).Exp, 0)
	var renewed string
	err := Poll(context.Background(), 2*time.Minute, 2*time.Second, func() (bool, error) {
		status, body := freshToken(t, token, "?idp=external")
		renewed, _ = body["access_token"].(string)
		return status == http.StatusOK && renewed != idpToken, nil
	})
	if err != nil {
		t.Fatalf("the provider's token (expiring %s) was not renewed: %v", exp.Format(time.TimeOnly), err)
	}
	if status, user := userinfoAt(t, stack.ExternalIssuer(), renewed); status != http.StatusOK || user != "xavier" {
		t.Errorf("the external realm's userinfo with the renewed token: %d %q, want 200 xavier", status, user)
	}
	assertNowhereStored(t, idpToken, renewed)
}

// TestDerivedTokensEndWithTheSession: once an administrator ends the user's
// session (Keycloak tells tokenkeeper by back-channel logout), derived
// tokens are refused with 409, none cached is served, and Keycloak itself
// holds the exchanged token inactive.
func TestDerivedTokensEndWithTheSession(t *testing.T) {
	t.Parallel()
	token := loggedIn(t, "", "xend")
	status, body := freshToken(t, token, "?audience=trino")
	if status != http.StatusOK {
		t.Fatalf("fresh-token?audience=trino: %d %v", status, body)
	}
	exchanged := accessTokenOf(t, body)
	if in := introspectAs(t, stack.Issuer(), "jupyterhub", stack.ClientSecret, exchanged); in["active"] != true {
		t.Fatalf("the exchanged token is not active before the logout: %v", in)
	}
	start := time.Now()
	if err := stack.KeycloakLogout(context.Background(), "xend"); err != nil {
		t.Fatal(err)
	}
	waitLoggedOut(t, "xend", start)
	for _, query := range []string{"?audience=trino", "?audience=trino&min_valid=0", "?idp=external", ""} {
		status, body := freshToken(t, token, query)
		if status != http.StatusConflict || body["error"] != "login_required" || body["access_token"] != nil {
			t.Errorf("fresh-token%s after the session ended: %d %v, want 409 login_required", query, status, body)
		}
	}
	if in := introspectAs(t, stack.Issuer(), "jupyterhub", stack.ClientSecret, exchanged); in["active"] != false {
		t.Errorf("Keycloak's introspection of the exchanged token after the logout: active %v, want false", in["active"])
	}
}
