// Package hubclient is a typed client for the JupyterHub REST API, as much of
// it as tokenkeeper uses: the paginated user list, one user with auth_state,
// writing auth_state, caller identity, tokens and servers. Non-2xx answers
// are *APIError values carrying the status; requests toward the hub are
// bounded by a semaphore; nothing here retries (the caller owns retrying).
package hubclient

import (
	"bytes"
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
	"unicode/utf8"

	"golang.org/x/sync/singleflight"
)

// maxBody bounds how much of a hub answer is read.
const maxBody = 4 << 20

// Client talks to one hub's REST API with the service's token.
type Client struct {
	base  string // API URL without a trailing slash
	token string
	http  *http.Client
	sem   chan struct{}
	ttl   time.Duration
	now   func() time.Time

	observe func(route string, d time.Duration, err error)

	flight singleflight.Group
	mu     sync.Mutex // guards ids
	ids    map[[32]byte]cachedIdentity
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (default: 10 s timeout).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithConcurrency bounds the requests in flight toward the hub (default 10).
func WithConcurrency(n int) Option {
	return func(c *Client) { c.sem = make(chan struct{}, max(n, 1)) }
}

// WithIdentityCacheTTL sets how long Identify answers are kept (default 60 s).
func WithIdentityCacheTTL(d time.Duration) Option { return func(c *Client) { c.ttl = d } }

// WithObserver calls observe after every request with its route (the method
// and path with user names replaced by {name}), its duration and its error.
func WithObserver(observe func(route string, d time.Duration, err error)) Option {
	return func(c *Client) { c.observe = observe }
}

// WithClock sets the clock used for the identity cache.
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// New returns a client for the hub API at apiURL (JUPYTERHUB_API_URL, e.g.
// http://127.0.0.1:8081/hub/api) using token.
func New(apiURL, token string, opts ...Option) *Client {
	c := &Client{
		base: strings.TrimRight(apiURL, "/"), token: token,
		http: &http.Client{Timeout: 10 * time.Second},
		sem:  make(chan struct{}, 10), ttl: time.Minute, now: time.Now,
		ids: map[[32]byte]cachedIdentity{},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// APIError is a non-2xx answer from the hub, whose error body is
// {"status": N, "message": "..."}.
type APIError struct {
	Method, Path string
	Status       int
	Message      string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("hub %s %s: %d %s", e.Method, e.Path, e.Status, e.Message)
}

// request is one call to the hub.
type request struct {
	method, path string
	query        url.Values
	body         any
	token        string // overrides the client's token
	accept       string
}

// do sends r and decodes a 2xx JSON answer into out (when out is not nil).
func (c *Client) do(ctx context.Context, r request, out any) (err error) {
	select {
	case c.sem <- struct{}{}:
		defer func() { <-c.sem }()
	case <-ctx.Done():
		return fmt.Errorf("hubclient: %s %s: %w", r.method, r.path, ctx.Err())
	}
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
		return fmt.Errorf("hubclient: %s %s: %w", r.method, r.path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("hubclient: %s %s: read: %w", r.method, r.path, err)
	}
	if resp.StatusCode/100 != 2 {
		return apiError(r, resp.StatusCode, body)
	}
	if out == nil || len(body) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("hubclient: %s %s: decode: %w", r.method, r.path, err)
	}
	return nil
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
			return nil, fmt.Errorf("hubclient: %s %s: encode: %w", r.method, r.path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, fmt.Errorf("hubclient: %s %s: %w", r.method, r.path, err)
	}
	token := c.token
	if r.token != "" {
		token = r.token
	}
	req.Header.Set("Authorization", "token "+token)
	req.Header.Set("Accept", firstNonEmpty(r.accept, "application/json"))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

func apiError(r request, status int, body []byte) error {
	var e struct {
		Message string `json:"message"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &e) == nil && e.Message != "" {
		msg = e.Message
	}
	if n := 200; len(msg) > n {
		for n > 0 && !utf8.RuneStart(msg[n]) {
			n--
		}
		msg = msg[:n]
	}
	return &APIError{Method: r.method, Path: r.path, Status: status, Message: msg}
}

// userPath returns /users/{name}, path-escaped.
func userPath(name string, rest ...string) string {
	p := "/users/" + url.PathEscape(name)
	for _, r := range rest {
		p += "/" + url.PathEscape(r)
	}
	return p
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// IsStatus reports whether err is an *APIError with the given status.
func IsStatus(err error, status int) bool {
	var e *APIError
	return errors.As(err, &e) && e.Status == status
}

// route is r's method and path with the user name replaced, for metrics.
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
