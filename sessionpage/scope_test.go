package sessionpage_test

import (
	"testing"

	"github.com/tokenkeeper/tokenkeeper/sessionpage"
	"github.com/tokenkeeper/tokenkeeper/spawnerhook"
)

// TestScopeGuardIsSpawnerhooks: the page and the API release the guard
// for the same scope.
func TestScopeGuardIsSpawnerhooks(t *testing.T) {
	if sessionpage.ScopeGuard != spawnerhook.ScopeGuard {
		t.Errorf("sessionpage.ScopeGuard = %q, spawnerhook.ScopeGuard = %q", sessionpage.ScopeGuard, spawnerhook.ScopeGuard)
	}
}
