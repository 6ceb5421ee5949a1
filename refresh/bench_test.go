package refresh

// Benchmarks of the schedule at 100k synthetic users, with the hub and
// Keycloak in memory: the memory the refresher holds per user, and the cost
// of one sweep with 0, 100 and 10,000 users due. The figures are
// tokenkeeper's own cost: the in-memory hub answers the user list at once,
// whereas a real hub's list is one request per 200 users, O(all users).
//
// Token sizes come from TOKENKEEPER_BENCH_TOKEN_SIZES ("access,refresh,id"
// in bytes); `make bench` passes the sizes of the test realm's real tokens.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/errgroup"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// benchUserCount is the number of synthetic users.
const benchUserCount = 100_000

// benchLife is the synthetic access tokens' lifetime (Keycloak's default).
const benchLife = 5 * time.Minute

// benchHub is an in-memory hub: a fixed user list and each user's
// auth_state, with call counters.
type benchHub struct {
	names  []string
	mu     sync.Mutex // guards states
	states map[string]json.RawMessage
	lists  atomic.Int64
	reads  atomic.Int64
	writes atomic.Int64
}

func (h *benchHub) Users(ctx context.Context, q hubclient.UserQuery) iter.Seq2[hubclient.User, error] {
	h.lists.Add(1)
	return func(yield func(hubclient.User, error) bool) {
		for _, name := range h.names {
			if !yield(hubclient.User{Name: name}, nil) {
				return
			}
		}
	}
}

func (h *benchHub) User(ctx context.Context, name string) (hubclient.User, error) {
	h.reads.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	return hubclient.User{Name: name, AuthState: h.states[name]}, nil
}

func (h *benchHub) SetAuthState(ctx context.Context, name string, state json.RawMessage) error {
	h.writes.Add(1)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.states[name] = state
	return nil
}

func (h *benchHub) Tokens(ctx context.Context, user string) ([]hubclient.Token, error) {
	return nil, nil
}
func (h *benchHub) DeleteToken(ctx context.Context, user, id string) error    { return nil }
func (h *benchHub) StopServer(ctx context.Context, user, server string) error { return nil }

func (h *benchHub) set(name string, state json.RawMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.states[name] = state
}

// benchSizes are the lengths of the synthetic access, refresh and ID tokens.
type benchSizes struct{ access, refresh, id int }

// benchTokenSizes reads TOKENKEEPER_BENCH_TOKEN_SIZES, defaulting to sizes
// typical of a Keycloak realm with a few roles.
func benchTokenSizes(tb testing.TB) benchSizes {
	s := benchSizes{access: 1300, refresh: 700, id: 1200}
	v := os.Getenv("TOKENKEEPER_BENCH_TOKEN_SIZES")
	if v == "" {
		return s
	}
	parts := strings.Split(v, ",")
	n := make([]int, len(parts))
	for i, p := range parts {
		var err error
		if n[i], err = strconv.Atoi(strings.TrimSpace(p)); err != nil || n[i] < 100 {
			tb.Fatalf("TOKENKEEPER_BENCH_TOKEN_SIZES=%q: want access,refresh,id byte counts", v)
		}
	}
	if len(n) != 3 {
		tb.Fatalf("TOKENKEEPER_BENCH_TOKEN_SIZES=%q: want three numbers", v)
	}
	return benchSizes{access: n[0], refresh: n[1], id: n[2]}
}

// benchJWT returns an unsigned JWT with claims, padded to about size bytes.
func benchJWT(claims map[string]any, size int) string {
	enc := base64.RawURLEncoding
	head := enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`))
	sig := strings.Repeat("s", 342) // an RS256 signature's length
	build := func(pad int) string {
		claims["pad"] = strings.Repeat("p", pad)
		b, _ := json.Marshal(claims)
		return head + "." + enc.EncodeToString(b) + "." + sig
	}
	bare := len(build(0))
	return build(max(0, (size-bare)*3/4))
}

// benchTokenSet issues tokens for user at iat, like the realm does.
func benchTokenSet(sz benchSizes, user string, iat time.Time, serial int64) *oauth2.Token {
	sub := fmt.Sprintf("%08x-0000-4000-8000-%012x", len(user), serial)
	sid := fmt.Sprintf("sid-%s-%d", user, serial)
	access := benchJWT(map[string]any{"iat": iat.Unix(), "exp": iat.Add(benchLife).Unix(), "sid": sid, "sub": sub,
		"preferred_username": user, "typ": "Bearer"}, sz.access)
	refresh := benchJWT(map[string]any{"iat": iat.Unix(), "exp": iat.Add(30 * time.Minute).Unix(), "sid": sid,
		"typ": "Refresh", "n": serial}, sz.refresh)
	id := benchJWT(map[string]any{"iat": iat.Unix(), "exp": iat.Add(benchLife).Unix(), "sid": sid, "sub": sub,
		"typ": "ID"}, sz.id)
	tok := &oauth2.Token{AccessToken: access, RefreshToken: refresh, TokenType: "Bearer",
		ExpiresIn: int64(benchLife.Seconds())}
	return tok.WithExtra(map[string]any{
		"id_token": id, "refresh_expires_in": 1800.0, "scope": "openid profile email",
		"session_state": sid, "not-before-policy": 0.0,
	})
}

// benchAuthState is OAuthenticator's auth_state for a token set.
func benchAuthState(tok *oauth2.Token, user string) json.RawMessage {
	id, _ := tok.Extra("id_token").(string)
	b, _ := json.Marshal(map[string]any{
		"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken, "id_token": id,
		"scope": []string{"openid", "profile", "email"},
		"token_response": map[string]any{
			"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken, "id_token": id,
			"token_type": "Bearer", "expires_in": tok.ExpiresIn, "refresh_expires_in": 1800,
			"scope": "openid profile email", "not-before-policy": 0,
		},
		"oauth_user": map[string]any{"preferred_username": user, "email": user + "@example.org"},
	})
	return b
}

// benchEnv is a refresher over 100k users, with its fake hub and grant.
type benchEnv struct {
	hub    *benchHub
	db     *store.Store
	r      *Refresher
	sizes  benchSizes
	now    time.Time
	grants atomic.Int64
	serial atomic.Int64
	next   int // the next user to make due

	// Heap bytes per user after the first sweep (the schedule), and after
	// everyone has also asked for a token (schedule and token cache).
	perUser, askedPerUser float64
}

func (e *benchEnv) clock() time.Time { return e.now }

func (e *benchEnv) grant(ctx context.Context, refresh config.Secret) (*oauth2.Token, error) {
	e.grants.Add(1)
	return benchTokenSet(e.sizes, "u", e.now, e.serial.Add(1)), nil
}

// newBenchEnv builds the hub with n users whose tokens are fresh, the
// store, and a refresher that knows them all (see learn).
func newBenchEnv(b *testing.B, n int) *benchEnv {
	b.Helper()
	e := &benchEnv{
		hub:   &benchHub{states: make(map[string]json.RawMessage, n)},
		sizes: benchTokenSizes(b),
		now:   time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC),
	}
	issued := e.now.Add(-time.Minute) // due 200–240 s after issue: nobody is due yet
	for i := range n {
		name := fmt.Sprintf("user-%06d", i)
		e.hub.names = append(e.hub.names, name)
		e.hub.states[name] = benchAuthState(benchTokenSet(e.sizes, name, issued, e.serial.Add(1)), name)
	}
	db, err := store.Open(context.Background(), filepath.Join(b.TempDir(), "tk.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	e.db = db
	e.learn(b)
	return e
}

// learn replaces the refresher with a new one, as a restart does, and
// measures the heap before it exists, after its first sweep (which reads
// every user once and builds the schedule), and after every user has asked
// for a token once (which fills the token cache).
func (e *benchEnv) learn(b *testing.B) {
	b.Helper()
	e.r = nil
	before := benchHeap()
	e.r = e.newRefresher(b, e.db)
	grants := e.grants.Load()
	if err := e.r.Sweep(context.Background()); err != nil {
		b.Fatal(err)
	}
	swept := benchHeap()
	e.askAll(b)
	asked := benchHeap()
	n := float64(len(e.hub.names))
	e.perUser = float64(swept-before) / n
	e.askedPerUser = float64(asked-before) / n
	if got := e.grants.Load() - grants; got != 0 {
		b.Fatalf("building the state made %d grants, want 0 (nobody is due)", got)
	}
}

// askAll asks for every user's token once, as fresh-token does, eight at once.
func (e *benchEnv) askAll(b *testing.B) {
	b.Helper()
	var g errgroup.Group
	g.SetLimit(8)
	for _, name := range e.hub.names {
		g.Go(func() error {
			_, err := e.r.Fresh(context.Background(), name, 0)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
}

// benchHeap returns the live heap after a full collection.
func benchHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func (e *benchEnv) newRefresher(b *testing.B, db *store.Store) *Refresher {
	b.Helper()
	keys, err := NewKeyring(make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	opts := Options{
		Keep: config.KeepAll, Schedule: Schedule{Window: time.Minute}, Recheck: time.Minute, Concurrency: 8,
		GrantTimeout: 30 * time.Second, Guard: Guard{Min: 5, Fraction: 0.5}, Keys: keys,
		Now: e.clock, Rand: rand.New(rand.NewPCG(1, 2)),
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	}
	r, err := New(context.Background(), e.hub, e.hub, e.grant, db, opts)
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// makeDue gives the next k users tokens that are due, as the passage of time
// would: a token issued 250 s ago in the hub, and a schedule entry due now.
func (e *benchEnv) makeDue(ctx context.Context, k int) {
	issued := e.now.Add(-250 * time.Second)
	for range k {
		name := e.hub.names[e.next]
		e.next = (e.next + 1) % len(e.hub.names)
		e.hub.set(name, benchAuthState(benchTokenSet(e.sizes, name, issued, e.serial.Add(1)), name))
		e.r.mu.Lock()
		u := *e.r.users[name]
		e.r.mu.Unlock()
		u.Due = e.now
		e.r.put(ctx, u)
	}
}

// benchCPU returns the process's user and system CPU time.
func benchCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSchedule100k measures the refresher over 100k synthetic users.
// "memory" times a new refresher learning every user (its first sweep reads
// each once) and every user asking for a token once, as after a restart,
// and reports the heap this leaves per user: the schedule alone
// (schedule-B/user: users nobody asks a token for), schedule and token
// cache (asked-B/user), and what a user costs beyond their cached access
// token's own bytes (beyond-token-B/user: schedule state plus the cache
// entry's overhead). "sweep/due=K" is one sweep with K users due (and
// everyone's token cached), in wall time (ns/op), CPU time (cpu-ns/op) and
// calls to the hub and Keycloak.
func BenchmarkSchedule100k(b *testing.B) {
	e := newBenchEnv(b, benchUserCount)
	b.Run("memory", func(b *testing.B) {
		for b.Loop() {
			e.learn(b)
		}
		access := float64(e.sizes.access)
		b.ReportMetric(e.perUser, "schedule-B/user")
		b.ReportMetric(e.askedPerUser, "asked-B/user")
		b.ReportMetric(e.askedPerUser-access, "beyond-token-B/user")
	})
	for _, due := range []int{0, 100, 10_000} {
		b.Run(fmt.Sprintf("sweep/due=%d", due), func(b *testing.B) { e.benchSweep(b, due) })
	}
}

func (e *benchEnv) benchSweep(b *testing.B, due int) {
	ctx := context.Background()
	lists, reads, writes, grants := e.hub.lists.Load(), e.hub.reads.Load(), e.hub.writes.Load(), e.grants.Load()
	var cpu time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		e.makeDue(ctx, due)
		runtime.GC()
		g := e.grants.Load()
		b.StartTimer()
		start := benchCPU()
		if err := e.r.Sweep(ctx); err != nil {
			b.Fatal(err)
		}
		cpu += benchCPU() - start
		if got := e.grants.Load() - g; got != int64(due) {
			b.Fatalf("sweep made %d grants, want %d", got, due)
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/op")
	b.ReportMetric(float64(e.hub.lists.Load()-lists)/n, "lists/op")
	b.ReportMetric(float64(e.hub.reads.Load()-reads)/n, "reads/op")
	b.ReportMetric(float64(e.hub.writes.Load()-writes)/n, "writes/op")
	b.ReportMetric(float64(e.grants.Load()-grants)/n, "grants/op")
}
