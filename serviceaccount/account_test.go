package serviceaccount

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
)

const (
	saClientID = "tokenkeeper-sa"
	saSecret   = "s3cr/et&x=1" // needs form encoding in the Basic header
	tokenPath  = "/realms/jupyter/protocol/openid-connect/token"
)

// tokenRequest is what the fake token endpoint saw of one request.
type tokenRequest struct {
	Method      string
	Path        string
	ContentType string
	User        string // HTTP Basic user, form-decoded
	Password    string // HTTP Basic password, form-decoded
	Form        url.Values
}

// fakeTokenEndpoint answers token requests with expires_in from lifetimes in
// turn (the last one repeats) and numbers the access tokens sa-1, sa-2, ….
type fakeTokenEndpoint struct {
	srv       *httptest.Server
	lifetimes []int
	status    int    // non-zero: answer every request with this error status
	token     string // when set, the access token of every answer

	mu   sync.Mutex // guards reqs
	reqs []tokenRequest
}

func newFakeTokenEndpoint(t *testing.T, lifetimes ...int) *fakeTokenEndpoint {
	t.Helper()
	f := &fakeTokenEndpoint{lifetimes: lifetimes}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve(t)))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeTokenEndpoint) serve(t *testing.T) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("token endpoint: %v", err)
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			t.Errorf("token endpoint: body %q: %v", body, err)
		}
		req := tokenRequest{Method: r.Method, Path: r.URL.Path, ContentType: r.Header.Get("Content-Type"), Form: form}
		if u, p, ok := r.BasicAuth(); ok {
			req.User, _ = url.QueryUnescape(u)
			req.Password, _ = url.QueryUnescape(p)
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, req)
		n := len(f.reqs)
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if f.status != 0 {
			w.WriteHeader(f.status)
			fmt.Fprint(w, `{"error":"invalid_client","error_description":"Invalid client or Invalid client credentials"}`)
			return
		}
		life := f.lifetimes[min(n, len(f.lifetimes))-1]
		token := f.token
		if token == "" {
			token = fmt.Sprintf("sa-%d", n)
		}
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":%d,"scope":"profile email"}`, token, life)
	}
}

func (f *fakeTokenEndpoint) requests() []tokenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]tokenRequest(nil), f.reqs...)
}

// endpoint returns a discovery function for f, counting its calls.
func (f *fakeTokenEndpoint) endpoint(calls *atomic.Int32) func(context.Context) (oauth2.Endpoint, error) {
	return func(context.Context) (oauth2.Endpoint, error) {
		calls.Add(1)
		return oauth2.Endpoint{TokenURL: f.srv.URL + tokenPath}, nil
	}
}

// wantTokenRequest is the one client-credentials request Account sends.
var wantTokenRequest = tokenRequest{
	Method: "POST", Path: tokenPath, ContentType: "application/x-www-form-urlencoded",
	User: saClientID, Password: saSecret,
	Form: url.Values{"grant_type": {"client_credentials"}},
}

func newAccount(f *fakeTokenEndpoint, early time.Duration, discovered *atomic.Int32) *Account {
	return New(context.Background(), f.srv.Client(), saClientID, config.Secret(saSecret), f.endpoint(discovered), early)
}

func TestAccountClientCredentialsRequest(t *testing.T) {
	f := newFakeTokenEndpoint(t, 300)
	var discovered atomic.Int32
	a := newAccount(f, 15*time.Second, &discovered)
	tok, err := a.Token(context.Background())
	if err != nil {
		t.Fatalf("Token() error: %v", err)
	}
	if tok.AccessToken != "sa-1" || tok.TokenType != "Bearer" {
		t.Errorf("Token() = %q %q, want sa-1 Bearer", tok.AccessToken, tok.TokenType)
	}
	if left := time.Until(tok.Expiry); left < 290*time.Second || left > 300*time.Second {
		t.Errorf("Token() expires in %v, want about 300s", left)
	}
	if diff := cmp.Diff([]tokenRequest{wantTokenRequest}, f.requests()); diff != "" {
		t.Errorf("token requests mismatch (-want +got):\n%s", diff)
	}
	for _, r := range f.requests() {
		for _, key := range []string{"client_secret", "client_id"} {
			if r.Form.Has(key) {
				t.Errorf("token request body carries %s", key)
			}
		}
	}
}

func TestAccountReusesValidToken(t *testing.T) {
	f := newFakeTokenEndpoint(t, 300)
	var discovered atomic.Int32
	a := newAccount(f, 15*time.Second, &discovered)
	for i := range 5 {
		got, err := a.AccessToken(context.Background())
		if err != nil {
			t.Fatalf("AccessToken() call %d: %v", i+1, err)
		}
		if got != "sa-1" {
			t.Errorf("AccessToken() call %d = %q, want sa-1", i+1, got)
		}
	}
	if n := len(f.requests()); n != 1 {
		t.Errorf("token requests for 5 calls with a 300s token = %d, want 1", n)
	}
	if n := discovered.Load(); n != 1 {
		t.Errorf("endpoint discovered %d times, want 1", n)
	}
}

func TestAccountRenewsNearExpiry(t *testing.T) {
	// A 5 s token is inside the 15 s margin from the start: every call renews.
	f := newFakeTokenEndpoint(t, 5)
	var discovered atomic.Int32
	a := newAccount(f, 15*time.Second, &discovered)
	var got []string
	for range 3 {
		s, err := a.AccessToken(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, s)
	}
	if diff := cmp.Diff([]string{"sa-1", "sa-2", "sa-3"}, got); diff != "" {
		t.Errorf("tokens within the early margin (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]tokenRequest{wantTokenRequest, wantTokenRequest, wantTokenRequest}, f.requests()); diff != "" {
		t.Errorf("token requests mismatch (-want +got):\n%s", diff)
	}
}

func TestAccountRenewsWithinWholeEarlyMargin(t *testing.T) {
	// The first token has 30 s left, inside the 60 s margin but outside
	// oauth2's default 10 s one; the endpoint would give a 300 s token, so the
	// second call must renew.
	f := newFakeTokenEndpoint(t, 30, 300)
	var discovered atomic.Int32
	a := newAccount(f, time.Minute, &discovered)
	first, err := a.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	second, err := a.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if first.AccessToken != "sa-1" || second.AccessToken != "sa-2" {
		t.Errorf("Token() twice = %q, %q; want sa-1, then sa-2 (renewed inside the 60s margin)", first.AccessToken, second.AccessToken)
	}
	if left := time.Until(second.Expiry); left <= time.Minute {
		t.Errorf("second Token() has %v left, want more than the 60s margin", left)
	}
	if n := len(f.requests()); n != 2 {
		t.Errorf("token requests = %d, want 2", n)
	}
}

func TestAccountEndpointFailureIsRetried(t *testing.T) {
	f := newFakeTokenEndpoint(t, 300)
	down := errors.New("discovery: connection refused")
	var calls atomic.Int32
	endpoint := func(ctx context.Context) (oauth2.Endpoint, error) {
		if calls.Add(1) == 1 {
			return oauth2.Endpoint{}, down
		}
		return oauth2.Endpoint{TokenURL: f.srv.URL + tokenPath}, nil
	}
	a := New(context.Background(), f.srv.Client(), saClientID, config.Secret(saSecret), endpoint, 15*time.Second)
	if _, err := a.Token(context.Background()); !errors.Is(err, down) {
		t.Errorf("Token() while discovery fails = %v, want %v", err, down)
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("token requests while discovery fails = %d, want 0", n)
	}
	tok, err := a.Token(context.Background())
	if err != nil || tok.AccessToken != "sa-1" {
		t.Errorf("Token() after discovery recovers = %v, %v; want sa-1", tok, err)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("discovery calls = %d, want 2", n)
	}
}

func TestAccountRejectedCredentials(t *testing.T) {
	f := newFakeTokenEndpoint(t, 300)
	f.status = http.StatusUnauthorized
	var discovered atomic.Int32
	a := newAccount(f, 15*time.Second, &discovered)
	_, err := a.AccessToken(context.Background())
	var rerr *oauth2.RetrieveError
	if !errors.As(err, &rerr) || rerr.ErrorCode != "invalid_client" {
		t.Fatalf("AccessToken() with rejected credentials = %v, want a wrapped *oauth2.RetrieveError invalid_client", err)
	}
	// The style is fixed to the header, so there is no second attempt with
	// the secret in the body.
	if diff := cmp.Diff([]tokenRequest{wantTokenRequest}, f.requests()); diff != "" {
		t.Errorf("token requests mismatch (-want +got):\n%s", diff)
	}
}
