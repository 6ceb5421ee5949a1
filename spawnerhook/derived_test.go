package spawnerhook

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/keycloak"
	"github.com/tokenkeeper/tokenkeeper/refresh"
)

var (
	trino    = refresh.Target{Kind: refresh.KindAudience, Name: "trino"}
	external = refresh.Target{Kind: refresh.KindProvider, Name: "external"}
)

func TestFreshTokenDerived(t *testing.T) {
	tests := []struct {
		name  string
		auth  string
		query string
		call  freshCall
		want  map[string]any
	}{
		{name: "audience", auth: "token alice-token", query: "?audience=trino",
			call: freshCall{User: "alice", MinValid: time.Minute, Target: trino},
			want: map[string]any{"user": "alice", "audience": "trino", "access_token": "kc-trino-for-alice",
				"token_type": "Bearer", "expires_at": "2026-11-22T11:02:00Z", "expires_in": 120.0}},
		{name: "identity provider", auth: "token server-token", query: "?idp=external&min_valid=30",
			call: freshCall{User: "alice", MinValid: 30 * time.Second, Target: external},
			want: map[string]any{"user": "alice", "idp": "external", "access_token": "kc-external-for-alice",
				"token_type": "Bearer", "expires_at": "2026-11-22T11:02:00Z", "expires_in": 120.0}},
		{name: "another user's, with the scope", auth: "token admin-token", query: "?user=bob&audience=trino",
			call: freshCall{User: "bob", MinValid: time.Minute, Target: trino},
			want: map[string]any{"user": "bob", "audience": "trino", "access_token": "kc-trino-for-bob",
				"token_type": "Bearer", "expires_at": "2026-11-22T11:02:00Z", "expires_in": 120.0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakes{}
			target := prefix + "fresh-token" + tt.query
			res := get(t, NewHandler(prefix, f.deps()), target, tt.auth)
			if diff := cmp.Diff(tt.want, res.body); res.status != http.StatusOK || diff != "" {
				t.Errorf("GET %s = %d (-want +got):\n%s", target, res.status, diff)
			}
			if diff := cmp.Diff([]freshCall{tt.call}, f.freshCalls()); diff != "" {
				t.Errorf("GET %s calls (-want +got):\n%s", target, diff)
			}
			if got := res.header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("GET %s Cache-Control = %q, want no-store", target, got)
			}
		})
	}
}

// TestFreshTokenDerivedRefusals: bad parameters and other users' tokens are
// refused before anything is asked.
func TestFreshTokenDerivedRefusals(t *testing.T) {
	tests := []struct {
		auth, query string
		status      int
		code        string
	}{
		{"token alice-token", "?audience=trino&idp=external", http.StatusBadRequest, "bad_request"},
		{"token alice-token", "?audience=trino&audience=minio", http.StatusBadRequest, "bad_request"},
		{"token alice-token", "?idp=external&idp=github", http.StatusBadRequest, "bad_request"},
		{"token alice-token", "?audience=", http.StatusBadRequest, "bad_request"},
		{"token alice-token", "?idp=", http.StatusBadRequest, "bad_request"},
		{"token alice-token", "?audience=trino&min_valid=soon", http.StatusBadRequest, "bad_request"},
		{"token alice-token", "?user=bob&audience=trino", http.StatusForbidden, "forbidden"},
		{"token server-token", "?user=bob&idp=external", http.StatusForbidden, "forbidden"},
		{"token alice-unscoped", "?audience=trino", http.StatusForbidden, "forbidden"},
		{"", "?audience=trino", http.StatusUnauthorized, "unauthorized"},
	}
	for _, tt := range tests {
		f := &fakes{}
		target := prefix + "fresh-token" + tt.query
		checkError(t, target, get(t, NewHandler(prefix, f.deps()), target, tt.auth), tt.status, tt.code)
		if n := len(f.freshCalls()); n != 0 {
			t.Errorf("GET %s with %q: %d calls, want 0", target, tt.auth, n)
		}
	}
}

// TestFreshTokenDerivedErrors: the engine's and Keycloak's refusals become
// clear answers that carry Keycloak's error code and description, never its
// raw answer.
func TestFreshTokenDerivedErrors(t *testing.T) {
	raw := `{"error":"invalid_request","error_description":"Requested audience not available: trino","extra":"raw-body-only"}`
	exchangeErr := &keycloak.ExchangeError{Audience: "trino", Status: 400, Code: "invalid_request",
		Description: "Requested audience not available: trino", Err: &oauth2.RetrieveError{Body: []byte(raw)}}
	brokerErr := &keycloak.BrokerError{Alias: "external", Status: 403,
		Message: "Client [jupyterhub] not authorized to retrieve tokens from identity provider [external]."}
	tests := []struct {
		name    string
		query   string
		err     error
		status  int
		code    string
		message string
	}{
		{"audience not allowed", "?audience=minio", fmt.Errorf("%w: %q", keycloak.ErrAudienceNotAllowed, "minio"),
			403, "audience_not_allowed", "tokenkeeper hands out no token for this audience."},
		{"identity provider not allowed", "?idp=github", fmt.Errorf("%w: %q", keycloak.ErrProviderNotAllowed, "github"),
			403, "identity_provider_not_allowed", "tokenkeeper hands out no token of this identity provider."},
		{"exchange refused", "?audience=trino", fmt.Errorf("x: %w", exchangeErr),
			502, "exchange_refused", `Keycloak refused a token for audience "trino": invalid_request: Requested audience not available: trino`},
		{"provider token refused", "?idp=external", brokerErr, 502, "idp_token_refused",
			`Keycloak gave no token of identity provider "external" (HTTP 403): Client [jupyterhub] not authorized to retrieve tokens from identity provider [external].`},
		{"provider token expired", "?idp=external", refresh.ErrProviderTokenExpired, 409, "login_required",
			"The identity provider's token that Keycloak holds for this user has expired and cannot be refreshed: " +
				"log in to JupyterHub through that identity provider again."},
		{"session ended", "?audience=trino", refresh.ErrNoTokens, 409, "login_required",
			"The user has no valid Keycloak session: log in to JupyterHub again."},
		{"keycloak unavailable", "?audience=trino", fmt.Errorf("%w: %w", refresh.ErrUnavailable, errors.New("connection refused")),
			503, "unavailable", "Keycloak cannot issue a fresh token right now; try again shortly."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakes{freshErr: tt.err}
			target := prefix + "fresh-token" + tt.query
			res := get(t, NewHandler(prefix, f.deps()), target, "token alice-token")
			checkError(t, target, res, tt.status, tt.code)
			if res.body["message"] != tt.message {
				t.Errorf("GET %s message = %q, want %q", target, res.body["message"], tt.message)
			}
			if strings.Contains(res.raw, "raw-body-only") || strings.Contains(res.raw, "connection refused") {
				t.Errorf("GET %s body %s passes on more than Keycloak's code and description", target, res.raw)
			}
		})
	}
}
