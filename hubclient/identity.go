package hubclient

import (
	"context"
	"crypto/sha256"
	"net/http"
	"slices"
	"time"
)

// lookupTimeout bounds one shared GET /user of Identify, which does not end
// when the caller that started it gives up.
const lookupTimeout = 30 * time.Second

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

type cachedIdentity struct {
	id Identity
	at time.Time
}

// Identify asks the hub who owns token (GET /user with that token). Answers
// are reused for the cache TTL, keyed by the token's SHA-256 digest; the
// token itself is not kept. Concurrent lookups of one token make one
// request, and each caller stops waiting when its own ctx ends. An invalid
// or empty token is an *APIError with status 403, as the hub answers it;
// refusals are not cached.
func (c *Client) Identify(ctx context.Context, token string) (Identity, error) {
	r := request{method: http.MethodGet, path: "/user", token: token}
	if token == "" {
		return Identity{}, &APIError{Method: r.method, Path: r.path, Status: http.StatusForbidden, Message: "no token"}
	}
	key := sha256.Sum256([]byte(token))
	if id, ok := c.cachedIdentity(key); ok {
		return id, nil
	}
	ch := c.flight.DoChan(string(key[:]), func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
		defer cancel()
		var id Identity
		if err := c.do(ctx, r, &id); err != nil {
			return Identity{}, err
		}
		c.remember(key, id)
		return id, nil
	})
	select {
	case res := <-ch:
		id, _ := res.Val.(Identity)
		return id, res.Err
	case <-ctx.Done():
		return Identity{}, r.fail("", ctx.Err())
	}
}

func (c *Client) cachedIdentity(key [32]byte) (Identity, bool) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.ids[key]
	if !ok || now.Sub(e.at) >= c.ttl {
		return Identity{}, false
	}
	return e.id, true
}

// remember caches id under key. At most once per TTL it also drops every
// expired entry, so tokens that are never asked about again do not pile up.
func (c *Client) remember(key [32]byte, id Identity) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.purged) >= c.ttl {
		for k, e := range c.ids {
			if now.Sub(e.at) >= c.ttl {
				delete(c.ids, k)
			}
		}
		c.purged = now
	}
	if c.ttl > 0 {
		c.ids[key] = cachedIdentity{id: id, at: now}
	}
}

// Self returns the identity of the client's own token, e.g. to check at
// startup that the service holds the scopes it needs. It is not cached.
func (c *Client) Self(ctx context.Context) (Identity, error) {
	var id Identity
	err := c.do(ctx, request{method: http.MethodGet, path: "/user"}, &id)
	return id, err
}
