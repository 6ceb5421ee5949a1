package hubclient

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// Every user name stays one path segment: "/" and "?" are escaped by
// url.PathEscape, "." and ".." (which it leaves) are percent-encoded too.
func TestUserPathKeepsTheNameOneSegment(t *testing.T) {
	for _, tc := range []struct{ name, want string }{
		{"alice", "/users/alice"},
		{"..", "/users/%2E%2E"},
		{".", "/users/%2E"},
		{"a/../b", "/users/a%2F..%2Fb"},
		{"a?b#c", "/users/a%3Fb%23c"},
		{"..a", "/users/..a"},
	} {
		if got := userPath(tc.name); got != tc.want {
			t.Errorf("userPath(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"alice", true}, {"ünïcode", true}, {"a b", true}, {"..", true},
		{"", false}, {"alice\x00audience", false}, {"a\nb", false}, {"\xff", false},
	} {
		if err := CheckName(tc.name); (err == nil) != tc.ok {
			t.Errorf("CheckName(%q) = %v, want ok %t", tc.name, err, tc.ok)
		}
	}
}

// On the wire, too: the hub receives ".." encoded, not resolved.
func TestUserRequestSendsDotDotEncoded(t *testing.T) {
	var got string
	hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.RequestURI
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"name": ".."}`))
	}))
	defer hub.Close()
	if _, err := New(hub.URL+"/hub/api", "t").User(t.Context(), ".."); err != nil {
		t.Fatal(err)
	}
	if want := "/hub/api/users/%2E%2E"; got != want {
		t.Errorf("request URI = %q, want %q", got, want)
	}
}
