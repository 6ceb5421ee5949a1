package keycloak

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// storedIdPToken is what Keycloak 26.5's broker token endpoint answers for a
// user who logged in through an OpenID Connect provider with "Store tokens"
// on: the provider's token response as stored, with accessTokenExpiration.
const storedIdPToken = `{"access_token":"idp-access","expires_in":40,"refresh_expires_in":1800,` +
	`"refresh_token":"idp-refresh","token_type":"Bearer","id_token":"idp-id","not-before-policy":0,` +
	`"session_state":"ext-sess","scope":"openid email profile","accessTokenExpiration":1795806077}`

// TestProviderTokenRequest checks the exact request (a GET of the broker
// token endpoint with the user's token, no discovery) and that only the
// provider's access token and expiry are kept.
func TestProviderTokenRequest(t *testing.T) {
	kc := newFakeKeycloak(t)
	k := New(kc.realm(), "jupyterhub", config.Secret("hub-s3cret"), kc.srv.Client())
	tok, err := k.ProviderToken(t.Context(), config.Secret("user-access"), "external")
	if err != nil {
		t.Fatalf("ProviderToken() error: %v", err)
	}
	want := []brokerRequest{{Method: http.MethodGet, Path: "/realms/r/broker/external/token", Authorization: "Bearer user-access"}}
	if diff := cmp.Diff(want, kc.brokerRequests()); diff != "" {
		t.Errorf("ProviderToken() sent (-want +got):\n%s", diff)
	}
	if tok.AccessToken != "idp-access" || tok.Type() != "Bearer" || !tok.Expiry.Equal(time.Unix(1795806077, 0)) {
		t.Errorf("ProviderToken() = %q %q %v, want idp-access Bearer %v", tok.AccessToken, tok.Type(), tok.Expiry, time.Unix(1795806077, 0))
	}
	if tok.RefreshToken != "" {
		t.Errorf("ProviderToken() kept the provider's refresh token")
	}
	for _, key := range []string{"refresh_token", "id_token", "session_state"} {
		if v := tok.Extra(key); v != nil {
			t.Errorf("ProviderToken().Extra(%q) = %v, want nothing kept", key, v)
		}
	}
	if n := kc.discoveryCount() + len(kc.tokenRequests()); n != 0 {
		t.Errorf("discovery and token requests = %d, want 0", n)
	}
}

func TestProviderTokenEscapesTheAlias(t *testing.T) {
	kc := newFakeKeycloak(t)
	k := New(kc.realm(), "jupyterhub", config.Secret("hub-s3cret"), kc.srv.Client())
	if _, err := k.ProviderToken(t.Context(), config.Secret("user-access"), "../../admin?x=1"); err != nil {
		t.Fatalf("ProviderToken() error: %v", err)
	}
	if got, want := kc.brokerRequests()[0].Path, "/realms/r/broker/..%2F..%2Fadmin%3Fx=1/token"; got != want {
		t.Errorf("path = %q, want %q", got, want)
	}
}

// TestProviderTokenFormats: JSON without an expiry, and the form encoding
// some providers (GitHub) answer with and Keycloak stores as it is.
func TestProviderTokenFormats(t *testing.T) {
	tests := []struct {
		name, body, access, typ string
		expiry                  time.Time
	}{
		{name: "json", body: storedIdPToken, access: "idp-access", typ: "Bearer", expiry: time.Unix(1795806077, 0)},
		{name: "json without expiry", body: `{"access_token":"a","token_type":"bearer"}`, access: "a", typ: "Bearer"},
		{name: "form", body: "access_token=gho_abc&scope=repo&token_type=bearer", access: "gho_abc", typ: "Bearer"},
		{name: "no type", body: `{"access_token":"a"}`, access: "a", typ: "Bearer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := newFakeKeycloak(t)
			kc.brokerRespond = func() (int, string, string) { return 200, "application/json", tt.body }
			k := New(kc.realm(), "jupyterhub", config.Secret("hub-s3cret"), kc.srv.Client())
			tok, err := k.ProviderToken(t.Context(), config.Secret("user-access"), "external")
			if err != nil {
				t.Fatalf("ProviderToken() error: %v", err)
			}
			if tok.AccessToken != tt.access || tok.Type() != tt.typ || !tok.Expiry.Equal(tt.expiry) {
				t.Errorf("ProviderToken() = %q %q %v, want %q %q %v", tok.AccessToken, tok.Type(), tok.Expiry, tt.access, tt.typ, tt.expiry)
			}
		})
	}
}

// TestProviderTokenBodyIsBounded: at most 1 MiB of the answer is read.
func TestProviderTokenBodyIsBounded(t *testing.T) {
	kc := newFakeKeycloak(t)
	huge := `{"pad":"` + strings.Repeat("x", 1<<20) + `","access_token":"idp-access"}`
	kc.brokerRespond = func() (int, string, string) { return 200, "application/json", huge }
	k := New(kc.realm(), "jupyterhub", config.Secret("hub-s3cret"), kc.srv.Client())
	var berr *BrokerError
	if _, err := k.ProviderToken(t.Context(), config.Secret("user-access"), "external"); !errors.As(err, &berr) {
		t.Errorf("ProviderToken() with a 1 MiB answer: error = %v, want the answer cut (not valid JSON)", err)
	}
}

// TestProviderTokenRefusals uses Keycloak 26.5's answers word for word.
func TestProviderTokenRefusals(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		contentType string
		body        string
		want        BrokerError
	}{
		{"no read-token role", 403, "application/json",
			`{"errorMessage":"Client [jupyterhub] not authorized to retrieve tokens from identity provider [external]."}`,
			BrokerError{"external", 403, "Client [jupyterhub] not authorized to retrieve tokens from identity provider [external]."}},
		{"token invalid or session ended", 400, "application/json", `{"errorMessage":"Invalid token."}`,
			BrokerError{"external", 400, "Invalid token."}},
		{"never logged in through it", 400, "application/json",
			`{"errorMessage":"User [63d0e243-e278-4234-bfab-13244eb55d4c] is not associated with identity provider [external]."}`,
			BrokerError{"external", 400, "User [63d0e243-e278-4234-bfab-13244eb55d4c] is not associated with identity provider [external]."}},
		{"store tokens off", 400, "application/json",
			`{"errorMessage":"Identity Provider [external] does not support this operation."}`,
			BrokerError{"external", 400, "Identity Provider [external] does not support this operation."}},
		{"provider refused the refresh", 502, "application/json", `{"errorMessage":"Unable to refresh token"}`,
			BrokerError{"external", 502, "Unable to refresh token"}},
		{"error page", 502, "text/html", "<html><body>We are sorry...</body></html>",
			BrokerError{"external", 502, "Bad Gateway"}},
		{"oauth error", 400, "application/json", `{"error":"invalid_request","error_description":"Invalid identity provider"}`,
			BrokerError{"external", 400, "Invalid identity provider"}},
		{"no access token", 200, "application/json", `{"token_type":"Bearer"}`,
			BrokerError{"external", 200, "the stored token response holds no access token"}},
		{"not json", 200, "application/json", `{"access_token":`,
			BrokerError{"external", 200, "the stored token is not valid JSON"}},
		{"control characters", 400, "application/json", `{"errorMessage":"bad\n\u001b[31mline"}`,
			BrokerError{"external", 400, "bad[31mline"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := newFakeKeycloak(t)
			kc.brokerRespond = func() (int, string, string) { return tt.status, tt.contentType, tt.body }
			k := New(kc.realm(), "jupyterhub", config.Secret("hub-s3cret"), kc.srv.Client())
			_, err := k.ProviderToken(t.Context(), config.Secret("user-access"), "external")
			var berr *BrokerError
			if !errors.As(err, &berr) || !Refused(err) {
				t.Fatalf("ProviderToken() on %d %s: error = %v, want *BrokerError", tt.status, tt.body, err)
			}
			if diff := cmp.Diff(tt.want, *berr); diff != "" {
				t.Errorf("BrokerError (-want +got):\n%s", diff)
			}
			if n := len(kc.brokerRequests()); n != 1 {
				t.Errorf("broker requests = %d, want 1", n)
			}
		})
	}
}

// TestProviderTokenUnavailable: 5xx other than 502, 429 and a redirect are
// no refusal.
func TestProviderTokenUnavailable(t *testing.T) {
	for _, status := range []int{500, 503, 504, 429, 307} {
		kc := newFakeKeycloak(t)
		kc.brokerRespond = func() (int, string, string) { return status, "text/html", "<html></html>" }
		k := New(kc.realm(), "jupyterhub", config.Secret("hub-s3cret"), kc.srv.Client())
		_, err := k.ProviderToken(t.Context(), config.Secret("user-access"), "external")
		if err == nil || Refused(err) {
			t.Errorf("ProviderToken() on %d: error = %v, want one that is no refusal", status, err)
		}
	}
}

// TestNoRedirectIsFollowed: Keycloak answering with a 307 to another server
// gets no further, even when the HTTP client given would follow redirects:
// neither the client secret nor a user's token reaches the other server.
func TestNoRedirectIsFollowed(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(exchangedToken))
	}))
	t.Cleanup(other.Close)
	kc := newFakeKeycloak(t)
	following := &http.Client{Timeout: 5 * time.Second} // follows redirects by default
	k := New(kc.realm(), "jupyterhub", config.Secret("hub-s3cret"), following)
	// Every request but discovery is sent elsewhere.
	kc.srv.Config.Handler = redirectAllBut(kc.srv.Config.Handler, "/.well-known/", other.URL)
	calls := map[string]func() error{
		"refresh":        func() error { _, err := k.Refresh(t.Context(), config.Secret("refresh")); return err },
		"exchange":       func() error { _, err := k.Exchange(t.Context(), config.Secret("access"), "trino"); return err },
		"provider token": func() error { _, err := k.ProviderToken(t.Context(), config.Secret("access"), "external"); return err },
	}
	for name, call := range calls {
		if err := call(); err == nil {
			t.Errorf("%s through a redirect: no error", name)
		}
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the redirect target saw %d requests, want 0", n)
	}
}

// redirectAllBut sends every request whose path lacks keep to target.
func redirectAllBut(h http.Handler, keep, target string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, keep) {
			h.ServeHTTP(w, r)
			return
		}
		http.Redirect(w, r, target+r.URL.Path, http.StatusTemporaryRedirect)
	})
}
