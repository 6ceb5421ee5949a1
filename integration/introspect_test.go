//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// introspectRefresh asks Keycloak's introspection, as the hub's client,
// whether a refresh token would be accepted now.
func introspectRefresh(t *testing.T, token string) bool {
	t.Helper()
	form := url.Values{"token": {token}, "token_type_hint": {"refresh_token"}}
	req, _ := http.NewRequest(http.MethodPost, stack.Issuer()+"/protocol/openid-connect/token/introspect", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("jupyterhub", stack.ClientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("introspect: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		Active bool `json:"active"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("introspect: %d, %v", resp.StatusCode, err)
	}
	return out.Active
}

// spendRefresh runs a refresh grant as the hub's client, as a grant whose
// answer tokenkeeper never got did, and returns the new refresh token.
func spendRefresh(t *testing.T, token string) string {
	t.Helper()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {token}}
	req, _ := http.NewRequest(http.MethodPost, stack.Issuer()+"/protocol/openid-connect/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("jupyterhub", stack.ClientSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("refresh grant: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		Refresh string `json:"refresh_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || out.Refresh == "" {
		t.Fatalf("refresh grant: %d, %v", resp.StatusCode, err)
	}
	return out.Refresh
}

// TestIntrospectionIsTheOracleForSpendingARefreshToken measures on the real
// Keycloak (rotation on, Max Reuse 1, as README recommends) what tokenkeeper
// relies on after a grant whose answer was lost, for the guard's held users
// and for idle users: a refresh token may be spent 1 + Max Reuse times,
// introspecting it says whether a grant with it would be accepted now, and
// introspection moves neither the session's idle timer (lastAccess) nor the
// token's use count.
func TestIntrospectionIsTheOracleForSpendingARefreshToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const user = "xintro"
	if err := stack.CreateKeycloakUser(ctx, user, user+"-pw"); err != nil {
		t.Fatal(err)
	}
	login(t, user)
	st, err := stack.AuthState(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	rt0, _ := st["refresh_token"].(string)
	before := lastAccess(t, user)
	waitPast(t, before+2000)
	for range 3 {
		if !introspectRefresh(t, rt0) {
			t.Fatal("introspection of the login's refresh token: inactive, want active")
		}
	}
	if after := lastAccess(t, user); after != before {
		t.Errorf("lastAccess moved from %d to %d with three introspections, want it untouched", before, after)
	}
	spendRefresh(t, rt0) // a grant whose answer was lost: its token never arrives
	if !introspectRefresh(t, rt0) {
		t.Error("introspection of a refresh token spent once: inactive, want active (Max Reuse 1 allows one reuse)")
	}
	rt2 := spendRefresh(t, rt0) // tokenkeeper's retry
	if introspectRefresh(t, rt0) {
		t.Error("introspection of a refresh token spent twice: active, want inactive (beyond Max Reuse 1)")
	}
	if !introspectRefresh(t, rt2) {
		t.Error("introspection of the retry's refresh token: inactive, want active: the session goes on")
	}
	if err := stack.KeycloakLogout(ctx, user); err != nil {
		t.Fatal(err)
	}
	if introspectRefresh(t, rt2) {
		t.Error("introspection after the session was ended: active, want inactive")
	}
}
