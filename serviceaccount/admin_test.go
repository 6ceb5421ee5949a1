package serviceaccount

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestSplitIssuer(t *testing.T) {
	tests := []struct {
		issuer    string
		wantBase  string
		wantRealm string
		wantErr   bool
	}{
		{issuer: "https://kc.example.org/realms/jupyter", wantBase: "https://kc.example.org", wantRealm: "jupyter"},
		{issuer: "https://kc.example.org/realms/jupyter/", wantBase: "https://kc.example.org", wantRealm: "jupyter"},
		{issuer: "http://127.0.0.1:8080/realms/tk-test", wantBase: "http://127.0.0.1:8080", wantRealm: "tk-test"},
		{issuer: "https://kc.example.org/auth/realms/jupyter", wantBase: "https://kc.example.org/auth", wantRealm: "jupyter"},
		{issuer: "https://kc.example.org/realms/realms", wantBase: "https://kc.example.org", wantRealm: "realms"},
		{issuer: "https://kc.example.org", wantErr: true},
		{issuer: "https://kc.example.org/", wantErr: true},
		{issuer: "https://kc.example.org/realms/", wantErr: true},
		{issuer: "https://kc.example.org/realms//", wantErr: true},
		{issuer: "https://kc.example.org/auth/jupyter", wantErr: true},
		{issuer: "", wantErr: true},
		{issuer: "http://[::1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.issuer, func(t *testing.T) {
			base, realm, err := SplitIssuer(tt.issuer)
			if tt.wantErr {
				if err == nil {
					t.Errorf("SplitIssuer(%q) = %q, %q, nil; want an error", tt.issuer, base, realm)
				}
				return
			}
			if err != nil || base != tt.wantBase || realm != tt.wantRealm {
				t.Errorf("SplitIssuer(%q) = %q, %q, %v; want %q, %q, nil", tt.issuer, base, realm, err, tt.wantBase, tt.wantRealm)
			}
		})
	}
}

func TestNewAdminRejectsBadIssuer(t *testing.T) {
	if _, err := NewAdmin("https://kc.example.org/", http.DefaultClient, staticToken("t")); err == nil {
		t.Error("NewAdmin with an issuer without a realm = nil error, want one")
	}
}

func staticToken(tok string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return tok, nil }
}

// fakeKeycloak is Keycloak's admin API for one realm as far as Admin uses it.
func fakeKeycloak(t *testing.T, answer http.HandlerFunc) (*fakeAPI, *Admin) {
	t.Helper()
	api := newFakeAPI(t, answer)
	admin, err := NewAdmin(api.srv.URL+"/realms/jupyter", &http.Client{Timeout: 5 * time.Second}, staticToken("sa-admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	return api, admin
}

const userID = "0b7e4c1a-1d3f-4a8e-9c55-3f0e2b6a7d10"

func TestAdminSessions(t *testing.T) {
	start := time.Date(2026, 11, 22, 9, 0, 0, 0, time.UTC)
	last := start.Add(90 * time.Minute)
	api, admin := fakeKeycloak(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `[
			{"id":"s-1","username":"alice","userId":%q,"ipAddress":"10.0.0.7","start":%d,"lastAccess":%d,
			 "rememberMe":false,"clients":{"9a1b":"jupyterhub"}},
			{"id":"s-2","username":"alice","userId":%q,"ipAddress":"10.0.0.8","start":%d,"lastAccess":%d,
			 "clients":{"9a1b":"jupyterhub","77c2":"account-console","e0f1":"grafana"}},
			{"id":"s-3"}]`,
			userID, start.UnixMilli(), last.UnixMilli(), userID, start.UnixMilli(), start.UnixMilli())
	})
	got, err := admin.Sessions(context.Background(), userID)
	if err != nil {
		t.Fatalf("Sessions error: %v", err)
	}
	// Keycloak sends clients as a map, so their order is not defined.
	for i := range got {
		slices.Sort(got[i].Clients)
	}
	want := []Session{
		{ID: "s-1", Started: start, LastAccess: last, IPAddress: "10.0.0.7", Clients: []string{"jupyterhub"}},
		{ID: "s-2", Started: start, LastAccess: start, IPAddress: "10.0.0.8", Clients: []string{"account-console", "grafana", "jupyterhub"}},
		{ID: "s-3"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Sessions mismatch (-want +got):\n%s", diff)
	}
	wantReq := []apiRequest{{Method: "GET", Path: "/admin/realms/jupyter/users/" + userID + "/sessions", Authorization: "Bearer sa-admin-token"}}
	if diff := cmp.Diff(wantReq, ignoreAccept(api.requests())); diff != "" {
		t.Errorf("Sessions requests mismatch (-want +got):\n%s", diff)
	}
}

// ignoreAccept drops the Accept header, which gocloak sets as it likes.
func ignoreAccept(reqs []apiRequest) []apiRequest {
	for i := range reqs {
		reqs[i].Accept = ""
	}
	return reqs
}

func TestAdminSessionsEmpty(t *testing.T) {
	_, admin := fakeKeycloak(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `[]`)
	})
	got, err := admin.Sessions(context.Background(), userID)
	if err != nil || got == nil || len(got) != 0 {
		t.Errorf("Sessions with none = %#v, %v; want an empty, non-nil list", got, err)
	}
}

func TestAdminLogoutUser(t *testing.T) {
	api, admin := fakeKeycloak(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	if err := admin.LogoutUser(context.Background(), userID); err != nil {
		t.Fatalf("LogoutUser error: %v", err)
	}
	want := []apiRequest{{Method: "POST", Path: "/admin/realms/jupyter/users/" + userID + "/logout", Authorization: "Bearer sa-admin-token"}}
	if diff := cmp.Diff(want, ignoreAccept(api.requests())); diff != "" {
		t.Errorf("LogoutUser requests mismatch (-want +got):\n%s", diff)
	}
}

func TestAdminErrors(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
		wantStatus  int
	}{
		{name: "forbidden", status: 403, contentType: "application/json", body: `{"error":"HTTP 403 Forbidden"}`, wantStatus: 403},
		{name: "not found", status: 404, contentType: "application/json", body: `{"error":"User not found"}`, wantStatus: 404},
		{name: "HTML 503 from a proxy", status: 503, contentType: "text/html",
			body: `<html><head><title>503 Service Temporarily Unavailable</title></head><body>nginx</body></html>`, wantStatus: 503},
		// The error body does not decode, but the HTTP client still reports
		// the status, so the answer is a 503 like any other.
		{name: "HTML 503 labelled JSON", status: 503, contentType: "application/json",
			body: `<html><body>503</body></html>`, wantStatus: 503},
	}
	calls := []struct {
		op   string
		call func(*Admin) error
	}{
		{op: "sessions", call: func(a *Admin) error { _, err := a.Sessions(context.Background(), userID); return err }},
		{op: "logout", call: func(a *Admin) error { return a.LogoutUser(context.Background(), userID) }},
	}
	for _, tt := range tests {
		for _, c := range calls {
			t.Run(tt.name+"/"+c.op, func(t *testing.T) {
				api, admin := fakeKeycloak(t, func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", tt.contentType)
					w.WriteHeader(tt.status)
					fmt.Fprint(w, tt.body)
				})
				err := c.call(admin)
				var aerr *AdminError
				if !errors.As(err, &aerr) {
					t.Fatalf("%s on HTTP %d: error = %v (%T), want *AdminError", c.op, tt.status, err, err)
				}
				if aerr.Op != c.op || aerr.Status != tt.wantStatus {
					t.Errorf("%s on HTTP %d: AdminError{Op: %q, Status: %d}, want {%q, %d}", c.op, tt.status, aerr.Op, aerr.Status, c.op, tt.wantStatus)
				}
				if aerr.Unwrap() == nil {
					t.Errorf("%s on HTTP %d: AdminError wraps nothing", c.op, tt.status)
				}
				// No retries: the caller owns retrying.
				if n := len(api.requests()); n != 1 {
					t.Errorf("%s on HTTP %d: requests = %d, want 1", c.op, tt.status, n)
				}
			})
		}
	}
}

func TestAdminUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	admin, err := NewAdmin(srv.URL+"/realms/jupyter", &http.Client{Timeout: 5 * time.Second}, staticToken("t"))
	if err != nil {
		t.Fatal(err)
	}
	err = admin.LogoutUser(context.Background(), userID)
	var aerr *AdminError
	if !errors.As(err, &aerr) || aerr.Status != 0 {
		t.Errorf("LogoutUser on a closed server = %v, want *AdminError with Status 0", err)
	}
}

func TestAdminTokenFailure(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {})
	down := errors.New("service account: keycloak down")
	admin, err := NewAdmin(api.srv.URL+"/realms/jupyter", http.DefaultClient,
		func(context.Context) (string, error) { return "", down })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Sessions(context.Background(), userID); !errors.Is(err, down) {
		t.Errorf("Sessions with a failing token = %v, want %v", err, down)
	}
	if err := admin.LogoutUser(context.Background(), userID); !errors.Is(err, down) {
		t.Errorf("LogoutUser with a failing token = %v, want %v", err, down)
	}
	if n := len(api.requests()); n != 0 {
		t.Errorf("requests without a token = %d, want 0", n)
	}
}
