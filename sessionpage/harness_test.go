package sessionpage

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tokenkeeper/tokenkeeper/hubclient"
	"github.com/tokenkeeper/tokenkeeper/refresh"
	"github.com/tokenkeeper/tokenkeeper/store"
)

const (
	testPrefix   = "/services/tokenkeeper/"
	testHub      = "/jhub/hub/"
	testClient   = "service-tokenkeeper"
	testSecret   = "the-service-api-token"
	testCallback = testPrefix + "oauth_callback"
	testHost     = "127.0.0.1:8000"
)

// start is the tests' clock's start.
var start = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// grant is a code the fake hub issued, with what the authorize request
// that asked for it said.
type grant struct {
	user, challenge, method, redirect, client string
	used                                      bool
}

// fakeHub is the hub's OAuth provider as JupyterHub 6 runs it (PKCE
// checked when a challenge came), and its GET /user as Identify.
type fakeHub struct {
	t         *testing.T
	srv       *httptest.Server
	expiresIn int64

	mu         sync.Mutex // guards the fields below
	codes      map[string]*grant
	tokens     map[string]string // hub OAuth token → user
	revoked    map[string]bool
	requests   []tokenRequest
	identifies int
	ids        map[string]hubclient.Identity // by user
}

// tokenRequest is what the token endpoint received.
type tokenRequest struct {
	Form          url.Values
	Authorization string
	ContentType   string
}

func newFakeHub(t *testing.T) *fakeHub {
	h := &fakeHub{
		t: t, expiresIn: 3600, codes: map[string]*grant{}, tokens: map[string]string{},
		revoked: map[string]bool{}, ids: map[string]hubclient.Identity{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+testHub+"api/oauth2/token", h.token)
	h.srv = httptest.NewServer(mux)
	t.Cleanup(h.srv.Close)
	return h
}

// authorize plays the hub's authorize endpoint for user at location (the
// page's redirect) and returns the callback the hub would send the
// browser to.
func (h *fakeHub) authorize(location, user string) string {
	h.t.Helper()
	u, err := url.Parse(location)
	if err != nil || u.Path != testHub+"api/oauth2/authorize" {
		h.t.Fatalf("login redirect to %q, want the hub's authorize endpoint", location)
	}
	q := u.Query()
	h.mu.Lock()
	defer h.mu.Unlock()
	code := fmt.Sprintf("code-%d", len(h.codes)+1)
	h.codes[code] = &grant{
		user: user, challenge: q.Get("code_challenge"), method: q.Get("code_challenge_method"),
		redirect: q.Get("redirect_uri"), client: q.Get("client_id"),
	}
	return q.Get("redirect_uri") + "?" + url.Values{"code": {code}, "state": {q.Get("state")}}.Encode()
}

// token is the hub's token endpoint: the client's secret in the form
// (JupyterHub's validator reads no HTTP Basic), a code used once, the
// redirect URI of its authorize request, and the PKCE verifier of its
// challenge.
func (h *fakeHub) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests = append(h.requests, tokenRequest{Form: r.PostForm, Authorization: r.Header.Get("Authorization"), ContentType: r.Header.Get("Content-Type")})
	f := r.PostForm
	g := h.codes[f.Get("code")]
	switch {
	case f.Get("client_id") != testClient || f.Get("client_secret") != testSecret:
		oauthError(w, http.StatusUnauthorized, "invalid_client")
	case g == nil || g.used || g.client != f.Get("client_id") || g.redirect != f.Get("redirect_uri"):
		oauthError(w, http.StatusBadRequest, "invalid_grant")
	case g.challenge != "" && (g.method != "S256" || s256(f.Get("code_verifier")) != g.challenge):
		oauthError(w, http.StatusBadRequest, "invalid_grant")
	default:
		g.used = true
		tok := fmt.Sprintf("hubtok-%s-%d", g.user, len(h.tokens)+1)
		h.tokens[tok] = g.user
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": h.expiresIn, "scope": "identify"})
	}
}

func oauthError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code})
}

func s256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// identify is Deps.Identify: the identity of the token's user, as the
// hub's GET /user answers; a token it never issued or revoked is a 403.
func (h *fakeHub) identify(_ context.Context, token string) (hubclient.Identity, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.identifies++
	user, ok := h.tokens[token]
	if !ok || h.revoked[token] {
		return hubclient.Identity{}, &hubclient.APIError{Method: "GET", Path: "/user", Status: http.StatusForbidden}
	}
	id, ok := h.ids[user]
	if !ok {
		id = hubclient.Identity{Kind: "user", Name: user, Scopes: []string{"access:services!service=tokenkeeper"}}
	}
	return id, nil
}

func (h *fakeHub) identified() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.identifies
}

func (h *fakeHub) tokenRequests() []tokenRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]tokenRequest(nil), h.requests...)
}

// grantScopes gives user's tokens the identity with scopes (and admin).
func (h *fakeHub) grantScopes(user string, admin bool, scopes ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ids[user] = hubclient.Identity{Kind: "user", Name: user, Admin: admin,
		Scopes: append([]string{"access:services!service=tokenkeeper"}, scopes...)}
}

func (h *fakeHub) revokeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for tok := range h.tokens {
		h.revoked[tok] = true
	}
}

// call is one call of an action's Deps function.
type call struct {
	Fn, User, By string
}

// engine is tokenkeeper's side: the store's views and the actions,
// recording the actions' calls.
type engine struct {
	mu       sync.Mutex // guards the fields below
	sessions []refresh.SessionView
	guard    refresh.GuardView
	health   refresh.Health
	audit    []store.Logout
	files    map[string][]TokenFile
	calls    []call
	failWith error
}

func (e *engine) record(c call) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls = append(e.calls, c)
	return e.failWith
}

func (e *engine) recorded() []call {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]call(nil), e.calls...)
}

func (e *engine) deps(d *Deps) {
	d.Sessions = func(context.Context) ([]refresh.SessionView, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return append([]refresh.SessionView(nil), e.sessions...), nil
	}
	d.Session = func(_ context.Context, name string) (refresh.SessionView, bool, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, s := range e.sessions {
			if s.Name == name {
				return s, true, nil
			}
		}
		return refresh.SessionView{}, false, nil
	}
	d.Health = func() refresh.Health { e.mu.Lock(); defer e.mu.Unlock(); return e.health }
	d.Guard = func() refresh.GuardView { e.mu.Lock(); defer e.mu.Unlock(); return e.guard }
	d.Audit = func(context.Context, int) ([]store.Logout, error) {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.audit, nil
	}
	d.TokenFiles = func(user string) []TokenFile { e.mu.Lock(); defer e.mu.Unlock(); return e.files[user] }
	d.RefreshNow = func(_ context.Context, name string) error { return e.record(call{Fn: "RefreshNow", User: name}) }
	d.LogoutEverywhere = func(_ context.Context, name, by string) error {
		return e.record(call{Fn: "LogoutEverywhere", User: name, By: by})
	}
	d.ReleaseGuard = func(context.Context) error { return e.record(call{Fn: "ReleaseGuard"}) }
}

// env is a page on a gin engine, with its fake hub, engine and clock.
type env struct {
	t      *testing.T
	page   *Page
	h      http.Handler
	hub    *fakeHub
	engine *engine
	clock  *clock
}

var testKey = []byte("0123456789abcdef0123456789abcdef")

// newEnv makes a page; each change adjusts its Deps first.
func newEnv(t *testing.T, changes ...func(*Deps)) *env {
	t.Helper()
	hub := newFakeHub(t)
	e := &env{t: t, hub: hub, engine: &engine{files: map[string][]TokenFile{}}, clock: &clock{t: start}}
	d := Deps{
		Identify: hub.identify, Audiences: []string{"jobs-api"}, Providers: []string{"github"},
		HubPrefix: testHub, Prefix: testPrefix, HubAPIURL: hub.srv.URL + testHub + "api",
		ClientID: testClient, ClientSecret: testSecret, CallbackURL: testCallback,
		HTTPClient: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		Key:        testKey, Now: e.clock.now,
	}
	e.engine.deps(&d)
	for _, change := range changes {
		change(&d)
	}
	p, err := New(d)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	gin.SetMode(gin.TestMode)
	g := gin.New()
	p.Routes(g.Group(strings.TrimSuffix(testPrefix, "/")))
	e.page, e.h = p, g
	return e
}

// browser keeps cookies as a browser does (by name: every cookie of the
// page is on the prefix) and sends Origin with its POSTs.
type browser struct {
	e      *env
	host   string
	header http.Header // sent with every request
	jar    map[string]*http.Cookie
}

func (e *env) browser() *browser {
	return &browser{e: e, host: testHost, header: http.Header{}, jar: map[string]*http.Cookie{}}
}

func (b *browser) get(target string) *httptest.ResponseRecorder {
	return b.do(http.MethodGet, target, nil, nil)
}

// post sends form, with the page's Origin unless header sets one.
func (b *browser) post(target string, form url.Values, header http.Header) *httptest.ResponseRecorder {
	h := http.Header{"Origin": {"http://" + b.host}, "Content-Type": {"application/x-www-form-urlencoded"}}
	for k, v := range header {
		h[k] = v
	}
	return b.do(http.MethodPost, target, strings.NewReader(form.Encode()), h)
}

// send GETs path, or POSTs form to it.
func (b *browser) send(method, path string, form url.Values) *httptest.ResponseRecorder {
	if method == http.MethodPost {
		return b.post(path, form, nil)
	}
	return b.get(path)
}

func (b *browser) do(method, target string, body *strings.Reader, header http.Header) *httptest.ResponseRecorder {
	var r *http.Request
	if body != nil {
		r = httptest.NewRequest(method, "http://"+b.host+target, body)
	} else {
		r = httptest.NewRequest(method, "http://"+b.host+target, nil)
	}
	for k, v := range b.header {
		r.Header[k] = v
	}
	for k, v := range header {
		r.Header[k] = v
	}
	for _, c := range b.jar {
		r.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
	}
	rec := httptest.NewRecorder()
	b.e.h.ServeHTTP(rec, r)
	for _, c := range rec.Result().Cookies() {
		if c.MaxAge < 0 {
			delete(b.jar, c.Name)
		} else {
			b.jar[c.Name] = c
		}
	}
	return rec
}

// login logs user in through the fake hub, starting at target, and
// returns the callback's answer.
func (b *browser) login(user, target string) *httptest.ResponseRecorder {
	b.e.t.Helper()
	rec := b.get(target)
	if rec.Code != http.StatusFound {
		b.e.t.Fatalf("GET %s without a session: status %d, want 302", target, rec.Code)
	}
	cb := b.e.hub.authorize(rec.Header().Get("Location"), user)
	rec = b.get(cb)
	if rec.Code != http.StatusFound {
		b.e.t.Fatalf("callback: status %d, want 302; body %s", rec.Code, rec.Body)
	}
	return rec
}

// csrf is the _xsrf the page's forms carry for b's session.
func (b *browser) csrf() string {
	b.e.t.Helper()
	rec := b.get(testPrefix + "ui/")
	m := regexp.MustCompile(`name="_xsrf" value="([0-9a-f]+)"`).FindStringSubmatch(rec.Body.String())
	if m == nil {
		b.e.t.Fatalf("no _xsrf in the own view (status %d)", rec.Code)
	}
	return m[1]
}

// page is the data-tk-page of body.
func page(body string) string {
	m := regexp.MustCompile(`<body data-tk-page="([a-z]+)">`).FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	return m[1]
}

// rows are the data-user attributes of the rows of table id in body,
// as the browser reads them.
func rows(body, id string) []string {
	i := strings.Index(body, `<table id="`+id+`"`)
	if i < 0 {
		return nil
	}
	table := body[i:]
	table = table[:strings.Index(table, "</table>")]
	var out []string
	for _, m := range regexp.MustCompile(`<tr data-user="([^"]*)"`).FindAllStringSubmatch(table, -1) {
		out = append(out, html.UnescapeString(m[1]))
	}
	return out
}
