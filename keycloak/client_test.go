package keycloak

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

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
		// Keycloak's own internal error: its transaction issued no token.
		{500, "unknown_error", "", Transient},
		{500, "unknown_error", "For more on this error consult the server log.", Transient},
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
	const tokenURL = "https://kc.example.org/realms/jupyter/protocol/openid-connect/token"
	post := func(err error) error {
		return fmt.Errorf("refresh grant: %w", &url.Error{Op: "Post", URL: tokenURL, Err: err})
	}
	dial := func(op string, err error) error { return post(&net.OpError{Op: op, Net: "tcp", Err: err}) }
	refused := &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}
	noHost := &net.DNSError{Err: "no such host", Name: "kc.example.org", IsNotFound: true}
	tests := []struct {
		name string
		err  error
		want Class
	}{
		// A proxy's page: Keycloak may have carried out the grant.
		{name: "500 html", err: html(500), want: Unknown},
		{name: "502 html", err: html(502), want: Unknown},
		{name: "503 html", err: html(503), want: Unknown},
		{name: "504 html", err: html(504), want: Unknown},
		{name: "429 html", err: html(429), want: Transient},
		{name: "429 json", err: keycloakError(429, "too_many_requests", "slow down"), want: Transient},
		{name: "503 with invalid_grant body", err: keycloakError(503, "invalid_grant", "Session not active"), want: Transient},
		{name: "no response", err: &oauth2.RetrieveError{}, want: Transient},
		// The grant never left.
		{name: "not sent", err: fmt.Errorf("refresh grant: %w: %w", ErrNotSent, post(context.Canceled)), want: Transient},
		{name: "connection refused", err: dial("dial", refused), want: Transient},
		{name: "no such host", err: dial("dial", noHost), want: Transient},
		{name: "bare dns error", err: noHost, want: Transient},
		{name: "proxy refused", err: dial("proxyconnect", dial("dial", refused)), want: Transient},
		// The grant may have arrived; its answer did not.
		{name: "connection reset", err: dial("read", &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}), want: Unknown},
		{name: "unexpected EOF", err: post(io.ErrUnexpectedEOF), want: Unknown},
		{name: "EOF", err: post(io.EOF), want: Unknown},
		{name: "deadline", err: context.DeadlineExceeded, want: Unknown},
		{name: "wrapped deadline", err: post(context.DeadlineExceeded), want: Unknown},
		{name: "canceled", err: context.Canceled, want: Unknown},
		{name: "body cut off", err: errors.New("oauth2: cannot fetch token: unexpected EOF"), want: Unknown},
		{name: "2xx not json", err: errors.New("oauth2: cannot parse json: invalid character '<' looking for beginning of value"), want: Unknown},
		{name: "2xx without access token", err: errors.New("oauth2: server response missing access_token"), want: Unknown},
		// Configuration.
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

// TestClassString also pins the classes' values: Unknown came last, so the
// others kept theirs.
func TestClassString(t *testing.T) {
	tests := []struct {
		c     Class
		value int
		want  string
	}{
		{Transient, 0, "transient"},
		{Terminal, 1, "terminal"},
		{Operator, 2, "operator"},
		{Unknown, 3, "unknown"},
		{Class(4), 4, "Class(4)"},
		{Class(-1), -1, "Class(-1)"},
	}
	for _, tt := range tests {
		if int(tt.c) != tt.value || tt.c.String() != tt.want {
			t.Errorf("Class %d = %q, want %d %q", int(tt.c), tt.c.String(), tt.value, tt.want)
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

// introspectRequest is what the fake Keycloak saw at its introspection
// endpoint.
type introspectRequest struct {
	Method        string
	Path          string
	ContentType   string
	Accept        string
	Authorization string
	Form          url.Values
}

// fakeKeycloak serves one realm, "r": discovery, the token endpoint, the
// introspection endpoint and the broker token endpoint.
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
	// answer, when set, answers token requests in place of respond, once
	// they are recorded: it may hold the request or break the connection.
	answer func(w http.ResponseWriter, r *http.Request)
	// noIntrospection leaves introspection_endpoint out of discovery.
	noIntrospection bool
	introspects     []introspectRequest
	// introspectRespond answers introspection requests; nil answers
	// inactiveIntrospection.
	introspectRespond func() (status int, contentType, body string)
	brokers           []brokerRequest
	// brokerRespond answers broker token requests; nil answers storedIdPToken.
	brokerRespond func() (status int, contentType, body string)
}

func newFakeKeycloak(t *testing.T) *fakeKeycloak {
	t.Helper()
	k := &fakeKeycloak{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /realms/r/.well-known/openid-configuration", k.discovery)
	mux.HandleFunc("/realms/r/protocol/openid-connect/token", k.token)
	mux.HandleFunc("/realms/r/protocol/openid-connect/token/introspect", k.introspect)
	mux.HandleFunc("/realms/r/protocol/openid-connect/logout", k.introspect) // recorded alike
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
	config := map[string]any{
		"issuer":                                issuer,
		"authorization_endpoint":                k.realm() + "/protocol/openid-connect/auth",
		"token_endpoint":                        k.realm() + "/protocol/openid-connect/token",
		"introspection_endpoint":                k.realm() + "/protocol/openid-connect/token/introspect",
		"userinfo_endpoint":                     k.realm() + "/protocol/openid-connect/userinfo",
		"end_session_endpoint":                  k.realm() + "/protocol/openid-connect/logout",
		"jwks_uri":                              k.realm() + "/protocol/openid-connect/certs",
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
	}
	if k.noIntrospection {
		delete(config, "introspection_endpoint")
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(config)
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
	n, respond, answer := len(k.requests), k.respond, k.answer
	k.mu.Unlock()
	if answer != nil {
		answer(w, r)
		return
	}
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

func (k *fakeKeycloak) introspect(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(body))
	k.mu.Lock()
	k.introspects = append(k.introspects, introspectRequest{Method: r.Method, Path: r.URL.Path,
		ContentType: r.Header.Get("Content-Type"), Accept: r.Header.Get("Accept"),
		Authorization: r.Header.Get("Authorization"), Form: form})
	respond := k.introspectRespond
	k.mu.Unlock()
	status, ct, out := http.StatusOK, "application/json", inactiveIntrospection
	if respond != nil {
		status, ct, out = respond()
	}
	w.Header().Set("Content-Type", ct)
	w.WriteHeader(status)
	io.WriteString(w, out)
}

func (k *fakeKeycloak) introspectRequests() []introspectRequest {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]introspectRequest(nil), k.introspects...)
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

// nginxPage is nginx's own error page for status, e.g. "502 Bad Gateway".
func nginxPage(status string) string {
	return "<html>\r\n<head><title>" + status + "</title></head>\r\n<body>\r\n<center><h1>" + status +
		"</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
}

// haproxy503 is HAProxy's answer when no Keycloak instance is up.
const haproxy503 = "<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n"

// TestRefreshErrorsAreSentOnce: a failed grant is never re-sent
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
		{name: "internal error with description", status: 500, body: `{"error":"unknown_error","error_description":"For more on this error consult the server log."}`, want: Transient, code: "unknown_error"},
		{name: "proxy 502", status: 502, body: nginxPage("502 Bad Gateway"), want: Unknown},
		{name: "proxy 504", status: 504, body: nginxPage("504 Gateway Time-out"), want: Unknown},
		{name: "proxy 503", status: 503, body: haproxy503, want: Unknown},
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
	if !errors.As(err, &derr) || errors.Is(err, ErrNotSent) {
		t.Fatalf("Refresh() with a mismatched issuer: error = %v, want *DiscoveryError not marked ErrNotSent", err)
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
	if !errors.As(err, &uerr) || !errors.Is(err, ErrNotSent) {
		t.Errorf("Refresh() against a closed server: error = %v, want a *url.Error marked ErrNotSent", err)
	}
	if got := Classify(err); got != Transient {
		t.Errorf("Classify(%v) = %v, want %v", err, got, Transient)
	}
}

// TestRefreshNotSent: a failure before the grant leaves is marked
// ErrNotSent and is transient, and no token request is made.
func TestRefreshNotSent(t *testing.T) {
	tests := []struct {
		name     string
		discover bool // discover before the grant
		cancel   bool // cancel the grant's context before the call
		refresh  config.Secret
		canceled bool
	}{
		{name: "canceled before discovery", cancel: true, refresh: "old-refresh", canceled: true},
		{name: "canceled after discovery", discover: true, cancel: true, refresh: "old-refresh", canceled: true},
		{name: "no refresh token", discover: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := newFakeKeycloak(t)
			k := New(kc.realm(), "jupyterhub", config.Secret("client-s3cret"), kc.srv.Client())
			if _, err := k.Endpoint(t.Context()); tt.discover && err != nil {
				t.Fatalf("Endpoint() error: %v", err)
			}
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tt.cancel {
				cancel()
			}
			_, err := k.Refresh(ctx, tt.refresh)
			if !errors.Is(err, ErrNotSent) || errors.Is(err, context.Canceled) != tt.canceled {
				t.Errorf("Refresh() error = %v, want ErrNotSent (context.Canceled: %v)", err, tt.canceled)
			}
			if got := Classify(err); got != Transient {
				t.Errorf("Classify(%v) = %v, want %v", err, got, Transient)
			}
			if n := len(kc.tokenRequests()); n != 0 {
				t.Errorf("Refresh() sent %d token requests, want 0", n)
			}
		})
	}
}

// TestRefreshConnectionRefused: a grant whose connection is refused never
// left, so it is transient.
func TestRefreshConnectionRefused(t *testing.T) {
	kc := newFakeKeycloak(t)
	k := New(kc.realm(), "jupyterhub", config.Secret("client-s3cret"), kc.srv.Client())
	if _, err := k.Endpoint(t.Context()); err != nil {
		t.Fatalf("Endpoint() error: %v", err)
	}
	kc.srv.Close()
	_, err := k.Refresh(t.Context(), config.Secret("old-refresh"))
	var operr *net.OpError
	if !errors.As(err, &operr) || operr.Op != "dial" || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Refresh() against a closed server: error = %v, want a refused dial", err)
	}
	if got := Classify(err); got != Transient {
		t.Errorf("Classify(%v) = %v, want %v", err, got, Transient)
	}
}

// wantOneGrant checks that the fake saw exactly one refresh grant, for
// old-refresh.
func wantOneGrant(t *testing.T, kc *fakeKeycloak) {
	t.Helper()
	want := []tokenRequest{{
		Method:      http.MethodPost,
		ContentType: "application/x-www-form-urlencoded",
		User:        "jupyterhub", Pass: "client-s3cret", BasicAuth: true,
		Form: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"old-refresh"}},
	}}
	if diff := cmp.Diff(want, kc.tokenRequests()); diff != "" {
		t.Errorf("Refresh() sent (-want +got):\n%s", diff)
	}
}

// TestRefreshAnswerLost: a grant Keycloak received but whose answer
// tokenkeeper could not read is of unknown outcome, and is not re-sent.
func TestRefreshAnswerLost(t *testing.T) {
	tests := []struct {
		name   string
		answer func(w http.ResponseWriter, r *http.Request)
	}{
		{name: "connection closed after the request", answer: func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				panic(err)
			}
			conn.Close()
		}},
		{name: "answer cut off", answer: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(keycloakTokenResponse)))
			io.WriteString(w, keycloakTokenResponse[:40])
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		}},
		{name: "200 html page", answer: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<html><body><h1>Welcome</h1></body></html>")
		}},
		{name: "200 json without tokens", answer: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"status":"UP","checks":[]}`)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := newFakeKeycloak(t)
			kc.answer = tt.answer
			k := New(kc.realm(), "jupyterhub", config.Secret("client-s3cret"), kc.srv.Client())
			tok, err := k.Refresh(t.Context(), config.Secret("old-refresh"))
			if err == nil {
				t.Fatalf("Refresh() = %v, nil; want an error", tok)
			}
			if errors.As(err, new(*oauth2.RetrieveError)) || errors.Is(err, ErrNotSent) {
				t.Errorf("Refresh() error = %v, want neither a *oauth2.RetrieveError nor ErrNotSent", err)
			}
			if got := Classify(err); got != Unknown {
				t.Errorf("Classify(%v) = %v, want %v", err, got, Unknown)
			}
			wantOneGrant(t, kc)
		})
	}
}

// holdGrants makes kc's token endpoint hold every grant it receives until
// the test ends or the client goes away; arrived, when not nil, is called
// as each grant arrives.
func holdGrants(t *testing.T, kc *fakeKeycloak, arrived func()) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before the server closes
	kc.answer = func(w http.ResponseWriter, r *http.Request) {
		if arrived != nil {
			arrived()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}
}

// TestRefreshTimeout: a grant that times out waiting for Keycloak's answer
// is of unknown outcome.
func TestRefreshTimeout(t *testing.T) {
	kc := newFakeKeycloak(t)
	holdGrants(t, kc, nil)
	k := New(kc.realm(), "jupyterhub", config.Secret("client-s3cret"), kc.srv.Client())
	if _, err := k.Endpoint(t.Context()); err != nil {
		t.Fatalf("Endpoint() error: %v", err)
	}
	k.realm.client.Timeout = 50 * time.Millisecond // for the grant only
	_, err := k.Refresh(t.Context(), config.Secret("old-refresh"))
	var uerr *url.Error
	if !errors.As(err, &uerr) || !uerr.Timeout() {
		t.Fatalf("Refresh() error = %v, want a *url.Error timeout", err)
	}
	if got := Classify(err); got != Unknown {
		t.Errorf("Classify(%v) = %v, want %v", err, got, Unknown)
	}
	wantOneGrant(t, kc)
}

// TestRefreshCanceledWhileWaiting: a grant canceled after it reached
// Keycloak is of unknown outcome.
func TestRefreshCanceledWhileWaiting(t *testing.T) {
	kc := newFakeKeycloak(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	holdGrants(t, kc, cancel)
	k := New(kc.realm(), "jupyterhub", config.Secret("client-s3cret"), kc.srv.Client())
	_, err := k.Refresh(ctx, config.Secret("old-refresh"))
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrNotSent) {
		t.Fatalf("Refresh() error = %v, want context.Canceled, not ErrNotSent", err)
	}
	if got := Classify(err); got != Unknown {
		t.Errorf("Classify(%v) = %v, want %v", err, got, Unknown)
	}
	wantOneGrant(t, kc)
}

// TestDiscoveryUnavailable: a Keycloak that answers discovery with
// a 5xx (starting up, or behind a proxy) is a transient condition, like a
// 5xx from the token endpoint.
func TestDiscoveryUnavailable(t *testing.T) {
	for _, status := range []int{http.StatusBadGateway, http.StatusServiceUnavailable} {
		kc := newFakeKeycloak(t)
		kc.discoveryStatus = status
		k := New(kc.realm(), "jupyterhub", config.Secret("client-s3cret"), kc.srv.Client())
		_, err := k.Refresh(t.Context(), config.Secret("old-refresh"))
		if !errors.Is(err, ErrNotSent) {
			t.Fatalf("Refresh() with discovery answering %d: error = %v, want one marked ErrNotSent", status, err)
		}
		if got := Classify(err); got != Transient {
			t.Errorf("Classify(Refresh() with discovery answering %d: %v) = %v, want %v", status, err, got, Transient)
		}
	}
}
