package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"

	"github.com/tokenkeeper/tokenkeeper/integration"
)

// freshUser is the user whose token fresh-token serves under load.
const freshUser = "alice"

// freshResult is the fresh-token measurement.
type freshResult struct {
	// Sizes are the lengths of the user's real access, refresh and ID tokens.
	Sizes [3]int
	// BodyBytes is the length of fresh-token's answer.
	BodyBytes int
	Runs      []loadResult
}

// freshBody is fresh-token's answer, and the bare handler's.
type freshBody struct {
	User        string `json:"user"`
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresAt   string `json:"expires_at"`
	ExpiresIn   int64  `json:"expires_in"`
}

// measureFreshToken logs a user in through the real OAuth flow, warms
// tokenkeeper's caches, and runs the load generator against the bare
// handler, fresh-token and the hub's user API at each connection count.
func measureFreshToken(ctx context.Context, b *benchStack, o options) (freshResult, error) {
	var res freshResult
	if _, err := integration.Login(ctx, b.HubURL(), freshUser, freshUser+"-pw"); err != nil {
		return res, err
	}
	token, err := b.UserToken(ctx, freshUser, "access:services!service=tokenkeeper")
	if err != nil {
		return res, fmt.Errorf("user token: %w", err)
	}
	freshURL := b.ServiceURL() + "fresh-token?min_valid=1"
	body, n, err := getFresh(ctx, freshURL, "token "+token)
	if err != nil {
		return res, err
	}
	res.BodyBytes = n
	if res.Sizes, err = tokenSizes(ctx, b); err != nil {
		return res, err
	}
	bare := httptest.NewServer(bareHandler(body.AccessToken))
	defer bare.Close()
	targets := []target{
		{Name: "bare", URL: bare.URL + "/fresh-token"},
		{Name: "fresh-token", URL: freshURL, Authorization: "token " + token},
		{Name: "hub", URL: b.HubAPI() + "/users/" + url.PathEscape(freshUser), Authorization: "token " + b.TestToken},
	}
	for _, conns := range o.conns {
		for _, t := range targets {
			r, err := runLoad(ctx, t, conns, o.warm, o.run)
			if err != nil {
				return res, err
			}
			fmt.Printf("bench: %-11s %2d conns: %8.0f req/s  p50 %v  p99 %v  errors %d\n",
				t.Name, conns, r.RPS, r.P50, r.P99, r.Errors)
			res.Runs = append(res.Runs, r)
		}
	}
	return res, nil
}

// getFresh calls fresh-token once (warming the identity and token caches).
func getFresh(ctx context.Context, u, authorization string) (freshBody, int, error) {
	var body freshBody
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return body, 0, err
	}
	req.Header.Set("Authorization", authorization)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return body, 0, fmt.Errorf("fresh-token: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return body, 0, fmt.Errorf("fresh-token: HTTP %d %s (%v)", resp.StatusCode, raw, err)
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.AccessToken == "" {
		return body, 0, fmt.Errorf("fresh-token: unexpected answer %.200s", raw)
	}
	return body, len(raw), nil
}

// tokenSizes reads the user's auth_state through the hub's API (as a
// spawner would) and returns the lengths of its three tokens.
func tokenSizes(ctx context.Context, b *benchStack) ([3]int, error) {
	st, err := b.AuthState(ctx, freshUser)
	if err != nil {
		return [3]int{}, fmt.Errorf("auth_state: %w", err)
	}
	var out [3]int
	for i, k := range []string{"access_token", "refresh_token", "id_token"} {
		s, _ := st[k].(string)
		if s == "" {
			return out, fmt.Errorf("auth_state has no %s", k)
		}
		out[i] = len(s)
	}
	return out, nil
}

// bareHandler answers every request with a body of fresh-token's shape
// holding access, and does nothing else: the ceiling for fresh-token.
func bareHandler(access string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		exp := time.Now().Add(time.Minute)
		json.NewEncoder(w).Encode(freshBody{User: freshUser, AccessToken: access, TokenType: "Bearer",
			ExpiresAt: exp.UTC().Format(time.RFC3339), ExpiresIn: 60})
	})
}
