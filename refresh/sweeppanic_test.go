package refresh

import (
	"context"
	"iter"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
)

// panickyHub panics in the first list of users, as a bug in the sweep's
// own goroutine would.
type panickyHub struct {
	*fakeHub
	panics atomic.Int32
}

func (h *panickyHub) Users(ctx context.Context, q hubclient.UserQuery) iter.Seq2[hubclient.User, error] {
	if h.panics.Add(1) == 1 {
		panic("a bug in the sweep")
	}
	return h.fakeHub.Users(ctx, q)
}

// TestSweepPanicIsRecoveredAndShownInHealth: a panic in a sweep (gocron
// would swallow it, leaving a sweep that did nothing) is returned as an
// error, logged at error with its stack, and shown in health for ten
// minutes; the next sweep works.
func TestSweepPanicIsRecoveredAndShownInHealth(t *testing.T) {
	f := newFixture(t)
	f.addUser("alice", true, f.now, "rt-alice")
	keys, err := NewKeyring(testKey)
	if err != nil {
		t.Fatal(err)
	}
	opts := f.r.opts
	opts.Keys = keys
	r, err := New(context.Background(), &panickyHub{fakeHub: f.hub}, f.hub, f.grant.grant, f.store, opts)
	if err != nil {
		t.Fatal(err)
	}
	err = r.Sweep(context.Background())
	if err == nil || !strings.Contains(err.Error(), "panic: a bug in the sweep") {
		t.Fatalf("Sweep = %v, want the panic as an error", err)
	}
	if logs := f.logs.String(); !strings.Contains(logs, `"level":"ERROR","msg":"sweep panicked; the next sweep starts afresh"`) ||
		!strings.Contains(logs, "runtime/debug.Stack") {
		t.Errorf("logs = %s, want the panic at error with its stack", logs)
	}
	if got := r.Health(); len(got.Problems) != 1 || got.Problems[0].Class != ProblemSweepPanicked || got.State() != HealthUnhealthy {
		t.Errorf("health after the panic = %+v (%s), want sweep_panicked, unhealthy", got, got.State())
	}
	f.advance(sweepPanicShown - time.Second)
	if err := r.Sweep(context.Background()); err != nil {
		t.Fatalf("the next sweep = %v", err)
	}
	if got := r.Health(); len(got.Problems) != 1 {
		t.Errorf("health %s after the panic = %+v, want sweep_panicked still", sweepPanicShown-time.Second, got)
	}
	f.advance(time.Second)
	if got := r.Health(); len(got.Problems) != 0 {
		t.Errorf("health %s after the panic = %+v, want none", sweepPanicShown, got)
	}
}

// TestBudgetSkipsUsersRemovedSinceTheList: a back-channel logout's
// catch-up can remove a user between the sweep's list and its budget plan;
// the plan leaves that user out instead of reading a missing entry.
func TestBudgetSkipsUsersRemovedSinceTheList(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.HubRPS = 2 })
	f.addUser("alice", true, f.now, "rt-alice")
	if err := f.r.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.r.mu.Lock()
	_, known := f.r.users["alice"]
	f.r.mu.Unlock()
	if !known {
		t.Fatal("alice is not known after a sweep")
	}
	if got := f.r.budget([]string{"alice", "gone"}); len(got) != 1 || got[0] != "alice" {
		t.Errorf("budget(alice, gone) = %q, want [alice]", got)
	}
}
