package keycloak

import (
	"errors"
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
