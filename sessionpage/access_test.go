package sessionpage

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tokenkeeper/tokenkeeper/refresh"
)

// bobsSecret is in bob's view only: a page that shows it showed bob.
const bobsSecret = "bob-outcome-marker"

func withUsers(e *env) {
	e.engine.sessions = []refresh.SessionView{
		{Name: "alice", State: refresh.SessionFresh, LastOutcome: "ok"},
		{Name: "bob", State: refresh.SessionRefreshing, LastOutcome: bobsSecret, Failures: 2},
	}
}

// TestWhoSeesWhat checks every view and action against the visitor's
// scopes: one's own, or ScopeSessions (unfiltered, or filtered for that
// user), or ScopeGuard; a hub admin gets nothing for being one.
func TestWhoSeesWhat(t *testing.T) {
	type step struct {
		method, path string
		status       int
		page         string
		calls        []call
	}
	get := func(path string, status int, page string) step {
		return step{http.MethodGet, path, status, page, nil}
	}
	post := func(path string, status int, calls ...call) step {
		return step{http.MethodPost, path, status, "", calls}
	}
	ui := testPrefix + "ui/"
	for _, tc := range []struct {
		name   string
		admin  bool
		scopes []string
		steps  []step
	}{
		{"a user", false, nil, []step{
			get(ui, 200, "user"), get(ui+"users/alice", 200, "user"),
			get(ui+"users/bob", 403, "forbidden"), get(ui+"users", 403, "forbidden"),
			post(ui+"users/bob/logout", 403), post(ui+"users/alice/refresh", 403), post(ui+"guard/release", 403),
			post(ui+"users/alice/logout", 303, call{Fn: "LogoutEverywhere", User: "alice", By: "alice"}),
		}},
		{"a hub admin without the scopes", true, nil, []step{
			get(ui+"users/bob", 403, "forbidden"), get(ui+"users", 403, "forbidden"),
			post(ui+"users/bob/logout", 403), post(ui+"users/bob/refresh", 403), post(ui+"guard/release", 403),
		}},
		{"sessions filtered for another user", false, []string{ScopeSessions + "!user=carol"}, []step{
			get(ui+"users/bob", 403, "forbidden"), get(ui+"users", 403, "forbidden"),
			post(ui+"users/bob/logout", 403), post(ui+"users/bob/refresh", 403),
		}},
		{"sessions filtered for bob", false, []string{ScopeSessions + "!user=bob"}, []step{
			get(ui+"users/bob", 200, "user"), get(ui+"users", 403, "forbidden"),
			post(ui+"users/bob/refresh", 303, call{Fn: "RefreshNow", User: "bob"}),
			post(ui+"users/bob/logout", 303, call{Fn: "LogoutEverywhere", User: "bob", By: "alice"}),
		}},
		{"sessions", false, []string{ScopeSessions}, []step{
			get(ui+"users", 200, "users"), get(ui+"users/bob", 200, "user"),
			post(ui+"guard/release", 403),
		}},
		{"the guard filtered", false, []string{ScopeGuard + "!user=alice"}, []step{post(ui+"guard/release", 403)}},
		{"the guard", false, []string{ScopeGuard}, []step{
			get(ui+"users", 403, "forbidden"),
			post(ui+"guard/release", 303, call{Fn: "ReleaseGuard"}),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			withUsers(e)
			e.hub.grantScopes("alice", tc.admin, tc.scopes...)
			b := e.browser()
			b.login("alice", testPrefix+"ui/")
			xsrf := b.csrf()
			for _, s := range tc.steps {
				before := len(e.engine.recorded())
				rec := b.send(s.method, s.path, url.Values{"_xsrf": {xsrf}})
				body := rec.Body.String()
				if rec.Code != s.status || (s.page != "" && page(body) != s.page) {
					t.Errorf("%s %s: status %d, page %q; want %d, %q", s.method, s.path, rec.Code, page(body), s.status, s.page)
				}
				if rec.Code == http.StatusForbidden && strings.Contains(body, bobsSecret) {
					t.Errorf("%s %s: the 403 page shows bob's session", s.method, s.path)
				}
				if diff := cmp.Diff(s.calls, e.engine.recorded()[before:]); diff != "" {
					t.Errorf("%s %s: calls (-want +got):\n%s", s.method, s.path, diff)
				}
			}
		})
	}
}

// TestCSRF refuses a POST without the session's CSRF token in its form,
// or from another origin, before asking the hub or acting.
func TestCSRF(t *testing.T) {
	for _, tc := range []struct {
		name   string
		form   func(own, bobs string) url.Values
		query  string
		header http.Header
		noSess bool
		status int
	}{
		{"the page's own form", func(own, _ string) url.Values { return url.Values{"_xsrf": {own}} }, "", nil, false, 303},
		{"without the origin header", func(own, _ string) url.Values { return url.Values{"_xsrf": {own}} }, "", http.Header{"Origin": nil}, false, 303},
		{"no _xsrf", func(string, string) url.Values { return url.Values{} }, "", nil, false, 403},
		{"a wrong _xsrf", func(own, _ string) url.Values { return url.Values{"_xsrf": {strings.Repeat("0", len(own))}} }, "", nil, false, 403},
		{"another session's _xsrf", func(_, bobs string) url.Values { return url.Values{"_xsrf": {bobs}} }, "", nil, false, 403},
		{"_xsrf twice", func(own, bobs string) url.Values { return url.Values{"_xsrf": {bobs, own}} }, "", nil, false, 403},
		{"_xsrf in the query, not the form", func(string, string) url.Values { return url.Values{} }, "own", nil, false, 403},
		{"a foreign origin", func(own, _ string) url.Values { return url.Values{"_xsrf": {own}} }, "", http.Header{"Origin": {"https://evil.example"}}, false, 403},
		{"an opaque origin", func(own, _ string) url.Values { return url.Values{"_xsrf": {own}} }, "", http.Header{"Origin": {"null"}}, false, 403},
		{"the page's host over another scheme", func(own, _ string) url.Values { return url.Values{"_xsrf": {own}} }, "", http.Header{"Origin": {"https://" + testHost}}, false, 403},
		{"no session", func(own, _ string) url.Values { return url.Values{"_xsrf": {own}} }, "", nil, true, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			alice, bob := e.browser(), e.browser()
			alice.login("alice", testPrefix+"ui/")
			bob.login("bob", testPrefix+"ui/")
			own, bobs := alice.csrf(), bob.csrf()
			if tc.noSess {
				delete(alice.jar, sessionCookie)
			}
			target := testPrefix + "ui/users/alice/logout"
			if tc.query != "" {
				target += "?_xsrf=" + own
			}
			before := e.hub.identified()
			rec := alice.post(target, tc.form(own, bobs), tc.header)
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tc.status, rec.Body)
			}
			if rec.Code == http.StatusForbidden {
				if n := e.hub.identified() - before; n != 0 || len(e.engine.recorded()) != 0 || page(rec.Body.String()) != "forbidden" {
					t.Errorf("refused POST: %d identity lookups, calls %v, page %q; want none, none, forbidden",
						n, e.engine.recorded(), page(rec.Body.String()))
				}
			}
		})
	}
}

// TestOneIdentityLookupPerPageLoad counts the hub's GET /user per page
// load and action, and none for the login's steps.
func TestOneIdentityLookupPerPageLoad(t *testing.T) {
	e := newEnv(t)
	withUsers(e)
	e.engine.guard = refresh.GuardView{Tripped: true, Held: []string{"bob"}}
	e.hub.grantScopes("alice", true, ScopeSessions, ScopeGuard)
	b := e.browser()
	before := e.hub.identified()
	b.login("alice", testPrefix+"ui/")
	if n := e.hub.identified() - before; n != 0 {
		t.Errorf("the login cost %d identity lookups, want 0", n)
	}
	xsrf := b.csrf()
	ui := testPrefix + "ui/"
	for _, s := range []struct{ method, path string }{
		{"GET", ui}, {"GET", ui + "users"}, {"GET", ui + "users/bob"}, {"GET", ui + "users?sort=failures&order=desc"},
		{"GET", ui + "users/nobody"}, {"GET", ui + "users?sort=bogus"},
		{"POST", ui + "users/bob/refresh"}, {"POST", ui + "users/bob/logout"}, {"POST", ui + "guard/release"},
	} {
		before := e.hub.identified()
		rec := b.send(s.method, s.path, url.Values{"_xsrf": {xsrf}})
		if n := e.hub.identified() - before; n != 1 {
			t.Errorf("%s %s (status %d): %d identity lookups, want 1", s.method, s.path, rec.Code, n)
		}
	}
}
