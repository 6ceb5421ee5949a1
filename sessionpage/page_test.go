package sessionpage

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/refresh"
	"github.com/tokenkeeper/tokenkeeper/serviceaccount"
	"github.com/tokenkeeper/tokenkeeper/store"
)

// wantHeaders are on every response of the page.
var wantHeaders = map[string]string{
	"Cache-Control":           "no-store",
	"Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
	"X-Content-Type-Options":  "nosniff",
	"Referrer-Policy":         "same-origin",
	"X-Frame-Options":         "DENY",
}

// TestEveryResponseIsNoStoreWithCSP collects responses of every kind:
// redirects, the callback's refusals, pages, errors, actions.
func TestEveryResponseIsNoStoreWithCSP(t *testing.T) {
	e := newEnv(t)
	withUsers(e)
	e.hub.grantScopes("alice", false, ScopeSessions)
	b := e.browser()
	ui := testPrefix + "ui/"
	var got []*httptest.ResponseRecorder
	keep := func(r *httptest.ResponseRecorder) *httptest.ResponseRecorder { got = append(got, r); return r }
	cb := e.hub.authorize(keep(b.get(ui)).Header().Get("Location"), "alice")
	keep(b.get(withQuery(cb, "state", "forged-state-0000000000")))
	keep(b.get(withQuery(cb, "error", "access_denied")))
	cb = e.hub.authorize(keep(b.get(ui)).Header().Get("Location"), "alice")
	keep(b.get(cb))
	for _, path := range []string{ui, ui + "users", ui + "users/bob", ui + "users?sort=bogus", ui + "users/a%00b"} {
		keep(b.get(path))
	}
	xsrf := b.csrf()
	keep(b.post(ui+"users/bob/refresh", url.Values{"_xsrf": {xsrf}}, nil))
	keep(b.post(ui+"users/bob/refresh", url.Values{}, nil))
	e.engine.failWith = refresh.ErrStopping
	keep(b.post(ui+"users/bob/refresh", url.Values{"_xsrf": {xsrf}}, nil))
	e.hub.revokeAll()
	keep(b.get(ui))
	statuses := map[int]bool{}
	for i, rec := range got {
		statuses[rec.Code] = true
		for k, want := range wantHeaders {
			if v := rec.Header().Get(k); v != want {
				t.Errorf("response %d (status %d): %s = %q, want %q", i, rec.Code, k, v, want)
			}
		}
	}
	for _, s := range []int{200, 302, 303, 400, 403, 503} {
		if !statuses[s] {
			t.Errorf("no response with status %d among those checked", s)
		}
	}
}

// jwtLike are names a hub may give that look like tokens.
var jwtLike = []string{
	"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2ln",
	"eyJ0eXAiOiJKV1QifQ.x",
	"user.eyJzdWIiOiJ4In0.eyJ.end",
}

var tokenPattern = regexp.MustCompile(`eyJ[A-Za-z0-9_-]+\.`)

// TestNoTokenLikeStringInAnyPage renders every view for users, files,
// audit records and problems named like JWTs: no body matches the token
// pattern, yet the browser reads the names unchanged; and no body holds
// the hub token.
func TestNoTokenLikeStringInAnyPage(t *testing.T) {
	e := newEnv(t)
	visitor := jwtLike[1]
	for _, n := range jwtLike {
		e.engine.sessions = append(e.engine.sessions, refresh.SessionView{Name: n, State: refresh.SessionHeld, LastOutcome: "refused: " + n})
		e.engine.audit = append(e.engine.audit, store.Logout{User: n, At: start, Reason: "ended " + n, Actions: n})
		e.engine.files[n] = []TokenFile{{Name: n, Mode: "0600", Modified: start}}
	}
	e.engine.guard = refresh.GuardView{Tripped: true, Held: jwtLike}
	e.engine.health = refresh.Health{Problems: []refresh.Problem{{Class: refresh.ProblemExcessScopes, Detail: jwtLike[0]}}}
	e.hub.grantScopes(visitor, false, ScopeSessions, ScopeGuard)
	b := e.browser()
	b.login(visitor, testPrefix+"ui/")
	pages := []string{testPrefix + "ui/", testPrefix + "ui/users", userURL(testPrefix, jwtLike[0])}
	for _, path := range pages {
		rec := b.get(path)
		body := rec.Body.String()
		if m := tokenPattern.FindString(body); m != "" || rec.Code != http.StatusOK {
			t.Errorf("GET %s: status %d, token-like %q in the body", path, rec.Code, m)
		}
		if !strings.Contains(html.UnescapeString(body), jwtLike[0]) && path != testPrefix+"ui/" {
			t.Errorf("GET %s: the browser does not read the name %q", path, jwtLike[0])
		}
		if strings.Contains(body, "hubtok") {
			t.Errorf("GET %s: the hub token is in the page", path)
		}
	}
	rec := b.post(userURL(testPrefix, jwtLike[0])+"/logout", url.Values{"_xsrf": {b.csrf()}}, nil)
	if loc := rec.Header().Get("Location"); rec.Code != http.StatusSeeOther || tokenPattern.MatchString(loc) {
		t.Errorf("logout: %d to %q, want 303 to a Location without a token-like string", rec.Code, loc)
	}
	if diff := cmp.Diff([]call{{Fn: "LogoutEverywhere", User: jwtLike[0], By: visitor}}, e.engine.recorded()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

// TestDefang writes token-like runs' dots as references, and nothing else.
func TestDefang(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`<a href="/u/eyJa.eyJb.c">eyJa.eyJb.c</a>`, `<a href="/u/eyJa&#46;eyJb&#46;c">eyJa&#46;eyJb&#46;c</a>`},
		{"alice.smith eyJ. ey.J", "alice.smith eyJ. ey.J"},
	} {
		if got := string(defang([]byte(tc.in))); got != tc.want {
			t.Errorf("defang(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestActions checks each action's Deps call, its user and by, and the
// 303 back to the view it came from with its flash.
func TestActions(t *testing.T) {
	ui := testPrefix + "ui/"
	for _, tc := range []struct {
		name     string
		path     string
		form     url.Values
		status   int
		location string
		calls    []call
	}{
		{"log oneself out from the own view", ui + "users/alice/logout", url.Values{"back": {"own"}},
			303, ui + "?done=logged-out", []call{{Fn: "LogoutEverywhere", User: "alice", By: "alice"}}},
		{"log bob out from his view", ui + "users/bob/logout", url.Values{"back": {"user"}},
			303, ui + "users/bob?done=logged-out", []call{{Fn: "LogoutEverywhere", User: "bob", By: "alice"}}},
		{"log bob out from the admin page", ui + "users/bob/logout", url.Values{"back": {"users"}},
			303, ui + "users?done=logged-out", []call{{Fn: "LogoutEverywhere", User: "bob", By: "alice"}}},
		{"a back elsewhere", ui + "users/bob/logout", url.Values{"back": {"https://evil.example/"}},
			303, ui + "users/bob?done=logged-out", []call{{Fn: "LogoutEverywhere", User: "bob", By: "alice"}}},
		{"refresh bob", ui + "users/bob/refresh", url.Values{"back": {"user"}},
			303, ui + "users/bob?done=refreshed", []call{{Fn: "RefreshNow", User: "bob"}}},
		{"release the guard", ui + "guard/release", url.Values{},
			303, ui + "users?done=released", []call{{Fn: "ReleaseGuard"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			withUsers(e)
			e.hub.grantScopes("alice", false, ScopeSessions, ScopeGuard)
			b := e.browser()
			b.login("alice", testPrefix+"ui/")
			tc.form.Set("_xsrf", b.csrf())
			rec := b.post(tc.path, tc.form, nil)
			if rec.Code != tc.status || rec.Header().Get("Location") != tc.location {
				t.Errorf("status %d to %q, want %d to %q", rec.Code, rec.Header().Get("Location"), tc.status, tc.location)
			}
			if diff := cmp.Diff(tc.calls, e.engine.recorded()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
			ended := len(tc.calls) > 0 && tc.calls[0].User == "alice"
			if _, kept := b.jar[sessionCookie]; kept == ended {
				t.Errorf("the visitor's session kept = %v, want %v", kept, !ended)
			}
		})
	}
}

// TestFlashAfterAnAction shows the known flashes only.
func TestFlashAfterAnAction(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	b.login("alice", testPrefix+"ui/")
	for path, want := range map[string]string{
		"ui/?done=refreshed": "The tokens were refreshed.", "ui/?done=%3Cscript%3E": "", "ui/": "",
		"ui/users/bob?done=logged-out": "", // a 403 page says nothing was done
	} {
		body := b.get(testPrefix + path).Body.String()
		m := regexp.MustCompile(`<div class="alert alert-success" role="status" id="tk-flash">([^<]*)</div>`).FindStringSubmatch(body)
		got := ""
		if m != nil {
			got = m[1]
		}
		if got != want {
			t.Errorf("GET %s: flash %q, want %q", path, got, want)
		}
	}
}

// TestActionErrorsArePages maps an action's failure to its status.
func TestActionErrorsArePages(t *testing.T) {
	e := newEnv(t)
	e.hub.grantScopes("alice", false, ScopeSessions)
	b := e.browser()
	b.login("alice", testPrefix+"ui/")
	e.engine.failWith = fmt.Errorf("grant: %w", refresh.ErrSessionEnded)
	rec := b.post(testPrefix+"ui/users/bob/refresh", url.Values{"_xsrf": {b.csrf()}}, nil)
	if rec.Code != http.StatusConflict || page(rec.Body.String()) != "error" {
		t.Errorf("status %d, page %q; want 409, error", rec.Code, page(rec.Body.String()))
	}
}

// TestOnlyUsersLogIn refuses a token the hub says is not a user's.
func TestOnlyUsersLogIn(t *testing.T) {
	e := newEnv(t)
	e.hub.ids["announcer"] = hubclient.Identity{Kind: "service", Name: "announcer", Scopes: []string{ScopeSessions}}
	b := e.browser()
	b.login("announcer", testPrefix+"ui/users")
	if rec := b.get(testPrefix + "ui/users"); rec.Code != http.StatusForbidden {
		t.Errorf("a service's token: status %d, want 403", rec.Code)
	}
}

// TestUserViewShows checks the hooks of a user's view: state, files,
// the forms that the visitor's scopes allow, the header's links.
func TestUserViewShows(t *testing.T) {
	exp := start.Add(4*time.Minute + 30*time.Second)
	for _, tc := range []struct {
		name   string
		scopes []string
		want   []string
		absent []string
	}{
		{"a user", nil, []string{
			`<main id="tk-user" data-user="alice" data-state="fresh">`, `<dd class="col-sm-8" id="tk-state">fresh</dd>`,
			`<tr data-file="access_token" data-server="">`, `<form id="tk-logout-everywhere" method="post" action="` + testPrefix + `ui/users/alice/logout">`,
			`<button type="submit" id="tk-logout-everywhere-button"`, `<span class="me-1" id="tk-whoami">alice</span>`,
			`<time datetime="2026-12-01T12:04:30Z">2026-12-01T12:04:30Z</time> (in 4m)</span>`,
			`<link rel="stylesheet" href="` + testHub + `static/css/style.min.css"`, `<img src="` + testHub + `logo"`,
			`href="` + testHub + `logout">Logout</a>`,
		}, []string{`id="tk-refresh-now"`, `id="tk-all-users"`, `<script`}},
		{"sessions", []string{ScopeSessions}, []string{
			`<form id="tk-refresh-now" method="post"`, `<a class="nav-link" id="tk-all-users" href="` + testPrefix + `ui/users">`,
		}, nil},
		{"sessions filtered", []string{ScopeSessions + "!user=alice"}, []string{`<form id="tk-refresh-now" method="post"`}, []string{`id="tk-all-users"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.engine.sessions = []refresh.SessionView{{Name: "alice", State: refresh.SessionFresh, AccessExpiry: exp}}
			e.engine.files["alice"] = []TokenFile{{Name: "access_token", Mode: "0600", Modified: start.Add(-3 * time.Minute)}}
			e.hub.grantScopes("alice", false, tc.scopes...)
			b := e.browser()
			b.login("alice", testPrefix+"ui/")
			body := b.get(testPrefix + "ui/").Body.String()
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("the view lacks %s", w)
				}
			}
			for _, a := range tc.absent {
				if strings.Contains(body, a) {
					t.Errorf("the view has %s", a)
				}
			}
		})
	}
}

// TestAdminPage checks the table's filter and order, health, the guard
// with its release form for the guard's holders only, and the audit.
func TestAdminPage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		scopes  []string
		tripped bool
		release bool
	}{
		{"guard holder, tripped", []string{ScopeSessions, ScopeGuard}, true, true},
		{"without the guard scope, tripped", []string{ScopeSessions}, true, false},
		{"guard holder, not tripped", []string{ScopeSessions, ScopeGuard}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.engine.sessions = []refresh.SessionView{
				{Name: "alice", State: refresh.SessionFresh, Failures: 0},
				{Name: "bob", State: refresh.SessionRefreshing, Failures: 3},
				{Name: "carol", State: refresh.SessionRefreshing, Failures: 1},
				{Name: "dave", State: refresh.SessionEnded, Failures: 5},
			}
			e.engine.health = refresh.Health{Problems: []refresh.Problem{{Class: refresh.ProblemLogoutsPaused, Users: 2}}}
			if tc.tripped {
				e.engine.guard = refresh.GuardView{Tripped: true, Held: []string{"dave", "erin"}}
			}
			e.engine.audit = []store.Logout{{User: "frank", At: start.Add(-time.Hour), Reason: "session ended", Actions: "auth_state cleared"}}
			e.hub.grantScopes("alice", false, tc.scopes...)
			b := e.browser()
			b.login("alice", testPrefix+"ui/")
			body := b.get(testPrefix + "ui/users?status=refreshing&sort=failures&order=desc").Body.String()
			if diff := cmp.Diff([]string{"bob", "carol"}, rows(body, "tk-users")); diff != "" {
				t.Errorf("rows (-want +got):\n%s", diff)
			}
			want := []string{
				`<tr data-user="bob" data-state="refreshing"><td><a href="` + testPrefix + `ui/users/bob">bob</a>`,
				`<section id="tk-health" data-status="unhealthy"`,
				fmt.Sprintf(`<section id="tk-guard" data-tripped="%v" data-held="%d"`, tc.tripped, map[bool]int{true: 2}[tc.tripped]),
				`<tr data-user="frank">`,
			}
			for _, w := range want {
				if !strings.Contains(body, w) {
					t.Errorf("the page lacks %s", w)
				}
			}
			if got := strings.Contains(body, `<form id="tk-guard-release" method="post"`) &&
				strings.Contains(body, `<button type="submit" id="tk-guard-release-button"`); got != tc.release {
				t.Errorf("release form shown = %v, want %v", got, tc.release)
			}
		})
	}
}

// TestSelectSessions filters and sorts the admin table.
func TestSelectSessions(t *testing.T) {
	t0 := start
	all := []refresh.SessionView{ // ties (carol and Bob: failures, state) in reverse name order
		{Name: "carol", State: refresh.SessionFresh, AccessExpiry: t0.Add(2 * time.Minute), Failures: 1},
		{Name: "alice", State: refresh.SessionRefreshing, AccessExpiry: t0.Add(time.Minute), Failures: 4, LastRefresh: t0.Add(-time.Hour)},
		{Name: "Bob", State: refresh.SessionFresh, AccessExpiry: t0.Add(3 * time.Minute), Failures: 1, LastRefresh: t0.Add(-time.Minute)},
		{Name: "bobby", State: refresh.SessionEnded, Failures: 0, LastRefresh: t0.Add(-2 * time.Minute)},
	}
	input := slices.Clone(all)
	for _, tc := range []struct {
		name string
		q    tableQuery
		want []string
	}{
		{"by name", tableQuery{Sort: "name"}, []string{"Bob", "alice", "bobby", "carol"}},
		{"by name, descending", tableQuery{Sort: "name", Desc: true}, []string{"carol", "bobby", "alice", "Bob"}},
		{"a substring, any case", tableQuery{Text: "BOB", Sort: "name"}, []string{"Bob", "bobby"}},
		{"one state", tableQuery{Status: "fresh", Sort: "name"}, []string{"Bob", "carol"}},
		{"by state", tableQuery{Sort: "status"}, []string{"bobby", "Bob", "carol", "alice"}},
		{"by expiry, never first", tableQuery{Sort: "expiry"}, []string{"bobby", "alice", "carol", "Bob"}},
		{"by failures, descending, ties by name", tableQuery{Sort: "failures", Desc: true}, []string{"alice", "Bob", "carol", "bobby"}},
		{"by last refresh", tableQuery{Sort: "last_refresh"}, []string{"carol", "alice", "bobby", "Bob"}},
		{"no match", tableQuery{Text: "zed", Sort: "name"}, nil},
	} {
		var got []string
		for _, s := range selectSessions(all, tc.q) {
			got = append(got, s.Name)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
	if diff := cmp.Diff(input, all); diff != "" {
		t.Errorf("selectSessions changed its input (-before +after):\n%s", diff)
	}
}

// TestParseTableQuery reads the table's query, refusing unknown keys.
func TestParseTableQuery(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  tableQuery
		bad   bool
	}{
		{"", tableQuery{Sort: "name"}, false},
		{"q=al&status=fresh&sort=expiry&order=desc", tableQuery{Text: "al", Status: "fresh", Sort: "expiry", Desc: true}, false},
		{"status=hub+admin&order=asc", tableQuery{Status: "hub admin", Sort: "name"}, false},
		{"sort=password", tableQuery{}, true},
		{"order=up", tableQuery{}, true},
		{"q=" + strings.Repeat("a", 300), tableQuery{}, true},
	} {
		v, _ := url.ParseQuery(tc.query)
		got, err := parseTableQuery(v)
		if (err != nil) != tc.bad || (!tc.bad && got != tc.want) {
			t.Errorf("parseTableQuery(%q) = %+v, %v; want %+v, bad %v", tc.query, got, err, tc.want, tc.bad)
		}
	}
}

// TestRelative shows times relative to now.
func TestRelative(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "now"}, {500 * time.Millisecond, "now"}, {4*time.Minute + 30*time.Second, "in 4m"}, {-3 * time.Minute, "3m ago"},
		{59 * time.Second, "in 59s"}, {-90 * time.Minute, "1h ago"}, {47 * time.Hour, "in 47h"}, {-72 * time.Hour, "3d ago"},
	} {
		if got := relative(start.Add(tc.d), start); got != tc.want {
			t.Errorf("relative(now%+v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// TestClassify maps errors, wrapped, to statuses.
func TestClassify(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("action: %w", err) }
	for _, tc := range []struct {
		err  error
		want int
	}{
		{forbidden("no"), 403},
		{wrap(badRequest("no")), 400},
		{wrap(&http.MaxBytesError{Limit: maxForm}), 413},
		{wrap(hubclient.ErrBusy), 429},
		{wrap(&tokenError{Status: 400, Code: "invalid_grant"}), 502},
		{wrap(errors.Join(errors.New("keycloak"), refresh.ErrNotLoggedOut)), 409},
		{wrap(refresh.ErrSessionEnded), 409},
		{wrap(refresh.ErrNoTokens), 409},
		{wrap(refresh.ErrHubAdmin), 409},
		{wrap(refresh.ErrUserGone), 404},
		{wrap(&hubclient.APIError{Status: 404}), 404},
		{wrap(refresh.ErrStopping), 503},
		{wrap(refresh.ErrUnavailable), 503},
		{wrap(&hubclient.APIError{Status: 500}), 502},
		{wrap(&url.Error{Op: "Post", URL: "http://hub", Err: errors.New("refused")}), 502},
		{errors.New("boom"), 500},
	} {
		if got, _ := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// TestNewChecksDeps refuses Deps the page cannot work with.
func TestNewChecksDeps(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Deps)
	}{
		{"no Identify", func(d *Deps) { d.Identify = nil }},
		{"no secret", func(d *Deps) { d.ClientSecret = "" }},
		{"a short key", func(d *Deps) { d.Key = d.Key[:16] }},
		{"a prefix without its slash", func(d *Deps) { d.Prefix = "/services/tokenkeeper" }},
		{"a hub prefix that is a URL", func(d *Deps) { d.HubPrefix = "https://hub.example.org/hub/" }},
		{"a callback outside the prefix", func(d *Deps) { d.CallbackURL = "/services/other/oauth_callback" }},
		{"a relative API URL", func(d *Deps) { d.HubAPIURL = "/hub/api" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := validDeps()
			tc.change(&d)
			if _, err := New(d); err == nil {
				t.Errorf("New accepted Deps with %s", tc.name)
			}
		})
	}
	if _, err := New(validDeps()); err != nil {
		t.Errorf("New(valid Deps): %v", err)
	}
}

func validDeps() Deps {
	d := Deps{
		Identify: func(context.Context, string) (hubclient.Identity, error) { return hubclient.Identity{}, nil }, HubPrefix: testHub, Prefix: testPrefix,
		HubAPIURL: "http://127.0.0.1:8081/hub/api", ClientID: testClient, ClientSecret: testSecret,
		CallbackURL: "http://hub.example.org" + testCallback, Key: testKey,
	}
	(&engine{}).deps(&d)
	return d
}

// TestCallbackPath mounts the callback where the hub sends the browser.
func TestCallbackPath(t *testing.T) {
	for _, cb := range []string{testCallback, "https://hub.example.org" + testCallback} {
		if got, err := callbackPath(testPrefix, cb); err != nil || got != "oauth_callback" {
			t.Errorf("callbackPath(%q) = %q, %v; want oauth_callback", cb, got, err)
		}
	}
}

// TestKeycloakSessionsShowTheirEnds: with the realm's SSO settings, each
// Keycloak session shows when its idle time runs out (last access + idle)
// and when it reaches its maximum (start + maximum); without them, unknown.
func TestKeycloakSessionsShowTheirEnds(t *testing.T) {
	session := serviceaccount.Session{Started: start.Add(-time.Hour), LastAccess: start.Add(-time.Minute), Clients: []string{"jupyterhub"}}
	for _, tc := range []struct {
		name   string
		limits func(context.Context) (time.Duration, time.Duration, error)
		want   []string
	}{
		{"known", func(context.Context) (time.Duration, time.Duration, error) {
			return 30 * time.Minute, 10 * time.Hour, nil
		},
			[]string{`<td><span class="text-nowrap"><time datetime="2026-12-01T12:29:00Z">`, `<td><span class="text-nowrap"><time datetime="2026-12-01T21:00:00Z">`}},
		{"unreadable", func(context.Context) (time.Duration, time.Duration, error) { return 0, 0, errors.New("403") },
			[]string{`<td>unknown</td><td>unknown</td>`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(d *Deps) {
				d.KeycloakSessions = func(context.Context, string) ([]serviceaccount.Session, error) {
					return []serviceaccount.Session{session}, nil
				}
				d.SSOLimits = tc.limits
			})
			e.engine.sessions = []refresh.SessionView{{Name: "alice", State: refresh.SessionFresh}}
			b := e.browser()
			b.login("alice", testPrefix+"ui/")
			body := b.get(testPrefix + "ui/").Body.String()
			for _, w := range tc.want {
				if !strings.Contains(body, w) {
					t.Errorf("the view lacks %s", w)
				}
			}
		})
	}
}

// TestActionRefusedByTheHubKeepsTheSession: the hub refusing what an action
// asked of it (403) is shown as the action's failure; it does not end the
// visitor's session as a refused token of theirs would.
func TestActionRefusedByTheHubKeepsTheSession(t *testing.T) {
	e := newEnv(t)
	e.hub.grantScopes("alice", false, ScopeSessions)
	b := e.browser()
	b.login("alice", testPrefix+"ui/")
	e.engine.failWith = fmt.Errorf("clear auth_state: %w", &hubclient.APIError{Status: http.StatusForbidden})
	rec := b.post(testPrefix+"ui/users/bob/logout", url.Values{"_xsrf": {b.csrf()}}, nil)
	if rec.Code != http.StatusBadGateway || page(rec.Body.String()) != "error" {
		t.Errorf("status %d, page %q; want 502, error", rec.Code, page(rec.Body.String()))
	}
	if _, kept := b.jar[sessionCookie]; !kept {
		t.Error("the hub's refusal of the action ended the visitor's session")
	}
}
