package spawnerhook

import (
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/refresh"
)

const testSpawnSecret = "Zk3v9Qp1-spawn-secret-of-the-hub-0123456789"

// spawnGet sends GET target with the given spawn secret headers (none when
// secrets is nil) and Authorization header ("" for none).
func spawnGet(t *testing.T, h http.Handler, target string, secrets []string, authorization string) response {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for _, s := range secrets {
		req.Header.Add(SpawnSecretHeader, s)
	}
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

// TestSpawnSecret: with the spawn secret configured, a request carrying it
// gets the named user's access token without any hub lookup; a wrong
// secret is refused and counted, and never falls back to the caller's
// JupyterHub token; the secret fetches nothing but a user's own access
// token from fresh-token.
func TestSpawnSecret(t *testing.T) {
	for _, tc := range []struct {
		name          string
		target        string
		secrets       []string
		authorization string
		wantStatus    int
		wantCode      string // error code; "" for a token answer
		wantUser      string
		wantMinValid  time.Duration
		// wantMessage is in the refusal's message: the spawn secret's own
		// refusal, not another check's.
		wantMessage string
	}{
		{name: "right secret", target: "fresh-token?min_valid=300&user=alice", secrets: []string{testSpawnSecret},
			wantStatus: http.StatusOK, wantUser: "alice", wantMinValid: 300 * time.Second},
		{name: "right secret and the server's token", target: "fresh-token?user=bob", secrets: []string{testSpawnSecret},
			authorization: "token alice-token", wantStatus: http.StatusOK, wantUser: "bob", wantMinValid: 60 * time.Second},
		{name: "wrong secret", target: "fresh-token?user=alice", secrets: []string{"wrong"},
			wantStatus: http.StatusUnauthorized, wantCode: "spawn_secret_invalid"},
		{name: "wrong secret with a valid token", target: "fresh-token?user=alice", secrets: []string{"wrong"},
			authorization: "token alice-token", wantStatus: http.StatusUnauthorized, wantCode: "spawn_secret_invalid"},
		{name: "prefix of the secret", target: "fresh-token?user=alice", secrets: []string{testSpawnSecret[:20]},
			wantStatus: http.StatusUnauthorized, wantCode: "spawn_secret_invalid"},
		{name: "secret and more", target: "fresh-token?user=alice", secrets: []string{testSpawnSecret + "x"},
			wantStatus: http.StatusUnauthorized, wantCode: "spawn_secret_invalid"},
		{name: "empty secret", target: "fresh-token?user=alice", secrets: []string{""},
			wantStatus: http.StatusUnauthorized, wantCode: "spawn_secret_invalid"},
		{name: "secret twice", target: "fresh-token?user=alice", secrets: []string{testSpawnSecret, testSpawnSecret},
			wantStatus: http.StatusUnauthorized, wantCode: "spawn_secret_invalid"},
		{name: "no user", target: "fresh-token", secrets: []string{testSpawnSecret},
			wantStatus: http.StatusBadRequest, wantCode: "bad_request"},
		{name: "empty user", target: "fresh-token?user=", secrets: []string{testSpawnSecret},
			wantStatus: http.StatusBadRequest, wantCode: "bad_request"},
		{name: "two users", target: "fresh-token?user=alice&user=bob", secrets: []string{testSpawnSecret},
			wantStatus: http.StatusBadRequest, wantCode: "bad_request"},
		{name: "an audience's token", target: "fresh-token?user=alice&audience=trino", secrets: []string{testSpawnSecret},
			wantStatus: http.StatusForbidden, wantCode: "forbidden", wantMessage: "not a derived one"},
		{name: "an identity provider's token", target: "fresh-token?user=alice&idp=github", secrets: []string{testSpawnSecret},
			wantStatus: http.StatusForbidden, wantCode: "forbidden", wantMessage: "not a derived one"},
		{name: "service-token", target: "service-token", secrets: []string{testSpawnSecret},
			wantStatus: http.StatusForbidden, wantCode: "forbidden", wantMessage: "only a user's access token from fresh-token"},
		{name: "status", target: "status?user=alice", secrets: []string{testSpawnSecret},
			wantStatus: http.StatusForbidden, wantCode: "forbidden", wantMessage: "only a user's access token from fresh-token"},
		{name: "job-status", target: "job-status?system=a&job_id=1", secrets: []string{testSpawnSecret},
			wantStatus: http.StatusForbidden, wantCode: "forbidden", wantMessage: "only a user's access token from fresh-token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakes{}
			d := f.deps()
			d.SpawnSecret = testSpawnSecret
			// The fake hub: the spawn secret must not cost a lookup.
			d.Identify = func(context.Context, string) (hubclient.Identity, error) {
				t.Errorf("GET %s with the spawn secret asked the hub who owns a token", tc.target)
				return hubclient.Identity{}, &hubclient.APIError{Status: http.StatusForbidden}
			}
			d.Status = func(context.Context, string) (refresh.UserStatus, error) {
				t.Errorf("GET %s with the spawn secret reached status", tc.target)
				return refresh.UserStatus{}, nil
			}
			reg := prometheus.NewRegistry()
			d.Requests = NewRequestMetrics(reg)
			h := NewHandler(prefix, d)
			res := spawnGet(t, h, prefix+tc.target, tc.secrets, tc.authorization)
			if tc.wantCode != "" {
				checkError(t, tc.target, res, tc.wantStatus, tc.wantCode)
				if msg, _ := res.body["message"].(string); !strings.Contains(msg, tc.wantMessage) {
					t.Errorf("GET %s message = %q, want one saying %q", tc.target, msg, tc.wantMessage)
				}
				if len(f.freshCalls()) != 0 {
					t.Errorf("GET %s: Fresh or Derived called %v; want no call", tc.target, f.freshCalls())
				}
			} else {
				if res.status != tc.wantStatus {
					t.Fatalf("GET %s status = %d, want %d; body %s", tc.target, res.status, tc.wantStatus, res.raw)
				}
				want := map[string]any{
					"user": tc.wantUser, "access_token": "kc-access-for-" + tc.wantUser, "token_type": "Bearer",
					"expires_at": "2026-11-22T11:05:00Z", "expires_in": 300.0,
				}
				if diff := cmp.Diff(want, res.body); diff != "" {
					t.Errorf("GET %s: body mismatch (-want +got):\n%s", tc.target, diff)
				}
				if diff := cmp.Diff([]freshCall{{User: tc.wantUser, MinValid: tc.wantMinValid}}, f.freshCalls()); diff != "" {
					t.Errorf("Fresh calls mismatch (-want +got):\n%s", diff)
				}
			}
			wantRefused := 0.0
			if tc.wantCode == "spawn_secret_invalid" {
				wantRefused = 1
			}
			if got := testutil.ToFloat64(d.Requests.spawnRefused); got != wantRefused {
				t.Errorf("tokenkeeper_spawn_secret_refused_total = %v, want %v", got, wantRefused)
			}
			if strings.Contains(res.raw, testSpawnSecret) || strings.Contains(strings.ToLower(res.raw), "refresh_token") {
				t.Errorf("GET %s answered %s: the secret or a refresh token", tc.target, res.raw)
			}
		})
	}
}

// TestSpawnSecretNotConfigured: without the setting, the spawn secret's
// header means nothing and the caller's JupyterHub token decides, as before.
func TestSpawnSecretNotConfigured(t *testing.T) {
	for _, tc := range []struct {
		name          string
		target        string
		authorization string
		wantStatus    int
		wantIdentify  []string
	}{
		{name: "with the server's token", target: "fresh-token?user=alice", authorization: "token server-token",
			wantStatus: http.StatusOK, wantIdentify: []string{"server-token"}},
		{name: "another user's token", target: "fresh-token?user=bob", authorization: "token alice-token",
			wantStatus: http.StatusForbidden, wantIdentify: []string{"alice-token"}},
		{name: "no token", target: "fresh-token?user=alice", wantStatus: http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakes{}
			h := NewHandler(prefix, f.deps())
			res := spawnGet(t, h, prefix+tc.target, []string{testSpawnSecret}, tc.authorization)
			if res.status != tc.wantStatus {
				t.Errorf("GET %s status = %d, want %d; body %s", tc.target, res.status, tc.wantStatus, res.raw)
			}
			f.mu.Lock()
			identified := f.identified
			f.mu.Unlock()
			if diff := cmp.Diff(tc.wantIdentify, identified); diff != "" {
				t.Errorf("hub lookups mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSpawnSecretComparedInConstantTime reads the package's source: the
// spawn secret is only tested for being set or compared with
// crypto/subtle's ConstantTimeCompare, never with == or a string function,
// whose time would tell an attacker how much of a guess was right.
func TestSpawnSecretComparedInConstantTime(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	constantTime := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		// allowed are the uses of SpawnSecret checked below.
		allowed := map[ast.Node]bool{}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && isIdent(sel.X, "subtle") && sel.Sel.Name == "ConstantTimeCompare" {
					for _, arg := range n.Args {
						ast.Inspect(arg, func(m ast.Node) bool {
							if s, ok := m.(*ast.SelectorExpr); ok && s.Sel.Name == "SpawnSecret" {
								allowed[s] = true
								constantTime++
							}
							return true
						})
					}
				}
			case *ast.BinaryExpr:
				if lit, ok := n.Y.(*ast.BasicLit); ok && lit.Value == `""` {
					if s, ok := n.X.(*ast.SelectorExpr); ok && s.Sel.Name == "SpawnSecret" {
						allowed[s] = true
					}
				}
			}
			return true
		})
		ast.Inspect(file, func(n ast.Node) bool {
			if s, ok := n.(*ast.SelectorExpr); ok && s.Sel.Name == "SpawnSecret" && !allowed[s] {
				t.Errorf("%s: the spawn secret is used other than in subtle.ConstantTimeCompare or a test for being set", fset.Position(s.Pos()))
			}
			return true
		})
	}
	if constantTime == 0 {
		t.Error("no subtle.ConstantTimeCompare of the spawn secret found")
	}
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}
