package refresh

import (
	"strings"
	"testing"
	"time"
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
