package spawnerhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/refresh"
)

const prefix = "/services/tokenkeeper/"

var (
	testNow      = time.Date(2026, 11, 22, 11, 0, 0, 0, time.UTC)
	accessScopes = []string{"access:services", "access:services!service=tokenkeeper"}
)

// Caller tokens known to the fake hub.
var identities = map[string]hubclient.Identity{
	"alice-token":    {Kind: "user", Name: "alice", Scopes: []string{"access:services!service=tokenkeeper", "read:users:name!user=alice"}},
	"alice-unscoped": {Kind: "user", Name: "alice", Scopes: []string{"read:users:name!user=alice", "access:servers!user=alice"}},
	"admin-token":    {Kind: "user", Name: "admin", Scopes: []string{"access:services", ScopeTokens}},
	"carol-for-bob": {Kind: "user", Name: "carol", Scopes: []string{
		"access:services!service=tokenkeeper", ScopeTokens + "!user=bob",
	}},
	"hook-token":    {Kind: "service", Name: "tokenkeeper-hook", Scopes: []string{"access:services!service=tokenkeeper", ScopeTokens}},
	"hook-no-scope": {Kind: "service", Name: "other-service", Scopes: []string{"access:services!service=tokenkeeper"}},
	"server-token": {Kind: "user", Name: "alice", Scopes: []string{
		"access:services!service=tokenkeeper", "users:activity!user=alice", "access:servers!server=alice/",
	}},
}

// freshCall is one call the handler made to Fresh or Derived.
type freshCall struct {
	User     string
	MinValid time.Duration
	Target   refresh.Target // zero for Fresh
}

// fakes supplies Deps as function fakes and records what they were asked.
type fakes struct {
	mu sync.Mutex // guards the fields below
	// identifyErr, when set, is returned by Identify.
	identifyErr error
	// freshErr, when set, is returned by Fresh and Derived.
	freshErr   error
	health     refresh.Health
	identified []string
	fresh      []freshCall
}

func (f *fakes) deps() Deps {
	return Deps{
		Identify: func(ctx context.Context, token string) (hubclient.Identity, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.identified = append(f.identified, token)
			if f.identifyErr != nil {
				return hubclient.Identity{}, f.identifyErr
			}
			id, ok := identities[token]
			if !ok {
				return hubclient.Identity{}, &hubclient.APIError{Status: http.StatusForbidden}
			}
			return id, nil
		},
		Fresh: func(ctx context.Context, user string, minValid time.Duration) (refresh.Tokens, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.fresh = append(f.fresh, freshCall{User: user, MinValid: minValid})
			if f.freshErr != nil {
				return refresh.Tokens{}, f.freshErr
			}
			return refresh.Tokens{
				Access: config.Secret("kc-access-for-" + user),
				Expiry: testNow.Add(5 * time.Minute),
				Type:   "Bearer",
			}, nil
		},
		Derived: func(ctx context.Context, user string, t refresh.Target, minValid time.Duration) (refresh.Tokens, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.fresh = append(f.fresh, freshCall{User: user, MinValid: minValid, Target: t})
			if f.freshErr != nil {
				return refresh.Tokens{}, f.freshErr
			}
			return refresh.Tokens{
				Access: config.Secret("kc-" + t.Name + "-for-" + user),
				Expiry: testNow.Add(2 * time.Minute),
				Type:   "Bearer",
			}, nil
		},
		Health: func() refresh.Health {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.health
		},
		AccessScopes: accessScopes,
		Name:         "tokenkeeper",
		Version:      "1.2.3",
		Logger:       slog.New(slog.DiscardHandler),
		Now:          func() time.Time { return testNow },
	}
}

func (f *fakes) freshCalls() []freshCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]freshCall(nil), f.fresh...)
}

// response is a recorded reply with its JSON body decoded.
type response struct {
	status int
	header http.Header
	raw    string
	body   map[string]any
}

func get(t *testing.T, h http.Handler, target, authorization string) response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := response{status: rec.Code, header: rec.Header(), raw: rec.Body.String()}
	if err := json.Unmarshal(rec.Body.Bytes(), &res.body); err != nil {
		t.Fatalf("GET %s: body %q is not a JSON object: %v", target, res.raw, err)
	}
	return res
}

// checkError asserts an error reply: status, {"error","message"} and nothing else.
func checkError(t *testing.T, target string, res response, status int, code string) {
	t.Helper()
	if res.status != status {
		t.Errorf("GET %s status = %d, want %d; body %s", target, res.status, status, res.raw)
	}
	if got := res.body["error"]; got != code {
		t.Errorf("GET %s error = %v, want %q; body %s", target, got, code, res.raw)
	}
	msg, _ := res.body["message"].(string)
	if msg == "" {
		t.Errorf("GET %s has no message; body %s", target, res.raw)
	}
	if len(res.body) != 2 {
		t.Errorf("GET %s error body = %s, want exactly {error, message}", target, res.raw)
	}
	if got := res.header.Get("Content-Type"); !strings.HasPrefix(got, "application/json") {
		t.Errorf("GET %s Content-Type = %q, want application/json", target, got)
	}
}

func TestInfo(t *testing.T) {
	h := NewHandler(prefix, (&fakes{}).deps())
	res := get(t, h, prefix, "")
	if res.status != http.StatusOK {
		t.Fatalf("GET %s status = %d, want 200", prefix, res.status)
	}
	want := map[string]any{"name": "tokenkeeper", "version": "1.2.3"}
	if diff := cmp.Diff(want, res.body); diff != "" {
		t.Errorf("GET %s body mismatch (-want +got):\n%s", prefix, diff)
	}
}

func TestUnknownPath(t *testing.T) {
	h := NewHandler(prefix, (&fakes{}).deps())
	for _, target := range []string{prefix + "nope", "/services/other/fresh-token", "/fresh-token"} {
		checkError(t, target, get(t, h, target, "token alice-token"), http.StatusNotFound, "not_found")
	}
}

func TestHealth(t *testing.T) {
	stuck := refresh.Problem{Class: refresh.ProblemStuckUsers, Users: 2}
	operator := refresh.Problem{Class: refresh.ProblemKeycloakClient}
	tests := []struct {
		name   string
		health refresh.Health
		status int
		want   map[string]any
	}{
		{name: "healthy", status: http.StatusOK, want: map[string]any{"status": "ok", "problems": []any{}}},
		{
			name:   "stuck users",
			health: refresh.Health{Problems: []refresh.Problem{stuck}},
			status: http.StatusOK,
			want: map[string]any{"status": "degraded", "problems": []any{map[string]any{
				"class": "stuck_users", "users": 2.0, "message": problemTexts[refresh.ProblemStuckUsers]}}},
		},
		{
			name:   "operator problem",
			health: refresh.Health{Problems: []refresh.Problem{operator, stuck}},
			status: http.StatusServiceUnavailable,
			want: map[string]any{"status": "unhealthy", "problems": []any{
				map[string]any{"class": "keycloak_client", "message": problemTexts[refresh.ProblemKeycloakClient]},
				map[string]any{"class": "stuck_users", "users": 2.0, "message": problemTexts[refresh.ProblemStuckUsers]},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHandler(prefix, (&fakes{health: tt.health}).deps())
			res := get(t, h, prefix+"health", "")
			if res.status != tt.status {
				t.Errorf("GET health status = %d, want %d", res.status, tt.status)
			}
			if diff := cmp.Diff(tt.want, res.body); diff != "" {
				t.Errorf("GET health body mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFreshTokenOwn(t *testing.T) {
	for _, auth := range []string{
		"token alice-token", "Bearer alice-token", "bearer alice-token", "TOKEN alice-token",
		"  token   alice-token  ", "token server-token",
	} {
		t.Run(auth, func(t *testing.T) {
			f := &fakes{}
			h := NewHandler(prefix, f.deps())
			res := get(t, h, prefix+"fresh-token", auth)
			if res.status != http.StatusOK {
				t.Fatalf("GET fresh-token with %q: status = %d, want 200; body %s", auth, res.status, res.raw)
			}
			want := map[string]any{
				"user":         "alice",
				"access_token": "kc-access-for-alice",
				"token_type":   "Bearer",
				"expires_at":   "2026-11-22T11:05:00Z",
				"expires_in":   300.0,
			}
			if diff := cmp.Diff(want, res.body); diff != "" {
				t.Errorf("GET fresh-token with %q: body mismatch (-want +got):\n%s", auth, diff)
			}
			if got := res.header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("GET fresh-token Cache-Control = %q, want no-store", got)
			}
			if diff := cmp.Diff([]freshCall{{User: "alice", MinValid: 60 * time.Second}}, f.freshCalls()); diff != "" {
				t.Errorf("Fresh calls mismatch (-want +got):\n%s", diff)
			}
			if strings.Contains(strings.ToLower(res.raw), "refresh") {
				t.Errorf("GET fresh-token body %s mentions a refresh token", res.raw)
			}
		})
	}
}

func TestFreshTokenUnauthenticated(t *testing.T) {
	tests := []struct {
		name        string
		auth        string
		identifyErr error
		wantCalls   int // calls to Identify
	}{
		{name: "no header", auth: ""},
		{name: "scheme only", auth: "token"},
		{name: "empty token", auth: "token   "},
		{name: "basic auth", auth: "Basic YWxpY2U6cHc="},
		{name: "two tokens", auth: "token a b"},
		{name: "no scheme", auth: "alice-token"},
		{name: "unknown token (hub 403)", auth: "token expired", wantCalls: 1},
		{name: "hub 403", auth: "token alice-token", identifyErr: &hubclient.APIError{Status: http.StatusForbidden}, wantCalls: 1},
		{name: "hub 401", auth: "Bearer alice-token", identifyErr: &hubclient.APIError{Status: http.StatusUnauthorized}, wantCalls: 1},
		{name: "wrapped hub 403", auth: "token alice-token", identifyErr: fmt.Errorf("identify: %w", &hubclient.APIError{Status: http.StatusForbidden}), wantCalls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakes{identifyErr: tt.identifyErr}
			h := NewHandler(prefix, f.deps())
			res := get(t, h, prefix+"fresh-token", tt.auth)
			checkError(t, "fresh-token", res, http.StatusUnauthorized, "unauthorized")
			if n := len(f.identified); n != tt.wantCalls {
				t.Errorf("Identify called %d times, want %d", n, tt.wantCalls)
			}
			if n := len(f.freshCalls()); n != 0 {
				t.Errorf("Fresh called %d times for an unauthenticated request, want 0", n)
			}
			if got := res.header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("GET fresh-token error Cache-Control = %q, want no-store", got)
			}
		})
	}
}

func TestFreshTokenIdentifyFailures(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{name: "hub 500", err: &hubclient.APIError{Status: http.StatusInternalServerError}, status: http.StatusBadGateway, code: "hub_error"},
		{name: "hub 503", err: fmt.Errorf("identify: %w", &hubclient.APIError{Status: http.StatusServiceUnavailable}), status: http.StatusBadGateway, code: "hub_error"},
		{name: "other", err: errors.New("dial tcp 127.0.0.1:8081: connection refused"), status: http.StatusInternalServerError, code: "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakes{identifyErr: tt.err}
			res := get(t, NewHandler(prefix, f.deps()), prefix+"fresh-token", "token alice-token")
			checkError(t, "fresh-token", res, tt.status, tt.code)
			if strings.Contains(res.raw, "127.0.0.1") {
				t.Errorf("error body %s shows internal details", res.raw)
			}
		})
	}
}

func TestFreshTokenAuthorization(t *testing.T) {
	tests := []struct {
		name     string
		auth     string
		query    string
		status   int
		code     string // for errors
		wantUser string // for success
	}{
		{name: "no access scope", auth: "token alice-unscoped", status: http.StatusForbidden, code: "forbidden"},
		{name: "no access scope, asking for self", auth: "token alice-unscoped", query: "?user=alice", status: http.StatusForbidden, code: "forbidden"},
		{name: "own user by name", auth: "token alice-token", query: "?user=alice", status: http.StatusOK, wantUser: "alice"},
		{name: "other user without scope", auth: "token alice-token", query: "?user=bob", status: http.StatusForbidden, code: "forbidden"},
		{name: "server token for another user", auth: "token server-token", query: "?user=bob", status: http.StatusForbidden, code: "forbidden"},
		{name: "unfiltered scope", auth: "token admin-token", query: "?user=bob", status: http.StatusOK, wantUser: "bob"},
		{name: "unfiltered scope, own", auth: "token admin-token", status: http.StatusOK, wantUser: "admin"},
		{name: "filtered scope for that user", auth: "token carol-for-bob", query: "?user=bob", status: http.StatusOK, wantUser: "bob"},
		{name: "filtered scope for a third user", auth: "token carol-for-bob", query: "?user=dave", status: http.StatusForbidden, code: "forbidden"},
		{name: "filtered scope, own", auth: "token carol-for-bob", status: http.StatusOK, wantUser: "carol"},
		{name: "service without user", auth: "token hook-token", status: http.StatusBadRequest, code: "bad_request"},
		{name: "service with user", auth: "token hook-token", query: "?user=alice", status: http.StatusOK, wantUser: "alice"},
		{name: "service without tokens scope", auth: "token hook-no-scope", query: "?user=alice", status: http.StatusForbidden, code: "forbidden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakes{}
			target := prefix + "fresh-token" + tt.query
			res := get(t, NewHandler(prefix, f.deps()), target, tt.auth)
			if tt.status != http.StatusOK {
				checkError(t, target, res, tt.status, tt.code)
				if n := len(f.freshCalls()); n != 0 {
					t.Errorf("GET %s: Fresh called %d times, want 0", target, n)
				}
				return
			}
			if res.status != http.StatusOK {
				t.Fatalf("GET %s with %q: status = %d, want 200; body %s", target, tt.auth, res.status, res.raw)
			}
			if res.body["user"] != tt.wantUser || res.body["access_token"] != "kc-access-for-"+tt.wantUser {
				t.Errorf("GET %s with %q: user, access_token = %v, %v; want %q and its token",
					target, tt.auth, res.body["user"], res.body["access_token"], tt.wantUser)
			}
			if diff := cmp.Diff([]freshCall{{User: tt.wantUser, MinValid: time.Minute}}, f.freshCalls()); diff != "" {
				t.Errorf("GET %s: Fresh calls mismatch (-want +got):\n%s", target, diff)
			}
		})
	}
}

func TestFreshTokenMinValid(t *testing.T) {
	tests := []struct {
		query string
		want  time.Duration
		bad   bool
	}{
		{query: "", want: 60 * time.Second},
		{query: "?min_valid=0", want: 0},
		{query: "?min_valid=120", want: 120 * time.Second},
		{query: "?min_valid=86400", want: 24 * time.Hour},
		{query: "?min_valid=abc", bad: true},
		{query: "?min_valid=-1", bad: true},
		{query: "?min_valid=999999", bad: true},
		{query: "?min_valid=86401", bad: true},
		{query: "?min_valid=1.5", bad: true},
		{query: "?min_valid=30s", bad: true},
		{query: "?min_valid=99999999999999999999", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			f := &fakes{}
			target := prefix + "fresh-token" + tt.query
			res := get(t, NewHandler(prefix, f.deps()), target, "token alice-token")
			if tt.bad {
				checkError(t, target, res, http.StatusBadRequest, "bad_request")
				if n := len(f.freshCalls()); n != 0 {
					t.Errorf("GET %s: Fresh called %d times, want 0", target, n)
				}
				return
			}
			if res.status != http.StatusOK {
				t.Fatalf("GET %s status = %d, want 200; body %s", target, res.status, res.raw)
			}
			if diff := cmp.Diff([]freshCall{{User: "alice", MinValid: tt.want}}, f.freshCalls()); diff != "" {
				t.Errorf("GET %s: Fresh calls mismatch (-want +got):\n%s", target, diff)
			}
		})
	}
}

func TestFreshTokenErrors(t *testing.T) {
	grantErr := errors.New(`oauth2: "invalid_grant" "Session not active"`)
	tests := []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{name: "no tokens", err: refresh.ErrNoTokens, status: http.StatusConflict, code: "login_required"},
		{name: "no tokens, wrapped", err: fmt.Errorf("read auth_state: %w", refresh.ErrNoTokens), status: http.StatusConflict, code: "login_required"},
		{name: "session ended", err: fmt.Errorf("%w (%w)", refresh.ErrSessionEnded, grantErr), status: http.StatusConflict, code: "login_required"},
		{name: "malformed", err: &refresh.MalformedError{Reason: "refresh_token missing"}, status: http.StatusConflict, code: "login_required"},
		{name: "malformed, wrapped", err: fmt.Errorf("x: %w", &refresh.MalformedError{Reason: "access_token: not a JWT"}), status: http.StatusConflict, code: "login_required"},
		{name: "unknown user", err: &hubclient.APIError{Status: http.StatusNotFound}, status: http.StatusNotFound, code: "unknown_user"},
		{name: "unknown user, wrapped", err: fmt.Errorf("read auth_state: %w", &hubclient.APIError{Status: http.StatusNotFound}), status: http.StatusNotFound, code: "unknown_user"},
		{name: "keycloak unavailable", err: fmt.Errorf("%w: %w", refresh.ErrUnavailable, errors.New("dial tcp: connection refused")), status: http.StatusServiceUnavailable, code: "unavailable"},
		{name: "hub admin token expired", err: fmt.Errorf("%w: %w", refresh.ErrUnavailable, refresh.ErrHubAdmin), status: http.StatusServiceUnavailable, code: "hub_admin"},
		{name: "stopping", err: refresh.ErrStopping, status: http.StatusServiceUnavailable, code: "stopping"},
		{name: "hub error", err: fmt.Errorf("write auth_state: %w", &hubclient.APIError{Status: http.StatusInternalServerError}), status: http.StatusBadGateway, code: "hub_error"},
		{name: "hub forbids", err: &hubclient.APIError{Status: http.StatusForbidden}, status: http.StatusBadGateway, code: "hub_error"},
		{name: "anything else", err: errors.New("database is locked"), status: http.StatusInternalServerError, code: "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakes{freshErr: tt.err}
			res := get(t, NewHandler(prefix, f.deps()), prefix+"fresh-token", "token alice-token")
			checkError(t, "fresh-token", res, tt.status, tt.code)
			if got := res.header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", got)
			}
			for _, secret := range []string{"kc-access", "database is locked", "connection refused", "Session not active"} {
				if strings.Contains(res.raw, secret) {
					t.Errorf("error body %s contains %q", res.raw, secret)
				}
			}
		})
	}
}

// TestFreshTokenMalformedReason: the caller learns why its stored tokens
// are unusable, since that is what it must fix by logging in again.
func TestFreshTokenMalformedReason(t *testing.T) {
	f := &fakes{freshErr: &refresh.MalformedError{Reason: "refresh_token missing"}}
	res := get(t, NewHandler(prefix, f.deps()), prefix+"fresh-token", "token alice-token")
	if msg, _ := res.body["message"].(string); !strings.Contains(msg, "refresh_token missing") {
		t.Errorf("GET fresh-token message = %q, want the reason", msg)
	}
}

// TestFreshTokenOverHTTP runs the handler behind a real server, as the
// proxy reaches it, and checks the reply end to end.
func TestFreshTokenOverHTTP(t *testing.T) {
	srv := httptest.NewServer(NewHandler(prefix, (&fakes{}).deps()))
	t.Cleanup(srv.Close)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+prefix+"fresh-token?min_valid=30", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "token alice-token")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("GET fresh-token = %d, Cache-Control %q; want 200, no-store", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
	var got tokenResponse
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("GET fresh-token body %s: %v", body, err)
	}
	want := tokenResponse{User: "alice", AccessToken: "kc-access-for-alice", TokenType: "Bearer", ExpiresAt: "2026-11-22T11:05:00Z", ExpiresIn: 300}
	if got != want {
		t.Errorf("GET fresh-token = %+v, want %+v", got, want)
	}
}
