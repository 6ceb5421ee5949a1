package refresh

// tokenkeeper processes as the simulation runs them: started, swept on
// schedule, stopped by SIGTERM, crashed, restarted with rotated keys.

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"
)

// tick starts the sweep when it is due, unless the last one still runs (as
// gocron's singleton mode does).
func (w *simWorld) tick() {
	if time.Now().Before(w.nextSweep) {
		return
	}
	for !time.Now().Before(w.nextSweep) {
		w.nextSweep = w.nextSweep.Add(w.cfg.interval)
	}
	if w.gen.sweeping() {
		w.logf("sweep skipped: the previous one still runs")
		return
	}
	w.startSweep(w.gen, false)
}

// logf adds a line to the model trace.
func (w *simWorld) logf(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.note(format, args...)
}

func (w *simWorld) startSweep(gen *simGen, replay bool) {
	done := make(chan struct{})
	gen.sweepDone = done
	w.logf("sweep by %s%s", gen.p.name, map[bool]string{true: " (after replaying the journal)"}[replay])
	w.bg.Go(func() {
		defer close(done)
		if replay {
			if err := gen.eng.replay(gen.ctx); err != nil {
				w.logf("%s: replay: %v", gen.p.name, err)
			}
		}
		_ = gen.eng.sweep(gen.ctx)
	})
}

// startGen starts a tokenkeeper process as cmd/tokenkeeper does: open the
// store, replay the journal, sweep at once and then on schedule.
func (w *simWorld) startGen() {
	w.align()
	w.gens++
	p := &simProc{name: fmt.Sprintf("tk#%d", w.gens), tk: true}
	c := w.cfg
	cfg := simEngineConfig{
		Interval: c.interval, Keep: c.keep, Window: c.window, Recheck: c.recheck(), GrantTimeout: 30 * time.Second,
		Concurrency: c.concurrency, RevokeTokens: c.revoke, StopServers: c.stopServers,
		Keys: slices.Clone(w.keys), Rand: rand.New(rand.NewPCG(c.seed, uint64(w.gens))), Skew: c.tkSkew,
		Logger: slog.New(simLogHandler{w: w, p: p}).With("proc", p.name),
	}
	if c.guard {
		cfg.GuardMin, cfg.GuardFraction = 5, 0.5
	}
	if c.endSessions {
		cfg.EndSessions = func(ctx context.Context, sub string) error { return w.kc.endUser(ctx, p, sub) }
	}
	cfg.MaxReuse = c.realm.maxReuse
	cfg.Introspect = func(ctx context.Context, rt string) (bool, error) { return w.kc.introspect(ctx, p, rt) }
	grant := func(ctx context.Context, rt string) (*oauth2.Token, error) { return w.kc.grant(ctx, p, rt) }
	eng, err := simOpen(context.Background(), w.dbPath(), cfg, &simHubConn{h: w.hub, p: p}, grant)
	if err != nil {
		w.t.Fatalf("start %s: %v", p.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gen := &simGen{p: p, eng: eng, ctx: ctx, cancel: cancel}
	w.mu.Lock()
	w.gen = gen
	w.mu.Unlock()
	w.startSweep(gen, true)
	w.nextSweep = time.Now().Add(c.interval)
}

// simHubGrace is how long JupyterHub lets a managed service stop: SIGINT,
// SIGTERM 10 s later, SIGKILL 5 s after that.
const simHubGrace = 15 * time.Second

// stopGen is a restart's SIGINT as cmd/tokenkeeper handles it: the sweep's
// context is cancelled and the refresher stopped at once, the HTTP server
// drains for up to 5 s, the store is closed, and the process exits. What is
// still running when the hub's grace ends dies by SIGKILL, as in a crash.
func (w *simWorld) stopGen(gen *simGen) {
	start := time.Now()
	gen.cancel()
	stopped := make(chan error, 1)
	w.bg.Go(func() { stopped <- gen.eng.stopRefresher() })
	w.mu.Lock()
	gen.stopping = true
	w.mu.Unlock()
	drained := make(chan struct{})
	w.bg.Go(func() {
		if gen.sweepDone != nil {
			<-gen.sweepDone
		}
		gen.http.Wait()
		close(drained)
	})
	kill := time.After(simHubGrace)
	select {
	case <-drained:
	case <-time.After(5 * time.Second):
	case <-kill:
	}
	synctest.Wait() // what else woke now runs first, as in simStep
	select {
	case err := <-stopped:
		if err != nil {
			w.logf("%s: stop: %v", gen.p.name, err)
		}
	case <-kill:
		synctest.Wait()
		w.logf("%s: still stopping %s after SIGINT: SIGKILL", gen.p.name, time.Since(start))
		w.count("SIGKILL at the end of the hub's grace")
		w.kill(gen)
		return
	}
	if err := gen.eng.close(); err != nil {
		w.logf("%s: close: %v", gen.p.name, err)
	}
	w.mu.Lock()
	gen.p.dead = true
	w.mu.Unlock()
}

// kill ends gen's process at once, as SIGKILL or a crash does.
func (w *simWorld) kill(gen *simGen) {
	w.mu.Lock()
	gen.p.dead, gen.p.crashed, gen.stopping = true, true, true
	w.kc.crashed(gen.p)
	w.mu.Unlock()
	gen.eng.crash()
	gen.cancel()
}

// serve runs f as an HTTP request to gen, unless gen no longer accepts any.
func (w *simWorld) serve(gen *simGen, f func()) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if gen.stopping {
		return false
	}
	gen.http.Add(1)
	w.bg.Go(func() {
		defer gen.http.Done()
		f()
	})
	return true
}

// awaitGrant lets time pass until tokenkeeper has a grant in flight, for up
// to a sweep interval and a bit: SIGTERM and crashes hurt most then.
func (w *simWorld) awaitGrant() {
	w.advanceUntil(w.cfg.interval+5*time.Second, 20*time.Millisecond, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, name := range w.hub.names {
			for _, p := range w.kc.inFlight[name] {
				if p == w.gen.p {
					return true
				}
			}
		}
		return false
	})
}

func (w *simWorld) sigterm() string {
	if w.rng.IntN(10) < 7 {
		w.awaitGrant()
	}
	old := w.gen
	w.stopGen(old)
	w.startGen()
	return fmt.Sprintf("SIGTERM: %s stopped, %s started", old.p.name, w.gen.p.name)
}

// crash abandons the process: nothing is waited for, its database handle
// dies with it, and a new process opens the same file.
func (w *simWorld) crash() string {
	if w.rng.IntN(10) < 6 {
		w.awaitGrant()
	}
	old := w.gen
	w.kill(old)
	w.startGen()
	return fmt.Sprintf("crash: %s died, %s started", old.p.name, w.gen.p.name)
}

// keyRotate restarts with a new state key in front of the old ones, or,
// sometimes, without the old ones (an operator removing a key too early).
// Entries only a removed key opens are lost through no fault of
// tokenkeeper's; their sessions are written off.
func (w *simWorld) keyRotate() string {
	if w.rng.IntN(2) == 0 {
		w.provokeJournal()
	}
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(w.rng.IntN(256))
	}
	drop := w.rng.IntN(10) < 4
	old := w.gen
	w.stopGen(old)
	removed := w.keys
	if drop {
		w.writeOffSealed(removed)
		w.keys = [][]byte{key}
	} else {
		w.keys = append([][]byte{key}, w.keys...)
	}
	w.startGen()
	return fmt.Sprintf("key rotation (old keys %s): %s stopped, %s started with %d keys",
		map[bool]string{true: "removed", false: "kept"}[drop], old.p.name, w.gen.p.name, len(w.keys))
}

// provokeJournal makes a write-back fail so that the journal holds an entry.
func (w *simWorld) provokeJournal() {
	w.mu.Lock()
	name := w.pickUser(func(u *simHubUser) bool { return !u.admin && w.kept(u) && w.holdsLive(u) })
	if name != "" {
		now := time.Now()
		w.hub.fail(simHubFailure{op: "write", user: name, from: now, until: now.Add(3 * time.Minute)})
	}
	w.mu.Unlock()
	if name == "" {
		return
	}
	w.advanceUntil(w.cfg.realm.access+w.cfg.interval, 250*time.Millisecond, func() bool {
		j, err := w.gen.eng.journal(context.Background(), w.keys)
		return err == nil && j[name] != ""
	})
}

// writeOffSealed writes off the sessions whose newest refresh token only a
// journal entry sealed with one of keys holds.
func (w *simWorld) writeOffSealed(keys [][]byte) {
	j, err := simJournalFile(context.Background(), w.dbPath(), keys)
	if err != nil {
		w.t.Fatalf("read the journal: %v", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, name := range w.hub.names {
		t := w.kc.refresh[j[name]]
		if t == nil || t.s.current != t || w.hubRefresh(w.hub.users[name]) == t.raw {
			continue
		}
		t.s.writtenOff = "its newest refresh token was sealed with a key the operator removed"
		w.count("written off: sealed with a removed key")
	}
}
