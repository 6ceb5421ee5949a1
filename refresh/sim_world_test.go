package refresh

// The simulated world: a model JupyterHub and a model Keycloak sharing one
// lock and one fake clock (testing/synctest), the tokenkeeper processes that
// come and go, and the record of what happened.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// errProcessGone is what a call made by an exited tokenkeeper process gets:
// nothing, as far as the world is concerned.
var errProcessGone = errors.New("simulation: the tokenkeeper process has exited")

// simProc is a caller of the models: a tokenkeeper process or the hub itself.
type simProc struct {
	name    string
	tk      bool // a tokenkeeper process (not the hub refreshing on its own)
	dead    bool // guarded by simWorld.mu
	crashed bool // died without a graceful stop
}

// simGen is one tokenkeeper process and what the simulated scheduler and
// HTTP server run on it.
type simGen struct {
	p         *simProc
	eng       *simEngine
	ctx       context.Context // cancelled by SIGTERM
	cancel    context.CancelFunc
	sweepDone chan struct{}  // closed when the running sweep ends; nil before the first
	http      sync.WaitGroup // fresh-token and back-channel requests being served
	stopping  bool           // no new requests are accepted; guarded by simWorld.mu
}

// sweeping reports whether the process's sweep is running.
func (g *simGen) sweeping() bool {
	if g.sweepDone == nil {
		return false
	}
	select {
	case <-g.sweepDone:
		return false
	default:
		return true
	}
}

// simWorld is everything one seed's run holds.
type simWorld struct {
	t     *testing.T
	cfg   simConfig
	rng   *rand.Rand // the driver's choices; used by the driver goroutine only
	start time.Time
	dir   string
	bg    sync.WaitGroup // every goroutine the world starts
	sign  logoutSigner
	// nextSweep is when the schedule runs the next sweep; the driver's alone.
	nextSweep time.Time
	hubProc   *simProc // the hub refreshing admins' tokens itself

	mu            sync.Mutex // guards everything below, the hub and Keycloak
	hub           *simHub
	kc            *simKeycloak
	gen           *simGen
	gens          int
	keys          [][]byte // the state keys, newest first
	counters      map[string]uint64
	violations    []string
	impairedUntil time.Time // refreshing or logging out was legitimately held up until then
	guardUntil    time.Time // the mass-failure guard held logouts back until then
	counts        map[string]int
	pending       int // back-channel logouts being delivered
	steps         *simRing
	trace         *simRing
	engineLog     *simRing
	whole         simWholeTrace        // the whole trace: its digest, and the file -sim.trace names
	fences        map[string]simFence  // back-channel logouts accepted and not yet seen carried out, by user
	owed          map[string]simLogout // logouts whose actions and audit row are not yet seen, by user
}

// simRing keeps the last lines written to it.
type simRing struct {
	lines []string
	next  int
	full  bool
}

func newSimRing(n int) *simRing { return &simRing{lines: make([]string, n)} }

func (r *simRing) add(line string) {
	r.lines[r.next] = line
	r.next = (r.next + 1) % len(r.lines)
	r.full = r.full || r.next == 0
}

// tail returns the lines, oldest first.
func (r *simRing) tail() []string {
	if !r.full {
		return append([]string(nil), r.lines[:r.next]...)
	}
	return append(append([]string(nil), r.lines[r.next:]...), r.lines[:r.next]...)
}

// since formats a time as an offset from the start of the run.
func (w *simWorld) since(t time.Time) string {
	return fmt.Sprintf("+%s", t.Sub(w.start).Round(time.Millisecond))
}

// note records a model event in the trace. The caller holds w.mu.
func (w *simWorld) note(format string, args ...any) {
	line := w.since(time.Now()) + " " + fmt.Sprintf(format, args...)
	w.trace.add(line)
	w.whole.add(time.Now(), line)
}

// simWholeTrace is the whole trace of a run: the model's events and the engine's
// log lines. Goroutines woken at the same instant of the fake clock may run
// in any order, so the lines of one instant are sorted before they are
// written: the same seed and flags give the same trace, line for line.
type simWholeTrace struct {
	file   io.Writer // nil: digest only
	digest hash.Hash64
	at     time.Time
	buf    []string
}

func newSimWholeTrace(file io.Writer) simWholeTrace {
	return simWholeTrace{file: file, digest: fnv.New64a()}
}

// add records line, logged at now. The caller holds w.mu.
func (t *simWholeTrace) add(now time.Time, line string) {
	if !now.Equal(t.at) {
		t.flush()
		t.at = now
	}
	t.buf = append(t.buf, strings.ReplaceAll(line, "\n", `\n`))
}

// flush writes the current instant's lines, sorted. The caller holds w.mu.
func (t *simWholeTrace) flush() {
	slices.Sort(t.buf)
	for _, l := range t.buf {
		fmt.Fprintln(t.digest, l)
		if t.file != nil {
			fmt.Fprintln(t.file, l)
		}
	}
	t.buf = t.buf[:0]
}

// sum is the digest of the trace so far, flushed. The caller holds w.mu.
func (t *simWholeTrace) sum() uint64 {
	t.flush()
	return t.digest.Sum64()
}

// violate records a broken invariant. The caller holds w.mu.
func (w *simWorld) violate(inv, format string, args ...any) {
	msg := fmt.Sprintf("(%s) %s %s", inv, w.since(time.Now()), fmt.Sprintf(format, args...))
	if slices.Contains(w.violations, msg) {
		return
	}
	w.violations = append(w.violations, msg)
	w.note("VIOLATION %s", msg)
}

// count adds one to a statistic. The caller holds w.mu.
func (w *simWorld) count(name string) { w.counts[name]++ }

// impair records that the world held tokenkeeper up until t. The caller holds w.mu.
func (w *simWorld) impair(t time.Time) {
	if t.After(w.impairedUntil) {
		w.impairedUntil = t
	}
}

// hash returns a number fixed by the seed, key and the number of earlier
// calls with key, so that one user's calls draw the same numbers in a replay
// whatever order the engine makes them in. The caller holds w.mu.
func (w *simWorld) hash(key string) uint64 {
	n := w.counters[key]
	w.counters[key] = n + 1
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s/%d", w.cfg.seed, key, n)
	x := h.Sum64()
	x ^= x >> 31 // splitmix64 finaliser
	x *= 0x7fb5d329728ea185
	x ^= x >> 27
	x *= 0x81dadef4bc2dd44d
	return x ^ x>>33
}

// chance is true with probability p, drawn by key. The caller holds w.mu.
func (w *simWorld) chance(key string, p float64) bool {
	return float64(w.hash(key)>>11)/(1<<53) < p
}

// latency is the duration of one call of kind for user. Keycloak is usually
// quick and sometimes slow; the hub likewise on a smaller scale. Durations are
// whole milliseconds plus an odd number of nanoseconds, so that the models'
// instants hardly ever coincide with each other or with the driver's (whole
// milliseconds). The caller holds w.mu.
func (w *simWorld) latency(kind, user string, p *simProc) time.Duration {
	key := kind + "/" + user
	if p != nil {
		key += "/" + p.name
	}
	x := w.hash(key)
	pick, ms := x%1000, (x>>10)%1_000_000
	var d time.Duration
	switch {
	case kind == "kc" && pick < 850:
		d = time.Duration(5+ms%75) * time.Millisecond
	case kind == "kc" && pick < 970:
		d = time.Duration(300+ms%2700) * time.Millisecond
	case kind == "kc":
		d = time.Duration(3000+ms%5000) * time.Millisecond
	case pick < 900:
		d = time.Duration(1+ms%30) * time.Millisecond
	default:
		d = time.Duration(50+ms%750) * time.Millisecond
	}
	return d + time.Duration(2*((x>>40)%499_999)+1)
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// latest returns the latest of ts.
func latest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

// simLogHandler keeps the engine's log lines in the world's ring.
type simLogHandler struct {
	w     *simWorld
	p     *simProc // the process logging
	attrs []slog.Attr
}

func (h simLogHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h simLogHandler) Handle(_ context.Context, r slog.Record) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s %s", h.w.since(r.Time), r.Level, r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.w.mu.Lock()
	h.w.engineLog.add(b.String())
	if !h.p.dead { // what an exited process's goroutines still log changes nothing, in any order
		h.w.whole.add(time.Now(), "log "+b.String())
	}
	h.w.mu.Unlock()
	return nil
}

func (h simLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return simLogHandler{w: h.w, p: h.p, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

func (h simLogHandler) WithGroup(string) slog.Handler { return h }

// report is the failure message: what broke, how to replay it, and the tails
// of the step log, the model trace and the engine's log.
func (w *simWorld) report(step int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d failed at step %d (%s):\n  %s\n", w.cfg.seed, step, w.since(time.Now()),
		strings.Join(w.violations, "\n  "))
	fmt.Fprintf(&b, "replay: go test ./refresh/ -run 'TestSimulation$' -sim.seed=%d -sim.steps=%d%s -v\n",
		w.cfg.seed, step+1, simMixFlag())
	fmt.Fprintf(&b, "config: %s\n", w.cfg)
	section := func(name string, r *simRing) {
		fmt.Fprintf(&b, "--- %s (last %d) ---\n%s\n", name, len(r.tail()), strings.Join(r.tail(), "\n"))
	}
	section("steps", w.steps)
	section("model trace", w.trace)
	section("engine log", w.engineLog)
	return b.String()
}
