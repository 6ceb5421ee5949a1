package hubclient

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"slices"
	"time"
)

const (
	// lookupTimeout bounds one shared GET /user of Identify.
	lookupTimeout = 30 * time.Second
	// maxIdentityTTL is the longest an Identify answer is reused: a token
	// the hub revoked keeps working here at most this long.
	maxIdentityTTL = 10 * time.Second
	// refusalTTL is how long a token the hub refused (401 or 403) is refused
	// again without asking, so that a caller retrying a bad token in a loop
	// costs the hub one request every refusalTTL.
	refusalTTL = 2 * time.Second
	// defaultIdentityConcurrency bounds the lookups in flight toward the hub.
	defaultIdentityConcurrency = 4
)

// Identity is who a token belongs to, from GET /user with that token.
type Identity struct {
	Kind  string `json:"kind"` // "user" or "service"
	Name  string `json:"name"`
	Admin bool   `json:"admin"`
	// Scopes are the token's expanded scopes, with filters resolved
	// (e.g. "custom:x!user=alice").
	Scopes    []string `json:"scopes"`
	SessionID *string  `json:"session_id"`
	TokenID   string   `json:"token_id"` // JupyterHub 5.0 and later
}

// Allows reports whether the identity holds scope for user: unfiltered
// ("custom:x"), or filtered for exactly that user ("custom:x!user=NAME").
// The hub expands "!user" to "!user=NAME" for us, so that is the only
// filtered form; group and other filters do not count. With user "" only
// the unfiltered scope counts.
func (id Identity) Allows(scope, user string) bool {
	if slices.Contains(id.Scopes, scope) {
		return true
	}
	return user != "" && slices.Contains(id.Scopes, scope+"!user="+user)
}

// cachedIdentity is an answer of the hub about one token: an identity, or a
// refusal (err set).
type cachedIdentity struct {
	id      Identity
	err     *APIError
	expires time.Time
}

// lookup is one GET /user shared by every caller asking about the same token
// at the same time.
type lookup struct {
	done   chan struct{} // closed when id and err are set
	id     Identity
	err    error
	cancel context.CancelFunc
	epoch  uint64 // Client.epoch when the lookup started

	waiters int // guarded by Client.mu
}

// Identify asks the hub who owns token (GET /user with that token). Answers
// are reused for the cache TTL (at most 10 s), refusals (401, 403) for 2 s,
// keyed by the token's SHA-256 digest; the token itself is not kept.
// Concurrent lookups of one token make one request, on a pool of their own
// (WithIdentityConcurrency), so that callers with bad tokens cannot starve
// the sweep's requests. Each caller stops waiting when its own ctx ends, and
// the request is cancelled once every caller has stopped waiting. An invalid
// or empty token is an *APIError with status 403, as the hub answers it.
func (c *Client) Identify(ctx context.Context, token string) (Identity, error) {
	r := request{method: http.MethodGet, path: "/user", token: token, lookup: true}
	if token == "" {
		return Identity{}, &APIError{Method: r.method, Path: r.path, Status: http.StatusForbidden, Message: "no token"}
	}
	key := sha256.Sum256([]byte(token))
	cached, l := c.join(ctx, key, r)
	if l == nil {
		if cached.err != nil {
			return Identity{}, cached.err
		}
		return cached.id, nil
	}
	select {
	case <-l.done:
		return l.id, l.err
	case <-ctx.Done():
		c.leave(key, l)
		return Identity{}, r.fail("", ctx.Err())
	}
}

// join returns the cached answer for key, or else the lookup to wait for,
// starting one when none is in flight. The lookup's goroutine ends when its
// request does: at the latest lookupTimeout after it started, or as soon as
// the last waiter leaves.
func (c *Client) join(ctx context.Context, key [32]byte, r request) (cachedIdentity, *lookup) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.ids[key]; ok && now.Before(e.expires) {
		return e, nil
	}
	if l, ok := c.flights[key]; ok {
		l.waiters++
		return cachedIdentity{}, l
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
	l := &lookup{done: make(chan struct{}), cancel: cancel, epoch: c.epoch, waiters: 1}
	c.flights[key] = l
	go c.run(lctx, key, l, r)
	return cachedIdentity{}, l
}

// leave records that a waiter gave up on l, and cancels l when it was the last.
func (c *Client) leave(key [32]byte, l *lookup) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l.waiters--
	if l.waiters > 0 {
		return
	}
	l.cancel()
	if c.flights[key] == l {
		delete(c.flights, key)
	}
}

// run makes the shared request of l and caches its answer unless l was
// cancelled or a Forget happened meanwhile.
func (c *Client) run(ctx context.Context, key [32]byte, l *lookup, r request) {
	defer l.cancel()
	var id Identity
	err := c.do(ctx, r, &id)
	l.id, l.err = id, err
	now := c.now()
	c.mu.Lock()
	if c.flights[key] == l {
		delete(c.flights, key)
	}
	if ctx.Err() == nil && l.epoch == c.epoch {
		c.remember(key, id, err, now)
	}
	c.mu.Unlock()
	close(l.done)
}

// remember caches an identity for the TTL or a refusal for refusalTTL; other
// errors are not cached. At most once per maxIdentityTTL it also drops every
// expired entry, so tokens never asked about again do not pile up. c.mu must
// be held.
func (c *Client) remember(key [32]byte, id Identity, err error, now time.Time) {
	if now.Sub(c.purged) >= maxIdentityTTL {
		for k, e := range c.ids {
			if !now.Before(e.expires) {
				delete(c.ids, k)
			}
		}
		c.purged = now
	}
	var refused *APIError
	switch {
	case err == nil && c.ttl > 0:
		c.ids[key] = cachedIdentity{id: id, expires: now.Add(c.ttl)}
	case errors.As(err, &refused) && (refused.Status == http.StatusUnauthorized || refused.Status == http.StatusForbidden):
		c.ids[key] = cachedIdentity{err: refused, expires: now.Add(refusalTTL)}
	}
}

// Forget drops every cached identity of user, at once, so that a token of
// theirs that was just revoked is asked about again at its next use.
// Lookups in flight when Forget is called are not cached. DeleteToken calls
// it for the token's user.
func (c *Client) Forget(user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for k, e := range c.ids {
		if e.err == nil && e.id.Name == user {
			delete(c.ids, k)
		}
	}
}

// Self returns the identity of the client's own token, e.g. to check at
// startup that the service holds the scopes it needs. It is not cached.
func (c *Client) Self(ctx context.Context) (Identity, error) {
	var id Identity
	err := c.do(ctx, request{method: http.MethodGet, path: "/user"}, &id)
	return id, err
}
