package integration

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
)

// HubProxy sits between tokenkeeper and the hub's API on loopback. It counts
// requests by kind and can hold one user's auth_state writes, so tests can
// observe tokenkeeper's traffic and stop it between a grant and its
// write-back.
type HubProxy struct {
	srv   *http.Server
	addr  string
	Lists atomic.Int64 // GET /users
	Reads atomic.Int64 // GET /users/{name}
	Patch atomic.Int64 // PATCH /users/{name}

	gate atomic.Pointer[Gate] // the open gate, if any (gate.go)

	mu      sync.Mutex // guards hold, held
	hold    string
	held    chan struct{}
	release chan struct{}
}

// StartHubProxy listens on addr and forwards to the hub API at target.
func StartHubProxy(addr, target string) (*HubProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	p := &HubProxy{addr: ln.Addr().String()}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.count(r)
		q, forward := p.gated(r)
		if !forward || !p.wait(r) {
			http.Error(w, "held", http.StatusBadGateway)
			return
		}
		rp.ServeHTTP(w, r)
		q.answer(w)
	})}
	go p.srv.Serve(ln)
	return p, nil
}

// URL is the proxy's hub API URL.
func (p *HubProxy) URL() string { return "http://" + p.addr + "/hub/api" }

// Close stops the proxy.
func (p *HubProxy) Close() { p.srv.Close() }

func (p *HubProxy) count(r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, "/hub/api/users")
	switch {
	case r.Method == http.MethodGet && (rest == "" || rest == "/"):
		p.Lists.Add(1)
	case r.Method == http.MethodGet && !strings.Contains(strings.Trim(rest, "/"), "/") && rest != r.URL.Path:
		p.Reads.Add(1)
	case r.Method == http.MethodPatch:
		p.Patch.Add(1)
	}
}

// Hold makes the next auth_state writes for user wait until Release; the
// returned channel closes when the first such write arrives.
func (p *HubProxy) Hold(user string) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold, p.held, p.release = user, make(chan struct{}), make(chan struct{})
	return p.held
}

// Release lets held writes fail (the writer is gone by then) and stops holding.
func (p *HubProxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.release != nil {
		close(p.release)
	}
	p.hold, p.held, p.release = "", nil, nil
}

// wait blocks a held write; it reports whether to forward the request.
func (p *HubProxy) wait(r *http.Request) bool {
	p.mu.Lock()
	hold, held, release := p.hold, p.held, p.release
	p.mu.Unlock()
	if hold == "" || r.Method != http.MethodPatch || r.URL.Path != "/hub/api/users/"+hold {
		return true
	}
	select {
	case <-held:
	default:
		close(held)
	}
	select {
	case <-release:
	case <-r.Context().Done():
	}
	return false
}
