//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/refresh"
)

func TestUsersRefreshedAtDifferentMomentsAndIdleUserOnlyOnDemand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	running := []string{"rita", "sam", "tina", "uma"}
	for _, u := range running {
		login(t, u)
	}
	login(t, "vic") // no server
	for _, u := range running {
		startServer(t, u)
		stopServerAtEnd(t, u)
	}
	idle, _ := accessToken(t, "vic")
	// Watch all running users at once until each has had two refreshes.
	seen := map[string]map[string]bool{}
	issued := map[int64]bool{}
	err := Poll(ctx, 2*time.Minute, 500*time.Millisecond, func() (bool, error) {
		done := true
		for _, u := range running {
			at, _ := accessToken(t, u)
			if seen[u] == nil {
				seen[u] = map[string]bool{}
			}
			if !seen[u][at] && len(seen[u]) > 0 {
				c, _ := refresh.ParseClaims(at)
				issued[c.IssuedAt.Unix()] = true
				assertUserinfoOK(t, at)
			}
			seen[u][at] = true
			done = done && len(seen[u]) >= 3
		}
		return done, nil
	})
	if err != nil {
		t.Fatalf("running users were not refreshed twice each: %v", err)
	}
	if len(issued) < 2 {
		t.Errorf("all %d users were refreshed in the same second; want jittered moments", len(running))
	}
	if now, _ := accessToken(t, "vic"); now != idle {
		t.Errorf("vic (no server) was refreshed in the background")
	}
	token, err := stack.UserToken(ctx, "vic", "access:services!service=tokenkeeper")
	if err != nil {
		t.Fatal(err)
	}
	status, body := freshToken(t, token, "")
	if status != http.StatusOK || body["access_token"] == idle {
		t.Fatalf("on-demand token for vic: %d, new token %v", status, body["access_token"] != idle)
	}
	assertUserinfoOK(t, body["access_token"].(string))
	if now, _ := accessToken(t, "vic"); now != body["access_token"] {
		t.Errorf("the on-demand refresh was not written back to vic's auth_state")
	}
}

func TestMalformedAuthStateSkippedOthersRefreshed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bad := map[string]any{
		"wes":  map[string]any{"access_token": "x.y.z-not-a-jwt", "refresh_token": "r"},
		"xena": map[string]any{"access_token": "a.b.c", "token_response": map[string]any{}},
		"yuri": map[string]any{"access_token": 42, "refresh_token": []string{"r"}},
		"zoe":  map[string]any{},
	}
	for u := range bad {
		login(t, u)
		startServer(t, u)
		stopServerAtEnd(t, u)
	}
	login(t, "mia")
	startServer(t, "mia")
	stopServerAtEnd(t, "mia")
	for u, st := range bad {
		if err := stack.API(ctx, http.MethodPatch, "/users/"+u, map[string]any{"auth_state": st}, nil); err != nil {
			t.Fatalf("set %s's auth_state: %v", u, err)
		}
	}
	first, _ := accessToken(t, "mia")
	second := waitNewToken(t, "mia", first, 60*time.Second)
	waitNewToken(t, "mia", second, 60*time.Second) // several sweeps have passed the malformed users
	for u, st := range bad {
		lines := tokenkeeperLog(t, "skipping user", u)
		if len(lines) != 1 {
			t.Errorf("%s: %d skip log lines, want exactly 1", u, len(lines))
		}
		now, err := stack.AuthState(ctx, u)
		want, _ := json.Marshal(st)
		got, _ := json.Marshal(now)
		if err != nil || string(got) != string(want) {
			t.Errorf("%s's auth_state changed: %s, want %s", u, got, want)
		}
	}
}
