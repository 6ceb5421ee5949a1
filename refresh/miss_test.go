package refresh

import (
	"context"
	"testing"
	"time"
)

// A fresh-token call that finds nothing to serve is remembered for the
// user: 100 calls cost at most one hub read and no grant, for a hub admin
// whose token expired, a user with no tokens, and an expired token while
// Keycloak is down and the user backs off.
func TestMissesAreRemembered(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, f *fixture)
	}{
		{"hub admin", func(t *testing.T, f *fixture) {
			f.addUser("u", true, f.now.Add(-10*time.Minute), "rt-u")
			f.hub.admins["u"] = true
		}},
		{"no tokens", func(t *testing.T, f *fixture) { f.setState("u", []byte(`{}`)) }},
		{"keycloak down", func(t *testing.T, f *fixture) {
			f.addUser("u", true, f.now.Add(-10*time.Minute), "rt-u")
			f.grant.fail = func(string) error { return grantError(503, "temporarily_unavailable", "Keycloak is starting") }
			f.sweep(t) // the grant fails: the user backs off
			f.grant.calls.Store(0)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			tc.setup(t, f)
			reads, grants := f.hub.reads.Load(), f.grant.calls.Load()
			for range 100 {
				if _, err := f.r.Fresh(context.Background(), "u", time.Minute); err == nil {
					t.Fatal("Fresh served a token; the case needs a miss")
				}
			}
			if got := f.hub.reads.Load() - reads; got > 1 {
				t.Errorf("hub reads for 100 calls = %d, want at most 1", got)
			}
			if got := f.grant.calls.Load() - grants; got != 0 {
				t.Errorf("grants for 100 calls = %d, want 0", got)
			}
		})
	}
}
