package refresh

// TestSimulation runs tokenkeeper's real Refresher (refresh, logout,
// back-channel logout, journal, SQLite store) against a model JupyterHub
// and a model Keycloak, under a seeded random schedule of events, inside
// testing/synctest, and checks the invariants in sim_check_test.go after
// every step. A failure prints the seed, the command that replays it and the
// last steps, model events and engine log lines.
//
// A run is fixed by its seed and flags: the driver's events come from the
// seed; every call to a model takes a latency drawn from a hash of the seed,
// the call's kind, user and process and how many such calls came before, so
// that calls made side by side in any order get the same latencies; and the
// trace sorts the lines of each instant. The same seed and flags give the
// same trace, line for line (TestSimulationReplays).

import (
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/tokenkeeper/tokenkeeper/config"
)

var (
	simSeed   = flag.Uint64("sim.seed", 0, "run this seed only")
	simFirst  = flag.Uint64("sim.first", 1, "the first seed when -sim.seed is not set")
	simSeeds  = flag.Int("sim.seeds", 4, "seeds to run (side by side) when -sim.seed is not set")
	simSteps  = flag.Int("sim.steps", 0, "steps over all seeds (default $TOKENKEEPER_SIM_STEPS, else 10000)")
	simTrace  = flag.String("sim.trace", "", "write the whole model trace of -sim.seed to this file")
	simRepeat = flag.Int("sim.repeat", 3, "TestSimulationReplays: runs of each seed")
	simMix    = flag.String("sim.mix", "", "event weights over the defaults, e.g. sigterm=0,crash=20; admins=0 means no hub admins")
)

// simDefaultWeights are the events' weights; "admins" is not an event but
// whether the hub has admins at all.
var simDefaultWeights = map[string]int{
	"idle": 300, "fresh": 140, "login": 30, "relogin": 40, "logout": 35, "flakylogout": 15, "server": 50, "adminreq": 40,
	"hubwrite": 20, "hubread": 20, "kcoutage": 15, "wipe": 2, "sigterm": 8, "crash": 8,
	"keyrotate": 6, "quiet": 10, "admins": 1,
}

// simWeights returns the default weights with -sim.mix applied.
func simWeights(t testing.TB) map[string]int {
	out := maps.Clone(simDefaultWeights)
	if *simMix == "" {
		return out
	}
	for _, kv := range strings.Split(*simMix, ",") {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if _, known := out[k]; !ok || err != nil || n < 0 || !known {
			t.Fatalf("-sim.mix: %q is not event=weight (events: %s)", kv, strings.Join(slices.Sorted(maps.Keys(out)), ", "))
		}
		out[k] = n
	}
	return out
}

func simMixFlag() string {
	if *simMix == "" {
		return ""
	}
	return " -sim.mix=" + *simMix
}

// simConfig is what a seed chooses about the world and tokenkeeper.
type simConfig struct {
	seed                                    uint64
	users, admins                           int
	keep                                    string
	interval, window                        time.Duration
	concurrency                             int
	realm                                   simRealm
	revoke, stopServers, endSessions, guard bool
	weights                                 map[string]int
	// tkSkew and hubSkew are how far tokenkeeper's and the hub's clocks are
	// ahead of the world's (Keycloak's is realm.skew).
	tkSkew, hubSkew time.Duration
}

func newSimConfig(seed uint64, weights map[string]int) simConfig {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	pick := func(ds ...time.Duration) time.Duration { return ds[r.IntN(len(ds))] }
	c := simConfig{seed: seed, users: 6 + r.IntN(9), weights: weights,
		keep:        []string{config.KeepRunning, config.KeepAll}[r.IntN(2)],
		interval:    pick(5*time.Second, 10*time.Second, 15*time.Second, 15*time.Second, 30*time.Second),
		window:      pick(30*time.Second, time.Minute, time.Minute, 90*time.Second),
		concurrency: []int{4, 16, 16, 16}[r.IntN(4)],
		revoke:      r.IntN(5) > 0, stopServers: r.IntN(10) < 3, endSessions: r.IntN(10) < 3, guard: r.IntN(10) < 7,
	}
	if weights["admins"] > 0 {
		c.admins = r.IntN(4)
	}
	c.realm.access = time.Duration(30+r.IntN(271)) * time.Second
	lo := max(2*c.realm.access, 2*time.Minute)
	c.realm.idle = lo + time.Duration(r.Int64N(int64(30*time.Minute-lo)+1)).Round(time.Second)
	c.realm.max = 2*c.realm.idle + time.Duration(r.Int64N(int64(4*time.Hour-2*c.realm.idle)+1)).Round(time.Second)
	c.realm.backchannel = []float64{0, 0.5, 0.9}[r.IntN(3)]
	c.realm.backchannelOnInvalid = []float64{0, 0.5}[r.IntN(2)]
	c.realm.maxReuse = r.IntN(2)
	// Each clock is within 15 s of the world's, so any two are within 30 s.
	skew := func() time.Duration { return time.Duration(r.IntN(31)-15) * time.Second }
	if r.IntN(3) > 0 { // some seeds keep every clock right
		c.tkSkew, c.hubSkew, c.realm.skew = skew(), skew(), skew()
	}
	return c
}

// recheck is cmd/tokenkeeper's Recheck for the sweep interval.
func (c simConfig) recheck() time.Duration { return max(time.Minute, 4*c.interval) }

func (c simConfig) String() string {
	return fmt.Sprintf("users=%d admins=%d keep=%s interval=%s window=%s concurrency=%d access=%s idle=%s max=%s "+
		"backchannel=%.1f backchannel_on_invalid=%.1f max_reuse=%d revoke=%t stop_servers=%t end_sessions=%t guard=%t "+
		"skew tokenkeeper=%s hub=%s keycloak=%s",
		c.users, c.admins, c.keep, c.interval, c.window, c.concurrency, c.realm.access, c.realm.idle, c.realm.max,
		c.realm.backchannel, c.realm.backchannelOnInvalid, c.realm.maxReuse, c.revoke, c.stopServers, c.endSessions, c.guard,
		c.tkSkew, c.hubSkew, c.realm.skew)
}

// simTotalSteps is -sim.steps, else $TOKENKEEPER_SIM_STEPS, else 10,000.
func simTotalSteps(t testing.TB) int {
	if *simSteps > 0 {
		return *simSteps
	}
	if v := os.Getenv("TOKENKEEPER_SIM_STEPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("TOKENKEEPER_SIM_STEPS=%q is not a positive number", v)
		}
		return n
	}
	return 10_000
}

func TestSimulation(t *testing.T) {
	seeds := []uint64{*simSeed}
	if *simSeed == 0 {
		seeds = nil
		for i := range *simSeeds {
			seeds = append(seeds, *simFirst+uint64(i))
		}
	}
	steps := max(1, simTotalSteps(t)/len(seeds))
	weights := simWeights(t)
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			runSimulation(t, seed, steps, weights)
		})
	}
}

// TestSimulationReplays runs seeds again and again: each run of a seed must
// give the same trace, line for line (the engine's log included).
//
// The seeds run one after the other: two simulations side by side in one
// process have been seen to disturb each other's replay (one seed's runs
// alone never did). It runs without the race detector, in make test's
// replay phase.
func TestSimulationReplays(t *testing.T) {
	if raceDetector {
		t.Skip("replays are checked without the race detector (make test's replay phase)")
	}
	seeds := []uint64{*simSeed}
	if *simSeed == 0 {
		seeds = []uint64{3, 4}
	}
	steps := 1000
	if *simSteps > 0 {
		steps = *simSteps
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			first := runSimulation(t, seed, steps, simDefaultWeights)
			for i := 1; i < *simRepeat; i++ {
				if again := runSimulation(t, seed, steps, simDefaultWeights); again != first {
					t.Fatalf("seed %d, %d steps: run %d's trace differs from the first's (digest %016x, then %016x); "+
						"compare them with -sim.trace", seed, steps, i+1, first, again)
				}
			}
		})
	}
}

// runSimulation runs one seed for steps steps and returns the digest of its
// whole trace.
func runSimulation(t *testing.T, seed uint64, steps int, weights map[string]int) uint64 {
	dir := t.TempDir()
	began := time.Now()
	var stats string
	var digest uint64
	synctest.Test(t, func(t *testing.T) {
		w := newSimWorld(t, seed, dir, weights)
		step, ok := w.run(steps)
		report := ""
		if !ok {
			report = w.report(step)
		}
		w.shutdown()
		if !ok {
			t.Error(report)
		}
		stats = w.stats(step)
		w.mu.Lock()
		digest = w.whole.sum()
		w.mu.Unlock()
	})
	t.Logf("%s in %s; trace %016x", stats, time.Since(began).Round(time.Millisecond), digest)
	return digest
}

func newSimWorld(t *testing.T, seed uint64, dir string, weights map[string]int) *simWorld {
	w := &simWorld{
		t: t, cfg: newSimConfig(seed, weights), rng: rand.New(rand.NewPCG(seed, 1)), start: time.Now(), dir: dir,
		counters: map[string]uint64{}, counts: map[string]int{}, fences: map[string]simFence{}, owed: map[string]simLogout{},
		steps: newSimRing(60), trace: newSimRing(200), engineLog: newSimRing(80),
		sign: newLogoutSigner(t, time.Now), hubProc: &simProc{name: "hub"},
	}
	w.hub, w.kc = newSimHub(w), newSimKeycloak(w, w.cfg.realm)
	w.whole = newSimWholeTrace(nil)
	if *simTrace != "" && *simSeed != 0 {
		f, err := os.Create(*simTrace)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		w.whole = newSimWholeTrace(f)
	}
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(w.rng.IntN(256))
	}
	w.keys = [][]byte{key}
	return w
}

func (w *simWorld) dbPath() string { return filepath.Join(w.dir, "tokenkeeper.db") }

// setup creates the users, logs most of them in over a token lifetime, and
// starts tokenkeeper.
func (w *simWorld) setup() {
	for i := range w.cfg.users {
		u := &simHubUser{name: fmt.Sprintf("u%02d", i), admin: i < w.cfg.admins, running: w.rng.IntN(10) < 6,
			keptSince: w.start}
		u.setState(nil)
		w.mu.Lock()
		w.hub.add(u)
		if w.rng.IntN(10) < 9 {
			w.hub.login(u)
		}
		w.mu.Unlock()
		time.Sleep(time.Duration(w.rng.Int64N(int64(w.cfg.realm.access) / int64(w.cfg.users))).Round(time.Millisecond))
	}
	w.startGen()
}

// run runs steps steps; it returns the step that broke an invariant and false,
// or steps and true.
func (w *simWorld) run(steps int) (int, bool) {
	w.setup()
	for step := range steps {
		w.simStep(step)
		if w.failed() {
			return step, false
		}
	}
	return steps, true
}

// shutdown stops tokenkeeper gracefully and lets every request, delivery and
// abandoned goroutine run out.
func (w *simWorld) shutdown() {
	w.stopGen(w.gen)
	time.Sleep(3 * time.Minute)
	w.bg.Wait()
}

// stats sums a run up.
func (w *simWorld) stats(steps int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(w.counts)) {
		fmt.Fprintf(&b, ", %s %d", k, w.counts[k])
	}
	return fmt.Sprintf("seed %d: %d steps, %s simulated, %d processes%s; %s", w.cfg.seed, steps,
		time.Since(w.start).Round(time.Second), w.gens, b.String(), w.cfg)
}
