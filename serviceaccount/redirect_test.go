package serviceaccount

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// TestNoRedirectIsFollowed checks that Keycloak or a job API answering with a
// 307 to another server gets no further: the other server never sees a
// request, so neither the client secret nor a token reaches it, even when
// the HTTP client given would follow redirects.
func TestNoRedirectIsFollowed(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token":"stolen","token_type":"Bearer","expires_in":300}`))
	}))
	t.Cleanup(other.Close)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)
	following := &http.Client{Timeout: 5 * time.Second} // follows redirects by default
	endpoint := func(context.Context) (oauth2.Endpoint, error) {
		return oauth2.Endpoint{TokenURL: redirector.URL + tokenPath}, nil
	}
	account := New(context.Background(), following, saClientID, config.Secret(saSecret), endpoint, 15*time.Second)

	jobs := NewJobs(redirector.URL, staticToken("sa-token"), following, time.Minute, time.Now)
	admin, err := NewAdmin(redirector.URL+"/realms/jupyter", following, staticToken("admin-token"))
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"client credentials": func() error { _, err := account.Token(context.Background()); return err },
		"job status":         func() error { _, err := jobs.Status(context.Background(), "daint", "1"); return err },
		"admin sessions":     func() error { _, err := admin.Sessions(context.Background(), userID); return err },
		"admin logout":       func() error { return admin.LogoutUser(context.Background(), userID) },
	}
	for name, call := range calls {
		if err := call(); err == nil {
			t.Errorf("%s through a redirect: no error", name)
		}
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect target saw %d requests, want 0", n)
	}
	var aerr *AdminError
	if _, err := admin.Sessions(context.Background(), userID); !errors.As(err, &aerr) || aerr.Status != 0 {
		t.Errorf("admin sessions through a redirect: error = %v, want an *AdminError without a status", err)
	}
	var rerr *oauth2.RetrieveError
	if _, err := account.Token(context.Background()); !errors.As(err, &rerr) || rerr.Response.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("client credentials through a redirect: error = %v, want a RetrieveError with the 307", err)
	}
}
