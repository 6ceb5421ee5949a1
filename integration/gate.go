package integration

import (
	"context"
	"net/http"
	"strings"
	"sync"
)

// Gate holds tokenkeeper's requests to the hub that match a test's predicate
// and hands them to the test one at a time; each waits until the test
// forwards or fails it. Requests that do not match pass through. A test uses
// it to stop tokenkeeper at an exact point (before a read, between a grant
// and its write-back) and to act there.
type Gate struct {
	match   func(*GatedRequest) bool
	reqs    chan *GatedRequest
	closed  chan struct{}
	closing sync.Once
	proxy   *HubProxy
}

// GatedRequest is one request a Gate holds.
type GatedRequest struct {
	// Method is the HTTP method.
	Method string
	// Path is the URL path below the hub API, such as /users or /users/ada/tokens.
	Path string
	// User names the user whose model the request reads or writes
	// (GET or PATCH /users/{name}); it is empty for other paths.
	User string

	verdict  chan bool
	answered chan struct{}
}

// Forward sends the request on to the hub. The returned channel closes once
// the hub's answer has been passed back to tokenkeeper.
func (q *GatedRequest) Forward() <-chan struct{} {
	q.verdict <- true
	return q.answered
}

// Fail answers the request with 502 instead of forwarding it.
func (q *GatedRequest) Fail() { q.verdict <- false }

// Gate starts holding the requests match selects, until Close. Only one gate
// is open at a time; opening a second one is an error of the test.
func (p *HubProxy) Gate(match func(*GatedRequest) bool) *Gate {
	g := &Gate{match: match, reqs: make(chan *GatedRequest), closed: make(chan struct{}), proxy: p}
	if !p.gate.CompareAndSwap(nil, g) {
		panic("integration: a hub proxy gate is already open")
	}
	return g
}

// Requests delivers the held requests in the order they arrive.
func (g *Gate) Requests() <-chan *GatedRequest { return g.reqs }

// Close stops holding: requests held and not yet decided go on to the hub,
// as do all later ones.
func (g *Gate) Close() {
	g.closing.Do(func() {
		g.proxy.gate.CompareAndSwap(g, nil)
		close(g.closed)
	})
}

// gated makes r wait at the open gate, if any matches it. It returns the
// held request (nil when none) and whether to forward r.
func (p *HubProxy) gated(r *http.Request) (*GatedRequest, bool) {
	g := p.gate.Load()
	if g == nil {
		return nil, true
	}
	q := newGatedRequest(r)
	if !g.match(q) {
		return nil, true
	}
	select {
	case g.reqs <- q:
	case <-g.closed:
		return nil, true
	case <-r.Context().Done():
		return nil, false
	}
	return q, q.await(r.Context(), g.closed)
}

func newGatedRequest(r *http.Request) *GatedRequest {
	path := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/hub/api"), "/")
	q := &GatedRequest{Method: r.Method, Path: path, verdict: make(chan bool, 1), answered: make(chan struct{})}
	if name, ok := strings.CutPrefix(path, "/users/"); ok && !strings.Contains(name, "/") {
		q.User = name
	}
	return q
}

// await waits for the test's verdict; a closed gate forwards what the test
// did not decide, a caller that went away is not forwarded.
func (q *GatedRequest) await(ctx context.Context, closed <-chan struct{}) bool {
	select {
	case v := <-q.verdict:
		return v
	case <-closed:
		select {
		case v := <-q.verdict: // decided just before the gate closed
			return v
		default:
			return true
		}
	case <-ctx.Done():
		return false
	}
}

// answer flushes the hub's answer to tokenkeeper and tells the test.
func (q *GatedRequest) answer(w http.ResponseWriter) {
	if q == nil {
		return
	}
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	close(q.answered)
}
