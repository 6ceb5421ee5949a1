package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tokenkeeper/tokenkeeper/integration"
)

// realmLife is the realm's access token lifetime during the bench:
// Keycloak's default.
const realmLife = 5 * time.Minute

// naiveConcurrency is the naive refresher's requests in flight
// (tokenkeeper's default concurrency).
const naiveConcurrency = 8

// sweepResult is the sweep measurement for one user count.
type sweepResult struct {
	Users int
	Setup time.Duration
	// IssueSpread is the time between the first and the last user's token.
	IssueSpread time.Duration
	// Burst runs from the gate's opening to every user's first refresh.
	Burst     counts
	BurstWall time.Duration
	// BurstLate is the users first refreshed after their token had expired.
	BurstLate int
	// Busiest is the most hub requests tokenkeeper made in one second of
	// the burst and the window.
	Busiest int64
	Steady  counts
	Window  time.Duration
	// Late is how many of the window's refreshes came after the user's
	// previous access token had expired, of Known with a previous token.
	Late, Known int
	// Interval is the mean time between two refreshes of one user, over
	// the window's Pairs of consecutive refreshes.
	Interval time.Duration
	Pairs    int
	Naive    []naiveTick
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
	var fresh []string
	for _, mv := range freshMinValids {
		fresh = append(fresh, freshUserName(mv))
	}
	if err := deleteHubUsers(ctx, b.Stack, fresh); err != nil {
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

// measureSweep sets up n users with tokenkeeper held, then lets it see them
// all at once (their tokens fall due together) and waits until it has
// refreshed each once, watches a steady-state window, and runs the naive
// refresher with tokenkeeper held. The users are deleted from the hub at the
// end.
func measureSweep(ctx context.Context, b *benchStack, o options, n int) (res sweepResult, err error) {
	res.Users = n
	names := userNames(n)
	b.gate.Shut()
	start := time.Now()
	is, err := populate(ctx, b.Stack, names)
	if err != nil {
		return res, err
	}
	res.Setup, res.IssueSpread = time.Since(start), is.Last.Sub(is.First)
	fmt.Printf("bench: %d users set up in %s, tokens issued within %s\n", n, res.Setup.Round(time.Second),
		res.IssueSpread.Round(time.Second))
	defer func() { err = errors.Join(err, deleteHubUsers(ctx, b.Stack, names)) }()
	opened := time.Now()
	if err := measureBurst(ctx, b, is, &res); err != nil {
		return res, err
	}
	fmt.Printf("bench: %d users first refreshed within %s of being seen, %d after expiry\n", n,
		res.BurstWall.Round(time.Second), res.BurstLate)
	if res.Steady, err = measureWindow(ctx, b, o.window); err != nil {
		return res, err
	}
	res.Busiest, _ = b.gate.Busiest(opened, time.Now())
	end := len(b.log.lines)
	res.Late, res.Known = b.log.late(end-res.Steady.Refreshed, end)
	res.Interval, res.Pairs = b.log.interval(end-res.Steady.Refreshed, end, is.Expiry)
	res.Window = o.window
	if res.Naive, err = measureNaive(ctx, b, o); err != nil {
		return res, err
	}
	return res, nil
}

// measureBurst opens the gate and waits until every user has been refreshed
// once, noting who was refreshed only after their first token expired.
func measureBurst(ctx context.Context, b *benchStack, is issued, res *sweepResult) error {
	before, err := b.snapshot(ctx)
	if err != nil {
		return err
	}
	b.gate.Open()
	first := map[string]time.Time{}
	err = integration.Poll(ctx, 2*realmLife, 200*time.Millisecond, func() (bool, error) {
		if err := b.log.read(); err != nil {
			return false, err
		}
		for _, l := range b.log.lines[before.Refreshed:] {
			if _, ours := is.Expiry[l.User]; ours && first[l.User].IsZero() {
				first[l.User] = l.Time
			}
		}
		return len(first) >= len(is.Expiry), nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %d users to be refreshed (%d were): %w", len(is.Expiry), len(first), err)
	}
	after, err := b.snapshot(ctx)
	if err != nil {
		return err
	}
	var last time.Time
	for name, t := range first {
		if t.After(is.Expiry[name]) {
			res.BurstLate++
		}
		if t.After(last) {
			last = t
		}
	}
	res.Burst, res.BurstWall = after.sub(before), last.Sub(before.At)
	return nil
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

// pages is the number of list requests one sweep makes for n users.
func pages(n int) int { return max(1, (n+naivePage-1)/naivePage) }
