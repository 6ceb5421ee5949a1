package keycloak

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// inactiveIntrospection is Keycloak's answer for a token that is not active.
const inactiveIntrospection = `{"active":false}`

// activeRefreshIntrospection is Keycloak 26's answer for an active refresh
// token.
const activeRefreshIntrospection = `{"exp":1767227400,"iat":1767225600,"jti":"0b6c2f4e-5d0e-4c8b-9a51-6f1d1f0b8e2a",` +
	`"iss":"https://kc.example.org/realms/r","aud":"https://kc.example.org/realms/r",` +
	`"sub":"5f0e8d3a-2b1c-4e7f-8a9d-0c1b2a3d4e5f","typ":"Refresh","azp":"jupyterhub",` +
	`"sid":"7c9e6679-7425-40de-944b-e07fc1f90ae7","scope":"openid profile email",` +
	`"client_id":"jupyterhub","username":"alice","active":true}`

// TestIntrospectRequest checks the exact request: one POST to the advertised
// endpoint, the client's credentials form-encoded in HTTP Basic, the token
// and the hint (left out when empty).
func TestIntrospectRequest(t *testing.T) {
	tests := []struct {
		name string
		hint string
		form url.Values
	}{
		{name: "refresh token", hint: "refresh_token",
			form: url.Values{"token": {"old-refresh"}, "token_type_hint": {"refresh_token"}}},
		{name: "no hint", form: url.Values{"token": {"old-refresh"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := newFakeKeycloak(t)
			k := New(kc.realm(), "jupyterhub", config.Secret("s3cret:+/="), kc.srv.Client())
			if _, err := k.Introspect(t.Context(), config.Secret("old-refresh"), tt.hint); err != nil {
				t.Fatalf("Introspect() error: %v", err)
			}
			want := []introspectRequest{{
				Method:        http.MethodPost,
				Path:          "/realms/r/protocol/openid-connect/token/introspect",
				ContentType:   "application/x-www-form-urlencoded",
				Accept:        "application/json",
				Authorization: "Basic anVweXRlcmh1YjpzM2NyZXQlM0ElMkIlMkYlM0Q=", // jupyterhub:s3cret%3A%2B%2F%3D
				Form:          tt.form,
			}}
			if diff := cmp.Diff(want, kc.introspectRequests()); diff != "" {
				t.Errorf("Introspect() sent (-want +got):\n%s", diff)
			}
			if n := len(kc.tokenRequests()); n != 0 {
				t.Errorf("Introspect() sent %d token requests, want 0", n)
			}
		})
	}
}

// TestIntrospectAnswers: a 200 with an "active" boolean is the answer;
// anything else is an *IntrospectionError.
func TestIntrospectAnswers(t *testing.T) {
	invalidClient := `{"error":"invalid_client","error_description":"Invalid client or Invalid client credentials"}`
	unsupported := `{"error":"invalid_request","error_description":"Unsupported token type."}`
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
		want        bool
		wantErr     *IntrospectionError
	}{
		{name: "active", status: 200, contentType: "application/json", body: activeRefreshIntrospection, want: true},
		{name: "inactive", status: 200, contentType: "application/json", body: inactiveIntrospection},
		{name: "bad client secret", status: 401, contentType: "application/json", body: invalidClient,
			wantErr: &IntrospectionError{Status: 401, Body: invalidClient}},
		{name: "unsupported hint", status: 400, contentType: "application/json", body: unsupported,
			wantErr: &IntrospectionError{Status: 400, Body: unsupported}},
		{name: "proxy", status: 502, contentType: "text/html", body: nginxPage("502 Bad Gateway"),
			wantErr: &IntrospectionError{Status: 502, Body: "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"}},
		{name: "200 not json", status: 200, contentType: "text/html", body: "<html><body><h1>Welcome</h1></body></html>",
			wantErr: &IntrospectionError{Status: 200, Body: "<html><body><h1>Welcome</h1></body></html>"}},
		{name: "json without active", status: 200, contentType: "application/json", body: `{"status":"UP","checks":[]}`,
			wantErr: &IntrospectionError{Status: 200, Body: `{"status":"UP","checks":[]}`}},
		{name: "active not a boolean", status: 200, contentType: "application/json", body: `{"active":"true"}`,
			wantErr: &IntrospectionError{Status: 200, Body: `{"active":"true"}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := newFakeKeycloak(t)
			kc.introspectRespond = func() (int, string, string) { return tt.status, tt.contentType, tt.body }
			k := New(kc.realm(), "jupyterhub", config.Secret("client-s3cret"), kc.srv.Client())
			got, err := k.Introspect(t.Context(), config.Secret("old-refresh"), "refresh_token")
			var ierr *IntrospectionError
			errors.As(err, &ierr)
			if got != tt.want || !cmp.Equal(ierr, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Errorf("Introspect() = %v, %v; want %v, %v", got, err, tt.want, tt.wantErr)
			}
			if n := len(kc.introspectRequests()); n != 1 {
				t.Errorf("Introspect() sent %d requests, want 1", n)
			}
		})
	}
}

// TestIntrospectionErrorHidesTheToken: an answer that repeats the token, or
// is long, does not carry it into the error.
func TestIntrospectionErrorHidesTheToken(t *testing.T) {
	token := config.Secret("eyJhbGciOiJIUzUxMiJ9." + strings.Repeat("x", 300) + ".sig")
	tests := []struct {
		name string
		body string
		want string
	}{
		{name: "repeated", body: "bad token " + token.Reveal() + "\n", want: "bad token [token]"},
		{name: "cut", body: strings.Repeat("y", 195) + token.Reveal(), want: strings.Repeat("y", 195) + "[toke"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := introspection(http.StatusBadRequest, []byte(tt.body), token)
			var ierr *IntrospectionError
			if !errors.As(err, &ierr) || ierr.Body != tt.want {
				t.Fatalf("introspection() error = %v, want body %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "eyJhbGciOiJIUzUxMiJ9") {
				t.Errorf("introspection() error %q holds the token", err)
			}
		})
	}
}

// TestIntrospectDiscovery: discovery failures are returned as they are, and
// a realm that advertises no introspection endpoint is an operator problem.
func TestIntrospectDiscovery(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(*fakeKeycloak)
		discovery bool // want a *DiscoveryError
	}{
		{name: "no introspection endpoint", setup: func(kc *fakeKeycloak) { kc.noIntrospection = true }, discovery: true},
		{name: "issuer mismatch", setup: func(kc *fakeKeycloak) { kc.issuer = "https://kc.public.example.org/realms/r" }, discovery: true},
		{name: "discovery unavailable", setup: func(kc *fakeKeycloak) { kc.discoveryStatus = http.StatusServiceUnavailable }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := newFakeKeycloak(t)
			tt.setup(kc)
			k := New(kc.realm(), "jupyterhub", config.Secret("client-s3cret"), kc.srv.Client())
			active, err := k.Introspect(t.Context(), config.Secret("old-refresh"), "refresh_token")
			if err == nil || active || errors.As(err, new(*DiscoveryError)) != tt.discovery {
				t.Errorf("Introspect() = %v, %v; want false and an error (*DiscoveryError: %v)", active, err, tt.discovery)
			}
			if errors.As(err, new(*IntrospectionError)) {
				t.Errorf("Introspect() error = %v, want no *IntrospectionError", err)
			}
			if n := len(kc.introspectRequests()); n != 0 {
				t.Errorf("Introspect() sent %d requests, want 0", n)
			}
		})
	}
}

// TestIntrospectUnreachable: a network failure is returned wrapped, and
// does not name the token.
func TestIntrospectUnreachable(t *testing.T) {
	kc := newFakeKeycloak(t)
	k := New(kc.realm(), "jupyterhub", config.Secret("client-s3cret"), kc.srv.Client())
	if _, err := k.Endpoint(t.Context()); err != nil {
		t.Fatalf("Endpoint() error: %v", err)
	}
	kc.srv.Close()
	_, err := k.Introspect(t.Context(), config.Secret("old-refresh"), "refresh_token")
	var operr *net.OpError
	if !errors.As(err, &operr) || operr.Op != "dial" {
		t.Fatalf("Introspect() against a closed server: error = %v, want a failed dial", err)
	}
	if strings.Contains(err.Error(), "old-refresh") {
		t.Errorf("Introspect() error %q holds the token", err)
	}
}
