package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/errgroup"

	"github.com/tokenkeeper/tokenkeeper/integration"
)

// naivePage is the naive refresher's list page size (the hub's maximum).
const naivePage = 200

// naive is the refresher tokenkeeper is compared with: every tick it lists
// every user, reads every user's auth_state and refreshes every user's
// tokens, with as many requests in flight as tokenkeeper's default.
type naive struct {
	api, token string
	oauth      oauth2.Config
	client     *http.Client
	conc       int

	lists, reads, patches, grants, failures atomic.Int64
	mu                                      sync.Mutex // guards firstErr
	firstErr                                error
}

// naiveTick is what one tick cost.
type naiveTick struct {
	Wall                                    time.Duration
	Lists, Reads, Patches, Grants, Failures int64
	FirstErr                                string
}

// HubRequests is the tick's hub requests.
func (t naiveTick) HubRequests() int64 { return t.Lists + t.Reads + t.Patches }

func newNaive(s *integration.Stack, conc int) *naive {
	return &naive{
		api: s.HubAPI(), token: s.TestToken, conc: conc,
		client: &http.Client{Timeout: 30 * time.Second},
		oauth: oauth2.Config{ClientID: "jupyterhub", ClientSecret: s.ClientSecret, Endpoint: oauth2.Endpoint{
			TokenURL: s.Issuer() + "/protocol/openid-connect/token", AuthStyle: oauth2.AuthStyleInHeader,
		}},
	}
}

// tick lists, reads and refreshes everyone once. Failures of single users
// are counted, not fatal; a failed list is.
func (n *naive) tick(ctx context.Context) (naiveTick, error) {
	start := time.Now()
	before := n.counts()
	names, err := n.list(ctx)
	if err != nil {
		return naiveTick{}, err
	}
	var g errgroup.Group
	g.SetLimit(n.conc)
	for _, name := range names {
		g.Go(func() error {
			n.fail(n.refresh(ctx, name))
			return nil
		})
	}
	_ = g.Wait() // failures are counted by fail
	t := n.counts().minus(before)
	t.Wall = time.Since(start)
	n.mu.Lock()
	if n.firstErr != nil {
		t.FirstErr = n.firstErr.Error()
	}
	n.mu.Unlock()
	return t, nil
}

func (n *naive) counts() naiveTick {
	return naiveTick{Lists: n.lists.Load(), Reads: n.reads.Load(), Patches: n.patches.Load(),
		Grants: n.grants.Load(), Failures: n.failures.Load()}
}

func (t naiveTick) minus(o naiveTick) naiveTick {
	return naiveTick{Lists: t.Lists - o.Lists, Reads: t.Reads - o.Reads, Patches: t.Patches - o.Patches,
		Grants: t.Grants - o.Grants, Failures: t.Failures - o.Failures}
}

func (n *naive) fail(err error) {
	if err == nil {
		return
	}
	n.failures.Add(1)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.firstErr == nil {
		n.firstErr = err
	}
}

// list reads the user list page by page until a short page.
func (n *naive) list(ctx context.Context) ([]string, error) {
	var names []string
	for offset := 0; ; offset += naivePage {
		var page []struct {
			Name string `json:"name"`
		}
		path := fmt.Sprintf("/users?offset=%d&limit=%d", offset, naivePage)
		n.lists.Add(1)
		if err := integration.HubAPI(ctx, n.api, n.token, http.MethodGet, path, nil, &page); err != nil {
			return nil, fmt.Errorf("naive: list users: %w", err)
		}
		for _, u := range page {
			names = append(names, u.Name)
		}
		if len(page) < naivePage {
			return names, nil
		}
	}
}

// refresh reads one user's auth_state, spends its refresh token and writes
// the new tokens back in OAuthenticator's layout.
func (n *naive) refresh(ctx context.Context, name string) error {
	var u struct {
		AuthState map[string]any `json:"auth_state"`
	}
	path := "/users/" + url.PathEscape(name)
	n.reads.Add(1)
	if err := integration.HubAPI(ctx, n.api, n.token, http.MethodGet, path, nil, &u); err != nil {
		return fmt.Errorf("naive: read %s: %w", name, err)
	}
	rt, _ := u.AuthState["refresh_token"].(string)
	if rt == "" {
		return nil // nothing to refresh (the stack's own users who never logged in); the read is counted
	}
	n.grants.Add(1)
	octx := context.WithValue(ctx, oauth2.HTTPClient, n.client)
	tok, err := n.oauth.TokenSource(octx, &oauth2.Token{RefreshToken: rt}).Token()
	if err != nil {
		return fmt.Errorf("naive: refresh %s: %w", name, err)
	}
	n.patches.Add(1)
	body := map[string]any{"auth_state": naiveState(u.AuthState, tok)}
	if err := integration.HubAPI(ctx, n.api, n.token, http.MethodPatch, path, body, nil); err != nil {
		return fmt.Errorf("naive: write %s: %w", name, err)
	}
	return nil
}

// naiveState is auth_state after a refresh, in OAuthenticator's layout.
func naiveState(old map[string]any, tok *oauth2.Token) map[string]any {
	st := make(map[string]any, len(old))
	for k, v := range old {
		st[k] = v
	}
	resp := map[string]any{
		"access_token": tok.AccessToken, "refresh_token": tok.RefreshToken, "token_type": tok.TokenType,
		"expires_in": tok.ExpiresIn,
	}
	for _, k := range []string{"id_token", "refresh_expires_in", "scope", "session_state", "not-before-policy"} {
		if v := tok.Extra(k); v != nil {
			resp[k] = v
		}
	}
	st["access_token"], st["refresh_token"], st["token_response"] = tok.AccessToken, tok.RefreshToken, resp
	if id, _ := tok.Extra("id_token").(string); id != "" {
		st["id_token"] = id
	}
	if scope, _ := tok.Extra("scope").(string); scope != "" {
		st["scope"] = strings.Fields(scope)
	}
	return st
}
