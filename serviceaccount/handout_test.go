package serviceaccount

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/keycloak"
)

// fakeJWT is an unsigned token whose payload is claims.
func fakeJWT(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(b) + ".c2ln"
}

// exchangeCall is one call of the fake exchange.
type exchangeCall struct {
	Subject  string
	Audience string
}

// fakeExchange stands for keycloak.Client.Exchange: it answers with
// "exchanged-N-for-AUD" (or exchanged) living life, or with err.
type fakeExchange struct {
	exchanged string
	life      time.Duration
	err       error

	mu    sync.Mutex
	calls []exchangeCall
}

func (x *fakeExchange) exchange(_ context.Context, subject config.Secret, audience string) (*oauth2.Token, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.calls = append(x.calls, exchangeCall{Subject: subject.Reveal(), Audience: audience})
	if x.err != nil {
		return nil, x.err
	}
	tok := x.exchanged
	if tok == "" {
		tok = fmt.Sprintf("exchanged-%d-for-%s", len(x.calls), audience)
	}
	return &oauth2.Token{AccessToken: tok, TokenType: "Bearer", Expiry: time.Now().Add(x.life)}, nil
}

func (x *fakeExchange) made() []exchangeCall {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]exchangeCall(nil), x.calls...)
}

// newHandout returns a Handout whose account gets saToken from a fake token
// endpoint and whose exchanges x answers.
func newHandout(t *testing.T, saToken string, x *fakeExchange, audiences ...string) (*Handout, *fakeTokenEndpoint) {
	t.Helper()
	f := newFakeTokenEndpoint(t, 300)
	f.token = saToken
	a := newAccount(f, 15*time.Second, new(atomic.Int32))
	return NewHandout(a, x.exchange, audiences, time.Now), f
}

func TestHandoutExchangesTheAccountsToken(t *testing.T) {
	x := &fakeExchange{life: 300 * time.Second}
	h, f := newHandout(t, "sa-token", x, "trino", "minio")
	tok, err := h.Token(context.Background(), "trino")
	if err != nil {
		t.Fatalf("Token(trino) error: %v", err)
	}
	if tok.AccessToken != "exchanged-1-for-trino" {
		t.Errorf("Token(trino) = %q, want exchanged-1-for-trino", tok.AccessToken)
	}
	if diff := cmp.Diff([]exchangeCall{{Subject: "sa-token", Audience: "trino"}}, x.made()); diff != "" {
		t.Errorf("exchanges (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]tokenRequest{wantTokenRequest}, f.requests()); diff != "" {
		t.Errorf("token requests mismatch (-want +got):\n%s", diff)
	}
}

func TestHandoutWithoutAudience(t *testing.T) {
	x := &fakeExchange{life: 300 * time.Second}
	h, f := newHandout(t, "sa-token", x, "trino")
	tok, err := h.Token(context.Background(), "")
	if err != nil || tok.AccessToken != "sa-token" {
		t.Fatalf("Token(\"\") = %v, %v; want the service account's own token", tok, err)
	}
	if diff := cmp.Diff([]tokenRequest{wantTokenRequest}, f.requests()); diff != "" {
		t.Errorf("token requests mismatch (-want +got):\n%s", diff)
	}
	if n := len(x.made()); n != 0 {
		t.Errorf("exchanges = %d, want 0", n)
	}
}

func TestHandoutRefusesOtherAudiences(t *testing.T) {
	x := &fakeExchange{life: 300 * time.Second}
	h, f := newHandout(t, "sa-token", x, "trino")
	for _, aud := range []string{"minio", "account", "realm-management", "Trino", "trino ", "tokenkeeper-sa"} {
		if _, err := h.Token(context.Background(), aud); !errors.Is(err, keycloak.ErrAudienceNotAllowed) {
			t.Errorf("Token(%q) error = %v, want keycloak.ErrAudienceNotAllowed", aud, err)
		}
	}
	if n := len(f.requests()) + len(x.made()); n != 0 {
		t.Errorf("requests for refused audiences = %d, want 0", n)
	}
}

func TestHandoutCachesPerAudience(t *testing.T) {
	tests := []struct {
		name      string
		life      time.Duration
		exchanges int
	}{
		{name: "long-lived: cached", life: 300 * time.Second, exchanges: 2},
		// 10 s left is inside the 15 s early margin: exchanged again each time.
		{name: "within the early margin: not cached", life: 10 * time.Second, exchanges: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := &fakeExchange{life: tt.life}
			h, _ := newHandout(t, "sa-token", x, "trino", "minio")
			for _, aud := range []string{"trino", "minio", "trino", "minio"} {
				tok, err := h.Token(context.Background(), aud)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.HasSuffix(tok.AccessToken, "-for-"+aud) {
					t.Errorf("Token(%q) = %q, want a token for that audience", aud, tok.AccessToken)
				}
			}
			if n := len(x.made()); n != tt.exchanges {
				t.Errorf("exchanges = %d, want %d", n, tt.exchanges)
			}
		})
	}
}

// TestHandoutPassesKeycloaksRefusalOn: the exchange's typed refusal reaches
// the caller, and nothing is cached.
func TestHandoutPassesKeycloaksRefusalOn(t *testing.T) {
	refusal := &keycloak.ExchangeError{Audience: "trino", Status: 400, Code: "invalid_request",
		Description: "Requested audience not available: trino"}
	x := &fakeExchange{err: refusal}
	h, _ := newHandout(t, "sa-token", x, "trino")
	for range 2 {
		var xerr *keycloak.ExchangeError
		if _, err := h.Token(context.Background(), "trino"); !errors.As(err, &xerr) || xerr != refusal {
			t.Errorf("Token(trino) error = %v, want the exchange's *keycloak.ExchangeError", err)
		}
	}
	if n := len(x.made()); n != 2 {
		t.Errorf("exchanges = %d, want 2 (a refusal is not cached)", n)
	}
}

// TestHandoutRefusesAdminTokens checks that a token carrying admin roles is
// never handed out, as it is or exchanged, and that the refusal names them.
func TestHandoutRefusesAdminTokens(t *testing.T) {
	admin := fakeJWT(map[string]any{"azp": saClientID, "resource_access": map[string]any{
		"realm-management": map[string]any{"roles": []string{"manage-users", "view-users"}},
		"account":          map[string]any{"roles": []string{"view-profile"}},
	}})
	adminRoles := []string{"realm-management:manage-users", "realm-management:view-users"}
	realmAdmin := fakeJWT(map[string]any{"azp": saClientID,
		"realm_access": map[string]any{"roles": []string{"offline_access", "admin"}},
		"resource_access": map[string]any{
			"master-realm": map[string]any{"roles": []string{"manage-users"}},
		}})
	realmAdminRoles := []string{"master-realm:manage-users", "realm:admin"}
	plain := fakeJWT(map[string]any{"azp": saClientID,
		"realm_access": map[string]any{"roles": []string{"offline_access", "uma_authorization"}},
		"resource_access": map[string]any{
			"account": map[string]any{"roles": []string{"view-profile"}},
		}})
	tests := []struct {
		name      string
		saToken   string
		exchanged string
		audience  string
		wantRoles []string // nil: handed out
	}{
		{name: "own token with realm-management roles", saToken: admin, wantRoles: adminRoles},
		{name: "own token with the realm role admin", saToken: realmAdmin, wantRoles: realmAdminRoles},
		{name: "own token without", saToken: plain},
		{name: "opaque token", saToken: "opaque-token"},
		{name: "exchanged token with realm-management roles", saToken: plain, exchanged: admin, audience: "trino", wantRoles: adminRoles},
		{name: "exchanged token with the realm role admin", saToken: plain, exchanged: realmAdmin, audience: "trino", wantRoles: realmAdminRoles},
		{name: "exchanged token without", saToken: plain, exchanged: plain, audience: "trino"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := &fakeExchange{exchanged: tt.exchanged, life: 300 * time.Second}
			h, _ := newHandout(t, tt.saToken, x, "trino")
			tok, err := h.Token(context.Background(), tt.audience)
			var rerr *AdminRolesError
			if refused, want := errors.As(err, &rerr), tt.wantRoles != nil; refused != want {
				t.Fatalf("Token(%q) = %v, %v; refused = %t, want %t", tt.audience, tok, err, refused, want)
			}
			if tt.wantRoles == nil {
				return
			}
			if tok != nil {
				t.Errorf("Token(%q) handed out %v with a refusal", tt.audience, tok)
			}
			if diff := cmp.Diff(tt.wantRoles, rerr.Roles); diff != "" {
				t.Errorf("AdminRolesError.Roles (-want +got):\n%s", diff)
			}
		})
	}
}

// realmRoles returns claims with the realm roles roles.
func realmRoles(roles ...string) roleClaims {
	return roleClaims{RealmAccess: roleList{Roles: roles}}
}

// clientRoles returns claims with the roles roles of client.
func clientRoles(client string, roles ...string) roleClaims {
	return roleClaims{ResourceAccess: map[string]roleList{client: {Roles: roles}}}
}

func TestAdminRoles(t *testing.T) {
	tests := []struct {
		name   string
		claims roleClaims
		want   []string // nil: no admin roles
	}{
		{name: "realm role admin", claims: realmRoles("offline_access", "admin"), want: []string{"realm:admin"}},
		{name: "realm role create-realm", claims: realmRoles("create-realm", "uma_authorization"), want: []string{"realm:create-realm"}},
		{name: "master-realm client role", claims: clientRoles("master-realm", "view-realm"), want: []string{"master-realm:view-realm"}},
		{name: "jupyter-realm client roles", claims: clientRoles("jupyter-realm", "manage-users", "impersonation"),
			want: []string{"jupyter-realm:impersonation", "jupyter-realm:manage-users"}},
		{name: "realm-management admin roles", claims: clientRoles("realm-management", "realm-admin", "manage-realm",
			"manage-users", "manage-clients", "manage-identity-providers", "manage-authorization", "manage-events",
			"impersonation", "create-client"),
			want: []string{"realm-management:create-client", "realm-management:impersonation", "realm-management:manage-authorization",
				"realm-management:manage-clients", "realm-management:manage-events", "realm-management:manage-identity-providers",
				"realm-management:manage-realm", "realm-management:manage-users", "realm-management:realm-admin"}},
		{name: "realm-management view roles", claims: clientRoles("realm-management", "view-users", "query-users"),
			want: []string{"realm-management:query-users", "realm-management:view-users"}},
		{name: "realm and client roles together, sorted", claims: roleClaims{
			RealmAccess: roleList{Roles: []string{"admin", "admin"}},
			ResourceAccess: map[string]roleList{
				"realm-management": {Roles: []string{"view-users"}},
				"master-realm":     {Roles: []string{"manage-users"}},
				"trino":            {Roles: []string{"reader"}},
			}},
			want: []string{"master-realm:manage-users", "realm-management:view-users", "realm:admin"}},
		{name: "ordinary roles", claims: roleClaims{
			RealmAccess: roleList{Roles: []string{"offline_access", "uma_authorization", "default-roles-jupyter"}},
			ResourceAccess: map[string]roleList{
				"account": {Roles: []string{"view-profile", "manage-account"}},
				"trino":   {Roles: []string{"reader"}},
			}}},
		{name: "admin as an app client role", claims: clientRoles("trino", "admin", "create-realm")},
		{name: "no roles", claims: roleClaims{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, adminRoles(tt.claims)); diff != "" {
				t.Errorf("adminRoles(%+v) (-want +got):\n%s", tt.claims, diff)
			}
		})
	}
}

func TestAdminRolesErrorNamesTheRoles(t *testing.T) {
	err := &AdminRolesError{Roles: []string{"master-realm:manage-users", "realm:admin"}}
	want := "the service account's token carries admin roles [master-realm:manage-users realm:admin]; tokenkeeper hands out no admin token"
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
