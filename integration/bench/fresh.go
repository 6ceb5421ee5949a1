package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"time"
)

// freshMinValids are the min_valid values fresh-token is measured at: the
// least, a notebook's usual, and the pre-spawn hook's default (which is
// above half of a 5-minute token's life, so tokenkeeper caps it there).
var freshMinValids = []time.Duration{time.Second, time.Minute, 5 * time.Minute}

// freshUserName is the user whose token fresh-token serves at min_valid mv.
func freshUserName(mv time.Duration) string { return fmt.Sprintf("fresh-mv%d", int(mv.Seconds())) }

// freshResult is the fresh-token measurement.
type freshResult struct {
	// Sizes are the lengths of the users' real access, refresh and ID tokens.
	Sizes [3]int
	// BodyBytes is the length of fresh-token's answer.
	BodyBytes int
	Runs      []loadResult
	// Users are the hub's side of each min_valid over Watched.
	Users   []freshUser
	Watched time.Duration
	// Identities is tokenkeeper's identity lookups (GET /hub/api/user) over Watched.
	Identities int64
}

// freshUser is what one user's fresh-token calls cost the hub over the
// watched time: every call answered (load runs and a caller once a
// second), tokenkeeper's reads and writes of the user, and its refreshes.
type freshUser struct {
	MinValid      time.Duration
	Name          string
	Calls         int64
	Reads, Writes int64
	Refreshes     int
}

// freshBody is fresh-token's answer, and the bare handler's.
type freshBody struct {
	User        string `json:"user"`
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresAt   string `json:"expires_at"`
	ExpiresIn   int64  `json:"expires_in"`
}

// measureFreshToken gives one user per min_valid a real Keycloak session,
// calls fresh-token for each once a second for a token lifetime and more,
// and meanwhile runs the load generator against the bare handler (in its
// own process and in this one), fresh-token at each min_valid and the
// hub's user API at each connection count.
func measureFreshToken(ctx context.Context, b *benchStack, o options) (res freshResult, err error) {
	var names []string
	for _, mv := range freshMinValids {
		names = append(names, freshUserName(mv))
	}
	if _, err := populate(ctx, b.Stack, names); err != nil {
		return res, err
	}
	targets, access, err := freshTargets(ctx, b, &res)
	if err != nil {
		return res, err
	}
	start, before := time.Now(), b.gate.Identities()
	callers, stopCallers := startCallers(ctx, targets[:len(freshMinValids)], time.Second)
	hub := target{Name: "hub", URL: hubUserURL(b, names[0]), Authorization: "token " + b.TestToken}
	runs, err := loadRuns(ctx, o, access, targets, hub)
	res.Runs = runs
	if err == nil {
		err = waitUntil(ctx, start.Add(o.freshWatch))
	}
	calls := stopCallers()
	if err != nil {
		return res, err
	}
	res.Watched, res.Identities = time.Since(start), b.gate.Identities()-before
	if err := b.log.read(); err != nil {
		return res, err
	}
	for i, mv := range freshMinValids {
		u := freshUser{MinValid: mv, Name: names[i], Calls: calls[i]}
		for _, r := range runs {
			if r.Target == targets[i].Name {
				u.Calls += int64(r.Calls)
			}
		}
		c := b.gate.User(u.Name)
		u.Reads, u.Writes, u.Refreshes = c.Reads, c.Writes, b.log.count(u.Name)
		res.Users = append(res.Users, u)
	}
	return res, callers.err()
}

// freshTargets makes each fresh user's hub token, warms fresh-token once per
// user, and returns the fresh-token targets (in freshMinValids' order) and
// the access token the bare handlers serve.
func freshTargets(ctx context.Context, b *benchStack, res *freshResult) ([]target, string, error) {
	var targets []target
	var access string
	for _, mv := range freshMinValids {
		name := freshUserName(mv)
		token, err := b.UserToken(ctx, name, "access:services!service=tokenkeeper")
		if err != nil {
			return nil, "", fmt.Errorf("hub token of %s: %w", name, err)
		}
		t := target{Name: freshTargetName(mv),
			URL: fmt.Sprintf("%sfresh-token?min_valid=%d", b.ServiceURL(), int(mv.Seconds())), Authorization: "token " + token}
		body, n, err := getFresh(ctx, t.URL, t.Authorization)
		if err != nil {
			return nil, "", err
		}
		targets = append(targets, t)
		access, res.BodyBytes = body.AccessToken, n
	}
	var err error
	res.Sizes, err = tokenSizes(ctx, b, freshUserName(freshMinValids[0]))
	return targets, access, err
}

// loadRuns runs the load generator against the bare handler in its own
// process and in this one, the fresh targets and the hub's user API, at
// each connection count.
func loadRuns(ctx context.Context, o options, access string, fresh []target, hub target) ([]loadResult, error) {
	ownURL, stop, err := startBareProcess(ctx, access)
	if err != nil {
		return nil, err
	}
	defer stop()
	inProcess := httptest.NewServer(bareHandler(access))
	defer inProcess.Close()
	targets := append([]target{
		{Name: "bare, own process", URL: ownURL + "/fresh-token"},
		{Name: "bare, in process", URL: inProcess.URL + "/fresh-token"},
	}, fresh...)
	targets = append(targets, hub)
	var runs []loadResult
	for _, conns := range o.conns {
		for _, t := range targets {
			r, err := runLoad(ctx, t, conns, o.warm, o.run)
			if err != nil {
				return runs, err
			}
			fmt.Printf("bench: %-27s %2d conns: %8.0f req/s  p50 %v  p99 %v  errors %d\n",
				t.Name, conns, r.RPS, r.P50, r.P99, r.Errors)
			runs = append(runs, r)
		}
	}
	return runs, nil
}

// callers call fresh targets at a steady pace, as notebooks do.
type callers struct {
	mu       sync.Mutex
	firstErr error
}

func (c *callers) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.firstErr
}

// startCallers calls each target every interval until the returned
// function is called, which returns the calls answered per target.
func startCallers(ctx context.Context, targets []target, every time.Duration) (*callers, func() []int64) {
	c := &callers{}
	ctx, cancel := context.WithCancel(ctx)
	counts := make([]int64, len(targets))
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second}
	for i, t := range targets {
		wg.Go(func() {
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				if err := call(ctx, client, t); err == nil {
					counts[i]++
				} else if ctx.Err() == nil {
					c.mu.Lock()
					c.firstErr = cmp.Or(c.firstErr, fmt.Errorf("%s: %w", t.Name, err))
					c.mu.Unlock()
				}
			}
		})
	}
	return c, func() []int64 {
		cancel()
		wg.Wait()
		return counts
	}
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

// tokenSizes reads a user's auth_state through the hub's API (as a
// spawner would) and returns the lengths of its three tokens.
func tokenSizes(ctx context.Context, b *benchStack, user string) ([3]int, error) {
	st, err := b.AuthState(ctx, user)
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
		json.NewEncoder(w).Encode(freshBody{User: freshUserName(freshMinValids[0]), AccessToken: access, TokenType: "Bearer",
			ExpiresAt: exp.UTC().Format(time.RFC3339), ExpiresIn: 60})
	})
}

// hubUserURL is the hub's user API for name: what a spawner reads without tokenkeeper.
func hubUserURL(b *benchStack, name string) string {
	return b.HubAPI() + "/users/" + url.PathEscape(name)
}
