package main

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/keycloak"
)

func TestServerTimeouts(t *testing.T) {
	for _, timeout := range []time.Duration{time.Second, 10 * time.Second, time.Minute} {
		cfg := config.Default()
		cfg.HTTPTimeout = config.Duration(timeout)
		srv := newServer(cfg, http.NotFoundHandler())
		for name, d := range map[string]time.Duration{
			"ReadHeaderTimeout": srv.ReadHeaderTimeout, "ReadTimeout": srv.ReadTimeout,
			"WriteTimeout": srv.WriteTimeout, "IdleTimeout": srv.IdleTimeout,
		} {
			if d <= 0 {
				t.Errorf("http_timeout %s: %s = %s, want a limit", timeout, name, d)
			}
		}
		// fresh-token may wait for a grant (3 × http_timeout) between hub calls.
		if srv.WriteTimeout <= 5*timeout {
			t.Errorf("http_timeout %s: WriteTimeout = %s, want more than 5 × http_timeout", timeout, srv.WriteTimeout)
		}
		if srv.MaxHeaderBytes <= 0 || srv.MaxHeaderBytes > 1<<20 {
			t.Errorf("MaxHeaderBytes = %d, want a limit below the 1 MiB default", srv.MaxHeaderBytes)
		}
	}
}

// TestHTTPClientFollowsNoRedirect runs a refresh grant and discovery through
// the daemon's HTTP client against a Keycloak that redirects its token
// endpoint elsewhere: the other server must never see the refresh token or
// the client secret.
func TestHTTPClientFollowsNoRedirect(t *testing.T) {
	elsewhere := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token":"a","token_type":"Bearer","expires_in":300,"refresh_token":"r"}`))
	})
	var issuer string
	kc := newRecorder(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/.well-known/openid-configuration"):
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{
				"issuer": issuer, "authorization_endpoint": issuer + "/auth",
				"token_endpoint": issuer + "/token", "jwks_uri": issuer + "/certs",
			})
		default:
			http.Redirect(w, r, elsewhere.srv.URL+r.URL.Path, http.StatusTemporaryRedirect)
		}
	})
	issuer = kc.srv.URL + "/realms/r"
	cfg := config.Default()
	k := keycloak.New(issuer, "jupyterhub", config.Secret("client-secret"), newHTTPClient(cfg))
	_, err := k.Refresh(context.Background(), config.Secret("refresh-token"))
	if err == nil {
		t.Error("Refresh through a redirecting token endpoint: no error")
	}
	if _, err := k.VerifyLogout(context.Background(), "eyJ0eXAiOiJsb2dvdXQrand0IiwiYWxnIjoiUlMyNTYifQ.e30.c2ln"); err == nil {
		t.Error("VerifyLogout with a redirecting key set: no error")
	}
	// The daemon's client itself hands the redirect back, for every other
	// user of it too.
	resp, err := newHTTPClient(cfg).Post(issuer+"/token", "application/x-www-form-urlencoded", strings.NewReader("grant_type=refresh_token"))
	if err != nil || resp.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("POST through the daemon's client to a redirecting server: %v, %v; want the 307 itself", resp, err)
	}
	if resp != nil {
		resp.Body.Close()
	}
	for _, want := range []string{"/token", "/certs"} {
		if !slices.ContainsFunc(kc.requests(), func(r seen) bool { return strings.HasSuffix(r.Path, want) }) {
			t.Errorf("the fake Keycloak saw no request to %s: %+v", want, kc.requests())
		}
	}
	if got := elsewhere.requests(); len(got) != 0 {
		t.Errorf("the redirect target saw %+v, want nothing", got)
	}
}
