//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
)

// audiences reads a JWT's aud claim, a string or a list.
func audiences(t *testing.T, jwt string) []string {
	t.Helper()
	var claims struct {
		Aud json.RawMessage `json:"aud"`
		Azp string          `json:"azp"`
	}
	if err := decodeClaims(jwt, &claims); err != nil {
		t.Fatalf("token claims: %v", err)
	}
	var one string
	if json.Unmarshal(claims.Aud, &one) == nil {
		return []string{one}
	}
	var many []string
	_ = json.Unmarshal(claims.Aud, &many)
	return many
}

// introspect asks Keycloak, as the service-account client, whether a token
// is active.
func introspect(t *testing.T, token string) bool {
	t.Helper()
	return introspectAs(t, stack.Issuer(), "tokenkeeper-sa", stack.SASecret, token)["active"] == true
}

// TestServiceTokenAudience checks service-token?audience= against the real
// Keycloak's standard token exchange: an allowed audience gives a token for
// that audience alone, anything else is refused.
func TestServiceTokenAudience(t *testing.T) {
	t.Parallel()
	status, body := getJSON(t, stack.TestToken, "service-token?audience=trino")
	if status != http.StatusOK {
		t.Fatalf("service-token?audience=trino: %d %v", status, body)
	}
	narrowed, _ := body["access_token"].(string)
	if aud := audiences(t, narrowed); len(aud) != 1 || aud[0] != "trino" {
		t.Errorf("exchanged token's aud = %q, want exactly [trino]", aud)
	}
	var claims struct {
		Azp string `json:"azp"`
	}
	if err := decodeClaims(narrowed, &claims); err != nil || claims.Azp != "tokenkeeper-sa" {
		t.Errorf("exchanged token's azp = %q, %v; want tokenkeeper-sa", claims.Azp, err)
	}
	// Keycloak's introspection re-applies the realm's mappers (its aud lists
	// "account" too), so only its verdict counts here.
	if !introspect(t, narrowed) {
		t.Error("Keycloak's introspection of the exchanged token: not active")
	}
	status, again := getJSON(t, stack.TestToken, "service-token?audience=trino")
	if status != http.StatusOK || again["access_token"] != narrowed {
		t.Errorf("second service-token?audience=trino: %d, same token %t; want the cached token", status, again["access_token"] == narrowed)
	}
	for _, aud := range []string{"account", "realm-management", "jupyterhub", "tokenkeeper-admin"} {
		status, body := getJSON(t, stack.TestToken, "service-token?audience="+aud)
		if status != http.StatusForbidden || body["error"] != "audience_not_allowed" {
			t.Errorf("service-token?audience=%s: %d %v, want 403 audience_not_allowed", aud, status, body)
		}
	}
}

// TestServiceAccountCannotAdmin checks that the token handed to CI callers
// cannot use Keycloak's admin API, while tokenkeeper's own admin client can
// (status lists a user's Keycloak sessions).
func TestServiceAccountCannotAdmin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, target := range []string{"service-token", "service-token?audience=trino"} {
		status, body := getJSON(t, stack.TestToken, target)
		if status != http.StatusOK {
			t.Fatalf("%s: %d %v", target, status, body)
		}
		tok, _ := body["access_token"].(string)
		var users []json.RawMessage
		err := doJSON(ctx, stack.KeycloakURL()+"/admin/realms/jupyter", "Bearer "+tok, http.MethodGet, "/users", nil, &users)
		if !IsStatus(err, http.StatusForbidden) {
			t.Errorf("Keycloak admin API GET /users with the %s token: %v, want HTTP 403", target, err)
		}
	}
	login(t, "frank")
	status, body := getJSON(t, stack.TestToken, "status?user=frank")
	if status != http.StatusOK {
		t.Fatalf("status?user=frank: %d %v", status, body)
	}
	if sessions, _ := body["keycloak_sessions"].([]any); len(sessions) == 0 {
		t.Errorf("status?user=frank keycloak_sessions = %v, want frank's session (the admin client has view-users)", body["keycloak_sessions"])
	}
}
