package doctor

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/keycloak"
	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
)

// fakeKeycloak is a realm's discovery and token endpoint; token answers
// each token request by its form.
type fakeKeycloak struct {
	srv    *httptest.Server
	issuer string // the issuer discovery names; the realm's own when ""
	status int    // discovery's status when not 0

	mu    sync.Mutex // guards forms
	forms []map[string][]string
	token func(form map[string][]string) (int, string)
}

func newFakeKeycloak(t *testing.T) *fakeKeycloak {
	t.Helper()
	k := &fakeKeycloak{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /realms/r/.well-known/openid-configuration", k.discovery)
	mux.HandleFunc("POST /realms/r/protocol/openid-connect/token", k.tokenEndpoint)
	k.srv = httptest.NewServer(mux)
	t.Cleanup(k.srv.Close)
	return k
}

func (k *fakeKeycloak) realm() string { return k.srv.URL + "/realms/r" }

func (k *fakeKeycloak) discovery(w http.ResponseWriter, _ *http.Request) {
	if k.status != 0 {
		http.Error(w, `{"error":"Realm does not exist"}`, k.status)
		return
	}
	issuer := k.realm()
	if k.issuer != "" {
		issuer = k.issuer
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"issuer": issuer, "token_endpoint": k.realm() + "/protocol/openid-connect/token",
		"authorization_endpoint":                k.realm() + "/protocol/openid-connect/auth",
		"jwks_uri":                              k.realm() + "/protocol/openid-connect/certs",
		"id_token_signing_alg_values_supported": []string{"RS256"},
	})
}

func (k *fakeKeycloak) tokenEndpoint(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	k.mu.Lock()
	k.forms = append(k.forms, r.PostForm)
	k.mu.Unlock()
	status, body := k.token(r.PostForm)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, body)
}

// keycloakBody is an OAuth error body as Keycloak writes it.
func keycloakBody(code, desc string) string {
	b, _ := json.Marshal(map[string]string{"error": code, "error_description": desc})
	return string(b)
}

// jwt is an unsigned JWT with claims, as the role checks read it.
func jwt(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none"}`)) + "." + enc(b) + ".sig"
}

func tokenBody(access string) string {
	b, _ := json.Marshal(map[string]any{"access_token": access, "token_type": "Bearer", "expires_in": 300})
	return string(b)
}

// secretFix is what the fix for a refused client authentication names.
const secretFix = "TOKENKEEPER_CLIENT_SECRET"

// TestCheckSecret uses Keycloak's answers to a refresh grant word for word:
// only a refused client authentication fails the check, and the grant
// sent is the made-up token, never a user's.
func TestCheckSecret(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   Status
		fix    string // a word of the fix
	}{
		{"secret accepted, token refused", 400, keycloakBody("invalid_grant", "Invalid refresh token"), OK, ""},
		{"wrong secret or client disabled", 401, keycloakBody("invalid_client", "Invalid client or Invalid client credentials"), Fail, secretFix},
		{"older Keycloak's wrong secret", 400, keycloakBody("unauthorized_client", "Invalid client or Invalid client credentials"), Fail, secretFix},
		{"credentials setup required", 400, keycloakBody("unauthorized_client", "Client credentials setup required"), Fail, secretFix},
		{"bearer-only client", 400, keycloakBody("invalid_client", "Bearer-only not allowed"), Fail, secretFix},
		{"realm disabled", 403, keycloakBody("access_denied", "Realm not enabled"), Fail, "realm is disabled"},
		{"internal error", 500, `{"error":"unknown_error"}`, Fail, "Keycloak's log"},
		{"made-up token accepted", 200, tokenBody("x"), Warn, "report"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := newFakeKeycloak(t)
			kc.token = func(map[string][]string) (int, string) { return tt.status, tt.body }
			k := keycloak.New(kc.realm(), "jupyterhub", "hub-s3cret", kc.srv.Client())
			d := Deps{Config: config.Config{ClientID: "jupyterhub"}, Refresh: k.Refresh}
			r := checkSecret(t.Context(), d)
			if r.Status != tt.want {
				t.Errorf("checkSecret on HTTP %d %s = %v (%s), want %v", tt.status, tt.body, r.Status, r.Detail, tt.want)
			}
			if !strings.Contains(r.Fix, tt.fix) {
				t.Errorf("checkSecret fix = %q, want it to say %q", r.Fix, tt.fix)
			}
			if got := kc.forms[0]["refresh_token"]; len(got) != 1 || got[0] != probeToken.Reveal() {
				t.Errorf("refresh_token sent = %q, want the made-up %q", got, probeToken.Reveal())
			}
		})
	}
}

// TestCheckDiscovery: a wrong issuer, a missing realm, an unresolvable host
// and a refused connection each fail with their own fix.
func TestCheckDiscovery(t *testing.T) {
	dnsErr := &net.DNSError{Err: "no such host", Name: "kc.example.invalid", IsNotFound: true}
	tests := []struct {
		name    string
		setup   func(k *fakeKeycloak)
		seam    func(ctx context.Context) (oauth2.Endpoint, error)
		want    Status
		fixWord string
	}{
		{name: "good", setup: func(*fakeKeycloak) {}, want: OK},
		{name: "issuer differs", setup: func(k *fakeKeycloak) { k.issuer = "https://elsewhere/realms/r" }, want: Fail, fixWord: "exactly as Keycloak names it"},
		{name: "no such realm", setup: func(k *fakeKeycloak) { k.status = 404 }, want: Fail, fixWord: "exactly as Keycloak names it"},
		{name: "unresolvable host", seam: func(context.Context) (oauth2.Endpoint, error) {
			return oauth2.Endpoint{}, fmt.Errorf("keycloak discovery: %w", &url.Error{Op: "Get", URL: "https://kc.example.invalid", Err: dnsErr})
		}, want: Fail, fixWord: "typo"},
		{name: "refused", seam: func(context.Context) (oauth2.Endpoint, error) {
			return oauth2.Endpoint{}, &net.OpError{Op: "dial", Err: errors.New("connection refused")}
		}, want: Fail, fixWord: "network policies"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Deps{Discover: tt.seam}
			if tt.seam == nil {
				kc := newFakeKeycloak(t)
				tt.setup(kc)
				d.Config.IssuerURL = kc.realm()
				d.Discover = keycloak.New(kc.realm(), "jupyterhub", "s", kc.srv.Client()).Endpoint
			}
			r := checkDiscovery(t.Context(), d)
			if r.Status != tt.want || !strings.Contains(r.Fix, tt.fixWord) {
				t.Errorf("checkDiscovery = %v %q fix %q, want %v with a fix naming %q", r.Status, r.Detail, r.Fix, tt.want, tt.fixWord)
			}
		})
	}
}

// TestCheckServiceAccount: a token carrying realm-management roles fails
// (handout's own check), as do a refused secret and a refused exchange
// (Keycloak 26.5's body); a clean token and an allowed exchange pass.
func TestCheckServiceAccount(t *testing.T) {
	clean := jwt(map[string]any{"realm_access": map[string]any{"roles": []string{"offline_access"}}})
	admin := jwt(map[string]any{"resource_access": map[string]any{"realm-management": map[string]any{"roles": []string{"view-users"}}}})
	tests := []struct {
		name     string
		token    func(form map[string][]string) (int, string)
		want     []Status
		wantText string
	}{
		{"clean token, exchange allowed", func(map[string][]string) (int, string) { return 200, tokenBody(clean) }, []Status{OK, OK}, ""},
		{"admin roles", func(map[string][]string) (int, string) { return 200, tokenBody(admin) }, []Status{Fail, Skipped}, "realm-management:view-users"},
		{"secret refused", func(map[string][]string) (int, string) {
			return 401, keycloakBody("invalid_client", "Invalid client or Invalid client credentials")
		}, []Status{Fail, Skipped}, "invalid_client"},
		{"exchange refused", func(form map[string][]string) (int, string) {
			if form["grant_type"][0] == "client_credentials" {
				return 200, tokenBody(clean)
			}
			return 400, keycloakBody("invalid_request", "Standard token exchange is not enabled for the requested client")
		}, []Status{OK, Fail}, "Standard token exchange is not enabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := newFakeKeycloak(t)
			kc.token = tt.token
			k := keycloak.New(kc.realm(), "jupyterhub", "hub-s3cret", kc.srv.Client())
			sa := serviceaccount.New(t.Context(), kc.srv.Client(), "tk-sa", "sa-s3cret", k.Endpoint, time.Second)
			h := serviceaccount.NewHandout(sa, k.As("tk-sa", "sa-s3cret").Exchange, []string{"trino"}, time.Now)
			d := Deps{Config: config.Config{ServiceAccountClientID: "tk-sa", ServiceTokenAudiences: []string{"trino"}}, ServiceToken: h.Token}
			rs := serviceAccountChecks(t.Context(), d)
			if got := statuses(rs); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("serviceAccountChecks = %v (%+v), want %v", got, rs, tt.want)
			}
			if !strings.Contains(rs[0].Detail+rs[1].Detail, tt.wantText) {
				t.Errorf("details %q, %q; want them to name %q", rs[0].Detail, rs[1].Detail, tt.wantText)
			}
		})
	}
}

func statuses(rs []Result) []Status {
	out := make([]Status, 0, len(rs))
	for _, r := range rs {
		out = append(out, r.Status)
	}
	return out
}
