package hubclient

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

const (
	// maxBody bounds how much of a hub answer is read and decoded.
	maxBody = 4 << 20
	// maxMessage bounds the length in bytes of APIError.Message.
	maxMessage = 200
)

// Client talks to one hub's REST API with the service's token. It is safe
// for concurrent use.
type Client struct {
	base  string // API URL without a trailing slash
	token string
	http  *http.Client
	sem   chan struct{} // requests in flight, except identity lookups
	idSem chan struct{} // identity lookups in flight
	// idQueue holds a slot for every identity lookup in flight or waiting
	// for idSem; a lookup that finds it full is refused (ErrBusy).
	idQueue chan struct{}
	// budget paces the refresher's requests to the hub (sweeps, write-backs,
	// fresh-token misses), idBudget identity lookups; together they stay
	// within the rate limit, and lookups cannot take the refresher's share.
	// nil means no limit.
	budget, idBudget *rate.Limiter
	ttl              time.Duration
	now              func() time.Time

	observe func(route string, d time.Duration, err error)

	mu      sync.Mutex // guards ids, flights, purged and epoch
	ids     map[[32]byte]cachedIdentity
	flights map[[32]byte]*lookup
	purged  time.Time
	epoch   uint64 // counts Forget calls
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (default: a 10 s timeout). The client
// is copied and never follows redirects, whatever h says: every request
// carries a token meant for the hub alone.
func WithHTTPClient(h *http.Client) Option {
	return func(c *Client) { c.http = noRedirects(h) }
}

// noRedirects returns a copy of h that hands a redirect back as the answer
// instead of following it.
func noRedirects(h *http.Client) *http.Client {
	cp := *h
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cp
}

// WithRateLimit caps the requests sent to the hub at rps per second, so
// that tokenkeeper takes at most a known share of the hub's API. Identity
// lookups (Identify: callers' tokens, made-up ones included) get a fifth of
// it, at least one per second, and the refresher the rest, so that callers
// cannot slow the refresher down. Requests are spaced evenly, with no
// bursts, a little further apart than 1/rps, so that no second of the hub's
// clock sees more than rps even when network delays bunch a few of them.
func WithRateLimit(rps float64) Option {
	return func(c *Client) {
		ids := identityRate(rps)
		c.budget = rate.NewLimiter(rate.Limit(RefresherRate(rps)), 1)
		c.idBudget = rate.NewLimiter(rate.Limit(ids*rateHeadroom), 1)
	}
}

// RefresherRate is the requests per second WithRateLimit(rps) leaves the
// refresher (everything but identity lookups), as paced: what a plan of
// the refresher's hub requests may count on.
func RefresherRate(rps float64) float64 { return (rps - identityRate(rps)) * rateHeadroom }

// identityRate is identity lookups' share of rps.
func identityRate(rps float64) float64 { return max(rps*identityShare, min(1, rps/2)) }

const (
	// rateHeadroom is the share of the rate limit the pacing uses.
	rateHeadroom = 0.98
	// identityShare is the share of the rate limit identity lookups get.
	identityShare = 0.2
	// identityQueue is how many identity lookups may wait for a slot of
	// the lookup pool; more are refused at once (ErrBusy).
	identityQueue = 16
	// identityWaitLimit is the longest an identity lookup waits for a slot
	// of the lookup pool and its share of the rate limit, together; a
	// lookup that would wait longer is refused (ErrBusy).
	identityWaitLimit = time.Second
)

// ErrBusy means tokenkeeper's identity lookups are at their limit (made-up
// or many tokens at once); the caller should try again shortly.
var ErrBusy = errors.New("hubclient: too many identity lookups at once; try again shortly")

// WithConcurrency bounds the requests in flight toward the hub to n (default
// 10), identity lookups apart. Values below 1 mean 1.
func WithConcurrency(n int) Option {
	return func(c *Client) { c.sem = make(chan struct{}, max(n, 1)) }
}

// WithIdentityConcurrency bounds the Identify lookups in flight toward the
// hub to n (default 4), on a pool of their own. Values below 1 mean 1.
func WithIdentityConcurrency(n int) Option {
	return func(c *Client) {
		c.idSem = make(chan struct{}, max(n, 1))
		c.idQueue = make(chan struct{}, max(n, 1)+identityQueue)
	}
}

// WithIdentityCacheTTL sets how long an Identify answer is reused (default
// and maximum 10 s). Zero or less turns the cache of identities off;
// refusals are cached for 2 s regardless.
func WithIdentityCacheTTL(d time.Duration) Option {
	return func(c *Client) { c.ttl = min(d, maxIdentityTTL) }
}

// WithObserver calls observe after every request with its route (the method
// and path with user names, token ids and server names replaced), its
// duration and its error.
func WithObserver(observe func(route string, d time.Duration, err error)) Option {
	return func(c *Client) { c.observe = observe }
}

// WithClock sets the clock the identity cache reads (default time.Now).
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// New returns a client for the hub API at apiURL (JUPYTERHUB_API_URL, e.g.
// http://127.0.0.1:8081/hub/api) using token.
func New(apiURL, token string, opts ...Option) *Client {
	c := &Client{
		base: strings.TrimRight(apiURL, "/"), token: token,
		http:    noRedirects(&http.Client{Timeout: 10 * time.Second}),
		sem:     make(chan struct{}, 10),
		idSem:   make(chan struct{}, defaultIdentityConcurrency),
		idQueue: make(chan struct{}, defaultIdentityConcurrency+identityQueue),
		ttl:     maxIdentityTTL, now: time.Now,
		ids: map[[32]byte]cachedIdentity{}, flights: map[[32]byte]*lookup{},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// APIError is a non-2xx answer from the hub. Message is the "message" of the
// hub's JSON error body {"status": N, "message": "..."}, or the start of the
// body when it is not such JSON.
type APIError struct {
	Method, Path string // Path is relative to the API URL, e.g. /users/alice
	Status       int
	Message      string
}

// Error returns the method, path, status and message.
func (e *APIError) Error() string {
	msg := cmp.Or(e.Message, http.StatusText(e.Status))
	return strings.TrimSpace(fmt.Sprintf("hubclient: %s %s: %d %s", e.Method, e.Path, e.Status, msg))
}

// IsStatus reports whether err is or wraps an *APIError with the given status.
func IsStatus(err error, status int) bool {
	var e *APIError
	return errors.As(err, &e) && e.Status == status
}

// request is one call to the hub.
type request struct {
	method, path string // path is escaped and relative to the API URL
	query        url.Values
	body         any
	token        string // overrides the client's token
	accept       string // overrides application/json
	lookup       bool   // an identity lookup: its own pool, queue and budget
}

// fail wraps err with the request's method and path and, unless it is
// empty, the step that failed.
func (r request) fail(step string, err error) error {
	if step == "" {
		return fmt.Errorf("hubclient: %s %s: %w", r.method, r.path, err)
	}
	return fmt.Errorf("hubclient: %s %s: %s: %w", r.method, r.path, step, err)
}

// do sends r and decodes a 2xx JSON answer into out, unless out is nil.
func (c *Client) do(ctx context.Context, r request, out any) (err error) {
	release, err := c.admit(ctx, r)
	if err != nil {
		return r.fail("", err)
	}
	defer release()
	req, err := c.newRequest(ctx, r)
	if err != nil {
		return err
	}
	if c.observe != nil {
		start := time.Now()
		defer func() { c.observe(route(r), time.Since(start), err) }()
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return r.fail("", err)
	}
	defer drainAndClose(resp.Body)
	return readAnswer(r, resp, out)
}

// admit waits for r's turn: a slot of its pool and its share of the rate
// limit. An identity lookup first takes a queue slot and is refused at once
// (ErrBusy) when the queue is full; its whole wait, for a slot of the
// lookup pool and then for its share, is bounded by identityWaitLimit: a
// lookup that would wait longer is refused (ErrBusy) when that is known
// (its share would come too late) or when the limit has passed, so that
// made-up tokens cannot pile up waiting and no caller waits in the queue
// longer than identityWaitLimit.
func (c *Client) admit(ctx context.Context, r request) (release func(), err error) {
	sem, budget := c.sem, c.budget
	var expired <-chan time.Time // fires when a lookup's wait is over; nil never fires
	var deadline time.Time
	if r.lookup {
		select {
		case c.idQueue <- struct{}{}:
		default:
			return nil, ErrBusy
		}
		sem, budget = c.idSem, c.idBudget
		deadline = time.Now().Add(identityWaitLimit)
		t := time.NewTimer(identityWaitLimit)
		defer t.Stop()
		expired = t.C
	}
	free := func() {
		if r.lookup {
			<-c.idQueue
		}
	}
	if err := acquire(ctx, sem, expired); err != nil {
		free()
		return nil, err
	}
	release = func() { <-sem; free() }
	if err := c.pace(ctx, budget, r.lookup, deadline); err != nil {
		release()
		return nil, err
	}
	return release, nil
}

// pace waits for budget (nil: no limit). A lookup whose turn would come
// after deadline is refused (ErrBusy) instead.
func (c *Client) pace(ctx context.Context, budget *rate.Limiter, lookup bool, deadline time.Time) error {
	if budget == nil {
		return nil
	}
	if !lookup {
		if err := budget.Wait(ctx); err != nil {
			return fmt.Errorf("hub request budget: %w", err)
		}
		return nil
	}
	res := budget.Reserve()
	if d := res.Delay(); d > time.Until(deadline) {
		res.Cancel()
		return ErrBusy
	} else if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			res.Cancel()
			return ctx.Err()
		}
	}
	return nil
}

// acquire waits for a slot of sem, for ctx to end, or for expired to fire
// (ErrBusy; a nil expired never fires).
func acquire(ctx context.Context, sem chan struct{}, expired <-chan time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-expired:
		return ErrBusy
	}
}

func (c *Client) newRequest(ctx context.Context, r request) (*http.Request, error) {
	u := c.base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return nil, r.fail("encode", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, r.fail("", err)
	}
	req.Header.Set("Authorization", "token "+cmp.Or(r.token, c.token))
	req.Header.Set("Accept", cmp.Or(r.accept, "application/json"))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// readAnswer turns a non-2xx answer into an *APIError and decodes a 2xx
// answer into out.
func readAnswer(r request, resp *http.Response, out any) error {
	if resp.StatusCode/100 != 2 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody)) // best effort: the status is the error
		return apiError(r, resp.StatusCode, body)
	}
	if out == nil {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return r.fail("read", err)
	}
	if len(body) > maxBody {
		return r.fail("read", fmt.Errorf("answer is larger than %d bytes", maxBody))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return r.fail("decode", err)
	}
	return nil
}

// drainAndClose reads what is left of a body (up to maxBody) so that the
// connection can be reused, then closes it.
func drainAndClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, maxBody))
	_ = body.Close()
}

func apiError(r request, status int, body []byte) *APIError {
	var e struct {
		Message string `json:"message"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		msg = e.Message
	}
	return &APIError{Method: r.method, Path: r.path, Status: status, Message: truncate(msg, maxMessage)}
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// userPath returns /users/{name}, followed by the given segments, each one
// a path segment of its own.
func userPath(name string, segments ...string) string {
	p := "/users/" + segment(name)
	for _, s := range segments {
		p += "/" + segment(s)
	}
	return p
}

// segment escapes s as one path segment. url.PathEscape leaves "." and ".."
// as they are, which a server or proxy may resolve as the current or parent
// directory; they are percent-encoded instead.
func segment(s string) string {
	switch s {
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	return url.PathEscape(s)
}

// CheckName reports why a hub user name cannot be used as one, if it
// cannot: empty, not UTF-8, or holding a NUL or other control character.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("empty user name")
	case !utf8.ValidString(name):
		return fmt.Errorf("user name %q is not UTF-8", name)
	case strings.ContainsFunc(name, unicode.IsControl):
		return fmt.Errorf("user name %q holds a control character", name)
	}
	return nil
}

// route is r's method and path with the user name and any token id or
// server name replaced, for metrics.
func route(r request) string {
	parts := strings.Split(r.path, "/")
	if len(parts) > 2 && parts[1] == "users" {
		parts[2] = "{name}"
	}
	if len(parts) > 4 && (parts[3] == "tokens" || parts[3] == "servers") {
		parts[4] = "{id}"
	}
	return r.method + " " + strings.Join(parts, "/")
}
