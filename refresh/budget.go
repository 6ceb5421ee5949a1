package refresh

import (
	"slices"
	"time"

	"github.com/tokenkeeper/tokenkeeper/store"
)

// requestsPerUpdate is about what one user's refresh costs the hub: the
// read, the re-read before the write-back, and the write-back.
const requestsPerUpdate = 3

// budget plans a sweep under the hub request budget. It brings forward kept
// users who, left to their own due time, could no longer all be reached
// before their tokens expire; orders the due users soonest-expiring first;
// and counts those whose token will still expire before the budget reaches
// them.
func (r *Refresher) budget(due []string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	// A user removed since the sweep listed them (a back-channel logout's
	// catch-up) has nothing left to refresh.
	due = slices.DeleteFunc(due, func(name string) bool { return r.users[name] == nil })
	due = append(due, r.pullForward(due, now)...)
	expiry := func(name string) time.Time { return r.users[name].AccessExpiry }
	slices.SortStableFunc(due, func(a, b string) int { return expiry(a).Compare(expiry(b)) })
	planned := make([]budgeted, len(due))
	for i, name := range due {
		// A hub admin's tokens are the hub's to refresh (skipped unless
		// refresh_admins): no budget saves them.
		u := r.users[name]
		planned[i] = budgeted{kept: u.Kept && u.Status != store.StatusAdmin, expiry: expiry(name)}
	}
	short := shortfall(now, planned, func(n int) time.Time { return r.reach(now, n) })
	if short > 0 && r.short == 0 {
		r.log.Warn("the hub request budget cannot refresh every due user before their token expires; raise hub_max_rps",
			"due", len(due), "short", short, "hub_max_rps", r.opts.HubRPS)
	}
	r.short = short
	return due
}

// budgeted is a due user as the shortfall sees them: whether their tokens
// are kept fresh, and when their access token expires.
type budgeted struct {
	kept   bool
	expiry time.Time
}

// shortfall counts the users of a sweep, in the order the budget serves
// them, whom a higher budget would save: kept users whose access token is
// still valid when the sweep starts them, which is as soon as even an
// unlimited budget could reach them, but who expire before reach(n), when
// this budget has served the first n. A user whose token has already
// expired (while tokenkeeper was down, or an idle user's) or has no known
// expiry is not waiting on the budget and is not counted, though the
// refresh still takes its share of the budget.
func shortfall(now time.Time, due []budgeted, reach func(n int) time.Time) int {
	short := 0
	for i, u := range due {
		if u.kept && u.expiry.After(now) && reach(i+1).After(u.expiry) {
			short++
		}
	}
	return short
}

// reach is when the budget, starting at now, has served n refreshes;
// now itself when there is no budget.
func (r *Refresher) reach(now time.Time, n int) time.Time {
	if r.opts.HubRPS <= 0 {
		return now
	}
	return now.Add(time.Duration(float64(n*requestsPerUpdate) / r.opts.HubRPS * float64(time.Second)))
}

// pullForward returns the waiting users to refresh now. It plays the
// sweeps ahead: every kept user, soonest-expiring first, refreshed one
// after the other at the budget's pace, each no earlier than their own due
// time, must be reached before their deadline (half the schedule's slack
// before expiry). When that plan fails,
// the budget needs to start earlier than the schedule would: once waiting
// another sweep would leave too little time, it starts now every waiting
// user up to the last one the plan fails. Users already due count for the
// budget they take. Called with r.mu held.
func (r *Refresher) pullForward(due []string, now time.Time) []string {
	if r.opts.HubRPS <= 0 {
		return nil
	}
	per := r.reach(now, 1).Sub(now)
	queue := r.budgetQueue(due, now, per)
	latest, last := time.Time{}, -1 // the latest start that still reaches everyone, and the user it binds on
	t, feasible := now, true
	for i, q := range queue {
		t = later(t, q.release).Add(per)
		feasible = feasible && !t.After(q.deadline)
		if start := q.deadline.Add(-time.Duration(i+1) * per); latest.IsZero() || start.Before(latest) {
			latest, last = start, i
		}
	}
	if feasible || now.Add(r.opts.SweepInterval).Before(latest) {
		return nil
	}
	var pulled []string
	for _, q := range queue[:last+1] {
		if u := q.user; !q.due {
			pulled = append(pulled, u.Name)
			u.Due = now
			r.probing[u.Name] = true // refreshed whatever its own schedule
		}
	}
	return pulled
}

// queued is a kept user in the budget's plan.
type queued struct {
	user              *store.UserState
	due               bool
	release, deadline time.Time
}

// budgetQueue returns the due users and the kept users with a valid token
// who are waiting (not those at their session's maximum), soonest-expiring first, with when each can be started
// (now, or their due time) and their deadline; per is one refresh's share
// of the budget.
// Called with r.mu held.
func (r *Refresher) budgetQueue(due []string, now time.Time, per time.Duration) []queued {
	isDue := make(map[string]bool, len(due))
	for _, name := range due {
		isDue[name] = true
	}
	var queue []queued
	for name, u := range r.users {
		d := isDue[name]
		_, capped := r.capped[name] // at the SSO maximum: refreshing early moves nothing
		if !d && (capped || !(u.Kept && u.Status == store.StatusFresh && u.AccessExpiry.After(now))) {
			continue
		}
		q := queued{user: u, due: d, release: now}
		if !d {
			q.release = u.Due
		}
		// Half the schedule's slack before expiry, and never before a
		// refresh started at the user's own due time is done: only users
		// queueing for the budget can miss their deadline, not a token
		// whose schedule leaves it little slack (near the SSO maximum).
		q.deadline = later(u.AccessExpiry.Add(-max(u.AccessExpiry.Sub(u.Due), 0)/2), q.release.Add(per))
		queue = append(queue, q)
	}
	slices.SortFunc(queue, func(a, b queued) int { return a.user.AccessExpiry.Compare(b.user.AccessExpiry) })
	return queue
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
