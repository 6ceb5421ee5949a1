//go:build integration

package integration

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSSOIdleShortenedLogsOutKeptUsersGuardStaysOpen: an admin shortens the
// realm's SSO idle time from 30 minutes to 90 s while six users are kept
// (their servers run). The users' access tokens live 3 minutes, longer than
// the new idle time, so tokenkeeper's next grant for each comes after their
// session has been idle too long: Keycloak ends the session while handling
// that grant, and sends the back-channel logout as it does. Each user must
// be logged out within a sweep of that moment, no back-channel call may time
// out (tokenkeeper answers it without waiting for the grant that caused it),
// and the mass-failure guard must stay open: six sessions Keycloak ended and
// said so are no realm-wide loss.
func TestSSOIdleShortenedLogsOutKeptUsersGuardStaysOpen(t *testing.T) {
	const (
		accessLife = 180 * time.Second
		longIdle   = 30 * time.Minute
		shortIdle  = 90 * time.Second
	)
	ctx := context.Background()
	users := testUsers(t, "ssoidle", 6)
	kcLogStart := fileSize(stack.KeycloakLog())
	setRealm(t, map[string]any{"accessTokenLifespan": int(accessLife.Seconds()), "ssoSessionIdleTimeout": int(longIdle.Seconds())})
	releaseGuardAtEnd(t) // should this test trip it, the tests after it are not held
	others := refreshExpiries(t, users)
	since := time.Now()
	healthSamples := watchHealth(t)
	loginTogether(t, users)
	first := map[string]tokens{}
	for _, u := range users {
		tok, ok := tokensOf(t, u)
		if !ok {
			t.Fatalf("%s has no tokens after login", u)
		}
		if got := tok.Access.Expiry.Sub(tok.Access.IssuedAt); got != accessLife {
			t.Fatalf("%s's access token lives %s, want %s (the realm's new lifespan)", u, got, accessLife)
		}
		first[u] = tok
	}
	startServers(t, users)

	// tokenkeeper refreshes each kept user between ⅔ and 80 % of the
	// access token's life; their sessions' idle timers start there.
	refreshed := map[string]tokens{}
	err := Poll(ctx, accessLife+sweepInterval+busySlack, 500*time.Millisecond, func() (bool, error) {
		for _, u := range users {
			if _, ok := refreshed[u]; ok {
				continue
			}
			tok, ok := tokensOf(t, u)
			if !ok {
				return false, fmt.Errorf("%s lost their tokens before the idle time was shortened", u)
			}
			if tok.Access.IssuedAt.After(first[u].Access.IssuedAt) {
				refreshed[u] = tok
			}
		}
		return len(refreshed) == len(users), nil
	})
	if err != nil {
		t.Fatalf("tokenkeeper did not refresh every kept user (%d of %d): %v", len(refreshed), len(users), err)
	}
	var lastRefresh time.Time
	for _, u := range users {
		tok := refreshed[u]
		if got := tok.Access.Expiry.Sub(tok.Access.IssuedAt); got != accessLife {
			t.Fatalf("%s's refreshed access token lives %s, want %s", u, got, accessLife)
		}
		if tok.Access.SessionID == "" || tok.Access.SessionID != first[u].Access.SessionID {
			t.Fatalf("%s's refreshed token is of session %q, want the login's %q", u, tok.Access.SessionID, first[u].Access.SessionID)
		}
		lastRefresh = maxTime(lastRefresh, tok.Access.IssuedAt)
	}

	setRealm(t, map[string]any{"ssoSessionIdleTimeout": int(shortIdle.Seconds())})
	shortened := time.Now()
	t.Logf("SSO idle shortened to %s, %s after the last of the first refreshes", shortIdle, shortened.Sub(lastRefresh).Round(time.Millisecond))
	if shortened.Sub(lastRefresh) >= shortIdle {
		t.Fatalf("the idle time was shortened %s after a refresh, not before the new idle time of %s had passed", shortened.Sub(lastRefresh), shortIdle)
	}

	// Each user's next grant comes at ⅔–80 % of the refreshed token's life,
	// past the new idle time: Keycloak ends the session then.
	err = awaitLoggedOut(ctx, t, users, time.Until(lastRefresh.Add(accessLife))+sweepInterval+busySlack+30*time.Second, 500*time.Millisecond)
	if err != nil {
		t.Errorf("not every kept user was logged out after the idle time was shortened: %v", err)
	}
	samples := healthSamples()

	events, err := stack.KeycloakEvents(ctx, "REFRESH_TOKEN_ERROR")
	if err != nil {
		t.Fatal(err)
	}
	lines := linesSince(t, shortened)
	for _, u := range users {
		sid := refreshed[u].Access.SessionID
		var ended time.Time
		for _, e := range events {
			at := time.UnixMilli(e.Time)
			if e.SessionID == sid && !at.Before(shortened.Add(-time.Second)) && (ended.IsZero() || at.Before(ended)) {
				ended = at
			}
		}
		mine := byUser(lines, u)
		var outs []timedLine
		for _, l := range mine {
			switch l.Msg {
			case "logged out":
				outs = append(outs, l)
			case "keycloak session ended":
				if l.Expected == nil || !*l.Expected {
					// Each such ending counts toward the mass-failure guard:
					// six of them trip it.
					t.Errorf("%s's session ending counted as unexpected at %s (%s): %+v", u, l.Time.Format(time.StampMilli), l.Reason, l)
				}
			}
		}
		if ended.IsZero() {
			t.Errorf("Keycloak recorded no failed refresh grant in %s's session %s after the idle time was shortened", u, sid)
		}
		if len(outs) != 1 {
			t.Errorf("%s: %d logout lines, want 1: %+v; tokenkeeper's lines about them since the idle time was shortened: %s",
				u, len(outs), outs, describeLines(mine))
			continue
		}
		out := outs[0]
		idleEnd := refreshed[u].Access.IssuedAt.Add(shortIdle)
		t.Logf("%s: refreshed at %s, idle from %s, Keycloak ended the session at %s (%s after its last refresh), logged out %s later (%s)",
			u, refreshed[u].Access.IssuedAt.Format(time.TimeOnly), idleEnd.Format(time.TimeOnly), ended.Format(time.StampMilli),
			ended.Sub(refreshed[u].Access.IssuedAt).Round(time.Second), out.Time.Sub(ended).Round(time.Millisecond), out.Reason)
		if !ended.IsZero() {
			if late := out.Time.Sub(ended); late > sweepInterval+time.Second+busySlack {
				t.Errorf("%s logged out %s after Keycloak ended the session, want within a sweep (%s, and %s for a busy machine); tokenkeeper's lines about them: %s",
					u, late.Round(time.Millisecond), sweepInterval, busySlack, describeLines(mine))
			}
		}
		if s, err := stack.KeycloakSessions(ctx, u); err != nil || len(s) != 0 {
			t.Errorf("%s's Keycloak sessions after the logout: %+v, %v; want none", u, s, err)
		}
	}
	for _, s := range samples {
		if slices.ContainsFunc(s.Body.Problems, func(p healthProblem) bool { return p.Class == "logouts_paused" }) {
			t.Errorf("health at %s: %d %+v; want logouts never paused", s.At.Format(time.TimeOnly), s.Status, s.Body)
			break
		}
	}
	if tripped, since := guardTripped(t); tripped {
		t.Errorf("the mass-failure guard is tripped (since %s), want it open", since.Format(time.StampMilli))
	}
	for _, l := range linesSince(t, since) {
		if strings.Contains(l.Msg, "back-channel logout incomplete") {
			t.Errorf("tokenkeeper at %s: %s (%s)", l.Time.Format(time.StampMilli), l.Msg, l.User)
		}
	}
	for _, l := range keycloakLogSince(t, kcLogStart, "KC-SERVICES0057", "Read timed out") {
		t.Errorf("Keycloak's log: a back-channel call failed: %s", l)
	}
	assertNoOtherLogout(t, since, others, users)
}

// describeLines lists lines' times, messages and reasons, one a line.
func describeLines(lines []timedLine) string {
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "\n\t%s %s", l.Time.Format(time.StampMilli), l.Msg)
		if l.Reason != "" {
			fmt.Fprintf(&b, " (%s)", l.Reason)
		}
	}
	return b.String()
}

// maxTime returns the later of a and b.
func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// guardTripped reads the mass-failure guard's durable state from
// tokenkeeper's database: whether it is tripped, and since when.
func guardTripped(t *testing.T) (bool, time.Time) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(stack.StateDir(), "tokenkeeper.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatalf("open tokenkeeper's database: %v", err)
	}
	defer db.Close()
	var tripped bool
	var since int64
	err = db.QueryRow(`SELECT tripped, since FROM guard WHERE id = 1`).Scan(&tripped, &since)
	if err == sql.ErrNoRows {
		return false, time.Time{}
	}
	if err != nil {
		t.Fatalf("read the guard's state: %v", err)
	}
	return tripped, time.UnixMilli(since)
}

// keycloakLogSince returns the lines of Keycloak's log, from offset on,
// that contain any of needles.
func keycloakLogSince(t *testing.T, offset int64, needles ...string) []string {
	t.Helper()
	b, err := os.ReadFile(stack.KeycloakLog())
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) < offset {
		offset = 0 // a restarted Keycloak appends; a shorter log is a new one
	}
	var out []string
	for _, line := range strings.Split(string(b[offset:]), "\n") {
		for _, n := range needles {
			if strings.Contains(line, n) {
				out = append(out, line)
				break
			}
		}
	}
	return out
}
