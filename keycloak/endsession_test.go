package keycloak

import (
	"errors"
	"net/http"
	"net/url"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// TestEndSessionAnswer: a 204 ends the session; a 400 invalid_grant says it
// had ended already; anything else is an *EndSessionError that never holds
// the token.
func TestEndSessionAnswer(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		body    string
		wantErr *EndSessionError
	}{
		{name: "ended", status: 204},
		{name: "already ended", status: 400, body: `{"error":"invalid_grant","error_description":"Invalid refresh token"}`},
		{name: "bad client secret", status: 401, body: `{"error":"unauthorized_client","error_description":"Invalid client or Invalid client credentials"}`,
			wantErr: &EndSessionError{Status: 401, Body: `{"error":"unauthorized_client","error_description":"Invalid client or Invalid client credentials"}`}},
		{name: "no token", status: 400, body: `{"error":"invalid_request","error_description":"No refresh token"}`,
			wantErr: &EndSessionError{Status: 400, Body: `{"error":"invalid_request","error_description":"No refresh token"}`}},
		{name: "proxy repeats the token", status: 502, body: "bad gateway for the-refresh",
			wantErr: &EndSessionError{Status: 502, Body: "bad gateway for [token]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := endSessionAnswer(tt.status, []byte(tt.body), config.Secret("the-refresh"))
			var got *EndSessionError
			errors.As(err, &got)
			if (err != nil) != (tt.wantErr != nil) || !cmp.Equal(got, tt.wantErr) {
				t.Errorf("endSessionAnswer(%d) = %v, want %v", tt.status, err, tt.wantErr)
			}
		})
	}
}

// TestEndSessionRequest checks the exact request: one POST to the
// advertised end_session_endpoint, as the hub's client in HTTP Basic, with
// the refresh token in the form.
func TestEndSessionRequest(t *testing.T) {
	kc := newFakeKeycloak(t)
	kc.introspectRespond = func() (int, string, string) { return http.StatusNoContent, "", "" }
	k := New(kc.realm(), "jupyterhub", config.Secret("s3cret"), kc.srv.Client())
	if err := k.EndSession(t.Context(), config.Secret("the-refresh")); err != nil {
		t.Fatalf("EndSession() error: %v", err)
	}
	want := []introspectRequest{{
		Method: http.MethodPost, Path: "/realms/r/protocol/openid-connect/logout",
		ContentType: "application/x-www-form-urlencoded", Accept: "application/json",
		Authorization: "Basic anVweXRlcmh1YjpzM2NyZXQ=", // jupyterhub:s3cret
		Form:          url.Values{"refresh_token": {"the-refresh"}},
	}}
	if diff := cmp.Diff(want, kc.introspectRequests()); diff != "" {
		t.Errorf("EndSession() sent (-want +got):\n%s", diff)
	}
}
