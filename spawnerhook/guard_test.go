package spawnerhook

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
)

// Only a token holding the guard scope (and the access scope, checked by
// the same middleware as every route) may release the guard; being a hub
// admin is not enough.
func TestReleaseGuardNeedsTheGuardScope(t *testing.T) {
	for token, id := range map[string]hubclient.Identity{
		"hub-admin-token":    {Kind: "user", Name: "root", Admin: true, Scopes: []string{"admin:users", "access:services"}},
		"guard-token":        {Kind: "user", Name: "ops", Scopes: []string{"access:services!service=tokenkeeper", ScopeGuard}},
		"guard-no-access":    {Kind: "user", Name: "ops", Scopes: []string{ScopeGuard}},
		"admin-server-token": {Kind: "user", Name: "root", Admin: true, Scopes: []string{"access:services!service=tokenkeeper", "access:servers!server=root/"}},
	} {
		identities[token] = id
		t.Cleanup(func() { delete(identities, token) })
	}
	tests := []struct {
		name, auth string
		status     int
		released   int
	}{
		{name: "no token", auth: "", status: http.StatusUnauthorized},
		{name: "a user", auth: "token alice-token", status: http.StatusForbidden},
		{name: "a service with every other tokenkeeper scope", auth: "token hook-token", status: http.StatusForbidden},
		{name: "a hub admin without the scope", auth: "token hub-admin-token", status: http.StatusForbidden},
		{name: "a hub admin's server token", auth: "token admin-server-token", status: http.StatusForbidden},
		{name: "the guard scope without access to tokenkeeper", auth: "token guard-no-access", status: http.StatusForbidden},
		{name: "the guard scope", auth: "token guard-token", status: http.StatusOK, released: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			released := 0
			d := (&fakes{}).deps()
			d.ReleaseGuard = func(context.Context) error { released++; return nil }
			req := httptest.NewRequest(http.MethodPost, prefix+"guard/release", nil)
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			rec := httptest.NewRecorder()
			NewHandler(prefix, d).ServeHTTP(rec, req)
			if rec.Code != tt.status || released != tt.released {
				t.Errorf("POST guard/release = %d, released %d times; want %d, %d (body %s)",
					rec.Code, released, tt.status, tt.released, rec.Body)
			}
		})
	}
}
