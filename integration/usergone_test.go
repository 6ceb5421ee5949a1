//go:build integration

package integration

import (
	"context"
	"database/sql"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"
)

// identityCacheTTL is hubclient's maxIdentityTTL: the longest tokenkeeper
// reuses the hub's answer about who owns a token, and so the longest a
// token the hub revoked is still taken as its user's.
const identityCacheTTL = 10 * time.Second

// goneLine is the one line tokenkeeper logs about a user the hub no longer has.
const goneLine = "the hub no longer has this user (deleted or renamed); forgotten"

// answer is one fresh-token call: when it was sent and its status.
type answer struct {
	sent   time.Time
	status int
}

// scheduledRows counts what tokenkeeper's database keeps of user: schedule,
// journal entry, intent and fences.
func scheduledRows(t *testing.T, user string) int {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(stack.StateDir(), "tokenkeeper.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatalf("open tokenkeeper's database: %v", err)
	}
	defer db.Close()
	n := 0
	for _, table := range []string{"users", "journal", "intents", "fences"} {
		var k int
		if err := db.QueryRow(`SELECT count(*) FROM `+table+` WHERE name = ?`, user).Scan(&k); err != nil {
			t.Fatalf("read tokenkeeper's %s: %v", table, err)
		}
		n += k
	}
	return n
}

// TestDeletedUserGoesQuicklyAndQuietly: users with a running server and
// tokens are deleted through the hub API while their server's token and an
// API token of theirs keep asking fresh-token. The hub revokes both tokens
// with the user. tokenkeeper learns of the deletion either from the sweep's
// list of users or, first, from a fresh-token call whose read of the user
// the hub answers 404; the second user's deletion holds the sweep's list
// back to make it so. Either way tokenkeeper stops serving either token
// within the identity cache's lifetime, logs one line that the user is gone
// and none that a refresh failed, and keeps no schedule, journal entry,
// intent or fence for them.
func TestDeletedUserGoesQuicklyAndQuietly(t *testing.T) {
	users := testUsers(t, "gone", 2)
	for _, u := range users {
		login(t, u)
		startServer(t, u)
	}
	deleteAndWatch(t, users[0], false)
	deleteAndWatch(t, users[1], true)
}

// deleteAndWatch deletes user through the hub API and checks how tokenkeeper
// lets them go. With firstCall the sweep's list of users is held back from
// before the deletion until the checks of the fresh-token answers are done,
// and the user's cached access token has less than fresh-token's default
// min_valid (capped at half its 30 s lifetime) left when the deletion is
// done, so that the first call after it reads the user from the hub.
func deleteAndWatch(t *testing.T, user string, firstCall bool) {
	t.Helper()
	ctx := context.Background()
	how := "found by the sweep"
	if firstCall {
		how = "found by a fresh-token call"
	}
	server := serverEnv(t, user)["JUPYTERHUB_API_TOKEN"]
	api, err := stack.UserToken(ctx, user, "access:services!service=tokenkeeper")
	if err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{"server token": server, "API token": api}
	if n := scheduledRows(t, user); n == 0 {
		t.Fatalf("%s (%s): tokenkeeper keeps no schedule before the deletion", user, how)
	}
	var list *Gate
	if firstCall {
		// Just past 15 s left (and the 2 s fresh-token keeps to spare for
		// the clocks), the cached token still serves the calls below, which
		// cache the tokens' identities for 10 s; soon after, it no longer
		// does.
		err := Poll(ctx, time.Minute, 100*time.Millisecond, func() (bool, error) {
			c, ok, err := authClaims(ctx, user)
			left := time.Until(c.Expiry)
			return ok && left > 17500*time.Millisecond && left <= 19*time.Second, err
		})
		if err != nil {
			t.Fatalf("%s (%s): the access token never had 17.5 to 19 s left: %v", user, how, err)
		}
		list = hubProxy.Gate(func(q *GatedRequest) bool { return q.Method == http.MethodGet && q.Path == "/users" })
		defer list.Close()
	}
	for kind, tok := range tokens {
		if status, body := freshToken(t, tok, ""); status != http.StatusOK || body["user"] != user {
			t.Fatalf("%s's %s before the deletion (%s): %d %v, want 200", user, kind, how, status, body["error"])
		}
	}

	since := time.Now()
	if err := stack.API(ctx, http.MethodDelete, "/users/"+url.PathEscape(user), nil, nil); err != nil {
		t.Fatalf("delete %s: %v", user, err)
	}
	deleted := time.Now()
	// Both tokens ask every 100 ms, as a busy notebook might, until the
	// identity cache's lifetime and a little more have passed.
	answers := map[string][]answer{}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for time.Since(since) < identityCacheTTL+2*time.Second {
		for kind, tok := range tokens {
			sent := time.Now()
			status, _ := freshToken(t, tok, "")
			answers[kind] = append(answers[kind], answer{sent, status})
		}
		<-tick.C
	}
	for kind, as := range answers {
		served, lastServed, refused := 0, time.Time{}, false
		for _, a := range as {
			if a.status != http.StatusOK {
				refused = true
				continue
			}
			served++
			lastServed = a.sent
			if refused {
				t.Errorf("%s's %s (%s): served again at %s after a refusal", user, kind, how, a.sent.Sub(since).Round(time.Millisecond))
			}
			if a.sent.Sub(since) > identityCacheTTL {
				t.Errorf("%s's %s (%s): served %s after the deletion began, want at most %s (the identity cache's lifetime)",
					user, kind, how, a.sent.Sub(since).Round(time.Millisecond), identityCacheTTL)
			}
		}
		if last := as[len(as)-1]; last.status == http.StatusOK {
			t.Errorf("%s's %s (%s): still served at the end", user, kind, how)
		}
		window := time.Duration(0)
		if served > 0 {
			window = lastServed.Sub(since)
		}
		t.Logf("%s's %s (%s): served %d times after the deletion began (the DELETE took %s), the last %s after it; then %d refusals, the last %d",
			user, kind, how, served, deleted.Sub(since).Round(time.Millisecond), window.Round(time.Millisecond), len(as)-served, as[len(as)-1].status)
	}
	if firstCall {
		if n := len(byUser(linesSince(t, since, goneLine), user)); n != 1 {
			t.Errorf("%s (%s): %d %q lines before the sweep could list the users, want 1", user, how, n, goneLine)
		}
		list.Close()
	}

	// The sweep lists the hub's users every sweepInterval: by then it has
	// seen the user gone, whether or not a fresh-token call saw it first.
	if err := Poll(ctx, sweepInterval+busySlack, 200*time.Millisecond, func() (bool, error) {
		return scheduledRows(t, user) == 0, nil
	}); err != nil {
		t.Errorf("%s (%s): tokenkeeper keeps rows (schedule, journal, intents, fences) for a user the hub deleted: %v", user, how, err)
	}
	if err := Poll(ctx, sweepInterval+busySlack, 200*time.Millisecond, func() (bool, error) {
		return len(byUser(linesSince(t, since, goneLine), user)) > 0, nil
	}); err != nil {
		t.Errorf("%s (%s): no line says the user is gone: %v", user, how, err)
	}
	lines := byUser(linesSince(t, since), user)
	gone, failed := 0, 0
	for _, l := range lines {
		switch l.Msg {
		case goneLine:
			gone++
		case "refresh failed":
			failed++
		}
	}
	if gone != 1 || failed != 0 {
		t.Errorf("tokenkeeper's lines about %s after the deletion (%s): %d %q, %d \"refresh failed\"; want 1 and 0; all: %v",
			user, how, gone, goneLine, failed, msgs(lines))
	}
}

// msgs lists the messages of lines.
func msgs(lines []timedLine) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = l.Msg
	}
	return out
}
