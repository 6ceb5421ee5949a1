//go:build integration

package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// The tests in this file change realm settings (token lifetimes, SSO idle
// and maximum times) or end every session of the realm, and put the
// settings back when they end. Like the other tests that disturb the shared
// stack they do not call t.Parallel. Each uses test users no other test
// uses (integration/stack/realm.json).

// reasonRefreshExpired is the logout reason of a session whose refresh
// token reached its exp: the SSO idle or maximum time passed.
const reasonRefreshExpired = "the refresh token expired: the SSO session reached its idle or maximum time"

// TestAccessTokensLongerThanSSOIdle runs for four minutes: with access
// tokens living 180 s and an SSO idle time of 60 s, users with running
// servers must be refreshed by their refresh token's expiry, not their
// access token's, or Keycloak ends their sessions after one minute (a
// refresh by the access token would come at 120 s at the earliest).
func TestAccessTokensLongerThanSSOIdle(t *testing.T) {
	const (
		accessLife = 180 * time.Second
		idle       = 60 * time.Second
		watch      = 4 * time.Minute
	)
	ctx := context.Background()
	t.Logf("this test watches three users for %s", watch)
	setRealm(t, map[string]any{"accessTokenLifespan": int(accessLife.Seconds()), "ssoSessionIdleTimeout": int(idle.Seconds())})
	users := []string{"longat1", "longat2", "longat3"}
	since := time.Now()
	loginTogether(t, users)
	sids := map[string]string{}
	seen := map[string]map[string]bool{}
	for _, u := range users {
		tok, ok := tokensOf(t, u)
		if !ok {
			t.Fatalf("%s has no tokens after login", u)
		}
		if got := tok.Access.Expiry.Sub(tok.Access.IssuedAt); got != accessLife {
			t.Fatalf("%s's access token lives %s, want %s (the realm's new lifespan)", u, got, accessLife)
		}
		if got := tok.Refresh.Expiry.Sub(tok.Refresh.IssuedAt); got != idle {
			t.Fatalf("%s's refresh token lives %s, want %s (the realm's SSO idle time)", u, got, idle)
		}
		sids[u] = tok.Access.SessionID
		seen[u] = map[string]bool{tok.RefreshToken: true}
	}
	startServers(t, users)
	// Sample every second: the refresh token in auth_state must never be
	// past its exp, which is when Keycloak's idle time ends the session.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	late := map[string]bool{}
	for end := since.Add(watch); time.Now().Before(end); <-tick.C {
		for _, u := range users {
			tok, ok := tokensOf(t, u)
			now := time.Now()
			if !ok {
				t.Fatalf("%s lost their tokens at %s", u, now.Format(time.TimeOnly))
			}
			if !now.Before(tok.Refresh.Expiry) && !late[u] {
				late[u] = true
				t.Errorf("%s's refresh token in auth_state expired at %s, sampled at %s", u,
					tok.Refresh.Expiry.Format(time.TimeOnly), now.Format(time.TimeOnly))
			}
			seen[u][tok.RefreshToken] = true
		}
	}
	// Refreshed at most 80 % into the refresh token's 60 s, plus a sweep:
	// at least four refreshes in four minutes, five refresh tokens with the
	// login's.
	const minTokens = 5
	for _, u := range users {
		t.Logf("%s held %d refresh tokens in %s", u, len(seen[u]), watch)
		if n := len(seen[u]); n < minTokens {
			t.Errorf("%s held %d refresh tokens in %s, want at least %d", u, n, watch, minTokens)
		}
		sessions, err := stack.KeycloakSessions(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(sessions, func(s KeycloakSession) bool { return s.ID == sids[u] }) {
			t.Errorf("Keycloak no longer lists %s's session %s (it lists %d sessions)", u, sids[u], len(sessions))
		}
		if l := byUser(linesSince(t, since, "logged out", "keycloak session ended"), u); len(l) != 0 {
			t.Errorf("%s: %+v", u, l)
		}
		at, _ := accessToken(t, u)
		assertUserinfoOK(t, at)
	}
}

// TestCohortAtSSOMaxLoggedOutTogetherGuardStaysOpen logs ten users in at
// once with a short SSO maximum: their sessions all end at the same moment,
// which the refresh tokens' exp predicted, so tokenkeeper logs them all out
// at once and the mass-failure guard, which counts only unexpected endings,
// stays open.
func TestCohortAtSSOMaxLoggedOutTogetherGuardStaysOpen(t *testing.T) {
	const ssoMax = 90 * time.Second
	ctx := context.Background()
	cohort := make([]string, 10)
	for i := range cohort {
		cohort[i] = fmt.Sprintf("cohort%02d", i+1)
	}
	setRealm(t, map[string]any{"ssoSessionMaxLifespan": int(ssoMax.Seconds())})
	others := refreshExpiries(t, cohort)
	since := time.Now()
	healthSamples := watchHealth(t)
	loginTogether(t, cohort)
	exp := map[string]time.Time{}
	var first, last time.Time
	for _, u := range cohort {
		tok, ok := tokensOf(t, u)
		if !ok {
			t.Fatalf("%s has no tokens after login", u)
		}
		started := time.UnixMilli(onlySession(t, u).Start)
		if want := started.Add(ssoMax); !tok.Refresh.Expiry.Equal(want) {
			t.Fatalf("%s's refresh token expires at %s, want the session's start plus the SSO maximum, %s",
				u, tok.Refresh.Expiry.Format(time.TimeOnly), want.Format(time.TimeOnly))
		}
		exp[u] = tok.Refresh.Expiry
		if first.IsZero() || exp[u].Before(first) {
			first = exp[u]
		}
		if exp[u].After(last) {
			last = exp[u]
		}
	}
	if spread := last.Sub(first); spread > 5*time.Second {
		t.Fatalf("the cohort's logins spread over %s, want within 5 s", spread)
	}
	startServers(t, cohort)
	if err := awaitLoggedOut(ctx, t, cohort, time.Until(last)+30*time.Second, 250*time.Millisecond); err != nil {
		t.Fatalf("the cohort was not logged out after the SSO maximum: %v", err)
	}
	for _, s := range healthSamples() {
		if slices.ContainsFunc(s.Body.Problems, func(p healthProblem) bool { return p.Class == "logouts_paused" }) {
			t.Errorf("health at %s: %d %+v; want logouts never paused", s.At.Format(time.TimeOnly), s.Status, s.Body)
			break
		}
	}
	lines := linesSince(t, since, "logged out", "keycloak session ended", "refreshed")
	// A refresh grant every ⅔–80 % of the 30 s tokens: five at most in 90 s.
	// Grants beyond that cannot move the session's end and only spend
	// refresh tokens.
	const maxRefreshes = 5
	for _, u := range cohort {
		assertEndedAtExpiry(t, u, byUser(lines, u), exp[u], maxRefreshes)
	}
	assertNoOtherLogout(t, since, others, cohort)
}

// assertEndedAtExpiry checks user's session ended as expected at their
// refresh token's exp, and they were logged out once, within a sweep after
// it, having been refreshed at most maxRefreshes times.
func assertEndedAtExpiry(t *testing.T, user string, lines []timedLine, exp time.Time, maxRefreshes int) {
	t.Helper()
	var outs []timedLine
	refreshes := 0
	for _, l := range lines {
		switch l.Msg {
		case "logged out":
			outs = append(outs, l)
		case "keycloak session ended":
			if l.Expected == nil || !*l.Expected {
				t.Errorf("%s's session ending at %s was not counted as expected: %+v", user, l.Time.Format(time.TimeOnly), l)
			}
		case "refreshed":
			refreshes++
		}
	}
	if refreshes > maxRefreshes {
		t.Errorf("%s was refreshed %d times before their session's maximum at %s, want at most %d",
			user, refreshes, exp.Format(time.TimeOnly), maxRefreshes)
	}
	if len(outs) != 1 {
		t.Errorf("%s: %d logout lines, want 1: %+v", user, len(outs), outs)
		return
	}
	out := outs[0]
	// Either tokenkeeper saw the refresh token's exp pass before trying, or
	// Keycloak (whose clock may run a little ahead) refused the grant as the
	// token expired; the "keycloak session ended" lines above say it was
	// counted as expected either way.
	if out.Reason != reasonRefreshExpired && !strings.Contains(out.Reason, `"invalid_grant"`) {
		t.Errorf("%s logged out for %q, want %q or Keycloak's invalid_grant", user, out.Reason, reasonRefreshExpired)
	}
	if out.Time.Before(exp) {
		t.Errorf("%s logged out at %s, %s before their session's maximum at %s",
			user, out.Time.Format(time.StampMilli), exp.Sub(out.Time).Round(time.Millisecond), exp.Format(time.StampMilli))
	}
	if after := out.Time.Sub(exp); after > sweepInterval+time.Second+busySlack {
		t.Errorf("%s logged out %s after their session's maximum, want within a sweep (%s, and %s for a busy machine)",
			user, after.Round(time.Millisecond), sweepInterval, busySlack)
	}
}

// TestRealmWideSessionWipeTripsGuard ends every session of the realm at
// once without telling tokenkeeper (no back-channel logout), as a Keycloak
// that lost its sessions would: every kept user's next grant fails, the
// mass-failure guard trips, nobody is logged out until a hub admin releases
// the guard, and then everyone held is. The users log in 5 s apart, so
// that their refreshes are spread over the 30 s token lifetime as on a hub
// in use, and their grants fail one by one over that lifetime.
func TestRealmWideSessionWipeTripsGuard(t *testing.T) {
	ctx := context.Background()
	users := []string{"wipe1", "wipe2", "wipe3", "wipe4", "wipe5", "wipe6"}
	loginSpread(t, users, 5*time.Second)
	for _, u := range users {
		at, _ := accessToken(t, u)
		waitNewToken(t, u, at, 45*time.Second) // kept: refreshed by tokenkeeper
	}
	setBackchannelURL(t, "")
	releaseGuardAtEnd(t)
	others := refreshExpiries(t, users)
	wipe := time.Now()
	if err := stack.KeycloakAdmin(ctx, http.MethodPost, "/logout-all", nil, nil); err != nil {
		t.Fatalf("end every session of the realm: %v", err)
	}
	for _, u := range users {
		if s, err := stack.KeycloakSessions(ctx, u); err != nil || len(s) != 0 {
			t.Fatalf("%s's Keycloak sessions after logout-all: %d, %v; want none", u, len(s), err)
		}
	}
	// Each user's grant fails at their next due time, within an access-token lifetime.
	var failedAccessExpiry time.Time
	err := Poll(ctx, 45*time.Second, 250*time.Millisecond, func() (bool, error) {
		ended := linesSince(t, wipe, "keycloak session ended")
		for _, u := range users {
			if len(byUser(ended, u)) == 0 {
				return false, fmt.Errorf("no grant of %s has failed yet", u)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		for _, l := range byUser(linesSince(t, wipe, "keycloak session ended"), u) {
			if l.Expected == nil || *l.Expected {
				t.Errorf("%s's ending after the wipe counted as expected: %+v", u, l)
			}
			t.Logf("%s's grant failed %s after the wipe", u, l.Time.Sub(wipe).Round(time.Millisecond))
		}
		// The failed grant's access token: nothing replaced it.
		tok, ok := tokensOf(t, u)
		if !ok {
			t.Errorf("%s was logged out before the guard tripped: %+v", u, byUser(linesSince(t, wipe, "logged out"), u))
			continue
		}
		if tok.Access.Expiry.After(failedAccessExpiry) {
			failedAccessExpiry = tok.Access.Expiry
		}
	}
	// Once their logouts are due, the guard holds every one of them: health
	// counts them. (Without the guard each would be logged out at the
	// first sweep after their failed access token expired.)
	paused := guardHolding(len(users))
	last, err := awaitHealth(ctx, paused, time.Until(failedAccessExpiry)+time.Minute)
	if err != nil {
		t.Errorf("health never held all %d users: %v; last %d %+v", len(users), err, last.Status, last.Body)
	}
	if l := linesSince(t, wipe, "logged out"); len(l) != 0 {
		for _, line := range l {
			t.Errorf("%s logged out at %s while the guard should hold them (%s)", line.User, line.Time.Format(time.StampMilli), line.Reason)
		}
	}
	for _, u := range users {
		if _, ok := tokensOf(t, u); !ok {
			t.Errorf("%s's auth_state was cleared while logouts are paused", u)
		}
	}
	// A user without the guard scope may not release the guard.
	wipe1, err := stack.UserToken(ctx, "wipe1", "access:services!service=tokenkeeper")
	if err != nil {
		t.Fatal(err)
	}
	if status, body := releaseGuard(t, wipe1); status != http.StatusForbidden {
		t.Errorf("guard/release by wipe1: %d %s, want 403", status, body)
	}
	assertHealth(t, http.StatusServiceUnavailable, paused)
	for _, l := range linesSince(t, wipe, "logouts paused: many Keycloak sessions ended unexpectedly at once, which looks like Keycloak "+
		"lost its sessions; nobody is logged out until an admin releases the guard") {
		t.Logf("logouts paused %s after the wipe", l.Time.Sub(wipe).Round(time.Millisecond))
	}
	// Nor may a hub admin's token without the guard scope.
	adminOnly, err := stack.UserToken(ctx, "mallory", "access:services!service=tokenkeeper")
	if err != nil {
		t.Fatal(err)
	}
	if status, body := releaseGuard(t, adminOnly); status != http.StatusForbidden {
		t.Errorf("guard/release by a token of mallory without the guard scope: %d %s, want 403", status, body)
	}
	guard, err := stack.UserToken(ctx, "mallory", "access:services!service=tokenkeeper", "custom:tokenkeeper:guard")
	if err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	if status, body := releaseGuard(t, guard); status != http.StatusOK || body != `{"released":true}` {
		t.Fatalf("guard/release with mallory's guard-scoped token: %d %s, want 200 {\"released\":true}", status, body)
	}
	if err := awaitLoggedOut(ctx, t, users, sweepInterval+10*time.Second, 250*time.Millisecond); err != nil {
		t.Fatalf("the held users were not logged out after the release: %v", err)
	}
	outs := linesSince(t, wipe, "logged out")
	for _, u := range users {
		l := byUser(outs, u)
		if len(l) != 1 {
			t.Errorf("%s: %d logout lines, want 1: %+v", u, len(l), l)
			continue
		}
		if !strings.Contains(l[0].Reason, "invalid_grant") {
			t.Errorf("%s logged out for %q, want the failed grant's invalid_grant", u, l[0].Reason)
		}
		if after := l[0].Time.Sub(released); after > sweepInterval+time.Second+busySlack {
			t.Errorf("%s logged out %s after the release, want within a sweep (%s, and %s for a busy machine)",
				u, after.Round(time.Millisecond), sweepInterval, busySlack)
		}
	}
	assertHealth(t, http.StatusOK, healthBody{Status: "ok", Problems: nil})
	assertNoOtherLogout(t, wipe, others, users)
}

// loginSpread logs users in every apart, each starting their server at
// once, and waits until every server is ready; the servers stop when the
// test ends. Each user's first refresh is due 20–24 s after their login,
// so their refreshes stay that far apart.
func loginSpread(t *testing.T, users []string, every time.Duration) {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	for i, u := range users {
		at := start.Add(time.Duration(i) * every)
		if err := Poll(ctx, time.Until(at)+time.Second, 100*time.Millisecond, func() (bool, error) {
			return !time.Now().Before(at), nil
		}); err != nil {
			t.Fatal(err)
		}
		login(t, u)
		stopServerAtEnd(t, u)
		if err := stack.API(ctx, http.MethodPost, "/users/"+u+"/server", nil, nil); err != nil {
			t.Fatalf("start %s's server: %v", u, err)
		}
	}
	for _, u := range users {
		startServer(t, u) // waits for the server already starting
	}
}

// assertHealth checks tokenkeeper's health answer, asked directly.
func assertHealth(t *testing.T, status int, want healthBody) {
	t.Helper()
	got, err := healthAt(context.Background(), stack.ServiceURL()+"health")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got.Body, cmpopts.EquateEmpty()); got.Status != status || diff != "" {
		t.Errorf("health: %d, want %d; body (-want +got):\n%s", got.Status, status, diff)
	}
}

// setBackchannelURL sets the hub client's back-channel logout URL in
// Keycloak and puts the stack's own back when the test ends.
func setBackchannelURL(t *testing.T, u string) {
	t.Helper()
	ctx := context.Background()
	id := jupyterhubClient(t)
	var client struct {
		Attributes map[string]string `json:"attributes"`
	}
	if err := stack.KeycloakAdmin(ctx, http.MethodGet, "/clients/"+id, nil, &client); err != nil {
		t.Fatalf("read the jupyterhub client: %v", err)
	}
	const key = "backchannel.logout.url"
	old := client.Attributes[key]
	set := func(v string) error {
		return stack.KeycloakAdmin(ctx, http.MethodPut, "/clients/"+id, map[string]any{"attributes": map[string]string{key: v}}, nil)
	}
	t.Cleanup(func() {
		if err := set(old); err != nil {
			t.Errorf("restore the back-channel logout URL: %v", err)
		}
	})
	if err := set(u); err != nil {
		t.Fatalf("set the back-channel logout URL: %v", err)
	}
}

// hubAdminToken logs mallory, a hub admin, in afresh and has her browser
// session make a hub token.
func hubAdminToken(t *testing.T) string {
	t.Helper()
	browser, err := Login(context.Background(), stack.HubURL(), "mallory", "mallory-pw")
	if err != nil {
		t.Fatal(err)
	}
	return sessionToken(t, browser, "mallory")
}

// releaseGuard POSTs guard/release through the hub's proxy with token.
func releaseGuard(t *testing.T, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, stack.HubURL()+"/services/tokenkeeper/guard/release", nil)
	req.Header.Set("Authorization", "token "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// releaseGuardAtEnd releases the mass-failure guard when the test ends if
// it is still tripped, so that later tests' logouts are not held.
func releaseGuardAtEnd(t *testing.T) {
	t.Cleanup(func() {
		s, err := healthAt(context.Background(), stack.ServiceURL()+"health")
		if err != nil || !slices.ContainsFunc(s.Body.Problems, func(p healthProblem) bool { return p.Class == "logouts_paused" }) {
			return
		}
		if status, body := releaseGuard(t, hubAdminToken(t)); status != http.StatusOK {
			t.Errorf("release the guard at the end: %d %s", status, body)
		}
	})
}

// TestIdleUserLoggedOutAfterSSOIdle logs in a user who starts no server
// and then leaves the hub alone: tokenkeeper never refreshes them, and logs
// them out once the SSO idle time has passed, without a call to Keycloak
// that would extend their or anyone else's session. Their browser is sent
// to the login page at its next request.
func TestIdleUserLoggedOutAfterSSOIdle(t *testing.T) {
	const idle = 40 * time.Second
	ctx := context.Background()
	setRealm(t, map[string]any{"ssoSessionIdleTimeout": int(idle.Seconds())})
	since := time.Now()
	browser := login(t, "idler")
	token, err := stack.UserToken(ctx, "idler", "access:services!service=tokenkeeper")
	if err != nil {
		t.Fatal(err)
	}
	tok, ok := tokensOf(t, "idler")
	if !ok {
		t.Fatal("idler has no tokens after login")
	}
	if got := tok.Refresh.Expiry.Sub(tok.Refresh.IssuedAt); got != idle {
		t.Fatalf("idler's refresh token lives %s, want the SSO idle time %s", got, idle)
	}
	idleEnd := tok.Refresh.Expiry
	// A second idle user, whose session outlives idler's by 30 s: its
	// lastAccess shows whether checking idler touched anyone's session.
	if err := Poll(ctx, idle, 250*time.Millisecond, func() (bool, error) {
		return time.Now().After(tok.Refresh.IssuedAt.Add(30 * time.Second)), nil
	}); err != nil {
		t.Fatal(err)
	}
	login(t, "idlewatch")
	watched := onlySession(t, "idlewatch")
	// Watch idler's auth_state through the tests' admin token, which is no
	// activity of idler's in the hub.
	err = Poll(ctx, time.Until(idleEnd)+time.Minute, 250*time.Millisecond, func() (bool, error) {
		_, ok := tokensOf(t, "idler")
		return !ok, nil
	})
	if err != nil {
		t.Fatalf("tokenkeeper did not clear idler's auth_state after the idle time: %v", err)
	}
	outs := byUser(linesSince(t, since, "logged out"), "idler")
	if len(outs) != 1 || outs[0].Reason != reasonRefreshExpired {
		t.Fatalf("idler's logout lines: %+v, want one for %q", outs, reasonRefreshExpired)
	}
	cleared := outs[0].Time
	t.Logf("idler: idle time ended at %s, logged out %s later",
		idleEnd.Format(time.StampMilli), cleared.Sub(idleEnd).Round(time.Millisecond))
	if cleared.Before(idleEnd) {
		t.Errorf("idler logged out at %s, %s before the idle time ended at %s", cleared.Format(time.StampMilli),
			idleEnd.Sub(cleared).Round(time.Millisecond), idleEnd.Format(time.StampMilli))
	}
	// The browser's next request (its auth is older than auth_refresh_age)
	// goes to the login page: the hub session ends within auth_refresh_age
	// of the logout.
	// tokenkeeper gives an idle session up 10 s after its refresh token's
	// exp (the clock difference it allows Keycloak), then within a sweep.
	if late := cleared.Sub(idleEnd); late > 10*time.Second+sweepInterval+time.Second+busySlack {
		t.Errorf("idler logged out %s after the idle time ended, want within 10 s and a sweep (%s, and %s for a busy machine)",
			late.Round(time.Millisecond), sweepInterval, busySlack)
	}
	resp, err := browser.Get(stack.HubURL() + "/hub/home")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Request.URL.Path != "/hub/login" {
		t.Errorf("idler's browser, after the logout, asked for /hub/home and got %s; want the login page", resp.Request.URL)
	}
	if status, body := freshToken(t, token, ""); status != http.StatusConflict {
		t.Errorf("fresh-token for logged-out idler: %d %v, want 409", status, body)
	}
	// Nothing of this touched idlewatch's session, nor made any grant.
	if now := onlySession(t, "idlewatch"); now.ID != watched.ID || now.LastAccess != watched.LastAccess {
		t.Errorf("idlewatch's session %s lastAccess moved from %d to %d (session %s)", watched.ID, watched.LastAccess, now.LastAccess, now.ID)
	}
	for _, u := range []string{"idler", "idlewatch"} {
		id, err := stack.KeycloakUserID(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := stack.RefreshEvents(ctx, id); err != nil || n != 0 {
			t.Errorf("Keycloak refresh grants for %s = %d, %v; want none", u, n, err)
		}
	}
	if l := byUser(linesSince(t, since, "logged out"), "idlewatch"); len(l) != 0 {
		t.Errorf("idlewatch, whose session has not idled out, was logged out: %+v", l)
	}
}

// onlySession returns user's one Keycloak session.
func onlySession(t *testing.T, user string) KeycloakSession {
	t.Helper()
	sessions, err := stack.KeycloakSessions(context.Background(), user)
	if err != nil || len(sessions) != 1 {
		t.Fatalf("%s's Keycloak sessions: %+v, %v; want exactly one", user, sessions, err)
	}
	return sessions[0]
}
