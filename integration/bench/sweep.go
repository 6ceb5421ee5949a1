package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tokenkeeper/tokenkeeper/integration"
)

// Realm access token lifetimes: the test realm's, and the long one used to
// watch sweeps while nobody is due.
const (
	realmLife = 30 * time.Second
	idleLife  = 5 * time.Minute
)

// naiveConcurrency is the naive refresher's requests in flight
// (tokenkeeper's default concurrency).
const naiveConcurrency = 8

// sweepResult is the sweep measurement for one user count.
type sweepResult struct {
	Users int
	Setup time.Duration
	// Burst is everyone due at once: Wall runs from the sweep's first list
	// to the last user's "refreshed" line.
	Burst     counts
	BurstWall time.Duration
	Steady    counts
	Window    time.Duration
	// Late is how many of the window's refreshes came after the user's
	// previous access token had expired, of Known with a previous token.
	Late, Known int
	Naive       []naiveTick
	Idle        counts
	IdleWindow  time.Duration
}

// measureStack runs the stack measurements and stops the stack.
func measureStack(ctx context.Context, repo string, o options, rep *report) error {
	b, err := startStack(ctx, repo, o)
	if err != nil {
		return err
	}
	defer b.stop()
	rep.RunDir, rep.StackUp = b.runDir, b.up
	fmt.Printf("bench: stack up in %s (logs in %s)\n", b.up.Round(time.Second), b.runDir)
	rep.Machine.notePhase("fresh-token")
	if rep.Fresh, err = measureFreshToken(ctx, b, o); err != nil {
		return fmt.Errorf("fresh-token: %w", err)
	}
	if err := deleteHubUsers(ctx, b.Stack, []string{freshUser}); err != nil {
		return err
	}
	for _, n := range o.users {
		rep.Machine.notePhase(fmt.Sprintf("sweep, %d users", n))
		res, err := measureSweep(ctx, b, o, n)
		if err != nil {
			return fmt.Errorf("sweep with %d users: %w", n, err)
		}
		rep.Sweeps = append(rep.Sweeps, res)
	}
	return nil
}

// measureSweep sets up n users with tokenkeeper held, lets it refresh them
// all at once, watches a steady-state window, runs the naive refresher with
// tokenkeeper held, and watches sweeps while nobody is due. The users are
// deleted from the hub at the end.
func measureSweep(ctx context.Context, b *benchStack, o options, n int) (res sweepResult, err error) {
	res.Users = n
	names := userNames(n)
	b.gate.Shut()
	start := time.Now()
	due, err := populate(ctx, b.Stack, names)
	if err != nil {
		return res, err
	}
	res.Setup = time.Since(start)
	fmt.Printf("bench: %d users set up in %s\n", n, res.Setup.Round(time.Second))
	defer func() { err = errors.Join(err, deleteHubUsers(ctx, b.Stack, names)) }()
	if err := waitUntil(ctx, due.Add(time.Second)); err != nil {
		return res, err
	}
	if res.Burst, res.BurstWall, err = measureBurst(ctx, b, names); err != nil {
		return res, err
	}
	fmt.Printf("bench: %d users refreshed at once in %s\n", n, res.BurstWall.Round(10*time.Millisecond))
	if res.Steady, err = measureWindow(ctx, b, o.window); err != nil {
		return res, err
	}
	end := len(b.log.lines)
	res.Late, res.Known = b.log.late(end-res.Steady.Refreshed, end)
	res.Window = o.window
	if res.Naive, err = measureNaive(ctx, b, o); err != nil {
		return res, err
	}
	if res.Idle, res.IdleWindow, err = measureIdle(ctx, b, o, n); err != nil {
		return res, err
	}
	return res, nil
}

// measureBurst opens the gate with every user due and waits until each has
// been refreshed once.
func measureBurst(ctx context.Context, b *benchStack, names []string) (counts, time.Duration, error) {
	n := len(names)
	ours := make(map[string]bool, n)
	for _, name := range names {
		ours[name] = true
	}
	before, err := b.snapshot(ctx)
	if err != nil {
		return counts{}, 0, err
	}
	b.gate.Open()
	seen := map[string]time.Time{}
	err = integration.Poll(ctx, 10*time.Minute, 200*time.Millisecond, func() (bool, error) {
		if err := b.log.read(); err != nil {
			return false, err
		}
		for _, l := range b.log.lines[before.Refreshed:] {
			if _, ok := seen[l.User]; !ok && ours[l.User] {
				seen[l.User] = l.Time
			}
		}
		return len(seen) >= n, nil
	})
	if err != nil {
		return counts{}, 0, fmt.Errorf("waiting for %d users to be refreshed (%d were): %w", n, len(seen), err)
	}
	after, err := b.snapshot(ctx)
	if err != nil {
		return counts{}, 0, err
	}
	times := make([]time.Time, 0, len(seen))
	for _, t := range seen {
		times = append(times, t)
	}
	last := slices.MaxFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	return after.sub(before), last.Sub(b.gate.FirstList()), nil
}

// measureWindow counts tokenkeeper's traffic over d.
func measureWindow(ctx context.Context, b *benchStack, d time.Duration) (counts, error) {
	before, err := b.snapshot(ctx)
	if err != nil {
		return counts{}, err
	}
	if err := waitUntil(ctx, before.At.Add(d)); err != nil {
		return counts{}, err
	}
	after, err := b.snapshot(ctx)
	if err != nil {
		return counts{}, err
	}
	return after.sub(before), nil
}

// measureNaive holds tokenkeeper's sweeps and runs the naive refresher's ticks.
func measureNaive(ctx context.Context, b *benchStack, o options) ([]naiveTick, error) {
	if err := b.gate.Hold(ctx, 10*o.sweep); err != nil {
		return nil, err
	}
	defer b.gate.Open()
	nv := newNaive(b.Stack, naiveConcurrency)
	var ticks []naiveTick
	for range o.ticks {
		t, err := nv.tick(ctx)
		if err != nil {
			return ticks, err
		}
		fmt.Printf("bench: naive tick: %d hub requests, %d grants, %d failures in %s\n",
			t.HubRequests(), t.Grants, t.Failures, t.Wall.Round(10*time.Millisecond))
		ticks = append(ticks, t)
	}
	return ticks, nil
}

// measureIdle makes the realm issue long-lived tokens, waits until every
// user holds one (nobody is then due for minutes), and counts tokenkeeper's
// traffic over o.idle sweeps.
func measureIdle(ctx context.Context, b *benchStack, o options, n int) (counts, time.Duration, error) {
	if err := setAccessTokenLifespan(ctx, b.Stack, idleLife); err != nil {
		return counts{}, 0, err
	}
	defer func() { _ = setAccessTokenLifespan(context.WithoutCancel(ctx), b.Stack, realmLife) }()
	if err := waitAllLongLived(ctx, b, n); err != nil {
		return counts{}, 0, err
	}
	before, err := b.snapshot(ctx)
	if err != nil {
		return counts{}, 0, err
	}
	lists := int64(o.idle * pages(n))
	err = integration.Poll(ctx, time.Duration(o.idle+2)*o.sweep, 100*time.Millisecond, func() (bool, error) {
		return b.proxy.Lists.Load()-before.Lists >= lists, nil
	})
	if err != nil {
		return counts{}, 0, fmt.Errorf("waiting for %d sweeps: %w", o.idle, err)
	}
	after, err := b.snapshot(ctx)
	if err != nil {
		return counts{}, 0, err
	}
	return after.sub(before), after.At.Sub(before.At), nil
}

// waitAllLongLived polls tokenkeeper's metrics until it knows n users, none
// of whose access tokens expires within a minute, and nobody is due.
func waitAllLongLived(ctx context.Context, b *benchStack, n int) error {
	var last metrics
	err := integration.Poll(ctx, 3*time.Minute, time.Second, func() (bool, error) {
		m, err := scrape(ctx, b.ServiceURL()+"metrics")
		last = m
		return err == nil && m[`tokenkeeper_access_token_seconds_to_expiry_count`] == float64(n) &&
			m[`tokenkeeper_access_token_seconds_to_expiry_bucket{le="60"}`] == 0 &&
			m[`tokenkeeper_due_users`] == 0, err
	})
	if err != nil {
		return fmt.Errorf("waiting for long-lived tokens (users %v, expiring within 60 s %v): %w",
			last[`tokenkeeper_access_token_seconds_to_expiry_count`],
			last[`tokenkeeper_access_token_seconds_to_expiry_bucket{le="60"}`], err)
	}
	return nil
}

// pages is the number of list requests one sweep makes for n users.
func pages(n int) int { return max(1, (n+naivePage-1)/naivePage) }
