package hubclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestUsersFollowsPagination(t *testing.T) {
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Accept"); got != paginationType {
			t.Errorf("Accept = %q, want %q", got, paginationType)
		}
		if got := r.Header.Get("Authorization"); got != "token svc" {
			t.Errorf("Authorization = %q", got)
		}
		queries = append(queries, r.URL.RawQuery)
		switch r.URL.Query().Get("offset") {
		case "0":
			fmt.Fprint(w, `{"items":[{"name":"a"},{"name":"b"}],"_pagination":{"next":{"offset":2,"limit":2,"url":"http://elsewhere/x"}}}`)
		case "2":
			fmt.Fprint(w, `{"items":[{"name":"c"},{"name":"d"}],"_pagination":{"next":{"offset":4,"limit":2}}}`)
		default:
			fmt.Fprint(w, `{"items":[{"name":"e"}],"_pagination":{"next":null}}`)
		}
	}))
	defer srv.Close()
	c := New(srv.URL+"/hub/api", "svc")
	var names []string
	for u, err := range c.Users(context.Background(), UserQuery{State: "active", PageSize: 2}) {
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, u.Name)
	}
	if diff := cmp.Diff([]string{"a", "b", "c", "d", "e"}, names); diff != "" {
		t.Errorf("Users() names (-want +got):\n%s", diff)
	}
	want := []string{"limit=2&offset=0&state=active", "limit=2&offset=2&state=active", "limit=2&offset=4&state=active"}
	if diff := cmp.Diff(want, queries); diff != "" {
		t.Errorf("queries (-want +got):\n%s", diff)
	}
}

func TestUsersAcceptsBareList(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `[{"name":"a"},{"name":"b"}]`)
	}))
	defer srv.Close()
	n := 0
	for _, err := range New(srv.URL, "t").Users(context.Background(), UserQuery{}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2 {
		t.Errorf("users from a bare list = %d, want 2", n)
	}
}

func TestSetAuthStateRequest(t *testing.T) {
	tests := []struct {
		name  string
		state json.RawMessage
		want  string
	}{
		{"state", json.RawMessage(`{"access_token":"x"}`), `{"auth_state":{"access_token":"x"}}`},
		{"clear", nil, `{"auth_state":{}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				if r.Method != http.MethodPatch || r.URL.EscapedPath() != "/users/a%20b" || string(b) != tt.want {
					t.Errorf("got %s %s %s, want PATCH /users/a%%20b %s", r.Method, r.URL.EscapedPath(), b, tt.want)
				}
				if ct := r.Header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
			}))
			defer srv.Close()
			if err := New(srv.URL, "t").SetAuthState(context.Background(), "a b", tt.state); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestAPIError(t *testing.T) {
	tests := []struct {
		name, body string
		status     int
		wantMsg    string
	}{
		{"hub JSON", `{"status":404,"message":"No such user"}`, 404, "No such user"},
		{"not JSON", strings.Repeat("x", 300), 502, strings.Repeat("x", 200)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}))
			defer srv.Close()
			_, err := New(srv.URL, "t").User(context.Background(), "x")
			var aerr *APIError
			if !errors.As(err, &aerr) || aerr.Status != tt.status || aerr.Message != tt.wantMsg {
				t.Errorf("User() error = %v, want *APIError %d %q", err, tt.status, tt.wantMsg)
			}
		})
	}
}

func TestIdentifyCachesAndCollapses(t *testing.T) {
	var calls atomic.Int32
	release, arrived := make(chan struct{}), make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		select {
		case arrived <- struct{}{}:
		default:
		}
		if got := r.Header.Get("Authorization"); got != "token caller" {
			t.Errorf("Authorization = %q, want the caller's token", got)
		}
		<-release
		fmt.Fprint(w, `{"kind":"user","name":"alice","scopes":["access:services"]}`)
	}))
	defer srv.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	c := New(srv.URL, "svc", WithIdentityCacheTTL(time.Minute), WithClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return now }))
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if id, err := c.Identify(context.Background(), "caller"); err != nil || id.Name != "alice" {
				t.Errorf("Identify = %v, %v", id, err)
			}
		})
	}
	<-arrived // the first request reached the hub; the others wait on it or the cache
	close(release)
	wg.Wait()
	if _, err := c.Identify(context.Background(), "caller"); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("requests for 21 Identify calls within the TTL = %d, want 1", got)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if _, err := c.Identify(context.Background(), "caller"); err != nil {
		t.Fatal(err)
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("requests after the TTL = %d, want 2", got)
	}
}

func TestAllows(t *testing.T) {
	id := Identity{Scopes: []string{"custom:a", "custom:b!user=bob"}}
	tests := []struct {
		scope, user string
		want        bool
	}{
		{"custom:a", "", true},
		{"custom:a", "anyone", true},
		{"custom:b", "bob", true},
		{"custom:b", "carol", false},
		{"custom:b", "", false},
		{"custom:c", "bob", false},
	}
	for _, tt := range tests {
		if got := id.Allows(tt.scope, tt.user); got != tt.want {
			t.Errorf("Allows(%q, %q) = %v, want %v", tt.scope, tt.user, got, tt.want)
		}
	}
}

func TestConcurrencyIsBounded(t *testing.T) {
	var inFlight, peak atomic.Int32
	arrived := make(chan struct{}, 10)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		arrived <- struct{}{}
		<-release
		inFlight.Add(-1)
		fmt.Fprint(w, `{"name":"x"}`)
	}))
	defer srv.Close()
	c := New(srv.URL, "t", WithConcurrency(2))
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() { _, _ = c.User(context.Background(), "x") })
	}
	<-arrived
	<-arrived
	close(release)
	wg.Wait()
	if got := peak.Load(); got != 2 {
		t.Errorf("peak requests in flight = %d, want 2", got)
	}
}

func TestObserverSeesRoutesWithoutNames(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"api_tokens":[]}`)
	}))
	defer srv.Close()
	var routes []string
	c := New(srv.URL, "t", WithObserver(func(route string, _ time.Duration, _ error) { routes = append(routes, route) }))
	_, _ = c.User(context.Background(), "alice")
	_, _ = c.Tokens(context.Background(), "alice")
	_ = c.DeleteToken(context.Background(), "alice", "a1")
	_ = c.StopServer(context.Background(), "alice", "gpu")
	want := []string{"GET /users/{name}", "GET /users/{name}/tokens", "DELETE /users/{name}/tokens/{id}", "DELETE /users/{name}/servers/{id}"}
	if diff := cmp.Diff(want, routes); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
}

func FuzzDecodeUsersPage(f *testing.F) {
	f.Add([]byte(`{"items":[{"name":"a"}],"_pagination":{"next":{"offset":1,"limit":1}}}`))
	f.Add([]byte(`[{"name":"a","auth_state":{"x":1}}]`))
	f.Add([]byte(`{"items":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodeUsersPage(b)
		if err != nil && len(p.Items) > 0 && p.Pagination.Next != nil {
			t.Errorf("error %v with a usable page", err)
		}
	})
}
