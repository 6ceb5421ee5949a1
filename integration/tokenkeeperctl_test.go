//go:build integration

package integration

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // the driver of tokenkeeper's own database

	"github.com/tokenkeeper/tokenkeeper/refresh"
)

// Helpers for the tests that restart tokenkeeper, change its settings, and
// log many users in.

// tokenkeeperPIDs lists the running tokenkeeper processes of this stack.
func tokenkeeperPIDs() []int {
	needle := []byte("TOKENKEEPER_DATABASE=" + stack.StateDir() + "/")
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if bytes.Contains(env, needle) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killTokenkeeper sends sig to the one running tokenkeeper and returns its pid.
func killTokenkeeper(sig syscall.Signal) (int, error) {
	pids := tokenkeeperPIDs()
	if len(pids) != 1 {
		return 0, fmt.Errorf("tokenkeeper processes = %v, want exactly one", pids)
	}
	if err := syscall.Kill(pids[0], sig); err != nil {
		return 0, fmt.Errorf("signal tokenkeeper: %w", err)
	}
	return pids[0], nil
}

// signalTokenkeeper is killTokenkeeper that ends the test on failure.
func signalTokenkeeper(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	pid, err := killTokenkeeper(sig)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// waitRestarted waits until the hub has started a tokenkeeper other than
// old and it answers health with 200.
func waitRestarted(t *testing.T, old int) {
	t.Helper()
	var last string
	err := Poll(context.Background(), time.Minute, 100*time.Millisecond, func() (bool, error) {
		pids := tokenkeeperPIDs()
		if len(pids) != 1 || pids[0] == old {
			last = fmt.Sprintf("processes %v", pids)
			return false, nil
		}
		resp, err := http.Get(stack.ServiceURL() + "health")
		if err != nil {
			last = err.Error()
			return false, nil
		}
		defer resp.Body.Close()
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		last = fmt.Sprintf("health %d %v", resp.StatusCode, body)
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		t.Fatalf("tokenkeeper was not restarted healthy after pid %d ended: %v (%s)", old, err, last)
	}
}

// restartTokenkeeper stops tokenkeeper with SIGTERM, as the hub does, and
// waits for the hub to start it again.
func restartTokenkeeper(t *testing.T) {
	t.Helper()
	waitRestarted(t, signalTokenkeeper(t, syscall.SIGTERM))
}

// settingsFile is the JSON configuration file the stack gives tokenkeeper.
func settingsFile() string { return filepath.Join(stack.StateDir(), "tokenkeeper-settings.json") }

// useSettings restarts tokenkeeper with settings (config file keys such as
// "keep") and restores the defaults, with another restart, when the test ends.
func useSettings(t *testing.T, settings map[string]any) {
	t.Helper()
	write := func(v map[string]any) {
		b, _ := json.Marshal(v)
		if err := os.WriteFile(settingsFile(), b, 0o600); err != nil {
			t.Fatalf("write tokenkeeper's settings: %v", err)
		}
	}
	write(settings)
	t.Cleanup(func() {
		write(map[string]any{})
		restartTokenkeeper(t)
	})
	restartTokenkeeper(t)
}

// auditedLogout is a row of tokenkeeper's logouts table.
type auditedLogout struct {
	User, Reason string
}

// auditedLogouts reads the logouts tokenkeeper recorded for users.
func auditedLogouts(t *testing.T, users ...string) []auditedLogout {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(stack.StateDir(), "tokenkeeper.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatalf("open tokenkeeper's database: %v", err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name, reason FROM logouts ORDER BY id`)
	if err != nil {
		t.Fatalf("read tokenkeeper's logouts: %v", err)
	}
	defer rows.Close()
	want := map[string]bool{}
	for _, u := range users {
		want[u] = true
	}
	var out []auditedLogout
	for rows.Next() {
		var l auditedLogout
		if err := rows.Scan(&l.User, &l.Reason); err != nil {
			t.Fatalf("read tokenkeeper's logouts: %v", err)
		}
		if want[l.User] {
			out = append(out, l)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("read tokenkeeper's logouts: %v", err)
	}
	return out
}

// testUsers creates n Keycloak users named prefix01, prefix02, ... (password
// name-pw) and removes them from the hub and ends their Keycloak sessions
// when the test ends, so that later tests do not refresh them.
func testUsers(t *testing.T, prefix string, n int) []string {
	t.Helper()
	ctx := context.Background()
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("%s%02d", prefix, i+1)
		if err := stack.CreateKeycloakUser(ctx, users[i], users[i]+"-pw"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { forgetUsers(t, users) })
	return users
}

// forgetUsers deletes users from the hub and ends their Keycloak sessions.
func forgetUsers(t *testing.T, users []string) {
	ctx := context.Background()
	ids, err := stack.KeycloakUserIDs(ctx)
	if err != nil {
		t.Error(err)
	}
	for _, u := range users {
		if err := stack.API(ctx, http.MethodDelete, "/users/"+url.PathEscape(u), nil, nil); err != nil && !IsStatus(err, http.StatusNotFound) {
			t.Errorf("delete hub user %s: %v", u, err)
		}
		if err := stack.EndKeycloakUserSessions(ctx, ids[u]); err != nil {
			t.Errorf("end the Keycloak sessions of %s: %v", u, err)
		}
	}
}

// loginAll logs users in through the real OAuth flow, parallel at a time,
// and returns their browsers.
func loginAll(t *testing.T, users []string, parallel int) map[string]*http.Client {
	t.Helper()
	start := time.Now()
	var mu sync.Mutex
	browsers := make(map[string]*http.Client, len(users))
	errs := make(chan error, len(users))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := Login(context.Background(), stack.HubURL(), u, u+"-pw")
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			browsers[u] = c
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("login: %v", err)
	}
	t.Logf("logged %d users in in %s (%d at a time)", len(users), time.Since(start).Round(100*time.Millisecond), parallel)
	return browsers
}

// authClaims returns the claims of the access token in user's auth_state;
// ok is false when auth_state holds none.
func authClaims(ctx context.Context, user string) (refresh.Claims, bool, error) {
	st, err := stack.AuthState(ctx, user)
	if err != nil {
		return refresh.Claims{}, false, err
	}
	at, _ := st["access_token"].(string)
	if at == "" {
		return refresh.Claims{}, false, nil
	}
	c, err := refresh.ParseClaims(at)
	return c, err == nil, err
}

// assertNoSessionLost checks that tokenkeeper kept every user's session
// through whatever happened before since: each user's auth_state gets an
// access token issued after since (so a refresh grant with the refresh token
// the hub or tokenkeeper's journal held then succeeded), fresh-token serves
// a token Keycloak's userinfo accepts, Keycloak still lists a session, and
// nobody was logged out or found with an ended session.
func assertNoSessionLost(t *testing.T, users []string, since time.Time) {
	t.Helper()
	ctx := context.Background()
	pending := map[string]bool{}
	for _, u := range users {
		pending[u] = true
	}
	var emptied []string
	err := Poll(ctx, 90*time.Second, 500*time.Millisecond, func() (bool, error) {
		for u := range pending {
			c, ok, err := authClaims(ctx, u)
			if err != nil {
				return false, err
			}
			if !ok {
				emptied = append(emptied, u)
				delete(pending, u)
				continue
			}
			if c.IssuedAt.Unix() > since.Unix() {
				delete(pending, u)
			}
		}
		return len(pending) == 0, nil
	})
	if len(emptied) > 0 {
		t.Errorf("%d of %d users lost their tokens (auth_state cleared): %v", len(emptied), len(users), emptied)
	}
	if err != nil {
		t.Errorf("%d of %d users got no token issued after %s: %v (%v)", len(pending), len(users),
			since.Format(time.TimeOnly), sortedKeys(pending), err)
	}
	ids, err := stack.KeycloakUserIDs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var refused, noSession []string
	for _, u := range users {
		status, body := freshToken(t, stack.TestToken, "?user="+url.QueryEscape(u))
		at, _ := body["access_token"].(string)
		if code, err := stack.Userinfo(ctx, at); status != http.StatusOK || err != nil || code != http.StatusOK {
			refused = append(refused, fmt.Sprintf("%s (fresh-token %d %v, userinfo %d)", u, status, body["error"], code))
		}
		if s, err := stack.KeycloakUserSessions(ctx, ids[u]); err != nil || len(s) == 0 {
			noSession = append(noSession, u)
		}
	}
	if len(refused) > 0 {
		t.Errorf("%d of %d users have no working token: %v", len(refused), len(users), refused)
	}
	if len(noSession) > 0 {
		t.Errorf("%d of %d users have no Keycloak session left: %v", len(noSession), len(users), noSession)
	}
	assertNobodyLoggedOut(t, users)
}

// assertNobodyLoggedOut checks tokenkeeper's log and audit table for users.
func assertNobodyLoggedOut(t *testing.T, users []string) {
	t.Helper()
	in := map[string]bool{}
	for _, u := range users {
		in[u] = true
	}
	for _, msg := range []string{"logged out", "keycloak session ended"} {
		n, who := 0, map[string]string{}
		for _, l := range tokenkeeperLog(t, msg, "") {
			if in[l.User] {
				n++
				who[l.User] = l.Reason
			}
		}
		if n > 0 {
			t.Errorf("%d %q log lines for %d users: %v", n, msg, len(who), who)
		}
	}
	if l := auditedLogouts(t, users...); len(l) != 0 {
		t.Errorf("logouts recorded for %d users: %v", len(l), l)
	}
}

func sortedKeys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }
