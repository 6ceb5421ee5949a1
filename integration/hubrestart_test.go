//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// The tests in this file restart the hub with tokenkeeper settings of their
// own (TOKENKEEPER_* variables), and restart it with the stack's settings
// when they end. A hub restart stops every server, so they do not call
// t.Parallel.

// TestBackchannelLogoutForUnseenSession logs a user in while tokenkeeper's
// next sweep is an hour away and has an admin end the session in Keycloak
// at once: the back-channel logout names a session tokenkeeper has never
// read, and it must find the user by reading the new login.
func TestBackchannelLogoutForUnseenSession(t *testing.T) {
	ctx := context.Background()
	restarted := time.Now()
	restartHub(t, "TOKENKEEPER_SWEEP_INTERVAL=1h")
	waitHealthy(t)
	// The first sweep runs at start; the next is an hour away.
	if err := Poll(ctx, 30*time.Second, 250*time.Millisecond, func() (bool, error) {
		return len(linesSince(t, restarted, "sweep")) > 0, nil
	}); err != nil {
		t.Fatalf("tokenkeeper's first sweep after the restart: %v", err)
	}
	since := time.Now()
	browser := login(t, "unseen")
	token, err := stack.UserToken(ctx, "unseen", "access:services!service=tokenkeeper")
	if err != nil {
		t.Fatal(err)
	}
	session := onlySession(t, "unseen")
	if l := byUser(linesSince(t, since), "unseen"); len(l) != 0 {
		t.Fatalf("tokenkeeper read unseen before the logout, so the test proves nothing: %+v", l)
	}
	start := time.Now()
	if err := stack.KeycloakAdmin(ctx, http.MethodDelete, "/sessions/"+session.ID, nil, nil); err != nil {
		t.Fatalf("end unseen's session: %v", err)
	}
	waitLoggedOut(t, "unseen", start)
	assertLoggedOut(t, "unseen", browser, token)
	if s, err := stack.KeycloakSessions(ctx, "unseen"); err != nil || len(s) != 0 {
		t.Errorf("unseen's Keycloak sessions after the logout: %+v, %v; want none", s, err)
	}
}

// TestBadConfigUnderHubKeepsHubUp restarts the hub with a bad tokenkeeper
// setting: tokenkeeper must not exit (the hub would go down with it), but
// answer 503 at its prefix with the problem in health, while users still
// log in to the hub.
func TestBadConfigUnderHubKeepsHubUp(t *testing.T) {
	ctx := context.Background()
	restored := false
	t.Cleanup(func() {
		if !restored {
			if err := stack.RestartHub(ctx); err != nil {
				t.Errorf("restore the hub: %v", err)
			}
		}
	})
	tests := []struct {
		name, env, problem string
	}{
		{"bad state key", "TOKENKEEPER_STATE_KEY=not-a-key", "state key: key 1 of 1: must be 32 bytes, base64 or hex encoded"},
		{"missing client secret", "TOKENKEEPER_CLIENT_SECRET=", "client secret: required: set TOKENKEEPER_CLIENT_SECRET or client_secret_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			restarted, logSize := time.Now(), hubLogSize(t)
			if err := stack.RestartHub(ctx, tt.env); err != nil {
				t.Fatalf("the hub did not stay up with tokenkeeper misconfigured: %v\nthe hub's critical log lines:\n%s",
					err, strings.Join(hubCritical(t, logSize), "\n"))
			}
			var got healthSample
			err := Poll(ctx, time.Minute, 250*time.Millisecond, func() (bool, error) {
				var err error
				got, err = healthAt(ctx, proxiedHealth())
				return err == nil && got.Status == http.StatusServiceUnavailable, err
			})
			if err != nil {
				t.Fatalf("health through the hub's proxy: %v (last %d %+v)", err, got.Status, got.Body)
			}
			want := healthBody{Status: "unhealthy", Problems: []healthProblem{{Class: "configuration",
				Message: "tokenkeeper's configuration has 1 problem(s); its log lists them."}}}
			if diff := cmp.Diff(want, got.Body); diff != "" {
				t.Errorf("health (-want +got):\n%s", diff)
			}
			if l := tokenkeeperLog(t, "bad configuration", ""); !slices.ContainsFunc(l, func(l logLine) bool { return l.Problem == tt.problem }) {
				t.Errorf("tokenkeeper's log has no line naming the problem %q", tt.problem)
			}
			pid := tokenkeeperPID(t)
			status, body := callTokenkeeper(t, stack.TestToken, "fresh-token?user=badcfg")
			if status != http.StatusServiceUnavailable || !jsonError(body, "unavailable") {
				t.Errorf("fresh-token with a bad configuration: %d %s, want 503 unavailable", status, body)
			}
			if _, err := Login(ctx, stack.HubURL(), "badcfg", "badcfg-pw"); err != nil {
				t.Errorf("login while tokenkeeper is misconfigured: %v", err)
			}
			if tok, ok := tokensOf(t, "badcfg"); !ok || tok.Refresh.Expiry.Before(time.Now()) {
				t.Errorf("badcfg's auth_state after login: tokens %t", ok)
			}
			if now := tokenkeeperPID(t); now != pid {
				t.Errorf("tokenkeeper's pid changed from %d to %d: it exited", pid, now)
			}
			if l := linesSince(t, restarted, "bad configuration"); len(l) != 1 || l[0].Problem != tt.problem {
				t.Errorf("tokenkeeper's bad configuration log lines: %+v, want one", l)
			}
		})
	}
	restored = true
	if err := stack.RestartHub(ctx); err != nil {
		t.Fatalf("restore the hub: %v", err)
	}
	waitHealthy(t)
	got, err := healthAt(ctx, proxiedHealth())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(healthBody{Status: "ok"}, got.Body, cmpopts.EquateEmpty()); got.Status != http.StatusOK || diff != "" {
		t.Errorf("health after the good configuration is back: %d (-want +got):\n%s", got.Status, diff)
	}
}

// hubLogSize is the hub log's current length, for hubCritical.
func hubLogSize(t *testing.T) int64 {
	t.Helper()
	fi, err := os.Stat(stack.HubLog())
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// hubCritical returns the hub's critical log lines written after offset.
func hubCritical(t *testing.T, offset int64) []string {
	t.Helper()
	b, err := os.ReadFile(stack.HubLog())
	if err != nil || int64(len(b)) < offset {
		t.Fatalf("read the hub log: %v", err)
	}
	var out []string
	for line := range strings.Lines(string(b[offset:])) {
		if strings.HasPrefix(line, "[C ") && !strings.Contains(line, "Received signal SIGTERM") { // the stop before the restart
			out = append(out, strings.TrimSpace(line))
		}
	}
	return out
}

// jsonError reports whether body is a JSON error with code.
func jsonError(body []byte, code string) bool {
	var e struct {
		Error string `json:"error"`
	}
	return json.Unmarshal(body, &e) == nil && e.Error == code
}

// TestDefaultWindowSpreadsRefreshes30sTokens runs tokenkeeper with its
// default refresh_window of 60 s against the realm's 30 s access tokens: a
// window longer than the token must not make every user due at every
// sweep. Each user is refreshed once per 20–24 s and the users of one
// login wave are spread over the sweeps: eight users, so that all of them
// landing in one sweep by chance is rare. The gaps are Keycloak's, between
// the tokens' issue times, so that a hub slow to take the write-back on a
// busy machine does not count.
func TestDefaultWindowSpreadsRefreshes30sTokens(t *testing.T) {
	const (
		watch = 2 * time.Minute
		// Due at ⅔–80 % of 30 s from the token's iat (a whole second),
		// found by the next 2 s sweep; on a busy machine a sweep may come
		// late, but never past the token's 30 s.
		minGap, maxGap = 19 * time.Second, 30 * time.Second
	)
	ctx := context.Background()
	restartHub(t, "TOKENKEEPER_REFRESH_WINDOW=60s")
	waitHealthy(t)
	if env := processEnv(t, tokenkeeperPID(t)); env["TOKENKEEPER_REFRESH_WINDOW"] != "60s" {
		t.Fatalf("tokenkeeper runs with TOKENKEEPER_REFRESH_WINDOW=%q, want 60s", env["TOKENKEEPER_REFRESH_WINDOW"])
	}
	users := []string{"spread1", "spread2", "spread3", "spread4", "spread5", "spread6", "spread7", "spread8"}
	for _, u := range users {
		login(t, u)
	}
	startServers(t, users)
	from := time.Now()
	if err := Poll(ctx, watch+10*time.Second, time.Second, func() (bool, error) {
		return time.Since(from) >= watch, nil
	}); err != nil {
		t.Fatal(err)
	}
	var sweeps [][]string // the users each finished sweep refreshed
	var current []string
	times := map[string][]time.Time{}
	for _, l := range linesSince(t, from, "refreshed", "sweep") {
		switch {
		case l.Msg == "sweep":
			sweeps = append(sweeps, current)
			current = nil
		case slices.Contains(users, l.User):
			current = append(current, l.User)
			times[l.User] = append(times[l.User], l.ExpiresAt)
		}
	}
	if least := int(watch/sweepInterval) / 2; len(sweeps) < least {
		t.Errorf("%d sweeps in %s, want at least %d", len(sweeps), watch, least)
	}
	busiest := 0
	for i, s := range sweeps {
		slices.Sort(s)
		if len(slices.Compact(s)) == len(users) {
			t.Errorf("sweep %d refreshed every user: %v", i, s)
		}
		busiest = max(busiest, len(s))
	}
	t.Logf("%d sweeps; at most %d of %d users refreshed in one", len(sweeps), busiest, len(users))
	for _, u := range users {
		ts := times[u]
		if n := int(watch / maxGap); len(ts) < n {
			t.Errorf("%s refreshed %d times in %s, want at least %d", u, len(ts), watch, n)
		}
		var gaps []string
		for i := 1; i < len(ts); i++ {
			gap := ts[i].Sub(ts[i-1])
			gaps = append(gaps, gap.Round(100*time.Millisecond).String())
			if gap < minGap || gap > maxGap {
				t.Errorf("%s's token issued %s after the previous one, want %s–%s (⅔–80 %% of 30 s, plus a sweep, never past the token's life)", u, gap.Round(time.Millisecond), minGap, maxGap)
			}
		}
		t.Logf("%s: %d refreshes, gaps %v", u, len(ts), gaps)
	}
}
