//go:build integration

package integration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestServicePageInChromium is issue 22's test: tokenkeeper's page, in a
// real Chromium on the real stack, for a user, another user and an admin
// of the page, each in a browser context of their own.
//
// alice logs in to the hub, finds tokenkeeper in the hub's Services menu
// and follows it (the hub's OAuth to the service, no confirmation page):
// she sees her own session and nothing of bob's, and bob's view answers her
// 403. bob, logged in with a running server that keeps token files, sees
// them on his own view. ada, a hub admin holding the page's scopes
// (jupyterhub_config.py), sees both in the user table, opens bob's view and
// logs him out everywhere: within 2 s his Keycloak session, his auth_state
// and his server's token files are gone and the audit table has a row for
// him. Then a realm-wide failure is staged as in
// TestGuardHoldsAcrossHubRestartAndReleaseLogsOutNobodyAlive (the accounts
// of six kept users disabled): ada sees the guard holding the six and
// releases it. No HTML or JSON answer any browser received, Keycloak's
// included, holds a string that looks like a JSON Web Token, and no
// browser reached past 127.0.0.1. A screenshot of each view goes to
// $TOKENKEEPER_SCREENSHOTS (`make screenshots`: docs/screenshots).
func TestServicePageInChromium(t *testing.T) {
	ctx := context.Background()
	shots := screenshotDir(t)
	hub := stack.HubBaseURL()
	prefix := hub + "/services/tokenkeeper/"
	ensureKeycloakUser(t, "ada")
	// The guard's users below are kept without servers. Set first, since
	// it restarts tokenkeeper.
	useSettings(t, map[string]any{"keep": "all"})
	// bob's sessions end below: no later test may use a browser of his
	// logged in before.
	t.Cleanup(func() { forgetLogin("bob") })

	b := startBrowser(t)
	alice, bob, ada := newTab(t, b, "alice"), newTab(t, b, "bob"), newTab(t, b, "ada")
	t.Cleanup(func() {
		for _, tab := range []*Tab{alice, bob, ada} {
			if err := tab.Settle(); err != nil {
				t.Error(err)
			}
			for _, l := range TokenLike(tab.Responses()) {
				t.Errorf("%s's browser received a token-like string: %s", tab.Name, l)
			}
			for _, u := range NotLoopback(tab.Requests()) {
				t.Errorf("%s's browser asked for %s, outside 127.0.0.1", tab.Name, u)
			}
			t.Logf("%s's browser: %d requests, %d HTML or JSON answers checked", tab.Name, len(tab.Requests()), countBodies(tab.Responses()))
		}
	})

	// bob: logged in, with a running server whose keeper writes token files.
	check(t, bob.LoginThroughHub(hub, "bob", "bob-pw"))
	startServer(t, "bob")
	stopServerAtEnd(t, "bob")
	files := tokenFiles(t, serverEnv(t, "bob"))
	err := Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		for name, path := range files {
			if _, err := os.Stat(path); err != nil {
				return false, fmt.Errorf("token file %s: %w", name, err)
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("bob's token files: %v", err)
	}
	check(t, reloadUntil(bob, prefix+"ui/", 30*time.Second, fileRows(files)...))
	assertAttr(t, bob, "#tk-user", "data-user", "bob")

	// alice: the hub's Services menu leads to her own view.
	check(t, alice.LoginThroughHub(hub, "alice", "alice-pw"))
	if status, err := alice.Navigate(hub + "/hub/home"); err != nil || status != http.StatusOK {
		t.Fatalf("alice's hub home: %d, %v", status, err)
	}
	check(t, alice.Click(servicesMenu))
	href, err := serviceEntry(alice, "tokenkeeper")
	check(t, err)
	status, err := alice.ClickToLoad(serviceEntrySelector(href))
	check(t, err)
	loc, err := alice.Location()
	check(t, err)
	if strings.Contains(loc, "/hub/api/oauth2/authorize") {
		t.Fatalf("following tokenkeeper in the Services menu, the hub asks alice to confirm its access (%s): want no confirmation page", loc)
	}
	if loc != prefix+"ui/" || status != http.StatusOK {
		t.Fatalf("following tokenkeeper in the Services menu: %d at %s, want 200 at %sui/", status, loc, prefix)
	}
	assertAttr(t, alice, "body", "data-tk-page", "user")
	assertAttr(t, alice, "#tk-user", "data-user", "alice")
	if who, err := alice.Text("#tk-whoami"); err != nil || strings.TrimSpace(who) != "alice" {
		t.Errorf("#tk-whoami on alice's view: %q, %v; want alice", who, err)
	}
	assertAbsent(t, alice, "#tk-users", "#tk-all-users", "#tk-refresh-now")
	assertNoBob(t, alice)
	// Her login is new to tokenkeeper until a sweep sees it.
	check(t, reloadUntil(alice, prefix+"ui/", 20*time.Second, `#tk-user[data-user="alice"][data-state="fresh"]`))
	state, _, _ := alice.Attr("#tk-user", "data-state")
	t.Logf("alice's view shows her session %s", state)
	shoot(t, alice, shots, "own-view")

	// A direct visit to bob's view: 403.
	if status, err := alice.Navigate(prefix + "ui/users/bob"); err != nil || status != http.StatusForbidden {
		t.Errorf("alice at bob's view: %d, %v; want 403", status, err)
	}
	if r, ok := lastDocument(alice, prefix+"ui/users/bob"); !ok || r.Status != http.StatusForbidden {
		t.Errorf("alice's browser recorded bob's view answering %d (found %v), want 403", r.Status, ok)
	}
	assertAttr(t, alice, "body", "data-tk-page", "forbidden")
	assertAbsent(t, alice, "#tk-user", "#tk-token-files")
	shoot(t, alice, shots, "forbidden")

	// ada: every user, and bob's view.
	check(t, ada.LoginThroughHub(hub, "ada", "ada-pw"))
	check(t, reloadUntil(ada, prefix+"ui/users", 30*time.Second, `#tk-users tr[data-user="alice"]`, `#tk-users tr[data-user="bob"]`))
	assertAttr(t, ada, "body", "data-tk-page", "users")
	for _, sel := range []string{"#tk-all-users", "#tk-health", "#tk-guard", "#tk-audit"} {
		if ok, err := ada.Exists(sel); err != nil || !ok {
			t.Errorf("ada's user table page: no %s (%v)", sel, err)
		}
	}
	shoot(t, ada, shots, "admin-users")
	status, err = ada.ClickToLoad(`#tk-users tr[data-user="bob"] a[href$="users/bob"]`)
	check(t, err)
	if loc, _ := ada.Location(); status != http.StatusOK || loc != prefix+"ui/users/bob" {
		t.Fatalf("ada opening bob's row: %d at %s, want 200 at %sui/users/bob", status, loc, prefix)
	}
	assertAttr(t, ada, "#tk-user", "data-user", "bob")
	for _, sel := range fileRows(files) {
		if ok, err := ada.Exists(sel); err != nil || !ok {
			t.Errorf("bob's view as ada: no %s (%v)", sel, err)
		}
	}
	shoot(t, ada, shots, "admin-user-view")

	// Log bob out everywhere: the Keycloak session in his auth_state, and
	// the audit table gets one more row for him.
	tok, ok := tokensOf(t, "bob")
	if !ok || tok.Access.SessionID == "" {
		t.Fatalf("bob's auth_state before the logout: %+v, want tokens of a Keycloak session", tok.Access)
	}
	sid := tok.Access.SessionID
	if s, err := stack.KeycloakSessions(ctx, "bob"); err != nil || !slices.ContainsFunc(s, func(s KeycloakSession) bool { return s.ID == sid }) {
		t.Fatalf("bob's Keycloak sessions before the logout: %+v, %v; want %s among them", s, err, sid)
	}
	_, err = ada.Navigate(prefix + "ui/users")
	check(t, err)
	auditRows, err := ada.Count(`#tk-audit tr[data-user="bob"]`)
	check(t, err)
	audited := len(auditedLogouts(t, "bob"))
	check(t, reloadUntil(ada, prefix+"ui/users/bob", 10*time.Second, "#tk-logout-everywhere-button"))
	pressed := time.Now()
	status, err = ada.ClickToLoad("#tk-logout-everywhere-button")
	check(t, err)
	answered := time.Since(pressed)
	if loc, _ := ada.Location(); status != http.StatusOK || !strings.HasPrefix(loc, prefix+"ui/users/bob?") || !strings.Contains(loc, "done=logged-out") {
		t.Errorf("after log out everywhere ada's browser is at %s (%d), want bob's view with done=logged-out", loc, status)
	}
	took := whenTrue(t, pressed, map[string]func() (bool, error){
		"bob's Keycloak session gone": func() (bool, error) {
			s, err := stack.KeycloakSessions(ctx, "bob")
			return err == nil && !slices.ContainsFunc(s, func(s KeycloakSession) bool { return s.ID == sid }), err
		},
		"bob's auth_state cleared": func() (bool, error) {
			_, ok := tokensOf(t, "bob")
			return !ok, nil
		},
		"bob's token files gone": func() (bool, error) {
			for name, path := range files {
				if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
					return false, fmt.Errorf("token file %s: %v", name, err)
				}
			}
			return true, nil
		},
		"bob's row in the audit table": func() (bool, error) {
			if _, err := ada.Navigate(prefix + "ui/users"); err != nil {
				return false, err
			}
			n, err := ada.Count(`#tk-audit tr[data-user="bob"]`)
			return n > auditRows, err
		},
	})
	if a := auditedLogouts(t, "bob"); len(a) != audited+1 || !strings.Contains(a[len(a)-1].Reason, "ada") {
		t.Errorf("logouts tokenkeeper recorded for bob: %v; want one more than the %d before, by ada", a, audited)
	}
	t.Logf("log out everywhere: the page answered in %s; %v", answered.Round(time.Millisecond), took)
	for what, d := range took {
		if d > 2*time.Second {
			t.Errorf("%s %s after ada pressed log out everywhere, want within 2 s", what, d.Round(time.Millisecond))
		}
	}

	// A realm-wide failure: the guard holds six users.
	users := testUsers(t, "pguard", 6)
	loginTogether(t, users)
	first := map[string]string{}
	for _, u := range users {
		first[u], _ = accessToken(t, u)
	}
	for _, u := range users {
		waitNewToken(t, u, first[u], 45*time.Second) // kept: refreshed by tokenkeeper
	}
	releaseGuardAtEnd(t)
	ids, err := stack.KeycloakUserIDs(ctx)
	check(t, err)
	t.Cleanup(func() {
		for _, u := range users {
			if err := setKeycloakUserEnabled(ctx, ids[u], true); err != nil {
				t.Errorf("enable %s again: %v", u, err)
			}
		}
	})
	for _, u := range users {
		check(t, setKeycloakUserEnabled(ctx, ids[u], false))
	}
	staged := time.Now()
	if last, err := awaitHealth(ctx, guardHolding(len(users)), 2*time.Minute); err != nil {
		t.Fatalf("health never held all %d users: %v; last %d %+v", len(users), err, last.Status, last.Body)
	}
	t.Logf("the guard holds %d users %s after the accounts were disabled", len(users), time.Since(staged).Round(time.Second))
	held := fmt.Sprintf(`#tk-guard[data-tripped="true"][data-held="%d"]`, len(users))
	check(t, reloadUntil(ada, prefix+"ui/users", 10*time.Second, held, "#tk-guard-release-button"))
	assertAttr(t, ada, "#tk-health", "data-status", "unhealthy")
	shoot(t, ada, shots, "guard-holding")

	// Keycloak recovers, and ada releases the guard.
	for _, u := range users {
		check(t, setKeycloakUserEnabled(ctx, ids[u], true))
	}
	status, err = ada.ClickToLoad("#tk-guard-release-button")
	check(t, err)
	if loc, _ := ada.Location(); status != http.StatusOK || !strings.Contains(loc, "done=released") {
		t.Errorf("after releasing the guard ada's browser is at %s (%d), want the page with done=released", loc, status)
	}
	assertAttr(t, ada, "#tk-guard", "data-tripped", "false")
	assertAbsent(t, ada, "#tk-guard-release-button")
	if tripped, _ := guardTripped(t); tripped {
		t.Errorf("the guard's durable state is still tripped after ada released it on the page")
	}
}

// servicesMenu is the toggle of the Services menu in the hub's navigation
// bar (JupyterHub 5 and 6 alike: page.html's nav_bar_left_items).
const servicesMenu = `#thenavbar li.nav-item.dropdown > a.dropdown-toggle`

// serviceEntry finds the entry named name in the open Services menu and
// returns its href; the entry must be visible.
func serviceEntry(tab *Tab, name string) (string, error) {
	type entry struct {
		Found   bool   `json:"found"`
		Href    string `json:"href"`
		Visible bool   `json:"visible"`
		Names   string `json:"names"`
	}
	e, err := evaluate[entry](tab, `(() => {
		const items = [...document.querySelectorAll("#thenavbar .dropdown-menu a.dropdown-item")];
		const a = items.find(a => a.textContent.trim() === `+js(name)+`);
		return {found: !!a, href: a ? a.getAttribute("href") : "", visible: !!a && a.checkVisibility(),
			names: items.map(a => a.textContent.trim()).join(", ")};
	})()`)
	switch {
	case err != nil:
		return "", err
	case !e.Found:
		return "", fmt.Errorf("%s: no %q in the hub's Services menu (it holds: %s)", tab.Name, name, e.Names)
	case !e.Visible:
		return "", fmt.Errorf("%s: %q in the hub's Services menu is not visible after opening the menu", tab.Name, name)
	}
	return e.Href, nil
}

// serviceEntrySelector selects the Services menu's entry that links to href.
func serviceEntrySelector(href string) string {
	return `#thenavbar .dropdown-menu a.dropdown-item[href=` + js(href) + `]`
}

// screenshotDir is where the test's screenshots go: $TOKENKEEPER_SCREENSHOTS,
// else a temporary directory.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TOKENKEEPER_SCREENSHOTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("screenshots: %v", err)
	}
	return dir
}

// shoot writes the tab's page to dir/name.png, which must stay well under 1 MB.
func shoot(t *testing.T, tab *Tab, dir, name string) {
	t.Helper()
	path := filepath.Join(dir, name+".png")
	n, err := tab.Screenshot(path)
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	if n >= 1<<20 {
		t.Errorf("screenshot %s is %d bytes, want well under 1 MB", path, n)
	}
	t.Logf("screenshot %s (%d KB)", path, n>>10)
}

// startBrowser starts Chromium with a new profile for the test and stops it
// when the test ends.
func startBrowser(t *testing.T) *Browser {
	t.Helper()
	start := time.Now()
	b, err := StartBrowser(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	t.Logf("Chromium up in %s", time.Since(start).Round(time.Millisecond))
	return b
}

// newTab opens a browser context of its own for name.
func newTab(t *testing.T, b *Browser, name string) *Tab {
	t.Helper()
	tab, err := b.NewTab(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tab.Close)
	return tab
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// reloadUntil loads u every half second, for up to limit, until every one
// of sels finds an element: the page is rendered on the server and shows
// what tokenkeeper knows when it loads.
func reloadUntil(tab *Tab, u string, limit time.Duration, sels ...string) error {
	var missing string
	err := Poll(context.Background(), limit, 500*time.Millisecond, func() (bool, error) {
		if _, err := tab.Navigate(u); err != nil {
			return false, err
		}
		for _, sel := range sels {
			ok, err := tab.Exists(sel)
			if err != nil || !ok {
				missing = sel
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		loc, _ := tab.Location()
		return fmt.Errorf("%s: %s (at %s) never showed %s: %w", tab.Name, u, loc, missing, err)
	}
	return nil
}

// assertAttr checks attribute name of the first element sel finds.
func assertAttr(t *testing.T, tab *Tab, sel, name, want string) {
	t.Helper()
	v, ok, err := tab.Attr(sel, name)
	if err != nil || !ok || v != want {
		loc, _ := tab.Location()
		t.Errorf("%s at %s: %s's %s = %q (present %v, %v), want %q", tab.Name, loc, sel, name, v, ok, err, want)
	}
}

// assertAbsent checks that none of sels finds an element.
func assertAbsent(t *testing.T, tab *Tab, sels ...string) {
	t.Helper()
	for _, sel := range sels {
		if ok, err := tab.Exists(sel); err != nil || ok {
			loc, _ := tab.Location()
			t.Errorf("%s at %s: %s present (%v), want none", tab.Name, loc, sel, err)
		}
	}
}

// bobWord finds bob's name as a word.
var bobWord = regexp.MustCompile(`(?i)\bbob\b`)

// assertNoBob checks that nothing on the page, in its markup or its
// answer's body, names bob.
func assertNoBob(t *testing.T, tab *Tab) {
	t.Helper()
	html, err := tab.HTML()
	if err != nil {
		t.Fatal(err)
	}
	loc, _ := tab.Location()
	r, _ := lastDocument(tab, loc)
	for what, text := range map[string]string{"page": html, "answer": string(r.Body)} {
		if m := bobWord.FindStringIndex(text); m != nil {
			t.Errorf("%s's view at %s: bob in the %s: %q", tab.Name, loc, what, text[max(0, m[0]-80):min(len(text), m[1]+80)])
		}
	}
}

// lastDocument is the last page (not a redirect) the tab received from u.
func lastDocument(tab *Tab, u string) (Response, bool) {
	for _, r := range slices.Backward(tab.Responses()) {
		if r.Type == "Document" && !r.Redirect && r.URL == u {
			return r, true
		}
	}
	return Response{}, false
}

// fileRows selects the rows of the token-files table for files.
func fileRows(files map[string]string) []string {
	var sels []string
	for name := range files {
		sels = append(sels, `#tk-token-files tr[data-file="`+name+`"]`)
	}
	slices.Sort(sels)
	return sels
}

// whenTrue polls each condition every 50 ms, for up to 10 s from start,
// and returns how long after start each first held; a condition that never
// held fails the test.
func whenTrue(t *testing.T, start time.Time, conds map[string]func() (bool, error)) map[string]time.Duration {
	t.Helper()
	took := map[string]time.Duration{}
	last := map[string]error{}
	_ = Poll(context.Background(), time.Until(start.Add(10*time.Second)), 50*time.Millisecond, func() (bool, error) {
		for what, cond := range conds {
			if _, done := took[what]; done {
				continue
			}
			ok, err := cond()
			if ok {
				took[what] = time.Since(start)
			}
			last[what] = err
		}
		return len(took) == len(conds), nil
	})
	for what := range conds {
		if _, ok := took[what]; !ok {
			t.Errorf("%s: not within 10 s (last error: %v)", what, last[what])
		}
	}
	return took
}

// countBodies counts the HTML and JSON answers whose bodies were read.
func countBodies(rs []Response) int {
	n := 0
	for _, r := range rs {
		if !r.Redirect && recorded(r.MIME) && r.Err == "" {
			n++
		}
	}
	return n
}

// forgetLogin drops user's browser kept by login, whose session ended.
func forgetLogin(user string) {
	loginMu.Lock()
	defer loginMu.Unlock()
	delete(logins, user)
}
