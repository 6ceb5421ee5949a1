package refresh

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// FuzzParseAuthState: ParseAuthState never panics; it fails only with
// ErrNoTokens or a *MalformedError; success means usable tokens with a
// non-zero expiry; and an accepted auth_state survives Apply and parses
// again with the new access token and the old refresh token.
func FuzzParseAuthState(f *testing.F) {
	for _, seed := range []string{
		oauthenticatorState(),
		`null`,
		`{}`,
		`[]`,
		`{"access_token": "` + stateAccess + `", "refresh_token": "` + stateRefresh + `"}`,
		`{"access_token": "` + stateAccess + `", "refresh_token": "opaque", "id_token": null, "token_response": 5}`,
		`{"access_token": 1, "refresh_token": 2}`,
		`{"access_token": "a.b.c", "refresh_token": ""}`,
		`{"access_token": "` + stateAccess + `", "refresh_token": "r", "scope": "openid", "oauth_user": null}`,
	} {
		f.Add([]byte(seed))
	}
	newAccess := testJWT(map[string]any{"exp": 1_900_000_000, "iat": 1_899_999_700})
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ParseAuthState(json.RawMessage(data))
		if err != nil {
			var merr *MalformedError
			if !errors.Is(err, ErrNoTokens) && !errors.As(err, &merr) {
				t.Fatalf("ParseAuthState(%q) error = %v (%T), want ErrNoTokens or *MalformedError", data, err, err)
			}
			return
		}
		if st.AccessClaims.Expiry.IsZero() {
			t.Fatalf("ParseAuthState(%q) succeeded with a zero access expiry", data)
		}
		if st.Access == "" || st.Refresh == "" {
			t.Fatalf("ParseAuthState(%q) succeeded with an empty access or refresh token", data)
		}
		out, err := st.Apply(&oauth2.Token{AccessToken: newAccess, ExpiresIn: 300})
		if err != nil {
			t.Fatalf("Apply() on ParseAuthState(%q): %v", data, err)
		}
		back, err := ParseAuthState(out)
		if err != nil {
			t.Fatalf("ParseAuthState(Apply(ParseAuthState(%q))) error: %v; output %s", data, err, out)
		}
		if back.Access.Reveal() != newAccess || back.Refresh != st.Refresh || back.ID != st.ID {
			t.Fatalf("ParseAuthState(Apply(ParseAuthState(%q))) has the wrong tokens; output %s", data, out)
		}
	})
}

// FuzzParseClaims: ParseClaims never panics, and a nil error implies a
// non-zero expiry.
func FuzzParseClaims(f *testing.F) {
	payload := func(s string) string {
		return "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString([]byte(s)) + ".sig"
	}
	for _, seed := range []string{
		stateAccess,
		stateRefresh,
		"",
		"a.b",
		"a.b.c",
		payload(`{"exp": 1763800300}`),
		payload(`{"exp": 1.5e9, "iat": "x"}`),
		payload(`{"exp": 1e308}`),
		payload(`{"exp": -1e308}`),
		payload(`{"exp": 99999999999}`),
		payload(`{"exp": 0.5}`),
		payload(`{"exp": "1763800300"}`),
		payload(`{"exp": null, "iat": 1}`),
		payload(`[]`),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, jwt string) {
		c, err := ParseClaims(jwt)
		if err != nil {
			return
		}
		if c.Expiry.IsZero() {
			t.Fatalf("ParseClaims(%q) = %+v, nil; want a non-zero expiry", jwt, c)
		}
		if c.Expiry.Before(time.Unix(0, 0)) {
			t.Fatalf("ParseClaims(%q) expiry %v is before 1970", jwt, c.Expiry)
		}
	})
}
