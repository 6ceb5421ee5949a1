package refresh

import (
	"fmt"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/store"
)

// TestBudgetBringsUsersForward: 100 kept users whose 5-minute tokens were
// issued together need 150 s of a 2 requests-per-second budget. Left to
// their own due time (⅔–80 % of the life, 100–60 s before expiry) most of
// them would expire waiting for it; the plan starts them early enough that
// the budget reaches the last before its deadline (half the schedule's
// slack, 30–50 s, before expiry), and not a sweep before it has to.
// Without a budget they wait for their due time.
func TestBudgetBringsUsersForward(t *testing.T) {
	const users, rps = 100, 2.0
	for _, tt := range []struct {
		rps                  float64
		earliest, beforeThan time.Duration // first grants, after the tokens' issue
	}{
		// 300 s life - 30..50 s - 100×3/2 s of budget = 100..120 s, a sweep (5 s) earlier at most.
		{rps: rps, earliest: 95 * time.Second, beforeThan: 125 * time.Second},
		{rps: 0, earliest: 200 * time.Second, beforeThan: 255 * time.Second},
	} {
		f := newFixture(t, func(o *Options) { o.HubRPS, o.SweepInterval = tt.rps, 5*time.Second })
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
			// Every user up to the one the plan binds on: nearly all of them.
			if got := f.grant.calls.Load(); got < users*9/10 {
				t.Errorf("rps %v: the sweep that brought users forward made %d grants, want at least %d", tt.rps, got, users*9/10)
			}
			if h := f.r.Health(); hasProblem(h, ProblemHubBudget) {
				t.Errorf("rps %v: health %+v reports a budget shortfall the plan avoided", tt.rps, h)
			}
		}
	}
}

// TestBudgetLeavesUsersItCanReachToTheirSchedule: 8 kept users with 30 s
// tokens, a 2 s sweep and a schedule margin longer than the tokens live
// (a sweep plus 3 × http_timeout), under a budget that reaches them all
// easily: nobody is brought forward, each is refreshed at most once per
// ⅔ of their token's life.
func TestBudgetLeavesUsersItCanReachToTheirSchedule(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.HubRPS, o.SweepInterval = 25, 2*time.Second
		o.Schedule = Schedule{Window: time.Minute, Margin: 32 * time.Second}
	})
	f.grant.life = 30 * time.Second
	for i := range 8 {
		f.addSession(fmt.Sprintf("u%d", i), true, f.now.Add(-time.Duration(i)*time.Second), 30*time.Second, f.now.Add(5*time.Minute), "a")
	}
	for range 60 { // 2 minutes
		f.sweep(t)
		f.advance(2 * time.Second)
	}
	// At most one refresh per 20 s each, and one more for the first.
	if got, most := f.grant.calls.Load(), int32(8*(120/20+1)); got > most {
		t.Errorf("2 minutes of sweeps made %d grants for 8 users, want at most %d", got, most)
	}
}

// TestBudgetLeavesUsersAtTheirSessionMaximum: ten users whose sessions end
// together at the SSO maximum hold short last tokens with little slack.
// Refreshing them early moves nothing, so the plan leaves them to their
// own due time; were they not at the maximum, the same tokens would be
// brought forward.
func TestBudgetLeavesUsersAtTheirSessionMaximum(t *testing.T) {
	for _, capped := range []bool{true, false} {
		f := newFixture(t, func(o *Options) { o.HubRPS, o.SweepInterval = 25, 2*time.Second })
		f.r.mu.Lock()
		for i := range 10 {
			name := fmt.Sprintf("u%d", i)
			f.r.users[name] = &store.UserState{Name: name, Status: store.StatusFresh, Kept: true,
				Due: f.now.Add(2900 * time.Millisecond), AccessExpiry: f.now.Add(3 * time.Second)}
			if capped {
				f.r.capped[name] = store.Digest{}
			}
		}
		pulled := f.r.pullForward(nil, f.now)
		f.r.mu.Unlock()
		if want := map[bool]int{true: 0, false: 10}[capped]; len(pulled) != want {
			t.Errorf("at the maximum %v: brought forward %d users, want %d", capped, len(pulled), want)
		}
	}
}
