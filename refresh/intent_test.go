package refresh

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// afterIntent's safety rule, over every small input: a token whose grants'
// outcomes are unknown is spent again only while Keycloak would still
// accept it (spends so far ≤ Max Reuse), only for the token the hub holds,
// and an intent for another token is always dropped.
func TestAfterIntentNeverSpendsBeyondMaxReuse(t *testing.T) {
	held := store.Digest{1}
	for maxReuse := range 4 {
		for spends := range 6 {
			for _, ok := range []bool{false, true} {
				for _, spent := range []store.Digest{held, {2}} {
					in := store.Intent{Spent: spent, Spends: spends}
					step := afterIntent(in, ok, held, maxReuse)
					uses := spends + 1 // were the token spent once more
					if step == intentRetry && (!ok || spent != held || uses > 1+maxReuse) {
						t.Errorf("afterIntent(spends=%d, ok=%t, same=%t, maxReuse=%d) = retry: Keycloak would refuse it",
							spends, ok, spent == held, maxReuse)
					}
					if want := ok && spent != held; (step == intentStale) != want {
						t.Errorf("afterIntent(spends=%d, ok=%t, same=%t, maxReuse=%d) = %d, stale should be %t",
							spends, ok, spent == held, maxReuse, step, want)
					}
					if ok && spent == held && step == intentNone {
						t.Errorf("afterIntent(spends=%d, maxReuse=%d) ignores an unknown outcome", spends, maxReuse)
					}
				}
			}
		}
	}
}

// The intent is durable before the grant is sent: a crash while waiting
// for Keycloak leaves it.
func TestIntentIsWrittenBeforeTheGrant(t *testing.T) {
	f := newFixture(t)
	f.addUser("alice", true, f.now.Add(-4*time.Minute), "rt-alice")
	var seen atomic.Bool
	f.grant.fail = func(refresh string) error {
		in, ok, err := f.store.Intent(context.Background(), "alice")
		seen.Store(err == nil && ok && in.Spent == digest(refresh) && in.Spends == 1)
		return nil
	}
	if _, err := f.r.Fresh(t.Context(), "alice", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if !seen.Load() {
		t.Error("no intent for the spent token in the store while the grant was in flight")
	}
	if _, ok, _ := f.store.Intent(t.Context(), "alice"); ok {
		t.Error("intent still present after the tokens were written back")
	}
}

// A grant whose answer a proxy lost (Keycloak rotated the token) is spent
// again at once when the realm allows one reuse: the session is kept, with
// two grants. With no reuse allowed it is not spent again: introspection
// says whether the lost grant took effect.
func TestLostGrantAnswer(t *testing.T) {
	for _, tc := range []struct {
		name      string
		maxReuse  int
		processed bool // whether Keycloak processed the grant whose answer was lost
		grants    int32
		ended     bool
	}{
		{name: "reuse 1: spent again at once", maxReuse: 1, processed: true, grants: 2},
		{name: "reuse 0, grant took effect: introspection says the token is spent", maxReuse: 0, processed: true, grants: 1, ended: true},
		{name: "reuse 0, grant never arrived: introspection says it is good", maxReuse: 0, processed: false, grants: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, func(o *Options) { o.MaxReuse = 1 })
			f.r = f.newRefresher(t, func(o *Options) { o.MaxReuse, o.Introspect = tc.maxReuse, f.grant.active })
			f.grant.maxReuse = tc.maxReuse
			f.addUser("alice", true, f.now.Add(-4*time.Minute), "rt-alice")
			if tc.processed {
				f.grant.lose = func(n int32) bool { return n == 1 }
			} else {
				f.grant.fail = func(string) error {
					if f.grant.calls.Load() == 1 {
						return proxyPage(504)
					}
					return nil
				}
			}
			_, err := f.r.Fresh(t.Context(), "alice", 2*time.Minute)
			if got := f.grant.calls.Load(); got != tc.grants {
				t.Errorf("grants = %d, want %d", got, tc.grants)
			}
			if tc.ended {
				if !errors.Is(err, ErrSessionEnded) {
					t.Errorf("Fresh = %v, want ErrSessionEnded", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Fresh = %v, want the new token", err)
			}
			if got := f.hub.state(t, "alice").Refresh.Reveal(); got != "rt-2" {
				t.Errorf("hub's refresh token = %q, want rt-2 (from the second grant)", got)
			}
		})
	}
}

// After a crash while a grant was in flight, the next start settles the
// intent it left: with reuse allowed it spends the token again; without,
// it never does (that would end the client's session) and asks
// introspection.
func TestRestartSettlesAGrantLeftUnknown(t *testing.T) {
	for _, tc := range []struct {
		maxReuse int
		grants   int32
		refresh  string
	}{
		{maxReuse: 1, grants: 1, refresh: "rt-1"},
		{maxReuse: 0, grants: 0, refresh: "rt-alice"},
	} {
		t.Run(map[int]string{0: "reuse 0", 1: "reuse 1"}[tc.maxReuse], func(t *testing.T) {
			f := newFixture(t)
			f.addUser("alice", true, f.now, "rt-alice")
			f.grant.maxReuse = tc.maxReuse
			f.grant.spent["rt-alice"], f.grant.uses = true, map[string]int{"rt-alice": 1} // processed; answer lost in the crash
			in := store.Intent{User: "alice", Spent: digest("rt-alice"), Spends: 1, Created: f.now}
			if err := f.store.Apply(t.Context(), store.Change{Intent: &in}); err != nil {
				t.Fatal(err)
			}
			var probes atomic.Int32
			introspect := func(ctx context.Context, rt config.Secret) (bool, error) {
				probes.Add(1)
				return f.grant.active(ctx, rt)
			}
			r := f.newRefresher(t, func(o *Options) { o.MaxReuse, o.Introspect = tc.maxReuse, introspect })
			if err := r.Replay(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := f.grant.calls.Load(); got != tc.grants {
				t.Errorf("grants at start = %d, want %d", got, tc.grants)
			}
			if got := f.hub.state(t, "alice").Refresh.Reveal(); got != tc.refresh {
				t.Errorf("hub's refresh token = %q, want %q", got, tc.refresh)
			}
			if tc.maxReuse == 0 && probes.Load() != 1 {
				t.Errorf("introspections = %d, want 1", probes.Load())
			}
		})
	}
}

// Stop waits for a grant in flight only until its context ends, then
// cancels it and returns within abortWait; the grant's intent stays, so
// the next start knows the outcome is unknown.
func TestStopCancelsAGrantThatOutlastsTheWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t)
		f.addUser("alice", true, f.now.Add(-4*time.Minute), "rt-alice")
		f.r = f.newRefresher(t, func(o *Options) { o.GrantTimeout = time.Hour })
		f.grant.fail = func(string) error { return errors.New("unreachable") }
		started := make(chan struct{})
		f.r.grant = func(ctx context.Context, _ config.Secret) (*oauth2.Token, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		}
		done := make(chan error, 1)
		go func() { _, err := f.r.Fresh(context.Background(), "alice", 2*time.Minute); done <- err }()
		<-started
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		begin := time.Now()
		if err := f.r.Stop(ctx); err != nil {
			t.Fatalf("Stop = %v", err)
		}
		if took := time.Since(begin); took > 3*time.Second+abortWait {
			t.Errorf("Stop took %s, want at most %s", took, 3*time.Second+abortWait)
		}
		<-done
		in, ok, err := f.store.Intent(context.Background(), "alice")
		if err != nil || !ok || in.Spent != digest("rt-alice") {
			t.Errorf("intent after a cancelled grant = %+v, %t, %v; want the spent token's", in, ok, err)
		}
		if !strings.Contains(f.logs.String(), "outcome unknown") {
			t.Error("no log line says the grant's outcome is unknown")
		}
	})
}

// An idle user (no server) whose session an admin ended without a
// back-channel logout is logged out within idleCheck and an access-token
// lifetime, found by introspection, never by a grant (which would move the
// session's idle timer).
func TestIdleUserWhoseSessionEndedIsFoundByIntrospection(t *testing.T) {
	f := newFixture(t)
	kc := &aliveSet{alive: map[string]bool{}}
	f.r = f.newRefresher(t, func(o *Options) { o.Introspect = kc.introspect })
	f.addSession("idle", false, f.now, 2*time.Minute, f.now.Add(time.Hour), "a")
	kc.alive[f.hub.state(t, "idle").Refresh.Reveal()] = true
	f.sweep(t)
	for range 4 { // alive: checked, kept
		f.advance(2 * time.Minute)
		f.sweep(t)
	}
	if f.loggedOut("idle") || kc.calls == 0 {
		t.Fatalf("alive idle user: logged out %t, introspections %d; want kept and checked", f.loggedOut("idle"), kc.calls)
	}
	kc.mu.Lock()
	clear(kc.alive) // an admin ends the session in Keycloak; no back-channel
	kc.mu.Unlock()
	deadline := f.now.Add(idleCheck + 2*time.Minute + 15*time.Second)
	for !f.loggedOut("idle") && f.now.Before(deadline) {
		f.advance(15 * time.Second)
		f.sweep(t)
	}
	if !f.loggedOut("idle") {
		t.Errorf("idle user whose session ended not logged out by %s", deadline)
	}
	if got := f.grant.calls.Load(); got != 0 {
		t.Errorf("grants for an idle user = %d, want 0", got)
	}
}
