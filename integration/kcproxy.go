package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// KeycloakProxy is a reverse proxy on loopback in front of the stack's
// Keycloak, as a load balancer or ingress in front of Keycloak would be. A
// test points tokenkeeper (and only tokenkeeper) at it by giving it the
// proxy's Issuer as its issuer URL; the hub and the browsers keep talking to
// Keycloak directly.
//
// Keycloak, started without a fixed hostname, derives its issuer and its
// endpoints' URLs from each request's Host header. The proxy passes the
// discovery document's request on with its own Host, so the document names
// the proxy as the issuer (go-oidc's issuer check passes) and lists the
// proxy's endpoints, and tokenkeeper sends every later request (grants,
// introspection, keys, admin calls) through the proxy. Those it passes on
// with Keycloak's own Host, so Keycloak checks the users' tokens, whose iss
// is Keycloak's own URL, as it does without a proxy. One thing does not
// hold behind it: back-channel logout tokens carry Keycloak's own URL as
// their issuer, which the proxy's issuer does not match, so tokenkeeper
// refuses them while it uses the proxy.
//
// The proxy records the refresh grants and introspections it forwards (with
// digests, never the tokens) and can lose the answer of one chosen grant
// after Keycloak has carried it out (LoseAnswer).
type KeycloakProxy struct {
	srv    *http.Server
	addr   string
	target *url.URL

	mu     sync.Mutex // guards losses, grants, intros
	losses []*Loss
	grants []Grant
	intros []Introspection
}

// Grant is a refresh grant the proxy forwarded to Keycloak.
type Grant struct {
	// Token is the hex SHA-256 of the refresh token spent (TokenDigest).
	Token string
	// Subject and Session are the refresh token's sub and sid claims.
	Subject, Session string
	// Client is the client that authenticated (HTTP Basic user name).
	Client string
	// UserAgent is the caller's User-Agent header.
	UserAgent string
	// Status is Keycloak's answer's status; 0 if Keycloak did not answer.
	Status int
	// Lost says the proxy lost Keycloak's answer instead of passing it on.
	Lost bool
	// At is when Keycloak's answer arrived at the proxy.
	At time.Time
}

// Introspection is a token introspection the proxy forwarded to Keycloak.
type Introspection struct {
	// Token is the hex SHA-256 of the token asked about (TokenDigest).
	Token string
	// Status is Keycloak's answer's status; 0 if Keycloak did not answer.
	Status int
	// Active is Keycloak's verdict.
	Active bool
	// At is when Keycloak's answer arrived at the proxy.
	At time.Time
}

// LostAnswer is how the proxy loses an answer.
type LostAnswer int

const (
	// BadGateway answers 502 with a proxy's own HTML page, as a proxy does
	// when its connection to the upstream broke or its timeout passed.
	BadGateway LostAnswer = iota + 1
	// ConnectionClosed closes the caller's connection without an answer.
	ConnectionClosed
)

// Loss is one answer a test asked the proxy to lose.
type Loss struct {
	how   LostAnswer
	match func(Grant) bool
	done  chan struct{}
	grant Grant // set before done closes
}

// Done closes once the proxy has lost the answer of a matching grant.
func (l *Loss) Done() <-chan struct{} { return l.done }

// Grant is the grant whose answer was lost; valid once Done has closed.
func (l *Loss) Grant() Grant {
	<-l.done
	return l.grant
}

// grantKey carries a refresh grant's record from the handler to the
// reverse proxy's response hook.
type grantKey struct{}

// introKey carries an introspection's record the same way.
type introKey struct{}

// lostError makes the reverse proxy hand a grant whose answer is to be
// lost to its error handler, which loses it as how says.
type lostError struct{ how LostAnswer }

func (e *lostError) Error() string { return "keycloak proxy: answer lost on purpose" }

// maxForm bounds the token and introspection requests the proxy reads.
const maxForm = 1 << 20

// StartKeycloakProxy listens on addr and forwards to Keycloak at target
// (its base URL, such as http://127.0.0.1:28080).
func StartKeycloakProxy(addr, target string) (*KeycloakProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("keycloak proxy target: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("keycloak proxy: %w", err)
	}
	p := &KeycloakProxy{addr: ln.Addr().String(), target: u}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u) // Keycloak's own Host ...
			if strings.HasSuffix(pr.In.URL.Path, "/.well-known/openid-configuration") {
				pr.Out.Host = pr.In.Host // ... except for discovery: the proxy's
			}
		},
		ModifyResponse: p.answered,
		ErrorHandler:   p.failed,
	}
	p.srv = &http.Server{Handler: p.handler(rp), ReadHeaderTimeout: 10 * time.Second}
	go p.srv.Serve(ln)
	return p, nil
}

// URL is the proxy's base URL, in place of Keycloak's.
func (p *KeycloakProxy) URL() string { return "http://" + p.addr }

// Issuer is the test realm's issuer as seen through the proxy.
func (p *KeycloakProxy) Issuer() string { return p.URL() + "/realms/jupyter" }

// Close stops the proxy and its connections.
func (p *KeycloakProxy) Close() { p.srv.Close() }

// LoseAnswer makes the proxy forward the next refresh grant that match
// selects to Keycloak, wait for Keycloak's whole answer, and then lose it
// as how says. Grants that do not match, and later ones, pass as usual.
func (p *KeycloakProxy) LoseAnswer(how LostAnswer, match func(Grant) bool) *Loss {
	l := &Loss{how: how, match: match, done: make(chan struct{})}
	p.mu.Lock()
	p.losses = append(p.losses, l)
	p.mu.Unlock()
	return l
}

// Grants returns the refresh grants forwarded so far, in the order their
// answers arrived.
func (p *KeycloakProxy) Grants() []Grant {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Grant(nil), p.grants...)
}

// Introspections returns the introspections forwarded so far, in the order
// their answers arrived.
func (p *KeycloakProxy) Introspections() []Introspection {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Introspection(nil), p.intros...)
}

// TokenDigest is the hex SHA-256 of a token, as Grant and Introspection
// record it.
func TokenDigest(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// handler reads the form of token and introspection requests, so that the
// answer hooks know what was asked, and passes every request to rp.
func (p *KeycloakProxy) handler(rp *httputil.ReverseProxy) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := strings.HasSuffix(r.URL.Path, "/protocol/openid-connect/token")
		intro := strings.HasSuffix(r.URL.Path, "/protocol/openid-connect/token/introspect")
		if r.Method != http.MethodPost || !token && !intro {
			rp.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxForm))
		if err != nil {
			http.Error(w, "keycloak proxy: read the request", http.StatusBadRequest)
			return
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		form, _ := url.ParseQuery(string(body))
		client, _, _ := r.BasicAuth()
		switch {
		case token && form.Get("grant_type") == "refresh_token":
			g := &Grant{Token: TokenDigest(form.Get("refresh_token")), Client: client, UserAgent: r.UserAgent()}
			g.Subject, g.Session = subjectOf(form.Get("refresh_token"))
			r = r.WithContext(context.WithValue(r.Context(), grantKey{}, g))
		case intro:
			in := &Introspection{Token: TokenDigest(form.Get("token"))}
			r = r.WithContext(context.WithValue(r.Context(), introKey{}, in))
		}
		rp.ServeHTTP(w, r)
	})
}

// answered records Keycloak's answer to a grant or an introspection, and
// hands the answer of a grant to be lost to failed instead of passing it on.
func (p *KeycloakProxy) answered(resp *http.Response) error {
	ctx := resp.Request.Context()
	g, isGrant := ctx.Value(grantKey{}).(*Grant)
	in, isIntro := ctx.Value(introKey{}).(*Introspection)
	if !isGrant && !isIntro {
		return nil
	}
	// The whole answer: Keycloak has carried the request out by then.
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxForm))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read keycloak's answer: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if isIntro {
		var out struct {
			Active bool `json:"active"`
		}
		_ = json.Unmarshal(body, &out)
		in.Status, in.Active, in.At = resp.StatusCode, out.Active, now
		p.intros = append(p.intros, *in)
		return nil
	}
	g.Status, g.At = resp.StatusCode, now
	for i, l := range p.losses {
		if l.match(*g) {
			p.losses = append(p.losses[:i:i], p.losses[i+1:]...)
			g.Lost = true
			p.grants = append(p.grants, *g)
			l.grant = *g
			close(l.done)
			return &lostError{how: l.how}
		}
	}
	p.grants = append(p.grants, *g)
	return nil
}

// failed answers a request whose answer is lost, or that Keycloak did not
// answer, as a proxy would: a 502 page of its own, or, for a grant to be
// lost by closing the connection, no answer at all.
func (p *KeycloakProxy) failed(w http.ResponseWriter, r *http.Request, err error) {
	if g, ok := r.Context().Value(grantKey{}).(*Grant); ok && !g.Lost {
		p.mu.Lock()
		p.grants = append(p.grants, *g) // Keycloak did not answer: Status 0
		p.mu.Unlock()
	}
	if lost := new(lostError); errors.As(err, &lost) && lost.how == ConnectionClosed {
		// The server closes the connection without writing anything.
		panic(http.ErrAbortHandler)
	}
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(http.StatusBadGateway)
	_, _ = io.WriteString(w, "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>\n")
}

// subjectOf reads the sub and sid claims of a JWT without checking it; ""
// when it cannot be read.
func subjectOf(jwt string) (sub, sid string) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "", ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", ""
	}
	var c struct {
		Sub string `json:"sub"`
		Sid string `json:"sid"`
	}
	if json.Unmarshal(b, &c) != nil {
		return "", ""
	}
	return c.Sub, c.Sid
}
