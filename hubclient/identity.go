package hubclient

import (
	"context"
	"crypto/sha256"
	"net/http"
	"slices"
	"time"
)

// Identity is who owns a token, from GET /user with that token.
type Identity struct {
	Kind      string   `json:"kind"`
	Name      string   `json:"name"`
	Admin     bool     `json:"admin"`
	Scopes    []string `json:"scopes"`
	SessionID *string  `json:"session_id"`
	TokenID   string   `json:"token_id"`
}

// Allows reports whether the identity holds scope for user: unfiltered
// ("custom:x"), or filtered for that user ("custom:x!user=NAME"). With user
// "" only the unfiltered scope counts.
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

// Identify asks the hub who owns token, caching the answer for the TTL by
// the token's digest (the token itself is not kept). Concurrent lookups of
// one token make one request. An invalid token yields the hub's *APIError
// (status 403).
func (c *Client) Identify(ctx context.Context, token string) (Identity, error) {
	key := sha256.Sum256([]byte(token))
	if id, ok := c.cachedIdentity(key); ok {
		return id, nil
	}
	v, err, _ := c.flight.Do(string(key[:]), func() (any, error) {
		var id Identity
		err := c.do(ctx, request{method: http.MethodGet, path: "/user", token: token}, &id)
		if err == nil {
			c.mu.Lock()
			c.ids[key] = cachedIdentity{id: id, at: c.now()}
			c.mu.Unlock()
		}
		return id, err
	})
	id, _ := v.(Identity)
	return id, err
}

func (c *Client) cachedIdentity(key [32]byte) (Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.ids[key]
	if !ok {
		return Identity{}, false
	}
	if c.now().Sub(e.at) >= c.ttl {
		delete(c.ids, key)
		return Identity{}, false
	}
	return e.id, true
}

// Self returns the identity of the client's own token.
func (c *Client) Self(ctx context.Context) (Identity, error) {
	var id Identity
	err := c.do(ctx, request{method: http.MethodGet, path: "/user"}, &id)
	return id, err
}
