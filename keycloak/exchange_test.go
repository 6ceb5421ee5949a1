package keycloak

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// exchangedToken is Keycloak 26.5's answer to a standard token exchange.
const exchangedToken = `{"access_token":"exchanged-access","expires_in":30,"refresh_expires_in":0,` +
	`"token_type":"Bearer","not-before-policy":0,"session_state":"sess-1","scope":"openid email profile",` +
	`"issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}`

// TestExchangeRequest checks the exact request: one POST with the client's
// credentials in the Authorization header (the client As names, sharing the
// first client's discovery), the subject token, and the audience.
func TestExchangeRequest(t *testing.T) {
	kc := newFakeKeycloak(t)
	kc.respond = func(int) (int, string) { return http.StatusOK, exchangedToken }
	hub := New(kc.realm(), "jupyterhub", config.Secret("hub-s3cret"), kc.srv.Client())
	sa := hub.As("tokenkeeper-sa", config.Secret("sa-s3cret"))
	for _, c := range []struct {
		k          *Client
		user, pass string
	}{{hub, "jupyterhub", "hub-s3cret"}, {sa, "tokenkeeper-sa", "sa-s3cret"}} {
		before := time.Now()
		tok, err := c.k.Exchange(t.Context(), config.Secret("user-access"), "trino")
		if err != nil {
			t.Fatalf("Exchange() as %s: %v", c.user, err)
		}
		if tok.AccessToken != "exchanged-access" || tok.Expiry.Before(before.Add(30*time.Second)) || tok.Expiry.After(time.Now().Add(30*time.Second)) {
			t.Errorf("Exchange() as %s = %q expiring %v, want exchanged-access in 30 s", c.user, tok.AccessToken, tok.Expiry)
		}
		want := tokenRequest{
			Method: http.MethodPost, ContentType: "application/x-www-form-urlencoded",
			User: c.user, Pass: c.pass, BasicAuth: true,
			Form: url.Values{
				"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":        {"user-access"},
				"subject_token_type":   {"urn:ietf:params:oauth:token-type:access_token"},
				"requested_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
				"audience":             {"trino"},
			},
		}
		reqs := kc.tokenRequests()
		if diff := cmp.Diff(want, reqs[len(reqs)-1]); diff != "" {
			t.Errorf("Exchange() as %s sent (-want +got):\n%s", c.user, diff)
		}
	}
	if n := len(kc.tokenRequests()); n != 2 {
		t.Errorf("token requests = %d, want 2", n)
	}
	if n := kc.discoveryCount(); n != 1 {
		t.Errorf("discovery requests = %d, want 1 (shared by As)", n)
	}
}

// TestExchangeRefusals uses Keycloak 26.5's answers word for word: each is an
// *ExchangeError with Keycloak's code and description, sent once.
func TestExchangeRefusals(t *testing.T) {
	tests := []struct {
		name   string
		status int
		code   string
		desc   string
	}{
		{"audience not in the token", 400, "invalid_request", "Requested audience not available: account"},
		{"no such client", 400, "invalid_client", "Audience not found"},
		{"subject token invalid or its session ended", 400, "invalid_request", "Invalid token"},
		{"wrong client secret", 401, "unauthorized_client", "Invalid client or Invalid client credentials"},
		{"exchange not enabled", 400, "invalid_request", "Standard token exchange is not enabled for the requested client"},
		{"requester not in the subject's audience", 403, "access_denied", "Client is not within the token audience"},
		{"control characters", 400, "invalid_request\n", "bad\n\u001b[31mline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := newFakeKeycloak(t)
			b, _ := json.Marshal(map[string]string{"error": tt.code, "error_description": tt.desc})
			body := string(b)
			kc.respond = func(int) (int, string) { return tt.status, body }
			k := New(kc.realm(), "jupyterhub", config.Secret("hub-s3cret"), kc.srv.Client())
			_, err := k.Exchange(t.Context(), config.Secret("user-access"), "trino")
			var xerr *ExchangeError
			if !errors.As(err, &xerr) || !Refused(err) {
				t.Fatalf("Exchange() on %d %s: error = %v, want *ExchangeError", tt.status, body, err)
			}
			want := ExchangeError{Audience: "trino", Status: tt.status, Code: printable(tt.code), Description: printable(tt.desc)}
			if tt.name == "control characters" && (want.Code != "invalid_request" || want.Description != "bad[31mline") {
				t.Fatalf("printable does not strip control characters: %q %q", want.Code, want.Description)
			}
			if diff := cmp.Diff(want, *xerr, cmpopts.IgnoreFields(ExchangeError{}, "Err")); diff != "" {
				t.Errorf("ExchangeError (-want +got):\n%s", diff)
			}
			if !errors.As(err, new(*oauth2.RetrieveError)) {
				t.Errorf("ExchangeError does not unwrap to the *oauth2.RetrieveError")
			}
			if n := len(kc.tokenRequests()); n != 1 {
				t.Errorf("token requests = %d, want 1 (never re-sent)", n)
			}
		})
	}
}

// TestExchangeUnavailable: 5xx, 429 and a redirect are no refusal.
func TestExchangeUnavailable(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
	}{
		{"503 html", 503, "<html><body>Service Unavailable</body></html>"},
		{"500 unknown_error", 500, `{"error":"unknown_error"}`},
		{"429", 429, `{"error":"slow_down"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kc := newFakeKeycloak(t)
			kc.respond = func(int) (int, string) { return tt.status, tt.body }
			k := New(kc.realm(), "jupyterhub", config.Secret("hub-s3cret"), kc.srv.Client())
			_, err := k.Exchange(t.Context(), config.Secret("user-access"), "trino")
			var rerr *oauth2.RetrieveError
			if Refused(err) || !errors.As(err, &rerr) || rerr.Response.StatusCode != tt.status {
				t.Errorf("Exchange() on %d: error = %v, want a wrapped *oauth2.RetrieveError, no refusal", tt.status, err)
			}
			if n := len(kc.tokenRequests()); n != 1 {
				t.Errorf("token requests = %d, want 1", n)
			}
		})
	}
	kc := newFakeKeycloak(t)
	realm := kc.realm()
	k := New(realm, "jupyterhub", config.Secret("hub-s3cret"), kc.srv.Client())
	if _, err := k.Endpoint(t.Context()); err != nil {
		t.Fatal(err)
	}
	kc.srv.Close()
	if _, err := k.Exchange(t.Context(), config.Secret("user-access"), "trino"); Refused(err) || !errors.As(err, new(*url.Error)) {
		t.Errorf("Exchange() against a closed server: error = %v, want a *url.Error, no refusal", err)
	}
}

// TestPrintable: Keycloak's texts are passed on without control characters
// and at most 200 bytes, cut between characters.
func TestPrintable(t *testing.T) {
	long := strings.Repeat("é", 150) // 300 bytes
	tests := []struct{ in, want string }{
		{"Requested audience not available: trino", "Requested audience not available: trino"},
		{"line\nbreak\r\x1b[31mred\x00", "linebreak[31mred"},
		{long, strings.Repeat("é", 100)},
		{strings.Repeat("a", 199) + "é", strings.Repeat("a", 199)},
	}
	for _, tt := range tests {
		if got := printable(tt.in); got != tt.want {
			t.Errorf("printable(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
