package sessionpage

import (
	"crypto/tls"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var base64url = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// TestLoginRedirectAsksTheHubWithPKCE checks the authorize request: the
// client, the redirect URI the hub knows, a random state and an S256
// challenge, no scope; and the state cookie that binds it to the browser.
func TestLoginRedirectAsksTheHubWithPKCE(t *testing.T) {
	e := newEnv(t)
	rec := e.browser().get(testPrefix + "ui/users?q=a")
	if rec.Code != http.StatusFound {
		t.Fatalf("status %d, want 302", rec.Code)
	}
	loc, _ := url.Parse(rec.Header().Get("Location"))
	if loc.Path != testHub+"api/oauth2/authorize" || loc.Host != "" {
		t.Errorf("redirect to %q, want the hub's %sapi/oauth2/authorize", loc, testHub)
	}
	q := loc.Query()
	state, challenge := q.Get("state"), q.Get("code_challenge")
	if len(state) < 22 || !base64url.MatchString(state) || len(challenge) != 43 || !base64url.MatchString(challenge) {
		t.Errorf("state %q, code_challenge %q: want 16 random bytes and a SHA-256, in base64url", state, challenge)
	}
	want := url.Values{
		"client_id": {testClient}, "redirect_uri": {testCallback}, "response_type": {"code"},
		"state": {state}, "code_challenge": {challenge}, "code_challenge_method": {"S256"},
	}
	if diff := cmp.Diff(want, q); diff != "" {
		t.Errorf("authorize query (-want +got):\n%s", diff)
	}
	checkStateCookie(t, rec.Result().Cookies(), state)
	if n := e.hub.identified(); n != 0 {
		t.Errorf("%d identity lookups before any login, want 0", n)
	}
}

func checkStateCookie(t *testing.T, cookies []*http.Cookie, state string) {
	t.Helper()
	for _, c := range cookies {
		if c.Name != stateCookiePrefix+state[:8] {
			continue
		}
		got := [5]any{c.Path, c.HttpOnly, c.SameSite, c.MaxAge, strings.Contains(c.Value, state)}
		if want := [5]any{testPrefix, true, http.SameSiteLaxMode, 600, false}; got != want {
			t.Errorf("state cookie (path, HttpOnly, SameSite, Max-Age, state in clear) = %v, want %v", got, want)
		}
		return
	}
	t.Errorf("no state cookie for state %q in %v", state, cookies)
}

// TestLoginExchangesTheCode checks the token request (the secret in the
// form, no Basic, the verifier of the challenge), the session cookie's
// flags and life, and the return to the page first asked for.
func TestLoginExchangesTheCode(t *testing.T) {
	e := newEnv(t)
	e.hub.grantScopes("alice", false, ScopeSessions)
	b := e.browser()
	rec := b.login("alice", testPrefix+"ui/users?q=a")
	if got, want := rec.Header().Get("Location"), testPrefix+"ui/users?q=a"; got != want {
		t.Errorf("after the login to %q, want %q", got, want)
	}
	reqs := e.hub.tokenRequests()
	if len(reqs) != 1 {
		t.Fatalf("%d token requests, want 1", len(reqs))
	}
	got := reqs[0]
	want := tokenRequest{
		Form: url.Values{
			"client_id": {testClient}, "client_secret": {testSecret}, "grant_type": {"authorization_code"},
			"code": {"code-1"}, "redirect_uri": {testCallback}, "code_verifier": got.Form["code_verifier"],
		},
		ContentType: "application/x-www-form-urlencoded",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("token request (-want +got):\n%s", diff)
	}
	if len(got.Form.Get("code_verifier")) < 43 {
		t.Errorf("code_verifier %q is shorter than RFC 7636's 43 characters", got.Form.Get("code_verifier"))
	}
	checkSessionCookie(t, rec.Result().Cookies(), 3600, false)
	if left := stateCookies(cookieRequest(b)); len(left) != 0 {
		t.Errorf("state cookies left after the login: %v", left)
	}
	if rec := b.get(testPrefix + "ui/users?q=a"); rec.Code != http.StatusOK || page(rec.Body.String()) != "users" {
		t.Errorf("the page after the login: status %d, page %q", rec.Code, page(rec.Body.String()))
	}
}

func cookieRequest(b *browser) *http.Request {
	r, _ := http.NewRequest(http.MethodGet, "http://"+b.host+testPrefix, nil)
	for _, c := range b.jar {
		r.AddCookie(c)
	}
	return r
}

func checkSessionCookie(t *testing.T, cookies []*http.Cookie, maxAge int, secure bool) {
	t.Helper()
	for _, c := range cookies {
		if c.Name != sessionCookie {
			continue
		}
		got := [6]any{c.Path, c.HttpOnly, c.SameSite, c.MaxAge, c.Secure, strings.Contains(c.Value, "hubtok")}
		if want := [6]any{testPrefix, true, http.SameSiteLaxMode, maxAge, secure, false}; got != want {
			t.Errorf("session cookie (path, HttpOnly, SameSite, Max-Age, Secure, token in clear) = %v, want %v", got, want)
		}
		return
	}
	t.Errorf("no session cookie in %v", cookies)
}

// TestSessionLife bounds the session by the hub token's life and 8 h.
func TestSessionLife(t *testing.T) {
	for _, tc := range []struct {
		expiresIn int64
		want      time.Duration
	}{
		{3600, time.Hour},
		{0, 8 * time.Hour},
		{-5, 8 * time.Hour},
		{14 * 86400, 8 * time.Hour}, // JupyterHub's default: the hub cookie's 14 days
	} {
		if got := sessionLife(tc.expiresIn); got != tc.want {
			t.Errorf("sessionLife(%d) = %v, want %v", tc.expiresIn, got, tc.want)
		}
	}
}

// TestSessionCookieMaxAgeIsBounded checks the cookie of a hub token that
// lives 14 days.
func TestSessionCookieMaxAgeIsBounded(t *testing.T) {
	e := newEnv(t)
	e.hub.expiresIn = 14 * 86400
	rec := e.browser().login("alice", testPrefix+"ui/")
	checkSessionCookie(t, rec.Result().Cookies(), 8*3600, false)
}

// TestCookiesAreSecureUnlessLoopbackHTTP logs in from hosts and schemes.
func TestCookiesAreSecureUnlessLoopbackHTTP(t *testing.T) {
	for _, tc := range []struct {
		name, host, proto string
		secure            bool
	}{
		{"loopback over http", "127.0.0.1:8000", "", false},
		{"localhost over http", "localhost:8000", "", false},
		{"a hub's host over http", "hub.example.org", "", true},
		{"loopback behind a TLS proxy", "127.0.0.1:8000", "https", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			b := e.browser()
			b.host = tc.host
			if tc.proto != "" {
				b.header.Set("X-Forwarded-Proto", tc.proto)
			}
			rec := b.get(testPrefix + "ui/")
			for _, c := range rec.Result().Cookies() {
				if c.Secure != tc.secure {
					t.Errorf("state cookie Secure = %v, want %v", c.Secure, tc.secure)
				}
			}
			cb := e.hub.authorize(rec.Header().Get("Location"), "alice")
			checkSessionCookie(t, b.get(cb).Result().Cookies(), 3600, tc.secure)
		})
	}
}

// TestSecureCookie is the rule for the Secure flag.
func TestSecureCookie(t *testing.T) {
	for _, tc := range []struct {
		name   string
		url    string
		tls    bool
		header http.Header
		want   bool
	}{
		{"http to 127.0.0.1", "http://127.0.0.1:8000/", false, nil, false},
		{"http to another loopback address", "http://127.0.0.2/", false, nil, false},
		{"http to localhost", "http://localhost/", false, nil, false},
		{"http to a .localhost name", "http://hub.localhost:8000/", false, nil, false},
		{"http to ::1", "http://[::1]:8000/", false, nil, false},
		{"http to a hub's name", "http://hub.example.org/", false, nil, true},
		{"http to a name ending in localhost", "http://evillocalhost/", false, nil, true},
		{"http to a LAN address", "http://10.0.0.5:8000/", false, nil, true},
		{"TLS to loopback", "https://127.0.0.1:8443/", true, nil, true},
		{"X-Forwarded-Proto https", "http://127.0.0.1:8000/", false, http.Header{"X-Forwarded-Proto": {"https"}}, true},
		{"X-Forwarded-Proto of two hops, outermost https", "http://127.0.0.1:8000/", false, http.Header{"X-Forwarded-Proto": {"https,http"}}, true},
		{"X-Scheme https", "http://127.0.0.1:8000/", false, http.Header{"X-Scheme": {"https"}}, true},
		{"Forwarded proto https", "http://127.0.0.1:8000/", false, http.Header{"Forwarded": {`for=1.2.3.4;proto=https, proto=http`}}, true},
		{"X-Forwarded-Host of a hub's name", "http://127.0.0.1:8000/", false, http.Header{"X-Forwarded-Host": {"hub.example.org"}}, true},
		{"Forwarded to loopback over http", "http://hub.example.org/", false, http.Header{"Forwarded": {`proto=http;host="localhost:8000"`}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := http.NewRequest(http.MethodGet, tc.url, nil)
			for k, v := range tc.header {
				r.Header[k] = v
			}
			if tc.tls {
				r.TLS = tlsState()
			}
			if got := secureCookie(browserScheme(r), browserHost(r)); got != tc.want {
				t.Errorf("secureCookie(%q, %q) = %v, want %v", browserScheme(r), browserHost(r), got, tc.want)
			}
		})
	}
}

// TestCallbackRefusesBadStates finishes no login whose state this
// browser did not start, or started and finished already.
func TestCallbackRefusesBadStates(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mangle func(e *env, b *browser, cb string) string // returns the callback to send
		status int
	}{
		{"forged state", func(_ *env, _ *browser, cb string) string {
			return withQuery(cb, "state", "AAAAAAAAAAAAAAAAAAAAAA")
		}, http.StatusForbidden},
		{"a forged state named like the browser's", func(_ *env, _ *browser, cb string) string {
			u, _ := url.Parse(cb)
			state := u.Query().Get("state")
			return withQuery(cb, "state", state[:8]+strings.Repeat("A", len(state)-8))
		}, http.StatusForbidden},
		{"another browser's state", func(e *env, b *browser, cb string) string {
			b.jar = map[string]*http.Cookie{}
			return cb
		}, http.StatusForbidden},
		{"state cookie past 10 minutes", func(e *env, _ *browser, cb string) string {
			e.clock.advance(stateLife + time.Second)
			return cb
		}, http.StatusForbidden},
		{"replayed after the login finished", func(e *env, b *browser, cb string) string {
			saved := maps(b.jar)
			if rec := b.get(cb); rec.Code != http.StatusFound {
				t.Fatalf("first callback: status %d", rec.Code)
			}
			b.jar = saved // the state cookie, as an attacker who copied it would send it
			return withQuery(cb, "code", "code-1")
		}, http.StatusForbidden},
		{"no state", func(_ *env, _ *browser, cb string) string { return withQuery(cb, "state", "") }, http.StatusBadRequest},
		{"the hub's error", func(_ *env, _ *browser, cb string) string { return withQuery(cb, "error", "access_denied") }, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			b := e.browser()
			cb := e.hub.authorize(b.get(testPrefix+"ui/").Header().Get("Location"), "alice")
			cb = tc.mangle(e, b, cb)
			before := len(e.hub.tokenRequests())
			rec := b.get(cb)
			if rec.Code != tc.status {
				t.Errorf("status %d, want %d; body %s", rec.Code, tc.status, rec.Body)
			}
			if n := len(e.hub.tokenRequests()) - before; n != 0 {
				t.Errorf("%d token requests for a refused callback, want 0", n)
			}
			for _, c := range rec.Result().Cookies() {
				if c.Name == sessionCookie && c.MaxAge >= 0 {
					t.Errorf("a refused callback set a session cookie")
				}
			}
		})
	}
}

func withQuery(target, key, value string) string {
	u, _ := url.Parse(target)
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

func maps(m map[string]*http.Cookie) map[string]*http.Cookie {
	out := make(map[string]*http.Cookie, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestSafeNext lets a login return only to a path under the prefix.
func TestSafeNext(t *testing.T) {
	home := testPrefix + "ui/"
	for _, tc := range []struct{ next, want string }{
		{testPrefix + "ui/users?q=a&sort=name", testPrefix + "ui/users?q=a&sort=name"},
		{testPrefix + "ui/users/bob", testPrefix + "ui/users/bob"},
		{"", home},
		{"https://evil.example" + testPrefix + "ui/", home},
		{"//evil.example" + testPrefix, home},
		{"/\\evil.example" + testPrefix, home},
		{testPrefix + "ui/\\..\\..\\evil", home},
		{testPrefix + "../../hub/admin", home},
		{testPrefix + "%2e%2e/%2e%2e/hub/admin", home},
		{"/services/tokenkeeperX/ui/", home},
		{testHub + "admin", home},
		{"javascript:alert(1)//" + testPrefix, home},
		{testPrefix + "ui/\r\nSet-Cookie: x=1", home},
	} {
		if got := safeNext(testPrefix, tc.next); got != tc.want {
			t.Errorf("safeNext(%q) = %q, want %q", tc.next, got, tc.want)
		}
	}
	// A service at the root: every path is under its prefix, but a
	// browser takes "///host" for "//host".
	for _, next := range []string{"//evil.example/", "///evil.example/"} {
		if got := safeNext("/", next); got != "/ui/" {
			t.Errorf("safeNext(%q, %q) = %q, want %q", "/", next, got, "/ui/")
		}
	}
}

// TestCallbackKeepsNextUnderThePrefix: even a state cookie sealed with
// the page's own key (as if the login had started elsewhere) cannot send
// the browser off the page.
func TestCallbackKeepsNextUnderThePrefix(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	loc := b.get(testPrefix + "ui/").Header().Get("Location")
	cb := e.hub.authorize(loc, "alice")
	state, _ := url.Parse(loc)
	st := loginState{State: state.Query().Get("state"), Next: "//evil.example/", Expires: start.Add(time.Minute).Unix()}
	for name, c := range b.jar {
		c.Value = e.page.seal.seal("state", st)
		b.jar[name] = c
	}
	e.hub.mu.Lock()
	e.hub.codes["code-1"].challenge = "" // as a JupyterHub 5 hub, which does not check PKCE
	e.hub.mu.Unlock()
	rec := b.get(cb)
	if got, want := rec.Header().Get("Location"), testPrefix+"ui/"; rec.Code != http.StatusFound || got != want {
		t.Errorf("callback: %d to %q, want 302 to %q", rec.Code, got, want)
	}
}

// TestSealedValuesServeOnePurpose: a state cookie's value does not open
// as a session cookie's, nor does a value sealed under another key.
func TestSealedValuesServeOnePurpose(t *testing.T) {
	e := newEnv(t)
	other, _ := newSealer([]byte("another key, 32 bytes long......"))
	var s session
	for _, tc := range []struct {
		name, value string
	}{
		{"a state cookie", e.page.seal.seal("state", session{Token: "hubtok-x", Expires: start.Add(time.Hour).Unix()})},
		{"another key", other.seal(sessionCookie, session{Token: "hubtok-x", Expires: start.Add(time.Hour).Unix()})},
		{"not sealed", "eyJ0IjoiaHVidG9rLXgifQ"},
	} {
		if err := e.page.seal.open(sessionCookie, tc.value, &s); err == nil {
			t.Errorf("%s opened as a session cookie: %+v", tc.name, s)
		}
	}
}

// TestInvalidSessionsStartALogin: a cookie tampered with or past its end
// costs no identity lookup; a token the hub refuses ends the session.
func TestInvalidSessionsStartALogin(t *testing.T) {
	for _, tc := range []struct {
		name        string
		spoil       func(e *env, b *browser)
		identifies  int
		clearCookie bool
	}{
		{"tampered", func(_ *env, b *browser) {
			c := b.jar[sessionCookie]
			v := []byte(c.Value)
			if v[20] = 'A'; c.Value[20] == 'A' {
				v[20] = 'B'
			}
			c.Value = string(v)
		}, 0, false},
		{"past its end", func(e *env, _ *browser) { e.clock.advance(time.Hour + time.Second) }, 0, false},
		{"refused by the hub", func(e *env, _ *browser) { e.hub.revokeAll() }, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			b := e.browser()
			b.login("alice", testPrefix+"ui/")
			tc.spoil(e, b)
			before := e.hub.identified()
			rec := b.get(testPrefix + "ui/users/alice")
			loc, _ := url.Parse(rec.Header().Get("Location"))
			if rec.Code != http.StatusFound || loc.Path != testHub+"api/oauth2/authorize" {
				t.Fatalf("status %d to %q, want 302 to the hub's authorize endpoint", rec.Code, loc)
			}
			if n := e.hub.identified() - before; n != tc.identifies {
				t.Errorf("%d identity lookups, want %d", n, tc.identifies)
			}
			if _, kept := b.jar[sessionCookie]; kept == tc.clearCookie {
				t.Errorf("session cookie kept = %v, want %v", kept, !tc.clearCookie)
			}
			cb := e.hub.authorize(loc.String(), "alice")
			if got := b.get(cb).Header().Get("Location"); got != testPrefix+"ui/users/alice" {
				t.Errorf("after logging in again to %q, want the view asked for", got)
			}
		})
	}
}

func tlsState() *tls.ConnectionState { return &tls.ConnectionState{} }
