package hubclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

// serviceToken is the client's own hub token in these tests.
const serviceToken = "svc-token"

// hubRequest is what the fake hub saw of one request.
type hubRequest struct {
	Method        string
	Path          string // escaped, as it went over the wire
	Query         string
	Authorization string
	Accept        string
	ContentType   string
	Body          string
}

// fakeHub is an httptest hub that records every request and answers with
// the handler it was given.
type fakeHub struct {
	srv *httptest.Server

	mu   sync.Mutex // guards reqs
	reqs []hubRequest
}

func newFakeHub(t *testing.T, answer http.HandlerFunc) *fakeHub {
	t.Helper()
	h := &fakeHub{}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("fake hub: reading the body: %v", err)
		}
		h.mu.Lock()
		h.reqs = append(h.reqs, hubRequest{
			Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery,
			Authorization: r.Header.Get("Authorization"), Accept: r.Header.Get("Accept"),
			ContentType: r.Header.Get("Content-Type"), Body: string(body),
		})
		h.mu.Unlock()
		answer(w, r)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// apiURL is the hub's API URL, as JUPYTERHUB_API_URL names it.
func (h *fakeHub) apiURL() string { return h.srv.URL + "/hub/api" }

func (h *fakeHub) requests() []hubRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hubRequest(nil), h.reqs...)
}

// answerJSON answers every request with status and body.
func answerJSON(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}
}

// get is a plain GET as the client sends it with the service token.
func get(path string) hubRequest {
	return hubRequest{Method: http.MethodGet, Path: path, Authorization: "token " + serviceToken, Accept: "application/json"}
}

// listPage is a GET /users page request with the pagination media type.
func listPage(query string) hubRequest {
	return hubRequest{
		Method: http.MethodGet, Path: "/hub/api/users", Query: query,
		Authorization: "token " + serviceToken, Accept: "application/jupyterhub-pagination+json",
	}
}

// threePages answers GET /users with five users over three pages. The first
// next link names another host, as a hub behind a proxy does.
func threePages(elsewhere string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("offset") {
		case "0":
			fmt.Fprintf(w, `{"items":[{"name":"a","auth_state":null},{"name":"b"}],
				"_pagination":{"offset":0,"limit":2,"total":5,"next":{"offset":2,"limit":2,"url":%q}}}`,
				elsewhere+"/hub/api/users?limit=2&offset=2")
		case "2":
			fmt.Fprintf(w, `{"items":[{"name":"c"},{"name":"d"}],
				"_pagination":{"offset":2,"limit":2,"total":5,"next":{"offset":4,"limit":2,"url":%q}}}`,
				elsewhere+"/hub/api/users?limit=2&offset=4")
		case "4":
			fmt.Fprint(w, `{"items":[{"name":"e"}],"_pagination":{"offset":4,"limit":2,"total":5,"next":null}}`)
		default:
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"status":400,"message":"unexpected offset %q"}`, r.URL.Query().Get("offset"))
		}
	}
}

// collect ranges over Users and returns the names and the error, if any.
func collect(c *Client, q UserQuery) ([]string, error) {
	var names []string
	for u, err := range c.Users(context.Background(), q) {
		if err != nil {
			return names, err
		}
		names = append(names, u.Name)
	}
	return names, nil
}

func TestUsersFollowsPagination(t *testing.T) {
	tests := []struct {
		name  string
		state string
		want  []string // queries
	}{
		{name: "all users", want: []string{"limit=2&offset=0", "limit=2&offset=2", "limit=2&offset=4"}},
		{name: "active", state: "active", want: []string{
			"limit=2&offset=0&state=active", "limit=2&offset=2&state=active", "limit=2&offset=4&state=active",
		}},
		{name: "ready", state: "ready", want: []string{
			"limit=2&offset=0&state=ready", "limit=2&offset=2&state=ready", "limit=2&offset=4&state=ready",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var strayed atomic.Int32
			elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				strayed.Add(1)
			}))
			defer elsewhere.Close()
			hub := newFakeHub(t, threePages(elsewhere.URL))
			names, err := collect(New(hub.apiURL(), serviceToken), UserQuery{State: tt.state, PageSize: 2})
			if err != nil {
				t.Fatalf("Users(%q) error: %v", tt.state, err)
			}
			if diff := cmp.Diff([]string{"a", "b", "c", "d", "e"}, names); diff != "" {
				t.Errorf("Users(%q) names mismatch (-want +got):\n%s", tt.state, diff)
			}
			var want []hubRequest
			for _, q := range tt.want {
				want = append(want, listPage(q))
			}
			if diff := cmp.Diff(want, hub.requests()); diff != "" {
				t.Errorf("Users(%q) requests mismatch (-want +got):\n%s", tt.state, diff)
			}
			if n := strayed.Load(); n != 0 {
				t.Errorf("Users(%q) sent %d requests to the host named in next.url, want 0", tt.state, n)
			}
		})
	}
}

func TestUsersDefaultPageSize(t *testing.T) {
	hub := newFakeHub(t, answerJSON(http.StatusOK, `{"items":[{"name":"a"}],"_pagination":{"next":null}}`))
	if _, err := collect(New(hub.apiURL(), serviceToken), UserQuery{}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]hubRequest{listPage("limit=200&offset=0")}, hub.requests()); diff != "" {
		t.Errorf("Users({}) requests mismatch (-want +got):\n%s", diff)
	}
}

func TestUsersAcceptsBareList(t *testing.T) {
	hub := newFakeHub(t, answerJSON(http.StatusOK, `[{"name":"a"},{"name":"b","admin":true}]`))
	names, err := collect(New(hub.apiURL(), serviceToken), UserQuery{PageSize: 2})
	if err != nil {
		t.Fatalf("Users() on a bare list: %v", err)
	}
	if diff := cmp.Diff([]string{"a", "b"}, names); diff != "" {
		t.Errorf("Users() on a bare list (-want +got):\n%s", diff)
	}
	// A bare list has no next link: one request, even though the page was full.
	if diff := cmp.Diff([]hubRequest{listPage("limit=2&offset=0")}, hub.requests()); diff != "" {
		t.Errorf("Users() on a bare list: requests mismatch (-want +got):\n%s", diff)
	}
}

func TestUsersStopsWhenCallerBreaks(t *testing.T) {
	tests := []struct {
		name     string
		take     int
		requests int
	}{
		{name: "first user", take: 1, requests: 1},
		{name: "end of first page", take: 2, requests: 1},
		{name: "inside second page", take: 3, requests: 2},
		{name: "last user", take: 5, requests: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newFakeHub(t, threePages("http://elsewhere.invalid"))
			var names []string
			for u, err := range New(hub.apiURL(), serviceToken).Users(context.Background(), UserQuery{PageSize: 2}) {
				if err != nil {
					t.Fatal(err)
				}
				names = append(names, u.Name)
				if len(names) == tt.take {
					break
				}
			}
			if diff := cmp.Diff([]string{"a", "b", "c", "d", "e"}[:tt.take], names); diff != "" {
				t.Errorf("names mismatch (-want +got):\n%s", diff)
			}
			if n := len(hub.requests()); n != tt.requests {
				t.Errorf("breaking after %d users sent %d requests, want %d", tt.take, n, tt.requests)
			}
		})
	}
}

func TestUsersPageFails(t *testing.T) {
	hub := newFakeHub(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("offset") == "0" {
			fmt.Fprint(w, `{"items":[{"name":"a"},{"name":"b"}],"_pagination":{"next":{"offset":2,"limit":2}}}`)
			return
		}
		answerJSON(http.StatusInternalServerError, `{"status":500,"message":"database is locked"}`)(w, r)
	})
	var names []string
	var errs []error
	for u, err := range New(hub.apiURL(), serviceToken).Users(context.Background(), UserQuery{PageSize: 2}) {
		if err != nil {
			errs = append(errs, err)
			continue
		}
		names = append(names, u.Name)
	}
	if diff := cmp.Diff([]string{"a", "b"}, names); diff != "" {
		t.Errorf("users before the failure (-want +got):\n%s", diff)
	}
	if len(errs) != 1 {
		t.Fatalf("Users() yielded %d errors, want 1: %v", len(errs), errs)
	}
	want := &APIError{Method: http.MethodGet, Path: "/users", Status: 500, Message: "database is locked"}
	var got *APIError
	if !errors.As(errs[0], &got) || *got != *want {
		t.Errorf("Users() error = %v, want %v", errs[0], want)
	}
	if n := len(hub.requests()); n != 2 {
		t.Errorf("requests = %d, want 2 (none after the failure)", n)
	}
}

func TestUsersUndecodablePage(t *testing.T) {
	isSyntax := func(err error) bool { return errors.As(err, new(*json.SyntaxError)) }
	isType := func(err error) bool { return errors.As(err, new(*json.UnmarshalTypeError)) }
	tests := []struct {
		name string
		body string
		is   func(error) bool
	}{
		{name: "not JSON", body: `not json`, is: isSyntax},
		{name: "items not a list", body: `{"items":"x"}`, is: isType},
		{name: "bare list of wrong users", body: `[{"name":1}]`, is: isType},
		{name: "next not an object", body: `{"items":[],"_pagination":{"next":"x"}}`, is: isType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newFakeHub(t, answerJSON(http.StatusOK, tt.body))
			names, err := collect(New(hub.apiURL(), serviceToken), UserQuery{})
			if !tt.is(err) {
				t.Errorf("Users() on %s: error = %v (%T), want a JSON decode error", tt.body, err, err)
			}
			if len(names) != 0 {
				t.Errorf("Users() on %s yielded users %q, want none", tt.body, names)
			}
			if n := len(hub.requests()); n != 1 {
				t.Errorf("Users() on %s sent %d requests, want 1", tt.body, n)
			}
		})
	}
}

func TestUserKeepsAuthStateRaw(t *testing.T) {
	const authState = `{"access_token":"at","refresh_token":"rt","token_response":{"expires_in":300,"x":[1,2]},"extra":{"k":"v"}}`
	tests := []struct {
		name string
		body string
		want User
	}{
		{
			name: "with auth_state",
			body: `{"kind":"user","name":"alice","admin":false,"roles":["user"],"auth_state":` + authState + `,
				"servers":{"":{"name":"","ready":true,"pending":null,"stopped":false,"url":"/user/alice/","started":"2026-11-22T10:00:00Z"}}}`,
			want: User{
				Name: "alice", AuthState: json.RawMessage(authState),
				Servers: map[string]Server{"": {Ready: true, URL: "/user/alice/", Started: "2026-11-22T10:00:00Z"}},
			},
		},
		{
			name: "null auth_state",
			body: `{"name":"bob","admin":true,"auth_state":null,"servers":{}}`,
			want: User{Name: "bob", Admin: true, AuthState: json.RawMessage(`null`), Servers: map[string]Server{}},
		},
		{
			name: "no auth_state key",
			body: `{"name":"carol"}`,
			want: User{Name: "carol"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newFakeHub(t, answerJSON(http.StatusOK, tt.body))
			got, err := New(hub.apiURL(), serviceToken).User(context.Background(), tt.want.Name)
			if err != nil {
				t.Fatalf("User(%q) error: %v", tt.want.Name, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("User(%q) mismatch (-want +got):\n%s", tt.want.Name, diff)
			}
			if diff := cmp.Diff([]hubRequest{get("/hub/api/users/" + tt.want.Name)}, hub.requests()); diff != "" {
				t.Errorf("User(%q) requests mismatch (-want +got):\n%s", tt.want.Name, diff)
			}
		})
	}
}

func TestUserActive(t *testing.T) {
	tests := []struct {
		name    string
		servers map[string]Server
		want    bool
	}{
		{name: "no servers", want: false},
		{name: "ready", servers: map[string]Server{"": {Ready: true}}, want: true},
		{name: "starting", servers: map[string]Server{"": {Pending: "spawn"}}, want: true},
		{name: "stopped", servers: map[string]Server{"": {Stopped: true, Ready: true}}, want: false},
		{name: "not ready, not pending", servers: map[string]Server{"": {}}, want: false},
		{name: "named one ready", servers: map[string]Server{"": {Stopped: true}, "gpu": {Ready: true}}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (User{Servers: tt.servers}).Active(); got != tt.want {
				t.Errorf("User{Servers: %v}.Active() = %v, want %v", tt.servers, got, tt.want)
			}
		})
	}
}

func TestPathEscaping(t *testing.T) {
	tests := []struct {
		name     string
		user     string
		wantUser string // escaped
	}{
		{name: "plain", user: "alice", wantUser: "alice"},
		{name: "space", user: "a b", wantUser: "a%20b"},
		{name: "umlaut", user: "ü", wantUser: "%C3%BC"},
		{name: "slash", user: "x/y", wantUser: "x%2Fy"},
		{name: "question mark", user: "q?x=1", wantUser: "q%3Fx=1"},
		{name: "percent", user: "100%", wantUser: "100%25"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newFakeHub(t, answerJSON(http.StatusOK, `{}`))
			c := New(hub.apiURL(), serviceToken)
			ctx := context.Background()
			if _, err := c.User(ctx, tt.user); err != nil {
				t.Fatal(err)
			}
			if err := c.SetAuthState(ctx, tt.user, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Tokens(ctx, tt.user); err != nil {
				t.Fatal(err)
			}
			if err := c.DeleteToken(ctx, tt.user, "a/1"); err != nil {
				t.Fatal(err)
			}
			if err := c.StopServer(ctx, tt.user, "gpu one"); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range hub.requests() {
				got = append(got, r.Method+" "+r.Path)
			}
			base := "/hub/api/users/" + tt.wantUser
			want := []string{
				"GET " + base,
				"PATCH " + base,
				"GET " + base + "/tokens",
				"DELETE " + base + "/tokens/a%2F1",
				"DELETE " + base + "/servers/gpu%20one",
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("paths for user %q mismatch (-want +got):\n%s", tt.user, diff)
			}
		})
	}
}

func TestSetAuthState(t *testing.T) {
	tests := []struct {
		name  string
		state json.RawMessage
		want  string
	}{
		{name: "object", state: json.RawMessage(`{"access_token":"x","n":1}`), want: `{"auth_state":{"access_token":"x","n":1}}`},
		{name: "nested", state: json.RawMessage(`{"token_response":{"scope":["a","b"]}}`), want: `{"auth_state":{"token_response":{"scope":["a","b"]}}}`},
		{name: "nil clears", state: nil, want: `{"auth_state":{}}`},
		{name: "empty object clears", state: json.RawMessage(`{}`), want: `{"auth_state":{}}`},
		{name: "indented", state: json.RawMessage("\n  {\"a\": [1, 2],\n\t\"b\": null}\n"), want: `{"auth_state":{"a":[1,2],"b":null}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newFakeHub(t, answerJSON(http.StatusOK, `{"name":"a b","auth_state":{}}`))
			if err := New(hub.apiURL(), serviceToken).SetAuthState(context.Background(), "a b", tt.state); err != nil {
				t.Fatalf("SetAuthState(%s) error: %v", tt.state, err)
			}
			want := []hubRequest{{
				Method: http.MethodPatch, Path: "/hub/api/users/a%20b",
				Authorization: "token " + serviceToken, Accept: "application/json",
				ContentType: "application/json", Body: tt.want,
			}}
			if diff := cmp.Diff(want, hub.requests()); diff != "" {
				t.Errorf("SetAuthState(%s) requests mismatch (-want +got):\n%s", tt.state, diff)
			}
		})
	}
}

func TestSetAuthStateRejectsNonObjects(t *testing.T) {
	tests := []struct {
		name  string
		state string
	}{
		{name: "invalid JSON", state: `{"x":`},
		{name: "null", state: `null`},
		{name: "list", state: `[{"access_token":"x"}]`},
		{name: "string", state: `"{}"`},
		{name: "number", state: `1`},
		{name: "empty, not nil", state: ``},
		{name: "object then garbage", state: `{} x`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newFakeHub(t, answerJSON(http.StatusOK, `{}`))
			err := New(hub.apiURL(), serviceToken).SetAuthState(context.Background(), "a", json.RawMessage(tt.state))
			if !errors.Is(err, errNotObject) {
				t.Errorf("SetAuthState(%q) error = %v, want %v", tt.state, err, errNotObject)
			}
			if n := len(hub.requests()); n != 0 {
				t.Errorf("SetAuthState(%q) sent %d requests, want 0", tt.state, n)
			}
		})
	}
}

func TestAPIError(t *testing.T) {
	long := strings.Repeat("x", 300)
	tests := []struct {
		name   string
		status int
		body   string
		want   string // Message
	}{
		{name: "403", status: 403, body: `{"status":403,"message":"Action is not authorized with current scopes; requires any of [admin:auth_state]"}`,
			want: "Action is not authorized with current scopes; requires any of [admin:auth_state]"},
		{name: "404", status: 404, body: `{"status":404,"message":"No such user: nobody"}`, want: "No such user: nobody"},
		{name: "500", status: 500, body: `{"status":500,"message":"Internal Server Error"}`, want: "Internal Server Error"},
		{name: "non-JSON, truncated", status: 502, body: long, want: long[:200]},
		{name: "HTML", status: 503, body: "  <html><body>Service Unavailable</body></html>\n", want: "<html><body>Service Unavailable</body></html>"},
		{name: "JSON without message", status: 500, body: `{"status":500}`, want: `{"status":500}`},
		{name: "empty", status: 404, body: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newFakeHub(t, answerJSON(tt.status, tt.body))
			_, err := New(hub.apiURL(), serviceToken).User(context.Background(), "nobody")
			want := &APIError{Method: http.MethodGet, Path: "/users/nobody", Status: tt.status, Message: tt.want}
			var got *APIError
			if !errors.As(err, &got) {
				t.Fatalf("User() error = %v (%T), want *APIError", err, err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("User() error mismatch (-want +got):\n%s", diff)
			}
			if !IsStatus(err, tt.status) || IsStatus(err, tt.status+1) {
				t.Errorf("IsStatus(%v, %d) is wrong", err, tt.status)
			}
		})
	}
}

func TestAPIErrorText(t *testing.T) {
	tests := []struct {
		name string
		err  *APIError
		want string
	}{
		{name: "with message", err: &APIError{Method: "GET", Path: "/users/nobody", Status: 404, Message: "No such user: nobody"},
			want: "hubclient: GET /users/nobody: 404 No such user: nobody"},
		{name: "no message", err: &APIError{Method: "PATCH", Path: "/users/a", Status: 500},
			want: "hubclient: PATCH /users/a: 500 Internal Server Error"},
		{name: "unknown status, no message", err: &APIError{Method: "GET", Path: "/user", Status: 599},
			want: "hubclient: GET /user: 599"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("%#v.Error() = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestIsStatusOnOtherErrors(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{name: "nil", err: nil, want: false},
		{name: "plain", err: errors.New("403"), want: false},
		{name: "wrapped", err: fmt.Errorf("x: %w", &APIError{Status: 403}), want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsStatus(tt.err, 403); got != tt.want {
				t.Errorf("IsStatus(%v, 403) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// clock is a settable clock for WithClock.
type clock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const aliceIdentity = `{"kind":"user","name":"alice","admin":false,"session_id":null,"token_id":"a42",
	"scopes":["access:services!service=tokenkeeper","read:users:name!user=alice"]}`

func TestIdentify(t *testing.T) {
	hub := newFakeHub(t, answerJSON(http.StatusOK, aliceIdentity))
	clk := newClock()
	// A longer TTL is cut to the 10 s maximum.
	c := New(hub.apiURL(), serviceToken, WithIdentityCacheTTL(time.Minute), WithClock(clk.Now))
	want := Identity{
		Kind: "user", Name: "alice", TokenID: "a42",
		Scopes: []string{"access:services!service=tokenkeeper", "read:users:name!user=alice"},
	}
	callerGet := hubRequest{Method: http.MethodGet, Path: "/hub/api/user", Authorization: "token caller-token", Accept: "application/json"}
	steps := []struct {
		name    string
		advance time.Duration
		want    []hubRequest
	}{
		{name: "first call asks the hub", want: []hubRequest{callerGet}},
		{name: "within the TTL", advance: 9 * time.Second, want: []hubRequest{callerGet}},
		{name: "at the 10 s maximum", advance: time.Second, want: []hubRequest{callerGet, callerGet}},
		{name: "cached again", advance: 5 * time.Second, want: []hubRequest{callerGet, callerGet}},
	}
	for _, s := range steps {
		clk.Advance(s.advance)
		got, err := c.Identify(context.Background(), "caller-token")
		if err != nil {
			t.Fatalf("%s: Identify error: %v", s.name, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: Identify mismatch (-want +got):\n%s", s.name, diff)
		}
		if diff := cmp.Diff(s.want, hub.requests()); diff != "" {
			t.Errorf("%s: requests mismatch (-want +got):\n%s", s.name, diff)
		}
	}
}

func TestIdentifyCachesPerToken(t *testing.T) {
	hub := newFakeHub(t, func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.Header.Get("Authorization"), "token tok-")
		fmt.Fprintf(w, `{"kind":"user","name":%q}`, name)
	})
	c := New(hub.apiURL(), serviceToken)
	for _, tok := range []string{"tok-alice", "tok-bob", "tok-alice", "tok-bob"} {
		id, err := c.Identify(context.Background(), tok)
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.TrimPrefix(tok, "tok-"); id.Name != want {
			t.Errorf("Identify(%q).Name = %q, want %q", tok, id.Name, want)
		}
	}
	if n := len(hub.requests()); n != 2 {
		t.Errorf("requests for two tokens asked twice = %d, want 2", n)
	}
}

func TestIdentifyCollapsesConcurrentCalls(t *testing.T) {
	const callers = 20
	var started atomic.Int32
	allStarted := make(chan struct{})
	hub := newFakeHub(t, func(w http.ResponseWriter, r *http.Request) {
		<-allStarted // hold the answer until every caller is on its way
		fmt.Fprint(w, aliceIdentity)
	})
	c := New(hub.apiURL(), serviceToken)
	var wg sync.WaitGroup
	names := make([]string, callers)
	for i := range callers {
		wg.Go(func() {
			if started.Add(1) == callers {
				close(allStarted)
			}
			id, err := c.Identify(context.Background(), "caller-token")
			if err != nil {
				t.Errorf("Identify error: %v", err)
			}
			names[i] = id.Name
		})
	}
	wg.Wait()
	for i, n := range names {
		if n != "alice" {
			t.Errorf("caller %d got name %q, want alice", i, n)
		}
	}
	want := []hubRequest{{Method: http.MethodGet, Path: "/hub/api/user", Authorization: "token caller-token", Accept: "application/json"}}
	if diff := cmp.Diff(want, hub.requests()); diff != "" {
		t.Errorf("%d concurrent Identify calls: requests mismatch (-want +got):\n%s", callers, diff)
	}
}

// TestIdentifyRefusalIsCachedBriefly checks that a token the hub refused is
// refused again without asking for 2 s, and asked about after that.
func TestIdentifyRefusalIsCachedBriefly(t *testing.T) {
	for _, status := range []int{http.StatusForbidden, http.StatusUnauthorized} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			var valid atomic.Bool
			hub := newFakeHub(t, func(w http.ResponseWriter, r *http.Request) {
				if !valid.Load() {
					answerJSON(status, fmt.Sprintf(`{"status":%d,"message":"Refused"}`, status))(w, r)
					return
				}
				fmt.Fprint(w, aliceIdentity)
			})
			clk := newClock()
			c := New(hub.apiURL(), serviceToken, WithClock(clk.Now))
			want := &APIError{Method: http.MethodGet, Path: "/user", Status: status, Message: "Refused"}
			steps := []struct {
				advance  time.Duration
				requests int
			}{{0, 1}, {time.Second, 1}, {999 * time.Millisecond, 1}, {time.Millisecond, 2}}
			for i, s := range steps {
				clk.Advance(s.advance)
				_, err := c.Identify(context.Background(), "bad-token")
				var got *APIError
				if !errors.As(err, &got) || *got != *want {
					t.Errorf("call %d: Identify(bad) error = %v, want %v", i+1, err, want)
				}
				if n := len(hub.requests()); n != s.requests {
					t.Errorf("call %d: requests = %d, want %d", i+1, n, s.requests)
				}
			}
			valid.Store(true)
			clk.Advance(2 * time.Second)
			if id, err := c.Identify(context.Background(), "bad-token"); err != nil || id.Name != "alice" {
				t.Errorf("Identify after the hub accepts the token = %+v, %v; want alice", id, err)
			}
		})
	}
}

// TestIdentifyDoesNotCacheOtherErrors checks that a hub failure other than a
// refusal is asked about again at the next call.
func TestIdentifyDoesNotCacheOtherErrors(t *testing.T) {
	hub := newFakeHub(t, answerJSON(http.StatusInternalServerError, `{"status":500,"message":"boom"}`))
	c := New(hub.apiURL(), serviceToken, WithClock(newClock().Now))
	for range 2 {
		if _, err := c.Identify(context.Background(), "caller-token"); !IsStatus(err, http.StatusInternalServerError) {
			t.Errorf("Identify error = %v, want 500", err)
		}
	}
	if n := len(hub.requests()); n != 2 {
		t.Errorf("requests for two Identify calls answered 500 = %d, want 2", n)
	}
}

func TestSelfUsesServiceToken(t *testing.T) {
	hub := newFakeHub(t, answerJSON(http.StatusOK, `{"kind":"service","name":"tokenkeeper","scopes":["list:users"]}`))
	c := New(hub.apiURL(), serviceToken)
	for range 2 {
		id, err := c.Self(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(Identity{Kind: "service", Name: "tokenkeeper", Scopes: []string{"list:users"}}, id); diff != "" {
			t.Errorf("Self() mismatch (-want +got):\n%s", diff)
		}
	}
	// Self is not cached: a service checks its scopes rarely and wants the truth.
	want := []hubRequest{get("/hub/api/user"), get("/hub/api/user")}
	if diff := cmp.Diff(want, hub.requests()); diff != "" {
		t.Errorf("Self() requests mismatch (-want +got):\n%s", diff)
	}
}

func TestIdentityAllows(t *testing.T) {
	tests := []struct {
		name   string
		scopes []string
		scope  string
		user   string
		want   bool
	}{
		{name: "unfiltered, any user", scopes: []string{"custom:t"}, scope: "custom:t", user: "bob", want: true},
		{name: "unfiltered, no user", scopes: []string{"custom:t"}, scope: "custom:t", user: "", want: true},
		{name: "filtered for that user", scopes: []string{"custom:t!user=bob"}, scope: "custom:t", user: "bob", want: true},
		{name: "filtered for another user", scopes: []string{"custom:t!user=bob"}, scope: "custom:t", user: "carol", want: false},
		{name: "filtered, empty user", scopes: []string{"custom:t!user=bob"}, scope: "custom:t", user: "", want: false},
		{name: "filter with empty name", scopes: []string{"custom:t!user="}, scope: "custom:t", user: "", want: false},
		{name: "user name is a prefix", scopes: []string{"custom:t!user=bobby"}, scope: "custom:t", user: "bob", want: false},
		{name: "scope is a prefix", scopes: []string{"custom:tokens"}, scope: "custom:t", user: "bob", want: false},
		{name: "group filter does not count", scopes: []string{"custom:t!group=bob"}, scope: "custom:t", user: "bob", want: false},
		{name: "no scopes", scope: "custom:t", user: "bob", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := Identity{Scopes: tt.scopes}
			if got := id.Allows(tt.scope, tt.user); got != tt.want {
				t.Errorf("Identity{Scopes: %q}.Allows(%q, %q) = %v, want %v", tt.scopes, tt.scope, tt.user, got, tt.want)
			}
		})
	}
}

// inProcess is a RoundTripper that serves requests with a handler in the
// same process, so a synctest bubble sees every wait as durable.
type inProcess struct{ h http.Handler }

func (p inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

func TestConcurrencyIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const limit, calls = 2, 7
		var inFlight, peak, served atomic.Int32
		release := make(chan struct{})
		hub := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n := inFlight.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			<-release
			inFlight.Add(-1)
			served.Add(1)
			fmt.Fprint(w, `{"name":"x"}`)
		})
		c := New("http://hub.invalid/hub/api", serviceToken, WithConcurrency(limit),
			WithHTTPClient(&http.Client{Transport: inProcess{hub}}))
		var wg sync.WaitGroup
		for range calls {
			wg.Go(func() {
				if _, err := c.User(context.Background(), "x"); err != nil {
					t.Errorf("User error: %v", err)
				}
			})
		}
		// Each round: wait until every caller is blocked, in the fake or on
		// a slot, then count the requests in flight and let one finish.
		for round := range calls {
			synctest.Wait()
			want := int32(min(limit, calls-round))
			if got := inFlight.Load(); got != want {
				t.Errorf("round %d: requests in flight = %d, want %d", round, got, want)
			}
			release <- struct{}{}
		}
		wg.Wait()
		if got := peak.Load(); got != limit {
			t.Errorf("peak requests in flight with WithConcurrency(%d) = %d, want %d", limit, got, limit)
		}
		if got := served.Load(); got != calls {
			t.Errorf("requests served = %d, want %d", got, calls)
		}
	})
}

func TestWaitingForASlotHonoursContext(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	hub := newFakeHub(t, func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		fmt.Fprint(w, `{"name":"x"}`)
	})
	c := New(hub.apiURL(), serviceToken, WithConcurrency(1))
	done := make(chan error, 1)
	go func() {
		_, err := c.User(context.Background(), "x")
		done <- err
	}()
	<-arrived // the only slot is taken
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.User(ctx, "y"); !errors.Is(err, context.Canceled) {
		t.Errorf("User with a cancelled context while the slot is taken = %v, want context.Canceled", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Errorf("first User error: %v", err)
	}
	if n := len(hub.requests()); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
}

func TestObserverSeesRoutesWithoutNames(t *testing.T) {
	hub := newFakeHub(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/tokens"):
			fmt.Fprint(w, `{"api_tokens":[]}`)
		case r.URL.Path == "/hub/api/users":
			fmt.Fprint(w, `{"items":[],"_pagination":{"next":null}}`)
		case strings.Contains(r.URL.Path, "nobody"):
			answerJSON(http.StatusNotFound, `{"status":404,"message":"No such user"}`)(w, r)
		default:
			fmt.Fprint(w, `{}`)
		}
	})
	type observation struct {
		Route string
		Err   bool
	}
	var got []observation
	c := New(hub.apiURL(), serviceToken, WithObserver(func(route string, d time.Duration, err error) {
		if d < 0 {
			t.Errorf("observer duration %v < 0", d)
		}
		got = append(got, observation{route, err != nil})
	}))
	ctx := context.Background()
	for range c.Users(ctx, UserQuery{}) {
	}
	_, _ = c.User(ctx, "alice")
	_, _ = c.User(ctx, "x/y")
	_, _ = c.User(ctx, "nobody")
	_ = c.SetAuthState(ctx, "alice", nil)
	_, _ = c.Identify(ctx, "caller")
	_, _ = c.Tokens(ctx, "alice")
	_ = c.DeleteToken(ctx, "alice", "a17")
	_ = c.StopServer(ctx, "alice", "")
	_ = c.StopServer(ctx, "alice", "gpu")
	want := []observation{
		{"GET /users", false},
		{"GET /users/{name}", false},
		{"GET /users/{name}", false},
		{"GET /users/{name}", true},
		{"PATCH /users/{name}", false},
		{"GET /user", false},
		{"GET /users/{name}/tokens", false},
		{"DELETE /users/{name}/tokens/{id}", false},
		{"DELETE /users/{name}/server", false},
		{"DELETE /users/{name}/servers/{id}", false},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("observed routes mismatch (-want +got):\n%s", diff)
	}
	for _, o := range got {
		for _, secret := range []string{"alice", "nobody", "x%2F", "a17", "gpu", "caller"} {
			if strings.Contains(o.Route, secret) {
				t.Errorf("route %q contains %q", o.Route, secret)
			}
		}
	}
}

func TestTokens(t *testing.T) {
	hub := newFakeHub(t, answerJSON(http.StatusOK, `{"api_tokens":[
		{"id":"a1","kind":"api_token","note":"","session_id":"s1","oauth_client":"JupyterHub","scopes":["inherit"],
		 "created":"2026-11-22T10:00:00Z","last_activity":null,"expires_at":"2026-11-29T10:00:00Z"},
		{"id":"a2","kind":"api_token","note":"Server at /user/alice/","session_id":null,"scopes":[]}]}`))
	got, err := New(hub.apiURL(), serviceToken).Tokens(context.Background(), "alice")
	if err != nil {
		t.Fatalf("Tokens error: %v", err)
	}
	s1 := "s1"
	want := []Token{
		{ID: "a1", Kind: "api_token", SessionID: &s1, OAuthClient: "JupyterHub", Scopes: []string{"inherit"},
			Created: "2026-11-22T10:00:00Z", ExpiresAt: "2026-11-29T10:00:00Z"},
		{ID: "a2", Kind: "api_token", Note: "Server at /user/alice/", Scopes: []string{}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Tokens mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]hubRequest{get("/hub/api/users/alice/tokens")}, hub.requests()); diff != "" {
		t.Errorf("Tokens requests mismatch (-want +got):\n%s", diff)
	}
}

func TestDeleteAndStop(t *testing.T) {
	del := func(path string) hubRequest {
		return hubRequest{Method: http.MethodDelete, Path: path, Authorization: "token " + serviceToken, Accept: "application/json"}
	}
	tests := []struct {
		name    string
		call    func(*Client) error
		status  int
		want    hubRequest
		wantErr int // APIError status, 0 for success
	}{
		{name: "delete token", call: func(c *Client) error { return c.DeleteToken(context.Background(), "alice", "a1") },
			status: http.StatusNoContent, want: del("/hub/api/users/alice/tokens/a1")},
		{name: "delete missing token", call: func(c *Client) error { return c.DeleteToken(context.Background(), "alice", "a9") },
			status: http.StatusNotFound, want: del("/hub/api/users/alice/tokens/a9"), wantErr: 404},
		{name: "stop default server", call: func(c *Client) error { return c.StopServer(context.Background(), "alice", "") },
			status: http.StatusNoContent, want: del("/hub/api/users/alice/server")},
		{name: "stop default server, pending", call: func(c *Client) error { return c.StopServer(context.Background(), "alice", "") },
			status: http.StatusAccepted, want: del("/hub/api/users/alice/server")},
		{name: "stop named server", call: func(c *Client) error { return c.StopServer(context.Background(), "alice", "gpu") },
			status: http.StatusNoContent, want: del("/hub/api/users/alice/servers/gpu")},
		{name: "stop named server, pending", call: func(c *Client) error { return c.StopServer(context.Background(), "alice", "gpu") },
			status: http.StatusAccepted, want: del("/hub/api/users/alice/servers/gpu")},
		{name: "stop, hub refuses", call: func(c *Client) error { return c.StopServer(context.Background(), "alice", "gpu") },
			status: http.StatusBadRequest, want: del("/hub/api/users/alice/servers/gpu"), wantErr: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newFakeHub(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				if tt.status >= 400 {
					fmt.Fprintf(w, `{"status":%d,"message":"no"}`, tt.status)
				}
			})
			err := tt.call(New(hub.apiURL(), serviceToken))
			switch {
			case tt.wantErr == 0 && err != nil:
				t.Errorf("error = %v, want nil for status %d", err, tt.status)
			case tt.wantErr != 0 && !IsStatus(err, tt.wantErr):
				t.Errorf("error = %v, want *APIError %d", err, tt.wantErr)
			}
			if diff := cmp.Diff([]hubRequest{tt.want}, hub.requests()); diff != "" {
				t.Errorf("requests mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBaseURLTrailingSlash(t *testing.T) {
	hub := newFakeHub(t, answerJSON(http.StatusOK, `{"name":"a"}`))
	if _, err := New(hub.apiURL()+"/", serviceToken).User(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]hubRequest{get("/hub/api/users/a")}, hub.requests()); diff != "" {
		t.Errorf("requests with a trailing slash in the API URL (-want +got):\n%s", diff)
	}
}

func TestUnreachableHub(t *testing.T) {
	hub := newFakeHub(t, answerJSON(http.StatusOK, `{}`))
	apiURL := hub.apiURL()
	hub.srv.Close()
	_, err := New(apiURL, serviceToken).User(context.Background(), "a")
	var aerr *APIError
	if err == nil || errors.As(err, &aerr) {
		t.Errorf("User on a closed hub = %v, want a transport error that is not an *APIError", err)
	}
	var uerr *url.Error
	var nerr net.Error
	if !errors.As(err, &uerr) || !errors.As(err, &nerr) {
		t.Errorf("User on a closed hub = %v (%T), want it to wrap a *url.Error and a net.Error", err, err)
	}
	if want := "hubclient: GET /users/a: "; !strings.HasPrefix(fmt.Sprint(err), want) {
		t.Errorf("User on a closed hub = %q, want the prefix %q", err, want)
	}
}

func TestAPIErrorTruncatesOnRuneBoundary(t *testing.T) {
	body := "x" + strings.Repeat("ü", 150) // 301 bytes; byte 200 falls inside a "ü"
	hub := newFakeHub(t, answerJSON(http.StatusBadGateway, body))
	_, err := New(hub.apiURL(), serviceToken).User(context.Background(), "a")
	var aerr *APIError
	if !errors.As(err, &aerr) {
		t.Fatalf("User() error = %v, want *APIError", err)
	}
	if !utf8.ValidString(aerr.Message) || len(aerr.Message) > 200 || !strings.HasPrefix(body, aerr.Message) {
		t.Errorf("Message = %q (%d bytes), want a valid UTF-8 prefix of the body of at most 200 bytes", aerr.Message, len(aerr.Message))
	}
}

func TestDecodeErrorsCarryTheRequest(t *testing.T) {
	isSyntax := func(err error) bool { return errors.As(err, new(*json.SyntaxError)) }
	isType := func(err error) bool { return errors.As(err, new(*json.UnmarshalTypeError)) }
	tests := []struct {
		name   string
		body   string
		call   func(*Client) error
		prefix string
		is     func(error) bool
	}{
		{name: "user, not JSON", body: `<html>`, prefix: "hubclient: GET /users/al%20ice: decode: ", is: isSyntax,
			call: func(c *Client) error { _, err := c.User(context.Background(), "al ice"); return err }},
		{name: "user, empty answer", body: ``, prefix: "hubclient: GET /users/alice: decode: ", is: isSyntax,
			call: func(c *Client) error { _, err := c.User(context.Background(), "alice"); return err }},
		{name: "user, wrong type", body: `{"name":["alice"]}`, prefix: "hubclient: GET /users/alice: decode: ", is: isType,
			call: func(c *Client) error { _, err := c.User(context.Background(), "alice"); return err }},
		{name: "tokens", body: `{"api_tokens":{}}`, prefix: "hubclient: GET /users/alice/tokens: decode: ", is: isType,
			call: func(c *Client) error { _, err := c.Tokens(context.Background(), "alice"); return err }},
		{name: "self", body: `{"scopes":"all"}`, prefix: "hubclient: GET /user: decode: ", is: isType,
			call: func(c *Client) error { _, err := c.Self(context.Background()); return err }},
		{name: "user list", body: `{"items":{}}`, prefix: "hubclient: GET /users: decode: ", is: isType,
			call: func(c *Client) error { _, err := collect(c, UserQuery{}); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newFakeHub(t, answerJSON(http.StatusOK, tt.body))
			err := tt.call(New(hub.apiURL(), serviceToken))
			if !tt.is(err) {
				t.Errorf("error on %q = %v (%T), want a wrapped JSON decode error", tt.body, err, err)
			}
			if err != nil && !strings.HasPrefix(err.Error(), tt.prefix) {
				t.Errorf("error on %q = %q, want the prefix %q", tt.body, err, tt.prefix)
			}
		})
	}
}

func TestOversizedAnswers(t *testing.T) {
	huge := `{"name":"` + strings.Repeat("x", maxBody) + `"}`
	t.Run("2xx is refused, not cut", func(t *testing.T) {
		hub := newFakeHub(t, answerJSON(http.StatusOK, huge))
		_, err := New(hub.apiURL(), serviceToken).User(context.Background(), "a")
		if err == nil || errors.As(err, new(*APIError)) || errors.As(err, new(*json.SyntaxError)) {
			t.Errorf("User on a %d-byte answer = %v, want a size error", len(huge), err)
		}
	})
	t.Run("error answer keeps its status", func(t *testing.T) {
		hub := newFakeHub(t, answerJSON(http.StatusBadGateway, huge))
		_, err := New(hub.apiURL(), serviceToken).User(context.Background(), "a")
		want := &APIError{Method: http.MethodGet, Path: "/users/a", Status: 502, Message: huge[:maxMessage]}
		var got *APIError
		if !errors.As(err, &got) || *got != *want {
			t.Errorf("User on a %d-byte 502 = %v, want %v", len(huge), err, want)
		}
	})
}

func TestBodiesAreDrainedForReuse(t *testing.T) {
	// Every answer has a body the client does not need in full: a 202 with
	// JSON for StopServer, an error page, and trailing bytes after a user.
	hub := newFakeHub(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodDelete:
			answerJSON(http.StatusAccepted, `{"status":"stopping"}`+strings.Repeat(" ", 64<<10))(w, r)
		case http.MethodPatch:
			answerJSON(http.StatusForbidden, `{"status":403,"message":"no"}`+strings.Repeat(" ", 64<<10))(w, r)
		default:
			answerJSON(http.StatusOK, `{"name":"a"}`+strings.Repeat(" ", 64<<10))(w, r)
		}
	})
	var conns atomic.Int32
	transport := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		conns.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}
	defer transport.CloseIdleConnections()
	c := New(hub.apiURL(), serviceToken, WithHTTPClient(&http.Client{Transport: transport}))
	ctx := context.Background()
	for range 3 {
		if err := c.StopServer(ctx, "a", ""); err != nil {
			t.Fatal(err)
		}
		if err := c.SetAuthState(ctx, "a", nil); !IsStatus(err, http.StatusForbidden) {
			t.Fatalf("SetAuthState error = %v, want 403", err)
		}
		if _, err := c.User(ctx, "a"); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("9 sequential requests opened %d connections, want 1 (bodies drained and closed)", n)
	}
}

func TestUsersRefusesANextThatDoesNotAdvance(t *testing.T) {
	tests := []struct {
		name string
		next string
	}{
		{name: "same offset", next: `{"offset":0,"limit":2}`},
		{name: "backwards", next: `{"offset":-2,"limit":2}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hub := newFakeHub(t, answerJSON(http.StatusOK, `{"items":[{"name":"a"},{"name":"b"}],"_pagination":{"next":`+tt.next+`}}`))
			names, err := collect(New(hub.apiURL(), serviceToken), UserQuery{PageSize: 2})
			if err == nil {
				t.Errorf("Users() with next %s = nil error, want one", tt.next)
			}
			if diff := cmp.Diff([]string{"a", "b"}, names); diff != "" {
				t.Errorf("Users() with next %s (-want +got):\n%s", tt.next, diff)
			}
			if n := len(hub.requests()); n != 1 {
				t.Errorf("Users() with next %s sent %d requests, want 1", tt.next, n)
			}
		})
	}
}

func TestUsersWithEndedContext(t *testing.T) {
	hub := newFakeHub(t, answerJSON(http.StatusOK, `{"items":[{"name":"a"}],"_pagination":{"next":null}}`))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var errs []error
	for u, err := range New(hub.apiURL(), serviceToken).Users(ctx, UserQuery{}) {
		if err == nil {
			t.Errorf("Users() with a cancelled context yielded user %q", u.Name)
		}
		errs = append(errs, err)
	}
	if len(errs) != 1 || !errors.Is(errs[0], context.Canceled) {
		t.Errorf("Users() with a cancelled context yielded errors %v, want one context.Canceled", errs)
	}
	if n := len(hub.requests()); n != 0 {
		t.Errorf("Users() with a cancelled context sent %d requests, want 0", n)
	}
}

// TestRefresherRate: the refresher's share is what the identity lookups
// leave, as paced, so a plan of its requests never counts on their part.
func TestRefresherRate(t *testing.T) {
	for _, tt := range []struct{ rps, want float64 }{{25, 19.6}, {10, 7.84}, {2, 0.98}, {1, 0.49}} {
		if got := RefresherRate(tt.rps); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("RefresherRate(%v) = %v, want %v", tt.rps, got, tt.want)
		}
	}
}
