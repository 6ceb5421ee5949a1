package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tokenkeeper/tokenkeeper/integration"
)

// listGate stands between tokenkeeper and the hub's API. While shut it
// answers the user list with 503, so no sweep gets past its first request;
// every other request passes. It lets the bench hold tokenkeeper's sweeps
// while users are set up or the naive refresher runs.
type listGate struct {
	srv        *http.Server
	addr       string
	shut       atomic.Bool
	refused    atomic.Int64
	identities atomic.Int64 // GET /hub/api/user passed on

	mu        sync.Mutex      // guards firstList, perSecond and perUser
	firstList time.Time       // the first list let through since the last Open
	perSecond map[int64]int64 // requests passed on, by second of the clock
	perUser   map[string]*userCounts
}

// userCounts are the reads and writes of one user's model passed on.
type userCounts struct{ Reads, Writes int64 }

// startListGate listens on addr and forwards to target (scheme://host:port).
func startListGate(addr, target string) (*listGate, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("gate target: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("gate: %w", err)
	}
	g := &listGate{addr: ln.Addr().String(), perSecond: map[int64]int64{}, perUser: map[string]*userCounts{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	g.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isList(r) && !g.pass() {
			http.Error(w, `{"status": 503, "message": "held by the bench"}`, http.StatusServiceUnavailable)
			return
		}
		g.count(r)
		rp.ServeHTTP(w, r)
	})}
	go g.srv.Serve(ln)
	return g, nil
}

func isList(r *http.Request) bool {
	return r.Method == http.MethodGet && (r.URL.Path == "/hub/api/users" || r.URL.Path == "/hub/api/users/")
}

// pass reports whether a list may go through, and notes the first one.
func (g *listGate) pass() bool {
	if g.shut.Load() {
		g.refused.Add(1)
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.firstList.IsZero() {
		g.firstList = time.Now()
	}
	return true
}

// URL is the gate's hub API URL.
func (g *listGate) URL() string { return "http://" + g.addr + "/hub/api" }

// Close stops the gate.
func (g *listGate) Close() { g.srv.Close() }

// Shut refuses lists from now on.
func (g *listGate) Shut() { g.shut.Store(true) }

// Open lets lists through again and forgets the last first list.
func (g *listGate) Open() {
	g.mu.Lock()
	g.firstList = time.Time{}
	g.mu.Unlock()
	g.shut.Store(false)
}

// FirstList is when the first list went through since Open (zero if none).
func (g *listGate) FirstList() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.firstList
}

// Hold shuts the gate and waits until a sweep has been refused, so that no
// sweep is running (tokenkeeper runs one sweep at a time).
func (g *listGate) Hold(ctx context.Context, limit time.Duration) error {
	g.Shut()
	n := g.refused.Load()
	err := integration.Poll(ctx, limit, 100*time.Millisecond, func() (bool, error) {
		return g.refused.Load() > n, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for tokenkeeper's sweep to stop: %w", err)
	}
	return nil
}

// count notes a request passed on to the hub.
func (g *listGate) count(r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.perSecond[time.Now().Unix()]++
	if r.URL.Path == "/hub/api/user" {
		g.identities.Add(1)
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/hub/api/users/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return
	}
	c := g.perUser[name]
	if c == nil {
		c = &userCounts{}
		g.perUser[name] = c
	}
	switch r.Method {
	case http.MethodGet:
		c.Reads++
	case http.MethodPatch:
		c.Writes++
	}
}

// User returns the reads and writes of name's model passed on so far.
func (g *listGate) User(name string) userCounts {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.perUser[name]; c != nil {
		return *c
	}
	return userCounts{}
}

// Busiest returns the most requests passed on in one second of the clock
// between from and to, and that second.
func (g *listGate) Busiest(from, to time.Time) (int64, time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	var most, at int64
	for sec := from.Unix(); sec <= to.Unix(); sec++ {
		if n := g.perSecond[sec]; n > most {
			most, at = n, sec
		}
	}
	return most, time.Unix(at, 0)
}

// Identities is the identity lookups passed on so far.
func (g *listGate) Identities() int64 { return g.identities.Load() }
