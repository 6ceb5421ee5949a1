package refresh

import (
	"fmt"
	"testing"
	"time"
)

// TestBudgetBringsUsersForward: 100 kept users whose 5-minute tokens were
// issued together need 150 s of a 2 requests-per-second budget. Left to
// their own due time (⅔–80 % of the life, 100–60 s before expiry) most of
// them would expire waiting for it; the plan starts them early enough that
// the budget reaches the last before the schedule's margin, and not before
// it has to. Without a budget they wait for their due time.
func TestBudgetBringsUsersForward(t *testing.T) {
	const users, rps = 100, 2.0
	for _, tt := range []struct {
		rps                  float64
		earliest, beforeThan time.Duration // first grants, after the tokens' issue
	}{
		// 300 s life - 20 s margin - 100×3/2 s of budget = 130 s.
		{rps: rps, earliest: 130 * time.Second, beforeThan: 200 * time.Second},
		{rps: 0, earliest: 200 * time.Second, beforeThan: 255 * time.Second},
	} {
		f := newFixture(t, func(o *Options) { o.HubRPS = tt.rps })
		issued := f.now
		for i := range users {
			f.addUser(fmt.Sprintf("u%03d", i), true, issued, fmt.Sprintf("rt-%d", i))
		}
		f.sweep(t) // reads everyone; nobody is due yet
		if got := f.grant.calls.Load(); got != 0 {
			t.Fatalf("rps %v: first sweep made %d grants, want 0", tt.rps, got)
		}
		var first time.Duration
		for f.grant.calls.Load() == 0 && f.now.Sub(issued) < 5*time.Minute {
			f.advance(5 * time.Second)
			f.sweep(t)
			first = f.now.Sub(issued)
		}
		if first < tt.earliest || first >= tt.beforeThan {
			t.Errorf("rps %v: first grants %v after issue, want in [%v, %v)", tt.rps, first, tt.earliest, tt.beforeThan)
		}
		if tt.rps > 0 {
			if got := f.grant.calls.Load(); got != users {
				t.Errorf("rps %v: the sweep that brought users forward made %d grants, want %d", tt.rps, got, users)
			}
			if h := f.r.Health(); hasProblem(h, ProblemHubBudget) {
				t.Errorf("rps %v: health %+v reports a budget shortfall the plan avoided", tt.rps, h)
			}
		}
	}
}
