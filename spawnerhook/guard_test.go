package spawnerhook

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
)

func TestReleaseGuardOnlyByHubAdmin(t *testing.T) {
	identities["hub-admin-token"] = hubclient.Identity{Kind: "user", Name: "root", Admin: true, Scopes: []string{"admin:users"}}
	t.Cleanup(func() { delete(identities, "hub-admin-token") })
	tests := []struct {
		name, auth string
		status     int
		released   int
	}{
		{name: "no token", auth: "", status: http.StatusUnauthorized},
		{name: "a user", auth: "token alice-token", status: http.StatusForbidden},
		{name: "a service with every tokenkeeper scope", auth: "token hook-token", status: http.StatusForbidden},
		{name: "a hub admin", auth: "token hub-admin-token", status: http.StatusOK, released: 1},
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
