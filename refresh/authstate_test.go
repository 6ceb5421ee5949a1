package refresh

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// testJWT returns a JWT with the given claims; the signature is junk, as
// tokenkeeper never verifies it.
func testJWT(claims map[string]any) string {
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT","kid":"k1"}`))
	body, err := json.Marshal(claims)
	if err != nil {
		panic(err)
	}
	return header + "." + base64.RawURLEncoding.EncodeToString(body) + ".c2lnbmF0dXJl"
}

// Times and tokens of the auth_state in the OAuthenticator layout below.
var (
	stateIAT        = time.Unix(1_763_800_000, 0)
	stateExp        = stateIAT.Add(5 * time.Minute)
	stateRefreshExp = stateIAT.Add(30 * time.Minute)
	stateAccess     = testJWT(map[string]any{
		"exp": stateExp.Unix(), "iat": stateIAT.Unix(), "sid": "sess-1", "sub": "user-uuid-1",
		"typ": "Bearer", "azp": "jupyterhub", "preferred_username": "alice",
	})
	stateRefresh = testJWT(map[string]any{
		"exp": stateRefreshExp.Unix(), "iat": stateIAT.Unix(), "sid": "sess-1", "typ": "Refresh",
	})
	stateID = testJWT(map[string]any{
		"exp": stateExp.Unix(), "iat": stateIAT.Unix(), "typ": "ID", "aud": "jupyterhub",
	})
)

// oauthenticatorState is an auth_state as GenericOAuthenticator writes it,
// with one key tokenkeeper does not know.
func oauthenticatorState() string {
	return `{
  "access_token": "` + stateAccess + `",
  "refresh_token": "` + stateRefresh + `",
  "id_token": "` + stateID + `",
  "scope": ["openid", "profile", "email"],
  "token_response": {
    "access_token": "` + stateAccess + `",
    "expires_in": 300,
    "refresh_expires_in": 1800,
    "refresh_token": "` + stateRefresh + `",
    "token_type": "Bearer",
    "id_token": "` + stateID + `",
    "not-before-policy": 0,
    "session_state": "sess-1",
    "scope": "openid profile email",
    "x-custom": {"kept": true}
  },
  "oauth_user": {"sub": "user-uuid-1", "preferred_username": "alice", "groups": ["/hpc", "/gpu"], "email_verified": true},
  "site_extra": [1, "two", {"three": 3}]
}`
}

var ignoreRaw = cmpopts.IgnoreUnexported(AuthState{})

func TestParseAuthStateOAuthenticatorLayout(t *testing.T) {
	got, err := ParseAuthState(json.RawMessage(oauthenticatorState()))
	if err != nil {
		t.Fatalf("ParseAuthState(layout) error: %v", err)
	}
	want := AuthState{
		Access:  config.Secret(stateAccess),
		Refresh: config.Secret(stateRefresh),
		ID:      config.Secret(stateID),
		AccessClaims: Claims{
			IssuedAt: stateIAT, Expiry: stateExp, SessionID: "sess-1", Subject: "user-uuid-1",
		},
		RefreshExpiry: stateRefreshExp,
		Session:       "sess-1", Subject: "user-uuid-1",
	}
	if diff := cmp.Diff(want, got, ignoreRaw); diff != "" {
		t.Errorf("ParseAuthState(layout) mismatch (-want +got):\n%s", diff)
	}
}

func TestParseAuthStateOptionalParts(t *testing.T) {
	opaqueRefresh := "opaque-refresh-token"
	offline := testJWT(map[string]any{"iat": stateIAT.Unix(), "typ": "Offline"})
	tests := []struct {
		name  string
		state string
		want  AuthState
	}{
		{
			name:  "id_token null",
			state: `{"access_token": "` + stateAccess + `", "refresh_token": "` + stateRefresh + `", "id_token": null}`,
			want:  AuthState{Access: config.Secret(stateAccess), Refresh: config.Secret(stateRefresh), RefreshExpiry: stateRefreshExp},
		},
		{
			name:  "id_token absent",
			state: `{"access_token": "` + stateAccess + `", "refresh_token": "` + stateRefresh + `"}`,
			want:  AuthState{Access: config.Secret(stateAccess), Refresh: config.Secret(stateRefresh), RefreshExpiry: stateRefreshExp},
		},
		{
			name:  "opaque refresh token has no known expiry",
			state: `{"access_token": "` + stateAccess + `", "refresh_token": "` + opaqueRefresh + `"}`,
			want:  AuthState{Access: config.Secret(stateAccess), Refresh: config.Secret(opaqueRefresh)},
		},
		{
			name:  "offline token without exp",
			state: `{"access_token": "` + stateAccess + `", "refresh_token": "` + offline + `"}`,
			want:  AuthState{Access: config.Secret(stateAccess), Refresh: config.Secret(offline)},
		},
		{
			name:  "surrounding whitespace",
			state: "\n\t {\"access_token\": \"" + stateAccess + "\", \"refresh_token\": \"" + stateRefresh + "\"} \n",
			want:  AuthState{Access: config.Secret(stateAccess), Refresh: config.Secret(stateRefresh), RefreshExpiry: stateRefreshExp},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.want.AccessClaims = Claims{IssuedAt: stateIAT, Expiry: stateExp, SessionID: "sess-1", Subject: "user-uuid-1"}
			tt.want.Session, tt.want.Subject = "sess-1", "user-uuid-1"
			got, err := ParseAuthState(json.RawMessage(tt.state))
			if err != nil {
				t.Fatalf("ParseAuthState(%s) error: %v", tt.state, err)
			}
			if diff := cmp.Diff(tt.want, got, ignoreRaw); diff != "" {
				t.Errorf("ParseAuthState(%s) mismatch (-want +got):\n%s", tt.state, diff)
			}
		})
	}
}

func TestParseAuthStateNoTokens(t *testing.T) {
	for _, in := range []string{"", "   ", "null", " null\n", "{}", " { } "} {
		_, err := ParseAuthState(json.RawMessage(in))
		if !errors.Is(err, ErrNoTokens) {
			t.Errorf("ParseAuthState(%q) error = %v, want ErrNoTokens", in, err)
		}
	}
}

func TestParseAuthStateMalformed(t *testing.T) {
	noExp := testJWT(map[string]any{"iat": stateIAT.Unix(), "sub": "x"})
	negExp := testJWT(map[string]any{"exp": -5})
	millisExp := testJWT(map[string]any{"exp": stateExp.UnixMilli()})
	stringExp := testJWT(map[string]any{"exp": "soon"})
	state := func(access, refresh string) string {
		return `{"access_token": ` + access + `, "refresh_token": ` + refresh + `}`
	}
	q := func(s string) string { return `"` + s + `"` }
	tests := []struct {
		name  string
		state string
		// reason is a substring of MalformedError.Reason.
		reason string
	}{
		{name: "array", state: `[]`, reason: "not a JSON object"},
		{name: "string", state: `"access_token"`, reason: "not a JSON object"},
		{name: "number", state: `42`, reason: "not a JSON object"},
		{name: "boolean", state: `true`, reason: "not a JSON object"},
		{name: "truncated", state: `{"access_token": "a"`, reason: "not a JSON object"},
		{name: "only oauth_user", state: `{"oauth_user": {"sub": "x"}}`, reason: "access_token missing"},
		{name: "missing refresh_token", state: `{"access_token": ` + q(stateAccess) + `}`, reason: "refresh_token missing"},
		{name: "null refresh_token", state: state(q(stateAccess), `null`), reason: "refresh_token missing"},
		{name: "missing access_token", state: `{"refresh_token": ` + q(stateRefresh) + `}`, reason: "access_token missing"},
		{name: "null access_token", state: state(`null`, q(stateRefresh)), reason: "access_token missing"},
		{name: "empty access_token", state: state(`""`, q(stateRefresh)), reason: "access_token is empty"},
		{name: "empty refresh_token", state: state(q(stateAccess), `""`), reason: "refresh_token is empty"},
		{name: "numeric access_token", state: state(`12345`, q(stateRefresh)), reason: "access_token is not a string"},
		{name: "numeric refresh_token", state: state(q(stateAccess), `12345`), reason: "refresh_token is not a string"},
		{name: "object access_token", state: state(`{"jwt": "x"}`, q(stateRefresh)), reason: "access_token is not a string"},
		{name: "list refresh_token", state: state(q(stateAccess), `["r"]`), reason: "refresh_token is not a string"},
		{name: "numeric id_token", state: `{"access_token": ` + q(stateAccess) + `, "refresh_token": ` + q(stateRefresh) + `, "id_token": 7}`, reason: "id_token is not a string"},
		{name: "access_token not a JWT", state: state(q("opaque"), q(stateRefresh)), reason: "access_token"},
		{name: "access_token with two parts", state: state(q("a.b"), q(stateRefresh)), reason: "access_token"},
		{name: "access_token payload not base64", state: state(q("a.!!!.c"), q(stateRefresh)), reason: "access_token"},
		{name: "access_token payload not JSON", state: state(q("a."+base64.RawURLEncoding.EncodeToString([]byte("nope"))+".c"), q(stateRefresh)), reason: "access_token"},
		{name: "access_token without exp", state: state(q(noExp), q(stateRefresh)), reason: "access_token"},
		{name: "access_token with negative exp", state: state(q(negExp), q(stateRefresh)), reason: "access_token"},
		{name: "access_token with exp in milliseconds", state: state(q(millisExp), q(stateRefresh)), reason: "access_token"},
		{name: "access_token with string exp", state: state(q(stringExp), q(stateRefresh)), reason: "access_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseAuthState(json.RawMessage(tt.state))
			var merr *MalformedError
			if !errors.As(err, &merr) {
				t.Fatalf("ParseAuthState(%s) error = %v, want *MalformedError", tt.state, err)
			}
			if !strings.Contains(merr.Reason, tt.reason) {
				t.Errorf("ParseAuthState(%s) reason = %q, want it to contain %q", tt.state, merr.Reason, tt.reason)
			}
			if errors.Is(err, ErrNoTokens) {
				t.Errorf("ParseAuthState(%s) error = %v, is also ErrNoTokens", tt.state, err)
			}
			if strings.Contains(err.Error(), stateRefresh) || strings.Contains(err.Error(), stateAccess) {
				t.Errorf("ParseAuthState(%s) error %q repeats a token", tt.state, err)
			}
		})
	}
}

func TestMalformedErrorMessage(t *testing.T) {
	err := error(&MalformedError{Reason: "refresh_token missing"})
	if got, want := err.Error(), "malformed auth_state: refresh_token missing"; got != want {
		t.Errorf("MalformedError.Error() = %q, want %q", got, want)
	}
}

func TestParseClaims(t *testing.T) {
	enc := func(payload string) string {
		return "eyJhbGciOiJub25lIn0." + base64.RawURLEncoding.EncodeToString([]byte(payload)) + ".sig"
	}
	tests := []struct {
		name    string
		jwt     string
		want    Claims
		wantErr bool
	}{
		{
			name: "keycloak access token",
			jwt:  stateAccess,
			want: Claims{IssuedAt: stateIAT, Expiry: stateExp, SessionID: "sess-1", Subject: "user-uuid-1"},
		},
		{name: "exp only", jwt: enc(`{"exp": 1763800300}`), want: Claims{Expiry: time.Unix(1763800300, 0)}},
		{name: "exp as float", jwt: enc(`{"exp": 1763800300.75, "iat": 1.7638e9}`), want: Claims{Expiry: time.Unix(1763800300, 0), IssuedAt: time.Unix(1763800000, 0)}},
		{name: "exp in exponent form", jwt: enc(`{"exp": 1.7638003e9}`), want: Claims{Expiry: time.Unix(1763800300, 0)}},
		{name: "bad iat is ignored", jwt: enc(`{"exp": 1763800300, "iat": -1}`), want: Claims{Expiry: time.Unix(1763800300, 0)}},
		{name: "padded payload", jwt: "h." + base64.URLEncoding.EncodeToString([]byte(`{"exp":17638003}`)) + ".s", want: Claims{Expiry: time.Unix(17638003, 0)}},
		{name: "empty signature", jwt: "h." + base64.RawURLEncoding.EncodeToString([]byte(`{"exp":1763800300}`)) + ".", want: Claims{Expiry: time.Unix(1763800300, 0)}},
		{name: "empty", jwt: "", wantErr: true},
		{name: "opaque", jwt: "2b7e151628aed2a6abf7158809cf4f3c", wantErr: true},
		{name: "two parts", jwt: "a.b", wantErr: true},
		{name: "four parts", jwt: stateAccess + ".x", wantErr: true},
		{name: "standard base64 alphabet", jwt: "h.eyJ+/w.s", wantErr: true},
		{name: "payload not JSON", jwt: enc(`exp=1`), wantErr: true},
		{name: "payload a list", jwt: enc(`[1763800300]`), wantErr: true},
		{name: "payload null", jwt: enc(`null`), wantErr: true},
		{name: "no exp", jwt: enc(`{"iat": 1763800000}`), wantErr: true},
		{name: "exp zero", jwt: enc(`{"exp": 0}`), wantErr: true},
		{name: "exp negative", jwt: enc(`{"exp": -1}`), wantErr: true},
		{name: "exp in milliseconds", jwt: enc(`{"exp": 1763800300000}`), wantErr: true},
		{name: "exp a word", jwt: enc(`{"exp": "soon"}`), wantErr: true},
		{name: "exp an object", jwt: enc(`{"exp": {}}`), wantErr: true},
		{name: "sid a number", jwt: enc(`{"exp": 1763800300, "sid": 5}`), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseClaims(tt.jwt)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseClaims(%q) = %+v, %v; want error %t", tt.jwt, got, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseClaims(%q) mismatch (-want +got):\n%s", tt.jwt, diff)
			}
		})
	}
}

// decodeJSON decodes b for comparison, keeping numbers exact.
func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	return m
}

func TestApplyFullTokenResponse(t *testing.T) {
	st, err := ParseAuthState(json.RawMessage(oauthenticatorState()))
	if err != nil {
		t.Fatal(err)
	}
	newIAT := stateIAT.Add(4 * time.Minute)
	newAccess := testJWT(map[string]any{"exp": newIAT.Add(5 * time.Minute).Unix(), "iat": newIAT.Unix(), "sid": "sess-1"})
	newRefresh := testJWT(map[string]any{"exp": newIAT.Add(30 * time.Minute).Unix(), "typ": "Refresh"})
	newID := testJWT(map[string]any{"exp": newIAT.Add(5 * time.Minute).Unix(), "typ": "ID"})
	tok := (&oauth2.Token{
		AccessToken:  newAccess,
		TokenType:    "Bearer",
		RefreshToken: newRefresh,
		ExpiresIn:    300,
		Expiry:       newIAT.Add(5 * time.Minute),
	}).WithExtra(map[string]any{
		"access_token":       newAccess,
		"token_type":         "Bearer",
		"refresh_token":      newRefresh,
		"expires_in":         300.0,
		"refresh_expires_in": 1800.0,
		"id_token":           newID,
		"session_state":      "sess-1",
		"scope":              "openid profile email offline_access",
		"not-before-policy":  0.0,
	})
	out, err := st.Apply(tok)
	if err != nil {
		t.Fatalf("Apply() error: %v", err)
	}
	want := `{
  "access_token": "` + newAccess + `",
  "refresh_token": "` + newRefresh + `",
  "id_token": "` + newID + `",
  "scope": ["openid", "profile", "email", "offline_access"],
  "token_response": {
    "access_token": "` + newAccess + `",
    "expires_in": 300,
    "refresh_expires_in": 1800,
    "refresh_token": "` + newRefresh + `",
    "token_type": "Bearer",
    "id_token": "` + newID + `",
    "not-before-policy": 0,
    "session_state": "sess-1",
    "scope": "openid profile email offline_access",
    "x-custom": {"kept": true}
  },
  "oauth_user": {"sub": "user-uuid-1", "preferred_username": "alice", "groups": ["/hpc", "/gpu"], "email_verified": true},
  "site_extra": [1, "two", {"three": 3}]
}`
	if diff := cmp.Diff(decodeJSON(t, []byte(want)), decodeJSON(t, out)); diff != "" {
		t.Errorf("Apply() mismatch (-want +got):\n%s", diff)
	}
}

func TestApplyWithoutNewRefreshOrIDToken(t *testing.T) {
	st, err := ParseAuthState(json.RawMessage(oauthenticatorState()))
	if err != nil {
		t.Fatal(err)
	}
	newAccess := testJWT(map[string]any{"exp": stateExp.Add(time.Minute).Unix(), "iat": stateIAT.Add(time.Minute).Unix()})
	tok := (&oauth2.Token{AccessToken: newAccess, ExpiresIn: 240}).WithExtra(map[string]any{
		"access_token": newAccess,
		"expires_in":   240.0,
	})
	out, err := st.Apply(tok)
	if err != nil {
		t.Fatalf("Apply() error: %v", err)
	}
	// token_type defaults to Bearer; the old refresh token, id_token and
	// scope stay; token_response keys the grant did not return are kept.
	want := `{
  "access_token": "` + newAccess + `",
  "refresh_token": "` + stateRefresh + `",
  "id_token": "` + stateID + `",
  "scope": ["openid", "profile", "email"],
  "token_response": {
    "access_token": "` + newAccess + `",
    "expires_in": 240,
    "refresh_expires_in": 1800,
    "refresh_token": "` + stateRefresh + `",
    "token_type": "Bearer",
    "id_token": "` + stateID + `",
    "not-before-policy": 0,
    "session_state": "sess-1",
    "scope": "openid profile email",
    "x-custom": {"kept": true}
  },
  "oauth_user": {"sub": "user-uuid-1", "preferred_username": "alice", "groups": ["/hpc", "/gpu"], "email_verified": true},
  "site_extra": [1, "two", {"three": 3}]
}`
	if diff := cmp.Diff(decodeJSON(t, []byte(want)), decodeJSON(t, out)); diff != "" {
		t.Errorf("Apply() mismatch (-want +got):\n%s", diff)
	}
}

func TestApplyKeepsUserInfoByteForByte(t *testing.T) {
	in := `{"access_token": "` + stateAccess + `", "refresh_token": "` + stateRefresh + `",` +
		`"oauth_user": {"name":"Ä\u00e9","n":12345678901234567890,"f":1.50}, "token_response": "not an object"}`
	st, err := ParseAuthState(json.RawMessage(in))
	if err != nil {
		t.Fatal(err)
	}
	out, err := st.Apply(&oauth2.Token{AccessToken: stateAccess, RefreshToken: "r2"})
	if err != nil {
		t.Fatalf("Apply() error: %v", err)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if want := `{"name":"Ä\u00e9","n":12345678901234567890,"f":1.50}`; string(got["oauth_user"]) != want {
		t.Errorf("Apply() oauth_user = %s, want %s", got["oauth_user"], want)
	}
	// A token_response that is not an object is replaced by one.
	wantResp := map[string]any{"access_token": stateAccess, "token_type": "Bearer", "refresh_token": "r2"}
	if diff := cmp.Diff(wantResp, decodeJSON(t, got["token_response"])); diff != "" {
		t.Errorf("Apply() token_response mismatch (-want +got):\n%s", diff)
	}
}

func TestApplyRoundTrip(t *testing.T) {
	st, err := ParseAuthState(json.RawMessage(oauthenticatorState()))
	if err != nil {
		t.Fatal(err)
	}
	newExp := stateExp.Add(10 * time.Minute)
	newAccess := testJWT(map[string]any{"exp": newExp.Unix(), "iat": stateIAT.Add(10 * time.Minute).Unix(), "sid": "sess-1", "sub": "user-uuid-1"})
	out, err := st.Apply(&oauth2.Token{AccessToken: newAccess, RefreshToken: "rotated", TokenType: "bearer"})
	if err != nil {
		t.Fatalf("Apply() error: %v", err)
	}
	back, err := ParseAuthState(out)
	if err != nil {
		t.Fatalf("ParseAuthState(Apply()) error: %v", err)
	}
	if back.Access.Reveal() != newAccess || back.Refresh.Reveal() != "rotated" || back.ID.Reveal() != stateID {
		t.Errorf("ParseAuthState(Apply()) tokens = %q, %q, %q; want the new access, the rotated refresh and the old id token",
			back.Access.Reveal(), back.Refresh.Reveal(), back.ID.Reveal())
	}
	if !back.AccessClaims.Expiry.Equal(newExp) {
		t.Errorf("ParseAuthState(Apply()) expiry = %v, want %v", back.AccessClaims.Expiry, newExp)
	}
	if tt := decodeJSON(t, out)["token_response"].(map[string]any)["token_type"]; tt != "bearer" {
		t.Errorf("Apply() token_response.token_type = %v, want the grant's %q", tt, "bearer")
	}
}

func TestApplyDoesNotChangeReceiver(t *testing.T) {
	st, err := ParseAuthState(json.RawMessage(oauthenticatorState()))
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.Apply(&oauth2.Token{AccessToken: "a1", RefreshToken: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Apply(&oauth2.Token{AccessToken: "a2"}); err != nil {
		t.Fatal(err)
	}
	again, err := st.Apply(&oauth2.Token{AccessToken: "a1", RefreshToken: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(decodeJSON(t, first), decodeJSON(t, again)); diff != "" {
		t.Errorf("Apply() changed its receiver; second result differs (-first +again):\n%s", diff)
	}
	if st.Refresh.Reveal() != stateRefresh {
		t.Errorf("after Apply(), Refresh = %q, want the parsed one", st.Refresh.Reveal())
	}
}

// The session a back-channel logout matches comes from the access token,
// else the ID token, else the refresh token: lightweight access tokens and
// clients without Keycloak's basic scope carry no sid.
func TestAuthStateSessionFallsBack(t *testing.T) {
	exp := stateExp.Unix()
	noSID := testJWT(map[string]any{"exp": exp, "iat": stateIAT.Unix()})
	idSID := testJWT(map[string]any{"exp": exp, "sid": "from-id", "sub": "sub-id"})
	rtSID := testJWT(map[string]any{"exp": exp, "sid": "from-refresh", "sub": "sub-rt"})
	for _, tc := range []struct {
		name, state, session, subject string
	}{
		{"access token's", `{"access_token": "` + stateAccess + `", "refresh_token": "` + rtSID + `", "id_token": "` + idSID + `"}`, "sess-1", "user-uuid-1"},
		{"ID token's", `{"access_token": "` + noSID + `", "refresh_token": "` + rtSID + `", "id_token": "` + idSID + `"}`, "from-id", "sub-id"},
		{"refresh token's", `{"access_token": "` + noSID + `", "refresh_token": "` + rtSID + `"}`, "from-refresh", "sub-rt"},
		{"none", `{"access_token": "` + noSID + `", "refresh_token": "opaque"}`, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := ParseAuthState(json.RawMessage(tc.state))
			if err != nil {
				t.Fatal(err)
			}
			if st.Session != tc.session || st.Subject != tc.subject {
				t.Errorf("Session, Subject = %q, %q; want %q, %q", st.Session, st.Subject, tc.session, tc.subject)
			}
		})
	}
}

// sameSession matches by sid when both sides have one, else by subject.
func TestSameSession(t *testing.T) {
	for _, tc := range []struct {
		stSID, stSub, sid, sub string
		want                   bool
	}{
		{"s1", "u1", "s1", "u1", true},
		{"s2", "u1", "s1", "u1", false}, // another session of the same user
		{"", "u1", "s1", "u1", true},    // tokens without sid: every session of the user
		{"", "u2", "s1", "u1", false},
		{"s1", "u1", "", "u1", true}, // a logout of all the subject's sessions
		{"", "", "s1", "", false},
	} {
		st := AuthState{Session: tc.stSID, Subject: tc.stSub}
		if got := sameSession(st, tc.sid, tc.sub); got != tc.want {
			t.Errorf("sameSession(%+v, %q, %q) = %t, want %t", tc, tc.sid, tc.sub, got, tc.want)
		}
	}
}
