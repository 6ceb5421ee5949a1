package hubclient

import (
	"context"
	"net/http"
)

// Token is one of a user's hub API tokens. Tokens issued to browser sessions
// have a SessionID; a server's own token ("Server at /user/NAME/") and
// tokens made through the API do not. Timestamps are the hub's RFC 3339
// strings, "" when the hub sent null.
type Token struct {
	ID           string   `json:"id"`
	Kind         string   `json:"kind"`
	Note         string   `json:"note"`
	SessionID    *string  `json:"session_id"`
	OAuthClient  string   `json:"oauth_client"`
	Scopes       []string `json:"scopes"`
	Created      string   `json:"created"`
	LastActivity string   `json:"last_activity"`
	ExpiresAt    string   `json:"expires_at"`
}

// Tokens lists a user's API tokens (read:tokens).
func (c *Client) Tokens(ctx context.Context, user string) ([]Token, error) {
	var out struct {
		APITokens []Token `json:"api_tokens"`
	}
	err := c.do(ctx, request{method: http.MethodGet, path: userPath(user, "tokens")}, &out)
	return out.APITokens, err
}

// DeleteToken revokes one of a user's tokens (tokens scope). The hub deletes
// an OAuth token together with all of the user's tokens for the same OAuth
// client. Every cached identity of the user is forgotten (Forget), whatever
// the answer, so the revoked token stops working here at once.
func (c *Client) DeleteToken(ctx context.Context, user, id string) error {
	defer c.Forget(user)
	return c.do(ctx, request{method: http.MethodDelete, path: userPath(user, "tokens", id)}, nil)
}

// StopServer stops the user's default server (server "") or a named one
// (delete:servers). A 202, meaning the stop is still in progress, counts as
// success.
func (c *Client) StopServer(ctx context.Context, user, server string) error {
	path := userPath(user, "server")
	if server != "" {
		path = userPath(user, "servers", server)
	}
	return c.do(ctx, request{method: http.MethodDelete, path: path}, nil)
}
