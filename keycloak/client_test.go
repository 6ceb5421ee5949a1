package keycloak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// keycloakError builds the error x/oauth2 returns for a Keycloak error
// response, with the exact body Keycloak sends.
func keycloakError(status int, code, desc string) *oauth2.RetrieveError {
	body, err := json.Marshal(map[string]string{"error": code, "error_description": desc})
	if err != nil {
		panic(err)
	}
	return &oauth2.RetrieveError{
		Response:         &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {"application/json"}}},
		Body:             body,
		ErrorCode:        code,
		ErrorDescription: desc,
	}
}

// TestClassifyKeycloakErrors covers every refresh-grant error Keycloak
// returns, from the token manager and from the token endpoint's checks.
func TestClassifyKeycloakErrors(t *testing.T) {
	tests := []struct {
		status int
		code   string
		desc   string
		want   Class
	}{
		// TokenManager: the user's session or token is gone.
		{400, "invalid_grant", "Invalid refresh token", Terminal},
		{400, "invalid_grant", "Token is not active", Terminal},
		{400, "invalid_grant", "Stale token", Terminal},
		{400, "invalid_grant", "Offline session not active", Terminal},
		{400, "invalid_grant", "Offline user session not found", Terminal},
		{400, "invalid_grant", "Session not active", Terminal},
		{400, "invalid_grant", "User disabled", Terminal},
		{400, "invalid_grant", "Refresh token issued before the user session started", Terminal},
		{400, "invalid_grant", "refresh token issued before the client session started", Terminal},
		{400, "invalid_grant", "Session doesn't have required client", Terminal},
		{400, "invalid_grant", "Unmatching clients", Terminal},
		{400, "invalid_grant", "Maximum allowed refresh token reuse exceeded", Terminal},
		{400, "invalid_scope", "Client no longer has requested consent from user", Terminal},
		// TokenManager: tokenkeeper's configuration is wrong.
		{400, "invalid_grant", "Invalid token issuer. Expected 'https://kc.example.org/realms/jupyter'", Operator},
		{400, "invalid_grant", "Invalid token issuer. Expected 'http://keycloak:8080/realms/jupyter'", Operator},
		{400, "invalid_grant", "Invalid refresh token. Token client and authorized client don't match", Operator},
		// Token endpoint and client authentication.
		{403, "access_denied", "Realm not enabled", Operator},
		{403, "invalid_request", "HTTPS required", Operator},
		{400, "invalid_request", "Missing form parameter: grant_type", Operator},
		{400, "invalid_request", "duplicated parameter", Operator},
		{400, "invalid_request", "No refresh token", Operator},
		{400, "invalid_client", "Bearer-only not allowed", Operator},
		{401, "invalid_client", "Invalid client or Invalid client credentials", Operator},
		{400, "unauthorized_client", "Client credentials setup required", Operator},
		{400, "unauthorized_client", "Unexpected error when authenticating client", Operator},
		// Older Keycloak reports client authentication failures this way.
		{400, "unauthorized_client", "Invalid client or Invalid client credentials", Operator},
		{401, "unauthorized_client", "Invalid client or Invalid client credentials", Operator},
		// Keycloak's own internal error.
		{500, "unknown_error", "", Transient},
	}
	for _, tt := range tests {
		rerr := keycloakError(tt.status, tt.code, tt.desc)
		for _, err := range []error{rerr, fmt.Errorf("x: %w", rerr), fmt.Errorf("refresh grant: %w", fmt.Errorf("x: %w", rerr))} {
			if got := Classify(err); got != tt.want {
				t.Errorf("Classify(%d %s) = %v, want %v", tt.status, rerr.Body, got, tt.want)
			}
		}
	}
}

func TestClassifyOtherErrors(t *testing.T) {
	html := func(status int) *oauth2.RetrieveError {
		return &oauth2.RetrieveError{
			Response: &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {"text/html"}}},
			Body:     []byte("<html><body><h1>" + http.StatusText(status) + "</h1></body></html>"),
		}
	}
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{name: "500 html", err: html(500), want: Transient},
		{name: "502 html", err: html(502), want: Transient},
		{name: "503 html", err: html(503), want: Transient},
		{name: "504 html", err: html(504), want: Transient},
		{name: "429 html", err: html(429), want: Transient},
		{name: "429 json", err: keycloakError(429, "too_many_requests", "slow down"), want: Transient},
		{name: "503 with invalid_grant body", err: keycloakError(503, "invalid_grant", "Session not active"), want: Transient},
		{name: "no response", err: &oauth2.RetrieveError{}, want: Transient},
		{name: "url error", err: &url.Error{Op: "Post", URL: "https://kc.example.org/realms/jupyter/protocol/openid-connect/token", Err: errors.New("connection refused")}, want: Transient},
		{name: "wrapped url error", err: fmt.Errorf("refresh grant: %w", &url.Error{Op: "Post", URL: "https://kc", Err: io.ErrUnexpectedEOF}), want: Transient},
		{name: "deadline", err: context.DeadlineExceeded, want: Transient},
		{name: "wrapped deadline", err: fmt.Errorf("refresh grant: %w", &url.Error{Op: "Post", URL: "https://kc", Err: context.DeadlineExceeded}), want: Transient},
		{name: "canceled", err: context.Canceled, want: Transient},
		{name: "discovery", err: &DiscoveryError{Err: errors.New("oidc: issuer did not match")}, want: Operator},
		{name: "wrapped discovery", err: fmt.Errorf("x: %w", &DiscoveryError{Err: errors.New("404 Not Found")}), want: Operator},
		{name: "404 html from a wrong token URL", err: html(404), want: Operator},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify(tt.err); got != tt.want {
				t.Errorf("Classify(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestClassString(t *testing.T) {
	for c, want := range map[Class]string{Transient: "transient", Terminal: "terminal", Operator: "operator"} {
		if got := c.String(); got != want {
			t.Errorf("Class(%d).String() = %q, want %q", int(c), got, want)
		}
	}
}

func TestDiscoveryErrorUnwraps(t *testing.T) {
	inner := errors.New("oidc: issuer did not match")
	err := error(&DiscoveryError{Err: inner})
	if !errors.Is(err, inner) {
		t.Errorf("errors.Is(DiscoveryError{%v}, inner) = false, want true", inner)
	}
	if got, want := err.Error(), "keycloak discovery: oidc: issuer did not match"; got != want {
		t.Errorf("DiscoveryError.Error() = %q, want %q", got, want)
	}
}

// tokenRequest is what the fake Keycloak saw at its token endpoint.
type tokenRequest struct {
	Method      string
	ContentType string
	User, Pass  string
	BasicAuth   bool
	Form        url.Values
}

// brokerRequest is what the fake Keycloak saw at its broker token endpoint.
type brokerRequest struct {
	Method        string
	Path          string // escaped, as sent
	Authorization string
	Body          string
}

// fakeKeycloak serves one realm, "r": discovery, the token endpoint and the
// broker token endpoint.
type fakeKeycloak struct {
	srv *httptest.Server

	mu sync.Mutex // guards the fields below
	// issuer overrides the issuer advertised by discovery.
	issuer string
	// discoveryStatus, when set, fails discovery with that status.
	discoveryStatus int
	discoveries     int
	requests        []tokenRequest
	// respond answers the n-th token request (from 1).
	respond func(n int) (status int, body string)
	brokers []brokerRequest
	// brokerRespond answers broker token requests; nil answers storedIdPToken.
	brokerRespond func() (status int, contentType, body string)
}

func newFakeKeycloak(t *testing.T) *fakeKeycloak {
	t.Helper()
	k := &fakeKeycloak{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /realms/r/.well-known/openid-configuration", k.discovery)
	mux.HandleFunc("/realms/r/protocol/openid-connect/token", k.token)
	mux.HandleFunc("/realms/r/broker/", k.broker)
	k.srv = httptest.NewServer(mux)
	t.Cleanup(k.srv.Close)
	return k
}

func (k *fakeKeycloak) realm() string { return k.srv.URL + "/realms/r" }

func (k *fakeKeycloak) discovery(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.discoveries++
	if k.discoveryStatus != 0 {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(k.discoveryStatus)
		io.WriteString(w, "<html><body>unavailable</body></html>")
		return
	}
	issuer := k.realm()
	if k.issuer != "" {
		issuer = k.issuer
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"issuer":                                issuer,
		"authorization_endpoint":                k.realm() + "/protocol/openid-connect/auth",
		"token_endpoint":                        k.realm() + "/protocol/openid-connect/token",
		"userinfo_endpoint":                     k.realm() + "/protocol/openid-connect/userinfo",
		"jwks_uri":                              k.realm() + "/protocol/openid-connect/certs",
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
	})
}

func (k *fakeKeycloak) token(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	body, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(body))
	k.mu.Lock()
	k.requests = append(k.requests, tokenRequest{
		Method: r.Method, ContentType: r.Header.Get("Content-Type"),
		User: user, Pass: pass, BasicAuth: ok, Form: form,
	})
	n, respond := len(k.requests), k.respond
	k.mu.Unlock()
	status, out := http.StatusOK, keycloakTokenResponse
	if respond != nil {
		status, out = respond(n)
	}
	w.Header().Set("Content-Type", "application/json")
	if len(out) > 0 && out[0] == '<' {
		w.Header().Set("Content-Type", "text/html")
	}
	w.WriteHeader(status)
	io.WriteString(w, out)
}

func (k *fakeKeycloak) broker(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	k.mu.Lock()
	k.brokers = append(k.brokers, brokerRequest{Method: r.Method, Path: r.URL.EscapedPath(),
		Authorization: r.Header.Get("Authorization"), Body: string(body)})
	respond := k.brokerRespond
	k.mu.Unlock()
	status, ct, out := http.StatusOK, "application/json", storedIdPToken
	if respond != nil {
		status, ct, out = respond()
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	io.WriteString(w, out)
}

func (k *fakeKeycloak) brokerRequests() []brokerRequest {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]brokerRequest(nil), k.brokers...)
}

func (k *fakeKeycloak) tokenRequests() []tokenRequest {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]tokenRequest(nil), k.requests...)
}

func (k *fakeKeycloak) discoveryCount() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.discoveries
}

const keycloakTokenResponse = `{"access_token":"new-access","expires_in":300,"refresh_expires_in":1800,` +
	`"refresh_token":"new-refresh","token_type":"Bearer","id_token":"new-id","not-before-policy":0,` +
	`"session_state":"sess-1","scope":"openid profile email"}`

func TestRefresh(t *testing.T) {
	kc := newFakeKeycloak(t)
	k := New(kc.realm(), "jupyterhub", config.Secret("client-s3cret"), kc.srv.Client())
	tok, err := k.Refresh(t.Context(), config.Secret("old-refresh"))
	if err != nil {
		t.Fatalf("Refresh() error: %v", err)
	}
	want := []tokenRequest{{
		Method:      http.MethodPost,
		ContentType: "application/x-www-form-urlencoded",
		User:        "jupyterhub", Pass: "client-s3cret", BasicAuth: true,
		Form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"old-refresh"}},
	}}
	if diff := cmp.Diff(want, kc.tokenRequests()); diff != "" {
		t.Errorf("Refresh() sent (-want +got):\n%s", diff)
	}
	if tok.AccessToken != "new-access" || tok.RefreshToken != "new-refresh" || tok.TokenType != "Bearer" || tok.ExpiresIn != 300 {
		t.Errorf("Refresh() = {%q %q %q %d}, want {new-access new-refresh Bearer 300}",
			tok.AccessToken, tok.RefreshToken, tok.TokenType, tok.ExpiresIn)
	}
	for key, want := range map[string]any{
		"refresh_expires_in": 1800.0, "id_token": "new-id", "session_state": "sess-1", "scope": "openid profile email",
	} {
		if got := tok.Extra(key); got != want {
			t.Errorf("Refresh().Extra(%q) = %v, want %v", key, got, want)
		}
	}

	// The endpoint is discovered once and kept.
	if _, err := k.Refresh(t.Context(), config.Secret("new-refresh")); err != nil {
		t.Fatalf("second Refresh() error: %v", err)
	}
	if got := kc.discoveryCount(); got != 1 {
		t.Errorf("discovery requests after two grants = %d, want 1", got)
	}
	if got := len(kc.tokenRequests()); got != 2 {
		t.Errorf("token requests after two grants = %d, want 2", got)
	}
}

// TestKeycloakRefreshErrorsAreSentOnce: a failed grant is never re-sent
// (x/oauth2's auth-style detection would spend the refresh token twice).
func TestRefreshErrorsAreSentOnce(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   Class
		code   string
	}{
		{name: "session ended", status: 400, body: `{"error":"invalid_grant","error_description":"Session not active"}`, want: Terminal, code: "invalid_grant"},
		{name: "stale token", status: 400, body: `{"error":"invalid_grant","error_description":"Stale token"}`, want: Terminal, code: "invalid_grant"},
		{name: "bad client secret", status: 401, body: `{"error":"invalid_client","error_description":"Invalid client or Invalid client credentials"}`, want: Operator, code: "invalid_client"},
		{name: "wrong client", status: 400, body: `{"error":"invalid_grant","error_description":"Invalid refresh token. Token client and authorized client don't match"}`, want: Operator, code: "invalid_grant"},
		{name: "internal error", status: 500, body: `{"error":"unknown_error"}`, want: Transient, code: "unknown_error"},
		{name: "proxy", status: 502, body: `<html><body>Bad Gateway</body></html>`, want: Transient},
		{name: "rate limited", status: 429, body: `<html><body>Too Many Requests</body></html>`, want: Transient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := newFakeKeycloak(t)
			kc.respond = func(int) (int, string) { return tt.status, tt.body }
			k := New(kc.realm(), "jupyterhub", config.Secret("client-s3cret"), kc.srv.Client())
			tok, err := k.Refresh(t.Context(), config.Secret("old-refresh"))
			if err == nil {
				t.Fatalf("Refresh() = %v, nil; want an error", tok)
			}
			if n := len(kc.tokenRequests()); n != 1 {
				t.Errorf("Refresh() sent %d token requests, want exactly 1", n)
			}
			var rerr *oauth2.RetrieveError
			if !errors.As(err, &rerr) {
				t.Fatalf("Refresh() error = %v, want a *oauth2.RetrieveError", err)
			}
			if rerr.Response.StatusCode != tt.status || rerr.ErrorCode != tt.code {
				t.Errorf("Refresh() error = %d %q, want %d %q", rerr.Response.StatusCode, rerr.ErrorCode, tt.status, tt.code)
			}
			if got := Classify(err); got != tt.want {
				t.Errorf("Classify(Refresh() error %v) = %v, want %v", err, got, tt.want)
			}
		})
	}
}

func TestIssuerMismatch(t *testing.T) {
	kc := newFakeKeycloak(t)
	kc.issuer = "https://kc.public.example.org/realms/r"
	k := New(kc.realm(), "jupyterhub", config.Secret("client-s3cret"), kc.srv.Client())
	_, err := k.Refresh(t.Context(), config.Secret("old-refresh"))
	var derr *DiscoveryError
	if !errors.As(err, &derr) {
		t.Fatalf("Refresh() with a mismatched issuer: error = %v, want *DiscoveryError", err)
	}
	if got := Classify(err); got != Operator {
		t.Errorf("Classify(%v) = %v, want %v", err, got, Operator)
	}
	if n := len(kc.tokenRequests()); n != 0 {
		t.Errorf("Refresh() after failed discovery sent %d token requests, want 0", n)
	}

	// Discovery is not cached after a failure: once fixed, grants work.
	kc.mu.Lock()
	kc.issuer = ""
	kc.mu.Unlock()
	if _, err := k.Refresh(t.Context(), config.Secret("old-refresh")); err != nil {
		t.Fatalf("Refresh() after the issuer was fixed: %v", err)
	}
	if got := kc.discoveryCount(); got != 2 {
		t.Errorf("discovery requests = %d, want 2 (failed one retried)", got)
	}
}

func TestUnknownRealm(t *testing.T) {
	kc := newFakeKeycloak(t)
	k := New(kc.srv.URL+"/realms/nope", "jupyterhub", config.Secret("client-s3cret"), kc.srv.Client())
	_, err := k.Endpoint(t.Context())
	var derr *DiscoveryError
	if !errors.As(err, &derr) {
		t.Fatalf("Endpoint() for an unknown realm: error = %v, want *DiscoveryError", err)
	}
	if got := Classify(err); got != Operator {
		t.Errorf("Classify(%v) = %v, want %v", err, got, Operator)
	}
}

func TestUnreachable(t *testing.T) {
	kc := newFakeKeycloak(t)
	realm := kc.realm()
	kc.srv.Close()
	k := New(realm, "jupyterhub", config.Secret("client-s3cret"), &http.Client{})
	_, err := k.Refresh(t.Context(), config.Secret("old-refresh"))
	if err == nil {
		t.Fatal("Refresh() against a closed server: error = nil, want one")
	}
	var derr *DiscoveryError
	if errors.As(err, &derr) {
		t.Errorf("Refresh() against a closed server: error = %v, want a network error, not *DiscoveryError", err)
	}
	var uerr *url.Error
	if !errors.As(err, &uerr) {
		t.Errorf("Refresh() against a closed server: error = %v, want a *url.Error", err)
	}
	if got := Classify(err); got != Transient {
		t.Errorf("Classify(%v) = %v, want %v", err, got, Transient)
	}
}

func TestCanceled(t *testing.T) {
	kc := newFakeKeycloak(t)
	k := New(kc.realm(), "jupyterhub", config.Secret("client-s3cret"), kc.srv.Client())
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := k.Refresh(ctx, config.Secret("old-refresh"))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Refresh(canceled) error = %v, want context.Canceled", err)
	}
	if got := Classify(err); got != Transient {
		t.Errorf("Classify(%v) = %v, want %v", err, got, Transient)
	}
}

// TestKeycloakDiscoveryUnavailable: a Keycloak that answers discovery with
// a 5xx (starting up, or behind a proxy) is a transient condition, like a
// 5xx from the token endpoint.
func TestDiscoveryUnavailable(t *testing.T) {
	for _, status := range []int{http.StatusBadGateway, http.StatusServiceUnavailable} {
		kc := newFakeKeycloak(t)
		kc.discoveryStatus = status
		k := New(kc.realm(), "jupyterhub", config.Secret("client-s3cret"), kc.srv.Client())
		_, err := k.Refresh(t.Context(), config.Secret("old-refresh"))
		if err == nil {
			t.Fatalf("Refresh() with discovery answering %d: error = nil, want one", status)
		}
		if got := Classify(err); got != Transient {
			t.Errorf("Classify(Refresh() with discovery answering %d: %v) = %v, want %v", status, err, got, Transient)
		}
	}
}
