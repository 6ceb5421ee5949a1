//go:build integration

package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestGuardHoldsAcrossHubRestartAndReleaseLogsOutNobodyAlive: Keycloak
// refuses every grant of six kept users at once while four of their
// sessions are alive. Their accounts are disabled, as when the user store
// behind Keycloak fails: every grant answers invalid_grant "User disabled"
// and introspection calls every token inactive, though the sessions stay.
// Two of the six sessions really end at the same time (an admin ends them;
// no back-channel logout reaches tokenkeeper). The mass-failure guard trips
// and holds all six. Then the hub restarts, and tokenkeeper, its managed
// service, with it: the guard still holds the same six, nobody is logged
// out. Keycloak recovers (the accounts are enabled again) and an admin
// releases the guard at once: only the two really ended sessions are
// logged out; the four alive keep their tokens, which tokenkeeper goes on
// refreshing.
//
// The users are kept by keep=all rather than by running servers, since the
// hub stops every server when it stops.
func TestGuardHoldsAcrossHubRestartAndReleaseLogsOutNobodyAlive(t *testing.T) {
	ctx := context.Background()
	users := testUsers(t, "grest", 6)
	alive, ended := users[:4], users[4:]
	useSettings(t, map[string]any{"keep": "all"})
	ids, err := stack.KeycloakUserIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Logged in 5 s apart, their grants fall due spread over a token's life.
	for i, u := range users {
		if i > 0 {
			next := time.Now().Add(5 * time.Second)
			if err := Poll(ctx, 6*time.Second, 100*time.Millisecond, func() (bool, error) { return !time.Now().Before(next), nil }); err != nil {
				t.Fatal(err)
			}
		}
		login(t, u)
	}
	sids := map[string]string{}
	for _, u := range users {
		at, _ := accessToken(t, u)
		waitNewToken(t, u, at, 45*time.Second) // kept: refreshed by tokenkeeper
		tok, ok := tokensOf(t, u)
		if !ok || tok.Access.SessionID == "" {
			t.Fatalf("%s's tokens after the first refresh: %+v, want a session id", u, tok.Access)
		}
		sids[u] = tok.Access.SessionID
	}
	setBackchannelURL(t, "")
	releaseGuardAtEnd(t)
	t.Cleanup(func() {
		for _, u := range users {
			if err := setKeycloakUserEnabled(ctx, ids[u], true); err != nil {
				t.Errorf("enable %s again: %v", u, err)
			}
		}
	})
	others := refreshExpiries(t, users)

	staged := time.Now()
	for _, u := range ended {
		if err := stack.EndKeycloakSession(ctx, sids[u]); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range users {
		if err := setKeycloakUserEnabled(ctx, ids[u], false); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range alive {
		if s, err := stack.KeycloakUserSessions(ctx, ids[u]); err != nil || len(s) != 1 || s[0].ID != sids[u] {
			t.Fatalf("%s's Keycloak sessions with the account disabled: %+v, %v; want %s alone", u, s, err, sids[u])
		}
	}
	for _, u := range ended {
		if s, err := stack.KeycloakUserSessions(ctx, ids[u]); err != nil || len(s) != 0 {
			t.Fatalf("%s's Keycloak sessions after the admin ended them: %+v, %v; want none", u, s, err)
		}
	}

	// Every grant fails from now on; the guard's probes bring the others'
	// grants forward once the first has failed.
	err = Poll(ctx, 45*time.Second, 250*time.Millisecond, func() (bool, error) {
		lines := linesSince(t, staged, "keycloak session ended")
		for _, u := range users {
			if len(byUser(lines, u)) == 0 {
				return false, fmt.Errorf("no grant of %s has failed yet", u)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var failedAccessExpiry time.Time
	for _, u := range users {
		for _, l := range byUser(linesSince(t, staged, "keycloak session ended"), u) {
			if l.Expected == nil || *l.Expected {
				t.Errorf("%s's ending counted as expected: %+v", u, l)
			}
			t.Logf("%s's grant failed %s after the staging: %s", u, l.Time.Sub(staged).Round(time.Millisecond), l.Reason)
		}
		if tok, ok := tokensOf(t, u); ok {
			failedAccessExpiry = maxTime(failedAccessExpiry, tok.Access.Expiry)
		}
	}
	paused := guardHolding(len(users))
	last, err := awaitHealth(ctx, paused, time.Until(failedAccessExpiry)+time.Minute)
	if err != nil {
		t.Fatalf("health never held all %d users: %v; last %d %+v", len(users), err, last.Status, last.Body)
	}
	if tripped, _ := guardTripped(t); !tripped {
		t.Errorf("health holds %d users but the guard's durable state is not tripped", len(users))
	}
	assertHeldNotLoggedOut(t, users, staged, "before the hub's restart")

	// The hub restarts, and tokenkeeper with it.
	restarted := time.Now()
	if err := stack.RestartHub(ctx); err != nil {
		t.Fatalf("restart the hub: %v", err)
	}
	pid := 0
	err = Poll(ctx, 2*time.Minute, 250*time.Millisecond, func() (bool, error) {
		pids := tokenkeeperPIDs()
		if len(pids) != 1 {
			return false, fmt.Errorf("tokenkeeper processes %v", pids)
		}
		pid = pids[0]
		var err error
		last, err = healthAt(ctx, proxiedHealth())
		return err == nil && cmp.Equal(paused, last.Body), err
	})
	if err != nil {
		t.Fatalf("after the hub's restart health does not hold the same %d users: %v; last %d %+v", len(users), err, last.Status, last.Body)
	}
	t.Logf("the hub restarted; tokenkeeper (pid %d) holds %d users %s after the restart began",
		pid, last.Body.Problems[0].Users, time.Since(restarted).Round(100*time.Millisecond))
	if l := linesSince(t, restarted, "mass-failure guard released by an admin"); len(l) != 0 {
		t.Errorf("the guard was released across the restart: %+v", l)
	}
	// A few sweeps of the restarted tokenkeeper, each of which would log
	// the held users out if it no longer held them.
	watchUntil := time.Now().Add(3 * sweepInterval)
	err = Poll(ctx, 4*sweepInterval, 250*time.Millisecond, func() (bool, error) {
		var err error
		last, err = healthAt(ctx, stack.ServiceURL()+"health")
		if err == nil && !cmp.Equal(paused, last.Body) {
			return false, fmt.Errorf("health %d %+v", last.Status, last.Body)
		}
		return time.Now().After(watchUntil), err
	})
	if err != nil {
		t.Errorf("health after the restart, while the guard holds: %v", err)
	}
	assertHeldNotLoggedOut(t, users, staged, "after the hub's restart")
	if tripped, _ := guardTripped(t); !tripped {
		t.Errorf("after the restart the guard's durable state is not tripped")
	}

	// Keycloak recovers: the accounts are enabled again. The two sessions
	// the admin ended stay ended.
	for _, u := range users {
		if err := setKeycloakUserEnabled(ctx, ids[u], true); err != nil {
			t.Fatal(err)
		}
	}
	recovered := time.Now()
	guard, err := stack.UserToken(ctx, "mallory", "access:services!service=tokenkeeper", "custom:tokenkeeper:guard")
	if err != nil {
		t.Fatal(err)
	}
	if status, body := releaseGuard(t, guard); status != http.StatusOK || body != `{"released":true}` {
		t.Fatalf("guard/release with mallory's guard-scoped token: %d %s, want 200 {\"released\":true}", status, body)
	}
	released := time.Now()
	t.Logf("accounts enabled again and the guard released %s later", released.Sub(recovered).Round(time.Millisecond))

	// The ended are logged out within a sweep; the alive get new tokens.
	err = Poll(ctx, 45*time.Second+busySlack, 250*time.Millisecond, func() (bool, error) {
		for _, u := range ended {
			if _, ok := tokensOf(t, u); ok {
				return false, fmt.Errorf("%s, whose session ended, still holds tokens", u)
			}
		}
		for _, u := range alive {
			tok, ok := tokensOf(t, u)
			if !ok {
				return true, nil // cleared: the checks below say so
			}
			if !tok.Access.IssuedAt.After(recovered.Add(-time.Second)) {
				return false, fmt.Errorf("%s, whose session is alive, has no token issued since Keycloak recovered", u)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Errorf("after the release: %v", err)
	}
	outs := linesSince(t, staged, "logged out")
	for _, u := range ended {
		l := byUser(outs, u)
		if len(l) != 1 {
			t.Errorf("%s, whose session ended: %d logout lines, want 1: %+v", u, len(l), l)
			continue
		}
		after := l[0].Time.Sub(released)
		t.Logf("%s (session ended) logged out %s after the release: %s", u, after.Round(time.Millisecond), l[0].Reason)
		if after < 0 || after > sweepInterval+time.Second+busySlack {
			t.Errorf("%s logged out %s after the release, want within a sweep (%s, and %s for a busy machine)",
				u, after.Round(time.Millisecond), sweepInterval, busySlack)
		}
		if a := auditedLogouts(t, u); len(a) != 1 {
			t.Errorf("logouts recorded for %s: %v, want 1", u, a)
		}
	}
	for _, u := range alive {
		if l := byUser(outs, u); len(l) != 0 {
			t.Errorf("%s, whose session is alive, was logged out: %+v", u, l)
		}
		if a := auditedLogouts(t, u); len(a) != 0 {
			t.Errorf("logouts recorded for %s, whose session is alive: %v", u, a)
		}
		tok, ok := tokensOf(t, u)
		if !ok {
			t.Errorf("%s's auth_state was cleared, though the session is alive", u)
			continue
		}
		t.Logf("%s (session alive) refreshed %s after the release", u, tok.Access.IssuedAt.Sub(released).Round(time.Second))
		if tok.Access.SessionID != sids[u] {
			t.Errorf("%s's auth_state holds session %q, want %q", u, tok.Access.SessionID, sids[u])
		}
		at, _ := accessToken(t, u)
		assertUserinfoOK(t, at)
		if s, err := stack.KeycloakUserSessions(ctx, ids[u]); err != nil || len(s) != 1 || s[0].ID != sids[u] {
			t.Errorf("%s's Keycloak sessions after the release: %+v, %v; want %s alone", u, s, err, sids[u])
		}
	}
	// And tokenkeeper goes on refreshing them: another grant each.
	next := map[string]string{}
	for _, u := range alive {
		if at, ok := currentAccessToken(t, u); ok {
			next[u] = at
		}
	}
	for u, at := range next {
		assertUserinfoOK(t, waitNewToken(t, u, at, 45*time.Second))
	}
	if tripped, _ := guardTripped(t); tripped {
		t.Errorf("the guard's durable state is still tripped after the release")
	}
	if s, err := healthAt(ctx, stack.ServiceURL()+"health"); err != nil ||
		slices.ContainsFunc(s.Body.Problems, func(p healthProblem) bool { return p.Class == "logouts_paused" }) {
		t.Errorf("health after the release: %v %d %+v, want logouts no longer paused", err, s.Status, s.Body)
	}
	assertNoOtherLogout(t, staged, others, users)
}

// assertHeldNotLoggedOut checks that none of users, whose logouts the guard
// holds, was logged out since since: auth_state still holds their tokens,
// and tokenkeeper logged and recorded no logout.
func assertHeldNotLoggedOut(t *testing.T, users []string, since time.Time, when string) {
	t.Helper()
	outs := linesSince(t, since, "logged out")
	for _, u := range users {
		if l := byUser(outs, u); len(l) != 0 {
			t.Errorf("%s logged out %s while the guard holds them: %+v", u, when, l)
		}
		if _, ok := tokensOf(t, u); !ok {
			t.Errorf("%s's auth_state was cleared %s while the guard holds them", u, when)
		}
		if a := auditedLogouts(t, u); len(a) != 0 {
			t.Errorf("logouts recorded for %s %s while the guard holds them: %v", u, when, a)
		}
	}
}

// currentAccessToken returns the access token in user's auth_state, if any.
func currentAccessToken(t *testing.T, user string) (string, bool) {
	t.Helper()
	st, err := stack.AuthState(context.Background(), user)
	if err != nil {
		t.Fatalf("auth_state of %s: %v", user, err)
	}
	at, _ := st["access_token"].(string)
	return at, at != ""
}

// setKeycloakUserEnabled enables or disables the account of the user with
// Keycloak id id. A disabled account keeps its sessions, but Keycloak
// refuses their grants (invalid_grant "User disabled") and introspection
// calls their tokens inactive until the account is enabled again.
func setKeycloakUserEnabled(ctx context.Context, id string, enabled bool) error {
	var user map[string]any
	path := "/users/" + url.PathEscape(id)
	if err := stack.keycloakAdmin(ctx, http.MethodGet, path, nil, &user); err != nil {
		return fmt.Errorf("read keycloak user %s: %w", id, err)
	}
	user["enabled"] = enabled
	if err := stack.keycloakAdmin(ctx, http.MethodPut, path, user, nil); err != nil {
		verb := "disable"
		if enabled {
			verb = "enable"
		}
		return fmt.Errorf("%s keycloak user %s: %w", verb, id, err)
	}
	return nil
}
