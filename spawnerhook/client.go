package spawnerhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tokenkeeper/tokenkeeper/refresh"
)

// Client calls tokenkeeper's fresh-token endpoint, as a notebook or a
// single-user server does with its JupyterHub token.
type Client struct {
	base   string
	token  string
	http   *http.Client
	target url.Values // audience or idp; empty for the user's own token

	// retryFor is how long FreshToken keeps retrying refused or reset
	// connections and busy answers; sleep waits between tries and now
	// reads the clock. Tests replace them.
	retryFor time.Duration
	sleep    func(context.Context, time.Duration) error
	now      func() time.Time
}

// RetryFor is how long FreshToken keeps trying while tokenkeeper refuses or
// resets connections, or answers that it is busy: after a crash the hub
// restarts its managed service only at its next poll.
const RetryFor = 45 * time.Second

// Backoff between tries: the first wait, doubling up to the longest.
const (
	firstRetry   = 500 * time.Millisecond
	longestRetry = 5 * time.Second
)

// NewClient returns a client for the service at base (TOKENKEEPER_URL,
// including the service prefix) authenticating with a JupyterHub token.
// It uses a copy of hc that never follows a redirect: the request carries
// the caller's JupyterHub token, which is for tokenkeeper alone.
func NewClient(base, token string, hc *http.Client) *Client {
	cp := *hc
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{base: strings.TrimRight(base, "/") + "/", token: token, http: &cp,
		retryFor: RetryFor, sleep: sleepCtx, now: time.Now}
}

// sleepCtx waits for d, or returns ctx's error when ctx ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// RedirectError is a redirect answer, which the client does not follow.
type RedirectError struct {
	Status   int
	Location string
}

func (e *RedirectError) Error() string {
	return fmt.Sprintf("HTTP %d redirects to %q; the token is not sent there (check TOKENKEEPER_URL)", e.Status, e.Location)
}

// For returns a client that asks for the token derived from the user's
// that t names (one exchanged for an audience, or an identity provider's)
// instead of the user's own.
func (c *Client) For(t refresh.Target) *Client {
	d := *c
	d.target = url.Values{}
	switch t.Kind {
	case refresh.KindAudience:
		d.target.Set("audience", t.Name)
	case refresh.KindProvider:
		d.target.Set("idp", t.Name)
	}
	return &d
}

// Token is a fresh access token as the service returned it.
type Token struct {
	AccessToken string
	ExpiresAt   time.Time
}

// ErrLoginRequired means the user's Keycloak session has ended.
var ErrLoginRequired = errors.New("the Keycloak session has ended: log in to JupyterHub again")

// ServiceError is any other error answer from the service.
type ServiceError struct {
	Status  int
	Message string
}

func (e *ServiceError) Error() string {
	return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
}

// FreshToken returns the caller's access token (or the one For chose) with
// at least minValid left. While tokenkeeper refuses or resets connections,
// or answers 429 (busy), it tries again with backoff (0.5 s doubling to 5 s)
// for up to RetryFor; any other failure, after which the request may have
// been processed, is returned at once.
func (c *Client) FreshToken(ctx context.Context, minValid time.Duration) (Token, error) {
	deadline := c.now().Add(c.retryFor)
	delay := firstRetry
	for {
		tok, again, err := c.freshTokenOnce(ctx, minValid)
		if err == nil || !again {
			return tok, err
		}
		if c.now().Add(delay).After(deadline) {
			return Token{}, &UnreachableError{For: c.retryFor, Err: err}
		}
		if serr := c.sleep(ctx, delay); serr != nil {
			return Token{}, err
		}
		delay = min(2*delay, longestRetry)
	}
}

// UnreachableError means tokenkeeper refused or reset every connection, or
// was busy, for the whole retry time. Err is the last failure.
type UnreachableError struct {
	For time.Duration
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("%v (tried for %s; tokenkeeper may be restarting or not running)", e.Err, e.For)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// freshTokenOnce makes one request for FreshToken. again reports a failure
// worth trying again: a refused or reset connection, or a 429 (busy)
// answer. A failure while reading an answer never is one.
func (c *Client) freshTokenOnce(ctx context.Context, minValid time.Duration) (tok Token, again bool, err error) {
	q := url.Values{"min_valid": {strconv.Itoa(int(minValid.Seconds()))}}
	for k, v := range c.target {
		q[k] = v
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"fresh-token?"+q.Encode(), nil)
	if err != nil {
		return Token{}, false, err
	}
	req.Header.Set("Authorization", "token "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		again := errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
		return Token{}, again, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return Token{}, false, &RedirectError{Status: resp.StatusCode, Location: resp.Header.Get("Location")}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Token{}, false, fmt.Errorf("read: %w", err)
	}
	tok, err = decodeToken(resp.StatusCode, body)
	return tok, resp.StatusCode == http.StatusTooManyRequests, err
}

func decodeToken(status int, body []byte) (Token, error) {
	if status == http.StatusConflict {
		return Token{}, ErrLoginRequired
	}
	if status != http.StatusOK {
		var e errorBody
		if json.Unmarshal(body, &e) != nil || e.Message == "" {
			e.Message = http.StatusText(status)
		}
		return Token{}, &ServiceError{Status: status, Message: e.Message}
	}
	var t tokenResponse
	if err := json.Unmarshal(body, &t); err != nil || t.AccessToken == "" {
		return Token{}, errors.New("unreadable answer")
	}
	exp, err := time.Parse(time.RFC3339, t.ExpiresAt)
	if err != nil {
		return Token{}, fmt.Errorf("expires_at: %w", err)
	}
	return Token{AccessToken: t.AccessToken, ExpiresAt: exp}, nil
}

// WriteTokenFile writes token to path atomically with mode 0600: a reader
// sees the old file or the new one, never a partial one.
func WriteTokenFile(path, token string) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	defer os.Remove(f.Name()) // after a successful rename this finds nothing
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("token file: %w", err)
	}
	if _, err := f.WriteString(token + "\n"); err != nil {
		f.Close()
		return fmt.Errorf("token file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	return nil
}

// Watch keeps the token file at path fresh until ctx ends: it rewrites the
// file when a third of the token's remaining life is left (and at least
// minValid before expiry), retrying failures with capped backoff. It returns
// ErrLoginRequired, after removing the file, when the session has ended.
func (c *Client) Watch(ctx context.Context, path string, minValid time.Duration, now func() time.Time,
	logf func(format string, args ...any)) error {
	retry := time.Second
	for {
		wait, err := c.writeOnce(ctx, path, minValid, now)
		switch {
		case errors.Is(err, ErrLoginRequired):
			os.Remove(path)
			return err
		case err != nil:
			logf("token refresh failed, retrying in %s: %v", retry, err)
			wait, retry = retry, min(2*retry, time.Minute)
		default:
			retry = time.Second
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// writeOnce fetches and writes one token and returns how long to wait.
func (c *Client) writeOnce(ctx context.Context, path string, minValid time.Duration, now func() time.Time) (time.Duration, error) {
	tok, err := c.FreshToken(ctx, minValid)
	if err != nil {
		return 0, err
	}
	if err := WriteTokenFile(path, tok.AccessToken); err != nil {
		return 0, err
	}
	left := tok.ExpiresAt.Sub(now())
	return max(time.Second, min(left*2/3, left-minValid)), nil
}
