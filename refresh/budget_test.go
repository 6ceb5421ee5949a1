package refresh

import (
	"fmt"
	"maps"
	"slices"
	"strings"
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

// TestShortfall counts only the users a higher budget would save: kept
// users whose token is still valid when the sweep starts but who expire
// before this budget reaches them.
func TestShortfall(t *testing.T) {
	now := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) budgeted { return budgeted{kept: true, expiry: now.Add(d)} }
	times := func(n int, u budgeted) []budgeted {
		us := make([]budgeted, n)
		for i := range us {
			us[i] = u
		}
		return us
	}
	perSecond := func(n int) time.Time { return now.Add(time.Duration(n) * time.Second) }
	for _, tt := range []struct {
		name  string
		due   []budgeted
		reach func(int) time.Time
		want  int
	}{
		{name: "nobody due", reach: perSecond, want: 0},
		{name: "tokens expired while down", due: times(20, at(-10*time.Minute)), reach: perSecond, want: 0},
		{name: "tokens expiring as the sweep starts", due: times(20, at(0)), reach: perSecond, want: 0},
		{name: "no known expiry", due: times(5, budgeted{kept: true}), reach: perSecond, want: 0},
		{name: "budget reaches everyone", due: times(10, at(time.Minute)), reach: perSecond, want: 0},
		// Reached at 1..10 s: those served after 5 s expire waiting.
		{name: "a higher budget would reach them", due: times(10, at(5*time.Second)), reach: perSecond, want: 5},
		{name: "not kept", due: times(10, budgeted{expiry: now.Add(5 * time.Second)}), reach: perSecond, want: 0},
		// The expired users still take the budget's first 20 seconds.
		{name: "after expired users", due: append(times(20, at(-time.Minute)), times(5, at(30*time.Second))...), reach: perSecond, want: 0},
		{name: "after expired users, reached late", due: append(times(20, at(-time.Minute)), times(5, at(22*time.Second))...), reach: perSecond, want: 3},
		{name: "unlimited budget", due: times(10, at(time.Second)), reach: func(int) time.Time { return now }, want: 0},
	} {
		if got := shortfall(now, tt.due, tt.reach); got != tt.want {
			t.Errorf("%s: shortfall = %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestBudgetRestartWithExpiredTokens: 20 kept users whose tokens expired
// while tokenkeeper was down are all due after the restart, and a small
// budget takes a while to refresh them; none of them is a budget problem,
// so health shows no shortfall and the log does not advise raising
// hub_max_rps.
func TestBudgetRestartWithExpiredTokens(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.HubRPS, o.SweepInterval = 1, 5*time.Second })
	for i := range 20 {
		f.addUser(fmt.Sprintf("u%02d", i), true, f.now, fmt.Sprintf("rt-%d", i))
	}
	f.sweep(t) // reads everyone's token
	f.advance(10 * time.Minute)
	f.r = f.newRefresher(t, func(o *Options) { o.HubRPS, o.SweepInterval = 1, 5*time.Second })
	f.logs.Reset()
	f.r.mu.Lock()
	due := slices.Collect(maps.Keys(f.r.users))
	for _, u := range f.r.users {
		if !u.Kept || u.AccessExpiry.IsZero() || u.AccessExpiry.After(f.now) {
			t.Fatalf("restored %+v, want a kept user whose known token has expired", *u)
		}
	}
	f.r.mu.Unlock()
	f.r.budget(due)
	if h := f.r.Health(); hasProblem(h, ProblemHubBudget) {
		t.Errorf("health %+v reports a budget shortfall for tokens that expired while down", h)
	}
	if strings.Contains(f.logs.String(), "raise hub_max_rps") {
		t.Errorf("log advises raising hub_max_rps for tokens that expired while down:\n%s", f.logs)
	}
}

// TestBudgetLeavesHubAdminsOut: a hub admin whose token the hub is about to
// refresh itself is not a user the budget could save: no shortfall.
func TestBudgetLeavesHubAdminsOut(t *testing.T) {
	for _, tc := range []struct {
		status store.Status
		short  bool
	}{{store.StatusAdmin, false}, {store.StatusFresh, true}} {
		f := newFixture(t, func(o *Options) { o.HubRPS = 1 })
		f.r.mu.Lock()
		f.r.users["ada"] = &store.UserState{Name: "ada", Status: tc.status, Kept: true, Due: f.now, AccessExpiry: f.now.Add(time.Second)}
		f.r.mu.Unlock()
		f.r.budget([]string{"ada"})
		if got := hasProblem(f.r.Health(), ProblemHubBudget); got != tc.short {
			t.Errorf("%s user due with 1 s left at 1 request/s: hub_budget = %t, want %t", tc.status, got, tc.short)
		}
	}
}
