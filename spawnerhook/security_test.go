package spawnerhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/refresh"
	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
)

const securityPrefix = "/services/tokenkeeper/"

// randomUsers returns n distinct user names drawn from rng, some with
// characters that need escaping in a query. Tokens are "tok-NAME", so the
// names have no white space.
func randomUsers(rng *rand.Rand, n int) []string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_.@+&=%ü"
	seen := map[string]bool{}
	var users []string
	for len(users) < n {
		r := make([]rune, 1+rng.IntN(10))
		letters := []rune(alphabet)
		for i := range r {
			r[i] = letters[rng.IntN(len(letters))]
		}
		name := string(r)
		if seen[name] {
			continue
		}
		seen[name] = true
		users = append(users, name)
	}
	return users
}

// userDeps are Deps for a hub where token "tok-U" belongs to user U, who
// may use the service and nothing more, and whose access token is "access-U".
// Fresh records whom it was asked for.
type userDeps struct {
	users map[string]bool

	mu    sync.Mutex // guards fresh
	fresh []string
}

func (u *userDeps) deps(log *slog.Logger) Deps {
	return Deps{
		Identify: func(ctx context.Context, token string) (hubclient.Identity, error) {
			name, ok := strings.CutPrefix(token, "tok-")
			if !ok || !u.users[name] {
				return hubclient.Identity{}, &hubclient.APIError{Method: "GET", Path: "/user", Status: http.StatusForbidden, Message: "Forbidden"}
			}
			return hubclient.Identity{Kind: "user", Name: name, Scopes: []string{"access:services!service=tokenkeeper"}}, nil
		},
		Fresh: func(ctx context.Context, user string, minValid time.Duration) (refresh.Tokens, error) {
			u.mu.Lock()
			u.fresh = append(u.fresh, user)
			u.mu.Unlock()
			return refresh.Tokens{Access: config.Secret("access-" + user), Expiry: time.Now().Add(5 * time.Minute), Type: "Bearer"}, nil
		},
		Health:       func() refresh.Health { return refresh.Health{} },
		AccessScopes: []string{"access:services", "access:services!service=tokenkeeper"},
		Name:         "tokenkeeper",
		Logger:       log,
		Now:          time.Now,
	}
}

// takeFresh returns and clears the users Fresh was asked for.
func (u *userDeps) takeFresh() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	f := u.fresh
	u.fresh = nil
	return f
}

// serve sends one GET to h and returns the status and body.
func serve(h http.Handler, target, authorization string) (int, string) {
	req := httptest.NewRequest(http.MethodGet, target, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// TestNoUserGetsAnotherUsersToken tries many random pairs of distinct users:
// A's token never yields B's access token, and always yields A's own.
func TestNoUserGetsAnotherUsersToken(t *testing.T) {
	const pairs = 2000
	rng := rand.New(rand.NewPCG(20261122, 1))
	names := randomUsers(rng, 300)
	u := &userDeps{users: map[string]bool{}}
	for _, n := range names {
		u.users[n] = true
	}
	h := NewHandler(securityPrefix, u.deps(slog.New(slog.DiscardHandler)))
	schemes := []string{"token ", "Bearer ", "bearer ", "TOKEN "}
	for i := range pairs {
		a := names[rng.IntN(len(names))]
		b := names[rng.IntN(len(names))]
		for b == a {
			b = names[rng.IntN(len(names))]
		}
		auth := schemes[rng.IntN(len(schemes))] + "tok-" + a
		minValid := fmt.Sprintf("min_valid=%d", rng.IntN(3600))

		// A asks for B, in a few spellings of the query.
		for _, q := range []string{
			"?user=" + url.QueryEscape(b) + "&" + minValid,
			"?" + minValid + "&user=" + url.QueryEscape(b),
			"?user=" + url.QueryEscape(b) + "&user=" + url.QueryEscape(a),
		} {
			target := securityPrefix + "fresh-token" + q
			status, body := serve(h, target, auth)
			if status != http.StatusForbidden {
				t.Fatalf("pair %d: %q asking for %q (%s): status %d, want 403; body %s", i, a, b, target, status, body)
			}
			if strings.Contains(body, "access-"+b) {
				t.Fatalf("pair %d: %q asking for %q got a body with B's token: %s", i, a, b, body)
			}
			var e errorBody
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error != "forbidden" {
				t.Fatalf("pair %d: %q asking for %q: body %s, want a forbidden error", i, a, b, body)
			}
			if f := u.takeFresh(); len(f) != 0 {
				t.Fatalf("pair %d: %q asking for %q made Fresh fetch %q", i, a, b, f)
			}
		}

		// A asks for itself, implicitly and by name.
		for _, q := range []string{"?" + minValid, "?user=" + url.QueryEscape(a) + "&" + minValid} {
			target := securityPrefix + "fresh-token" + q
			status, body := serve(h, target, auth)
			if status != http.StatusOK {
				t.Fatalf("pair %d: %q asking for itself (%s): status %d, want 200; body %s", i, a, target, status, body)
			}
			var got tokenResponse
			if err := json.Unmarshal([]byte(body), &got); err != nil {
				t.Fatalf("pair %d: body %s: %v", i, body, err)
			}
			if got.AccessToken != "access-"+a || got.User != a {
				t.Fatalf("pair %d: %q asking for itself got user %q, token %q; want its own", i, a, got.User, got.AccessToken)
			}
			if f := u.takeFresh(); len(f) != 1 || f[0] != a {
				t.Fatalf("pair %d: %q asking for itself made Fresh fetch %q, want [%q]", i, a, f, a)
			}
		}
	}
}

// TestForgedTokensGetNothing: tokens the hub does not know, and tokens of
// users that look like other users' tokens, never reach Fresh.
func TestForgedTokensGetNothing(t *testing.T) {
	u := &userDeps{users: map[string]bool{"alice": true, "bob": true}}
	h := NewHandler(securityPrefix, u.deps(slog.New(slog.DiscardHandler)))
	tests := []struct {
		name string
		auth string
	}{
		{name: "unknown user", auth: "token tok-mallory"},
		{name: "no prefix", auth: "token alice"},
		{name: "two tokens", auth: "token tok-alice tok-bob"},
		{name: "empty", auth: "token "},
		{name: "basic", auth: "Basic dG9rLWFsaWNlOg=="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := serve(h, securityPrefix+"fresh-token?user=bob", tt.auth)
			if status != http.StatusUnauthorized {
				t.Errorf("GET fresh-token with %q: status %d, want 401; body %s", tt.auth, status, body)
			}
			if strings.Contains(body, "access-") {
				t.Errorf("GET fresh-token with %q: body %s carries a token", tt.auth, body)
			}
			if f := u.takeFresh(); len(f) != 0 {
				t.Errorf("GET fresh-token with %q made Fresh fetch %q", tt.auth, f)
			}
		})
	}
}

// logSecrets are the credentials of TestLogsCarryNoTokens; none may be logged.
var logSecrets = []string{
	"tok-alice-5f1d2c", "tok-ci-8e77aa", // caller hub tokens
	"access-alice-93b0e1", // a user's Keycloak access token
	"sa-access-4c2f6d",    // the service account's token
	"logout-jwt-a7c3e9",   // a back-channel logout token
}

// TestLogsCarryNoTokens drives every handler and its error paths with a
// debug-level JSON logger and checks that no token reaches the log.
func TestLogsCarryNoTokens(t *testing.T) {
	var logBuf, panicBuf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))

	var (
		mu                                                 sync.Mutex // guards the fields below
		identifyErr, freshErr, serviceErr, jobErr, sessErr error
		logoutErr                                          error
		freshPanics                                        bool
	)
	set := func(f func()) { mu.Lock(); defer mu.Unlock(); f() }
	idents := map[string]hubclient.Identity{
		"tok-alice-5f1d2c": {Kind: "user", Name: "alice", Scopes: []string{"access:services"}},
		"tok-ci-8e77aa": {Kind: "service", Name: "ci", Scopes: []string{
			"access:services", ScopeTokens, ScopeServiceAccount,
		}},
	}
	d := Deps{
		Identify: func(ctx context.Context, token string) (hubclient.Identity, error) {
			mu.Lock()
			defer mu.Unlock()
			if identifyErr != nil {
				return hubclient.Identity{}, identifyErr
			}
			id, ok := idents[token]
			if !ok {
				return id, &hubclient.APIError{Method: "GET", Path: "/user", Status: 403, Message: "Forbidden"}
			}
			return id, nil
		},
		Fresh: func(ctx context.Context, user string, minValid time.Duration) (refresh.Tokens, error) {
			mu.Lock()
			defer mu.Unlock()
			if freshPanics {
				panic("fresh exploded")
			}
			return refresh.Tokens{Access: config.Secret("access-alice-93b0e1"), Expiry: time.Now().Add(time.Hour), Type: "Bearer"}, freshErr
		},
		Health: func() refresh.Health { return refresh.Health{} },
		ServiceToken: func(ctx context.Context, audience string) (*oauth2.Token, error) {
			mu.Lock()
			defer mu.Unlock()
			if serviceErr != nil {
				return nil, serviceErr
			}
			return &oauth2.Token{AccessToken: "sa-access-4c2f6d", Expiry: time.Now().Add(time.Hour)}, nil
		},
		JobStatus: func(ctx context.Context, system, id string) (serviceaccount.JobStatus, error) {
			mu.Lock()
			defer mu.Unlock()
			return serviceaccount.JobStatus{State: "running", Running: true}, jobErr
		},
		Status: func(ctx context.Context, user string) (refresh.UserStatus, error) {
			return refresh.UserStatus{Subject: "0b7e-subject"}, nil
		},
		Sessions: func(ctx context.Context, subject string) ([]serviceaccount.Session, error) {
			mu.Lock()
			defer mu.Unlock()
			return nil, sessErr
		},
		BackchannelLogout: func(ctx context.Context, raw string) ([]string, error) {
			mu.Lock()
			defer mu.Unlock()
			return []string{"alice"}, logoutErr
		},
		AccessScopes: []string{"access:services"},
		Name:         "tokenkeeper",
		Logger:       log,
		Now:          time.Now,
	}
	saved := gin.DefaultErrorWriter
	gin.DefaultErrorWriter = &panicBuf
	h := NewHandler(securityPrefix, d)
	gin.DefaultErrorWriter = saved

	retrieve := &oauth2.RetrieveError{
		Response: &http.Response{StatusCode: 503, Status: "503 Service Unavailable"},
		Body:     []byte(`{"error":"temporarily_unavailable"}`), ErrorCode: "temporarily_unavailable",
	}
	alice, ci := "token tok-alice-5f1d2c", "Bearer tok-ci-8e77aa"
	tests := []struct {
		name   string
		setup  func()
		method string
		target string
		auth   string
		status int
		logs   bool // whether this request must produce a log line
	}{
		{name: "fresh token", target: "fresh-token", auth: alice, status: 200},
		{name: "fresh token for a user", target: "fresh-token?user=alice", auth: ci, status: 200},
		{name: "unknown token", target: "fresh-token", auth: "token tok-mallory-000", status: 401},
		{name: "hub fails", setup: func() { identifyErr = &hubclient.APIError{Method: "GET", Path: "/user", Status: 500, Message: "boom"} },
			target: "fresh-token", auth: alice, status: 502, logs: true},
		{name: "hub unreachable", setup: func() {
			identifyErr = &url.Error{Op: "Get", URL: "http://127.0.0.1:8081/hub/api/user", Err: errors.New("connection refused")}
		}, target: "fresh-token", auth: alice, status: 503, logs: true},
		{name: "fresh fails", setup: func() { freshErr = errors.New("database is locked") },
			target: "fresh-token", auth: alice, status: 500, logs: true},
		{name: "keycloak unavailable", setup: func() { freshErr = fmt.Errorf("%w: %w", refresh.ErrUnavailable, retrieve) },
			target: "fresh-token?min_valid=120", auth: alice, status: 503, logs: true},
		{name: "session ended", setup: func() { freshErr = refresh.ErrSessionEnded }, target: "fresh-token", auth: alice, status: 409},
		{name: "service token", target: "service-token", auth: ci, status: 200},
		{name: "service token, no scope", target: "service-token", auth: alice, status: 403},
		{name: "service token fails", setup: func() { serviceErr = fmt.Errorf("service account: %w", retrieve) },
			target: "service-token", auth: ci, status: 503, logs: true},
		{name: "job status", target: "job-status?system=daint&job_id=42", auth: ci, status: 200},
		{name: "job API fails", setup: func() { jobErr = &serviceaccount.JobError{Status: 500, Message: "oops"} },
			target: "job-status?system=daint&job_id=42", auth: ci, status: 502, logs: true},
		{name: "status, sessions fail", setup: func() {
			sessErr = &serviceaccount.AdminError{Op: "sessions", Status: 403, Err: errors.New("403 Forbidden")}
		},
			target: "status?user=alice", auth: ci, status: 200, logs: true},
		{name: "logout", method: http.MethodPost, target: "backchannel-logout", status: 200},
		{name: "bad logout token", setup: func() { logoutErr = &refresh.LogoutTokenError{Err: errors.New("signature invalid")} },
			method: http.MethodPost, target: "backchannel-logout", status: 400},
		{name: "logout fails", setup: func() { logoutErr = errors.New("database is locked") },
			method: http.MethodPost, target: "backchannel-logout", status: 500, logs: true},
		{name: "panic", setup: func() { freshPanics = true }, target: "fresh-token", auth: alice, status: 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set(func() {
				identifyErr, freshErr, serviceErr, jobErr, sessErr, logoutErr, freshPanics = nil, nil, nil, nil, nil, nil, false
				if tt.setup != nil {
					tt.setup()
				}
			})
			before := logBuf.Len()
			var req *http.Request
			if tt.method == http.MethodPost {
				form := url.Values{"logout_token": {"eyJ.logout-jwt-a7c3e9.sig"}}
				req = httptest.NewRequest(http.MethodPost, securityPrefix+tt.target, strings.NewReader(form.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			} else {
				req = httptest.NewRequest(http.MethodGet, securityPrefix+tt.target, nil)
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Errorf("%s %s: status %d, want %d; body %s", req.Method, tt.target, rec.Code, tt.status, rec.Body)
			}
			if logged := logBuf.Len() > before; logged != tt.logs {
				t.Errorf("%s %s: logged = %v, want %v; log: %s", req.Method, tt.target, logged, tt.logs, logBuf.String()[before:])
			}
			if rec.Code >= 400 {
				for _, s := range logSecrets {
					if strings.Contains(rec.Body.String(), s) {
						t.Errorf("%s %s: error body %s carries %q", req.Method, tt.target, rec.Body, s)
					}
				}
			}
		})
	}
	if panicBuf.Len() == 0 {
		t.Error("the panic left no trace in gin's error writer")
	}
	for _, line := range strings.Split(strings.TrimSpace(logBuf.String()), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("log line %q is not JSON", line)
		}
	}
	all := logBuf.String() + panicBuf.String()
	for _, s := range logSecrets {
		if strings.Contains(all, s) {
			t.Errorf("the log carries the secret %q:\n%s", s, all)
		}
	}
}
