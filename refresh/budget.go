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
	now := r.opts.Now()
	due = append(due, r.pullForward(due, now)...)
	expiry := func(name string) time.Time { return r.users[name].AccessExpiry }
	slices.SortStableFunc(due, func(a, b string) int { return expiry(a).Compare(expiry(b)) })
	short := 0
	for i, name := range due {
		// Only kept users whose token is still valid can be failed by the
		// budget; an expired one (an idle user, a hub admin) is not waiting
		// on it.
		if exp := expiry(name); r.users[name].Kept && exp.After(now) && r.reach(now, i+1).After(exp) {
			short++
		}
	}
	if short > 0 && r.short == 0 {
		r.log.Warn("the hub request budget cannot refresh every due user before their token expires; raise hub_max_rps",
			"due", len(due), "short", short, "hub_max_rps", r.opts.HubRPS)
	}
	r.short = short
	return due
}

// reach is when the budget, starting at now, has served n refreshes;
// now itself when there is no budget.
func (r *Refresher) reach(now time.Time, n int) time.Time {
	if r.opts.HubRPS <= 0 {
		return now
	}
	return now.Add(time.Duration(float64(n*requestsPerUpdate) / r.opts.HubRPS * float64(time.Second)))
}

// pullForward returns the waiting users to refresh now: walking every kept
// user soonest-expiring first, as the budget would serve them, it finds the
// last one who would be reached later than the schedule's margin before
// their expiry if waiting users waited for the next sweep, and returns every
// waiting user up to that one. Users already due count for the budget they
// take. Called with r.mu held.
func (r *Refresher) pullForward(due []string, now time.Time) []string {
	if r.opts.HubRPS <= 0 {
		return nil
	}
	isDue := make(map[string]bool, len(due))
	for _, name := range due {
		isDue[name] = true
	}
	var queue []*store.UserState
	for name, u := range r.users {
		if isDue[name] || (u.Kept && u.Status == store.StatusFresh && u.AccessExpiry.After(now)) {
			queue = append(queue, u)
		}
	}
	if len(queue) == len(due) || !r.late(now, len(queue), r.soonestWaiting(queue, isDue)) {
		return nil // quick exit: even the whole queue is reached in time
	}
	slices.SortFunc(queue, func(a, b *store.UserState) int { return a.AccessExpiry.Compare(b.AccessExpiry) })
	last := -1
	for i, u := range queue {
		if !isDue[u.Name] && r.late(now, i+1, u.AccessExpiry) {
			last = i
		}
	}
	var pulled []string
	for _, u := range queue[:last+1] {
		if !isDue[u.Name] {
			pulled = append(pulled, u.Name)
			u.Due = now
			r.probing[u.Name] = true // refreshed whatever its own schedule
		}
	}
	return pulled
}

// late reports whether the n-th refresh from now comes later than the
// schedule's margin before exp.
func (r *Refresher) late(now time.Time, n int, exp time.Time) bool {
	return r.reach(now, n).After(exp.Add(-r.opts.Schedule.Margin))
}

// soonestWaiting returns the earliest access-token expiry among the queued
// users not yet due.
func (r *Refresher) soonestWaiting(queue []*store.UserState, isDue map[string]bool) time.Time {
	var soonest time.Time
	for _, u := range queue {
		if !isDue[u.Name] && (soonest.IsZero() || u.AccessExpiry.Before(soonest)) {
			soonest = u.AccessExpiry
		}
	}
	return soonest
}
