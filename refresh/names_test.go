package refresh

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/store"
)

// A hub user whose name holds a NUL (which would make it another user's
// derived-token key in a naive key space) is left alone, with one log line
// however many sweeps see it; the others are refreshed as usual.
func TestUnusableNamesAreSkippedWithOneLine(t *testing.T) {
	f := newFixture(t)
	f.addUser("alice", true, f.now.Add(-290*time.Second), "rt-alice")
	f.addUser("alice\x00audience\x00trino", true, f.now.Add(-290*time.Second), "rt-evil")
	for range 3 {
		f.sweep(t)
	}
	if got := strings.Count(f.logs.String(), "the name cannot be used"); got != 1 {
		t.Errorf("log lines about the unusable name = %d, want 1", got)
	}
	if f.grant.calls.Load() != 1 {
		t.Errorf("grants = %d, want 1 (alice only)", f.grant.calls.Load())
	}
	if _, ok := f.r.user("alice\x00audience\x00trino"); ok {
		t.Error("the unusable name was scheduled")
	}
}

// A user the hub no longer has (deleted, or renamed) is forgotten at the
// first 404: cached token, schedule and the cached identities of their
// tokens (UserGone), with one line that says so and no "refresh failed".
func TestDeletedUserIsForgottenAtTheFirst404(t *testing.T) {
	f := newFixture(t)
	var gone []string
	f.r = f.newRefresher(t, func(o *Options) { o.UserGone = func(name string) { gone = append(gone, name) } })
	f.addUser("alice", true, f.now, "rt-alice")
	if _, err := f.r.Fresh(t.Context(), "alice", time.Minute); err != nil {
		t.Fatal(err)
	}
	f.hub.mu.Lock()
	delete(f.hub.states, "alice")
	f.hub.mu.Unlock()
	f.advance(270 * time.Second) // the cached token needs a refresh: the hub is read
	for range 3 {
		if _, err := f.r.Fresh(t.Context(), "alice", time.Minute); !errors.Is(err, ErrUserGone) {
			t.Fatalf("Fresh for a deleted user = %v, want ErrUserGone", err)
		}
	}
	if len(gone) == 0 || gone[0] != "alice" {
		t.Errorf("UserGone calls = %v, want alice", gone)
	}
	if _, ok := f.r.user("alice"); ok {
		t.Error("the deleted user is still scheduled")
	}
	logs := f.logs.String()
	if n := strings.Count(logs, "the hub no longer has this user"); n != 1 {
		t.Errorf("log lines saying the user is gone = %d, want 1", n)
	}
	if strings.Contains(logs, "refresh failed") {
		t.Error(`a deleted user logged "refresh failed"`)
	}
}

// TestDeletedUserIsForgottenAtTheSweep: a user the sweep's list no longer
// has is forgotten the same way as at a 404: the cached identities of their
// tokens go (UserGone), one line says so, and the sessions that mapped to
// them name nobody afterwards.
func TestDeletedUserIsForgottenAtTheSweep(t *testing.T) {
	f := newFixture(t)
	var gone []string
	f.r = f.newRefresher(t, func(o *Options) { o.UserGone = func(name string) { gone = append(gone, name) } })
	f.addUser("alice", true, f.now, "rt-alice")
	f.sweep(t)
	if err := f.store.PutSession(t.Context(), store.Session{SID: "s-alice", Sub: "sub-alice", Name: "alice", Updated: f.now}); err != nil {
		t.Fatal(err)
	}
	f.hub.mu.Lock()
	delete(f.hub.states, "alice")
	f.hub.mu.Unlock()
	f.sweep(t)
	if len(gone) != 1 || gone[0] != "alice" {
		t.Errorf("UserGone calls = %v, want alice once", gone)
	}
	if n := strings.Count(f.logs.String(), "the hub no longer has this user"); n != 1 {
		t.Errorf("log lines saying the user is gone = %d, want 1", n)
	}
	if names, _ := f.store.UsersForSession(t.Context(), "s-alice", "sub-alice"); len(names) != 0 {
		t.Errorf("after the deletion the session still names %v", names)
	}
}

// Excess hub scopes found at start are a degrading health problem that
// names them.
func TestHealthNamesExcessScopes(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.ExcessScopes = []string{"tokens", "the admin role"} })
	h := f.r.Health()
	if h.State() != HealthDegraded || len(h.Problems) != 1 || h.Problems[0].Class != ProblemExcessScopes ||
		h.Problems[0].Detail != "tokens, the admin role" {
		t.Errorf("Health() = %+v (%s), want degraded excess_scopes naming tokens and the admin role", h, h.State())
	}
}
