package hubclient

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestNoRedirectIsFollowed checks that a hub answering with a redirect to
// another server gets the redirect back as an *APIError, and that the other
// server never sees a request, a token or a body, whichever HTTP client the
// Client was given.
func TestNoRedirectIsFollowed(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(other.Close)
	hub := newFakeHub(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	})
	calls := map[string]func(c *Client) error{
		"Identify": func(c *Client) error { _, err := c.Identify(context.Background(), "caller-token"); return err },
		"Self":     func(c *Client) error { _, err := c.Self(context.Background()); return err },
		"User":     func(c *Client) error { _, err := c.User(context.Background(), "alice"); return err },
		"SetAuthState": func(c *Client) error {
			return c.SetAuthState(context.Background(), "alice", json.RawMessage(`{"refresh_token":"rt-secret"}`))
		},
		"DeleteToken": func(c *Client) error { return c.DeleteToken(context.Background(), "alice", "a1") },
		"Users": func(c *Client) error {
			for _, err := range c.Users(context.Background(), UserQuery{}) {
				return err
			}
			return nil
		},
	}
	clients := map[string]func() *Client{
		"default client": func() *Client { return New(hub.apiURL(), serviceToken) },
		"client that follows redirects": func() *Client {
			return New(hub.apiURL(), serviceToken, WithHTTPClient(&http.Client{}))
		},
	}
	for cname, newClient := range clients {
		for name, call := range calls {
			t.Run(cname+"/"+name, func(t *testing.T) {
				if err := call(newClient()); !IsStatus(err, http.StatusTemporaryRedirect) {
					t.Errorf("%s error = %v, want *APIError 307", name, err)
				}
			})
		}
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect target saw %d requests, want 0", n)
	}
}
