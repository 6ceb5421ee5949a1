package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/spawnerhook"
)

// stateKey is 32 bytes, base64 encoded.
const stateKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

// seen is what a fake server saw of one request.
type seen struct {
	Method        string
	Path          string
	Query         string
	Authorization string
}

// recorder is an httptest server that records requests and answers with a handler.
type recorder struct {
	srv *httptest.Server

	mu   sync.Mutex // guards reqs
	reqs []seen
}

func newRecorder(t *testing.T, answer http.HandlerFunc) *recorder {
	t.Helper()
	rec := &recorder{}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.reqs = append(rec.reqs, seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Authorization")})
		rec.mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (rec *recorder) requests() []seen {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]seen(nil), rec.reqs...)
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestRunCheckConfig(t *testing.T) {
	hub := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {})
	kc := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {})
	env := map[string]string{
		"JUPYTERHUB_API_TOKEN":      "svc-token",
		"JUPYTERHUB_API_URL":        hub.srv.URL + "/hub/api",
		"JUPYTERHUB_SERVICE_URL":    "http://127.0.0.1:10101",
		"JUPYTERHUB_SERVICE_PREFIX": "/services/tokenkeeper/",
		"JUPYTERHUB_SERVICE_NAME":   "tokenkeeper",
		"TOKENKEEPER_ISSUER_URL":    kc.srv.URL + "/realms/jupyter",
		"TOKENKEEPER_CLIENT_SECRET": "client-secret",
		"TOKENKEEPER_STATE_KEY":     stateKey,
	}
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"--check-config"}, envOf(env), &stdout, &stderr); err != nil {
		t.Fatalf("run(--check-config) on a good configuration: %v", err)
	}
	if got, want := stdout.String(), "configuration OK\n"; got != want {
		t.Errorf("run(--check-config) stdout = %q, want %q", got, want)
	}
	if stderr.Len() != 0 {
		t.Errorf("run(--check-config) stderr = %q, want nothing", stderr.String())
	}
	// Checking the configuration contacts nobody.
	if n := len(hub.requests()) + len(kc.requests()); n != 0 {
		t.Errorf("run(--check-config) sent %d requests, want 0", n)
	}
	for _, secret := range []string{"svc-token", "client-secret", stateKey} {
		if strings.Contains(stdout.String()+stderr.String(), secret) {
			t.Errorf("run(--check-config) output contains the secret %q", secret)
		}
	}
}

func TestRunBadConfigListsEveryProblem(t *testing.T) {
	env := map[string]string{
		"JUPYTERHUB_API_URL":        "ftp://hub.example.org/hub/api",
		"JUPYTERHUB_SERVICE_PREFIX": "services/tokenkeeper",
		"TOKENKEEPER_KEEP":          "sometimes",
		"TOKENKEEPER_CONCURRENCY":   "0",
		"TOKENKEEPER_LOG_LEVEL":     "loud",
		"TOKENKEEPER_STATE_KEY":     "c2hvcnQ=",
	}
	for _, args := range [][]string{{"--check-config"}, nil} {
		t.Run(fmt.Sprintf("args %q", args), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), args, envOf(env), &stdout, &stderr)
			if err == nil {
				t.Fatalf("run(%q) on a bad configuration = nil, want an error", args)
			}
			lines := strings.Split(err.Error(), "\n")
			if lines[0] != "bad configuration:" {
				t.Errorf("first line = %q, want %q", lines[0], "bad configuration:")
			}
			var keys []string
			for _, l := range lines[1:] {
				item, ok := strings.CutPrefix(l, "  - ")
				if !ok {
					t.Errorf("line %q is not a list item", l)
					continue
				}
				key, _, _ := strings.Cut(item, ":")
				keys = append(keys, key)
			}
			want := []string{
				"JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL", "JUPYTERHUB_SERVICE_PREFIX",
				"client secret", "concurrency", "issuer_url (TOKENKEEPER_ISSUER_URL)", "keep", "log_level", "state key",
			}
			slices.Sort(keys)
			if diff := cmp.Diff(want, keys); diff != "" {
				t.Errorf("run(%q) problems mismatch (-want +got):\n%s\nerror:\n%v", args, diff, err)
			}
			if stdout.Len() != 0 {
				t.Errorf("run(%q) stdout = %q, want nothing", args, stdout.String())
			}
		})
	}
}

func TestRunUnknownFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"--no-such-flag"}, envOf(nil), &stdout, &stderr)
	if err == nil {
		t.Fatal("run(--no-such-flag) = nil, want an error")
	}
	if !strings.Contains(stderr.String(), "no-such-flag") {
		t.Errorf("run(--no-such-flag) stderr = %q, want it to name the flag", stderr.String())
	}
}

func TestRunRefusesStrayArguments(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "stray argument", args: []string{"bogus"}, want: `unexpected argument "bogus"`},
		{name: "after a flag", args: []string{"--check-config", "bogus"}, want: `unexpected argument "bogus"`},
		{name: "misspelt subcommand", args: []string{"tokens"}, want: "its subcommands are token and doctor"},
		{name: "stray argument to token", args: []string{"token", "bogus"}, want: `unexpected argument "bogus"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), tt.args, envOf(nil), &stdout, &stderr)
			if !errors.As(err, new(*config.UsageError)) {
				t.Fatalf("run(%q) = %v, want a *config.UsageError", tt.args, err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%q) error %q does not say %q", tt.args, err, tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("run(%q) stdout = %q, want nothing", tt.args, stdout.String())
			}
		})
	}
}

func TestRunTokenNamesTokenkeeperOnce(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel() // the first refused connection is the error, without retries
	env := map[string]string{"TOKENKEEPER_URL": srv.URL, "JUPYTERHUB_API_TOKEN": "nb-token"}
	err := run(ctx, []string{"token"}, envOf(env), &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || strings.HasPrefix(err.Error(), "tokenkeeper:") {
		t.Errorf("run(token) on a closed server = %v, want an error that main prefixes once", err)
	}
}

// allScopes are every scope requiredScopes can ask for.
var allScopes = []string{"list:users", "admin:auth_state", "admin:users", "read:servers", "read:tokens", "tokens", "delete:servers"}

func without(scopes []string, drop ...string) []string {
	return slices.DeleteFunc(slices.Clone(scopes), func(s string) bool { return slices.Contains(drop, s) })
}

func TestCheckScopes(t *testing.T) {
	tests := []struct {
		name        string
		scopes      []string
		revoke      bool
		stop        bool
		wantMissing []string // nil: no error
	}{
		{name: "all", scopes: allScopes, revoke: true, stop: true},
		{name: "no token scopes", scopes: without(allScopes, "tokens", "read:tokens"), revoke: true,
			wantMissing: []string{"read:tokens", "tokens"}},
		{name: "no token scopes, not revoking", scopes: without(allScopes, "tokens", "read:tokens"), revoke: false},
		{name: "no delete:servers, stopping", scopes: without(allScopes, "delete:servers"), revoke: true, stop: true,
			wantMissing: []string{"delete:servers"}},
		{name: "no delete:servers, not stopping", scopes: without(allScopes, "delete:servers"), revoke: true},
		{name: "filtered scopes do not count", scopes: append(without(allScopes, "admin:auth_state", "list:users"),
			"admin:auth_state!user=alice", "list:users!group=staff"), revoke: true,
			wantMissing: []string{"list:users", "admin:auth_state"}},
		{name: "none", scopes: nil, revoke: true, stop: true,
			wantMissing: []string{"list:users", "admin:auth_state", "admin:users", "read:servers", "read:tokens", "tokens", "delete:servers"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"kind":"service","name":"tokenkeeper","scopes":[%s]}`, quoteAll(tt.scopes))
			})
			cfg := config.Default()
			cfg.RevokeTokens, cfg.StopServers = tt.revoke, tt.stop
			_, err := checkScopes(t.Context(), hubclient.New(hub.srv.URL+"/hub/api", "svc-token"), cfg)
			if diff := cmp.Diff([]seen{{Method: "GET", Path: "/hub/api/user", Authorization: "token svc-token"}}, hub.requests()); diff != "" {
				t.Errorf("checkScopes requests mismatch (-want +got):\n%s", diff)
			}
			if tt.wantMissing == nil {
				if err != nil {
					t.Errorf("checkScopes with %q = %v, want nil", tt.scopes, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("checkScopes with %q = nil, want an error naming %q", tt.scopes, tt.wantMissing)
			}
			_, rest, ok := strings.Cut(err.Error(), "missing ")
			list, _, ok2 := strings.Cut(rest, " (")
			if !ok || !ok2 {
				t.Fatalf("checkScopes error %q does not list the missing scopes", err)
			}
			if diff := cmp.Diff(tt.wantMissing, strings.Split(list, ", ")); diff != "" {
				t.Errorf("checkScopes missing scopes mismatch (-want +got):\n%s\nerror: %v", diff, err)
			}
			if !strings.Contains(err.Error(), `service "tokenkeeper"`) {
				t.Errorf("checkScopes error %q does not name the service", err)
			}
		})
	}
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ",")
}

// Powerful scopes beyond what the settings need are reported by name (and
// do not stop tokenkeeper); those the settings need are not.
func TestExcessScopes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		id     hubclient.Identity
		revoke bool
		admins bool
		want   []string
	}{
		{name: "least", id: hubclient.Identity{Scopes: []string{"admin:users", "admin:auth_state", "list:users", "read:servers"}}},
		{name: "tokens without revoke_tokens", id: hubclient.Identity{Scopes: []string{"admin:users", "tokens", "read:tokens"}},
			want: []string{"tokens", "read:tokens"}},
		{name: "tokens with revoke_tokens", id: hubclient.Identity{Scopes: []string{"admin:users", "tokens", "read:tokens"}}, revoke: true},
		{name: "servers", id: hubclient.Identity{Scopes: []string{"admin:servers", "access:servers", "shutdown"}},
			want: []string{"admin:servers", "access:servers", "shutdown"}},
		{name: "admin role", id: hubclient.Identity{Admin: true}, want: []string{"the admin role"}},
		{name: "admin role with refresh_admins", id: hubclient.Identity{Admin: true}, admins: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.RevokeTokens, cfg.RefreshAdmins = tc.revoke, tc.admins
			if diff := cmp.Diff(tc.want, excessScopes(tc.id, cfg)); diff != "" {
				t.Errorf("excessScopes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheckScopesHubRefuses(t *testing.T) {
	hub := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"status":403,"message":"Forbidden"}`)
	})
	_, err := checkScopes(t.Context(), hubclient.New(hub.srv.URL+"/hub/api", "svc-token"), config.Default())
	if !hubclient.IsStatus(err, http.StatusForbidden) {
		t.Errorf("checkScopes when the hub refuses the token = %v, want a wrapped *APIError 403", err)
	}
}

// freshTokenBody is a fake tokenkeeper's successful answer.
const freshTokenBody = `{"user":"alice","access_token":"eyJ.access.alice","token_type":"Bearer",
	"expires_at":"2026-11-22T12:05:00Z","expires_in":300}`

// fakeKeeper is a tokenkeeper answering fresh-token with status and body.
func fakeKeeper(t *testing.T, status int, body string) *recorder {
	return newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	})
}

func TestRunToken(t *testing.T) {
	keeper := fakeKeeper(t, http.StatusOK, freshTokenBody)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	tests := []struct {
		name  string
		args  []string
		url   string // TOKENKEEPER_URL
		query string
	}{
		{name: "defaults", url: keeper.srv.URL + "/services/tokenkeeper", query: "min_valid=60"},
		{name: "trailing slash", url: keeper.srv.URL + "/services/tokenkeeper/", query: "min_valid=60"},
		{name: "min valid", args: []string{"--min-valid=5m"}, url: keeper.srv.URL + "/services/tokenkeeper", query: "min_valid=300"},
		{name: "url flag over environment", args: []string{"--url", keeper.srv.URL + "/services/tokenkeeper"}, url: closed.URL, query: "min_valid=60"},
		{name: "audience", args: []string{"--audience", "trino"}, url: keeper.srv.URL + "/services/tokenkeeper", query: "audience=trino&min_valid=60"},
		{name: "identity provider", args: []string{"--idp=external", "--min-valid=2m"}, url: keeper.srv.URL + "/services/tokenkeeper",
			query: "idp=external&min_valid=120"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(keeper.requests())
			env := map[string]string{"TOKENKEEPER_URL": tt.url, "JUPYTERHUB_API_TOKEN": "nb-token"}
			var stdout, stderr bytes.Buffer
			args := append([]string{"token"}, tt.args...)
			if err := run(t.Context(), args, envOf(env), &stdout, &stderr); err != nil {
				t.Fatalf("run(%q) error: %v", args, err)
			}
			if got, want := stdout.String(), "eyJ.access.alice\n"; got != want {
				t.Errorf("run(%q) stdout = %q, want %q", args, got, want)
			}
			if stderr.Len() != 0 {
				t.Errorf("run(%q) stderr = %q, want nothing", args, stderr.String())
			}
			want := []seen{{Method: "GET", Path: "/services/tokenkeeper/fresh-token", Query: tt.query, Authorization: "token nb-token"}}
			if diff := cmp.Diff(want, keeper.requests()[before:]); diff != "" {
				t.Errorf("run(%q) requests mismatch (-want +got):\n%s", args, diff)
			}
		})
	}
}

func TestRunTokenToFile(t *testing.T) {
	keeper := fakeKeeper(t, http.StatusOK, freshTokenBody)
	path := filepath.Join(t.TempDir(), "access_token")
	env := map[string]string{"TOKENKEEPER_URL": keeper.srv.URL, "JUPYTERHUB_API_TOKEN": "nb-token"}
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"token", "--file", path}, envOf(env), &stdout, &stderr); err != nil {
		t.Fatalf("run(token --file) error: %v", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), "eyJ.access.alice\n"; got != want {
		t.Errorf("token file = %q, want %q", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("token file mode = %v, want 0600", got)
	}
	if stdout.Len() != 0 {
		t.Errorf("run(token --file) stdout = %q, want nothing", stdout.String())
	}
}

func TestRunTokenErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		check  func(error) bool
		want   string // in the message
	}{
		{name: "login required", status: http.StatusConflict,
			body:  `{"error":"login_required","message":"The user has no valid Keycloak session: log in to JupyterHub again."}`,
			check: func(err error) bool { return errors.Is(err, spawnerhook.ErrLoginRequired) }, want: "log in"},
		{name: "service error", status: http.StatusBadGateway,
			body: `{"error":"hub_error","message":"JupyterHub did not answer as expected."}`,
			check: func(err error) bool {
				var serr *spawnerhook.ServiceError
				return errors.As(err, &serr) && serr.Status == http.StatusBadGateway
			}, want: "JupyterHub did not answer as expected."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keeper := fakeKeeper(t, tt.status, tt.body)
			path := filepath.Join(t.TempDir(), "access_token")
			env := map[string]string{"TOKENKEEPER_URL": keeper.srv.URL, "JUPYTERHUB_API_TOKEN": "nb-token"}
			for _, args := range [][]string{{"token"}, {"token", "--file", path}} {
				var stdout, stderr bytes.Buffer
				err := run(t.Context(), args, envOf(env), &stdout, &stderr)
				if !tt.check(err) {
					t.Errorf("run(%q) on HTTP %d = %v, want the %s error", args, tt.status, err, tt.name)
				}
				if err != nil && !strings.Contains(err.Error(), tt.want) {
					t.Errorf("run(%q) error %q does not say %q", args, err, tt.want)
				}
				if stdout.Len() != 0 {
					t.Errorf("run(%q) stdout = %q, want nothing", args, stdout.String())
				}
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("token file after a failure: Stat = %v, want it absent", err)
			}
		})
	}
}

func TestRunTokenUsageErrors(t *testing.T) {
	keeper := fakeKeeper(t, http.StatusOK, freshTokenBody)
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		want   []string // each in the message
		absent []string // none in the message
		lines  int
	}{
		{name: "nothing set", env: nil, want: []string{"TOKENKEEPER_URL", "JUPYTERHUB_API_TOKEN"}, lines: 2},
		{name: "no URL", env: map[string]string{"JUPYTERHUB_API_TOKEN": "nb-token"},
			want: []string{"TOKENKEEPER_URL"}, absent: []string{"JUPYTERHUB_API_TOKEN"}, lines: 1},
		{name: "no token", env: map[string]string{"TOKENKEEPER_URL": keeper.srv.URL},
			want: []string{"JUPYTERHUB_API_TOKEN"}, absent: []string{"TOKENKEEPER_URL"}, lines: 1},
		{name: "watch without file", args: []string{"--watch"},
			env:  map[string]string{"TOKENKEEPER_URL": keeper.srv.URL, "JUPYTERHUB_API_TOKEN": "nb-token"},
			want: []string{"--watch needs --file"}, absent: []string{"TOKENKEEPER_URL", "JUPYTERHUB_API_TOKEN"}, lines: 1},
		{name: "everything wrong", args: []string{"--watch"}, env: nil,
			want: []string{"TOKENKEEPER_URL", "JUPYTERHUB_API_TOKEN", "--watch needs --file"}, lines: 3},
		{name: "audience and idp", args: []string{"--audience", "trino", "--idp", "external"},
			env:  map[string]string{"TOKENKEEPER_URL": keeper.srv.URL, "JUPYTERHUB_API_TOKEN": "nb-token"},
			want: []string{"--audience and --idp exclude each other"}, lines: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"token"}, tt.args...)
			err := run(t.Context(), args, envOf(tt.env), &stdout, &stderr)
			if err == nil {
				t.Fatalf("run(%q) = nil, want an error", args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("run(%q) error %q does not mention %q", args, err, w)
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(err.Error(), a) {
					t.Errorf("run(%q) error %q mentions %q", args, err, a)
				}
			}
			if n := len(strings.Split(err.Error(), "\n")); n != tt.lines {
				t.Errorf("run(%q) error has %d lines, want %d: %q", args, n, tt.lines, err)
			}
		})
	}
	if n := len(keeper.requests()); n != 0 {
		t.Errorf("usage errors sent %d requests, want 0", n)
	}
}

func TestRunTokenBadFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"token", "--min-valid=soon"}, envOf(nil), &stdout, &stderr)
	if err == nil {
		t.Fatal("run(token --min-valid=soon) = nil, want an error")
	}
	if !strings.Contains(stderr.String(), "min-valid") {
		t.Errorf("stderr = %q, want it to name the flag", stderr.String())
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout = %q, want nothing", stdout.String())
	}
}
