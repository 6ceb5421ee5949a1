package refresh

import (
	"bytes"
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// ErrNoTokens means the user has no auth_state tokens: they must log in.
var ErrNoTokens = errors.New("no tokens in auth_state: the user must log in")

// MalformedError says why a user's auth_state cannot be used. The user is
// skipped until their auth_state changes; nothing is written back.
type MalformedError struct{ Reason string }

func (e *MalformedError) Error() string { return "malformed auth_state: " + e.Reason }

func malformed(format string, args ...any) error {
	return &MalformedError{Reason: fmt.Sprintf(format, args...)}
}

// AuthState is a user's auth_state in OAuthenticator's layout: access_token,
// refresh_token, id_token, scope, token_response and the user-info key. Keys
// tokenkeeper does not know are kept as they are.
type AuthState struct {
	raw map[string]json.RawMessage

	// Access, Refresh and ID are the current tokens.
	Access, Refresh, ID config.Secret
	// Access holds its claims; Refresh holds the refresh token's expiry, zero when unknown.
	AccessClaims  Claims
	RefreshExpiry time.Time
	// Session and Subject are Keycloak's sid and sub for these tokens: the
	// access token's, else the ID token's, else the refresh token's. Session
	// is empty when no token carries a sid (a client without Keycloak's
	// basic scope, lightweight access tokens).
	Session, Subject string
}

// Claims are the JWT claims tokenkeeper schedules by.
type Claims struct {
	IssuedAt, Expiry time.Time
	// SessionID is Keycloak's sid: the SSO session the token belongs to.
	SessionID string
	Subject   string
}

// ParseAuthState decodes a user's auth_state. A null or empty object yields
// ErrNoTokens; anything else unusable yields a *MalformedError.
func ParseAuthState(b json.RawMessage) (AuthState, error) {
	var s AuthState
	b = bytes.TrimSpace(b)
	if len(b) == 0 || bytes.Equal(b, []byte("null")) {
		return s, ErrNoTokens
	}
	if err := json.Unmarshal(b, &s.raw); err != nil {
		return s, malformed("not a JSON object")
	}
	if len(s.raw) == 0 {
		return s, ErrNoTokens
	}
	var err error
	if s.Access, err = s.secret("access_token", true); err != nil {
		return s, err
	}
	if s.Refresh, err = s.secret("refresh_token", true); err != nil {
		return s, err
	}
	if s.ID, err = s.secret("id_token", false); err != nil {
		return s, err
	}
	if s.AccessClaims, err = ParseClaims(s.Access.Reveal()); err != nil {
		return s, malformed("access_token: %v", err)
	}
	rc, rerr := ParseClaims(s.Refresh.Reveal())
	if rerr == nil {
		s.RefreshExpiry = rc.Expiry
	}
	s.Session, s.Subject = s.AccessClaims.SessionID, s.AccessClaims.Subject
	ic, ierr := ParseClaims(s.ID.Reveal())
	for _, c := range []struct {
		claims Claims
		err    error
	}{{ic, ierr}, {rc, rerr}} {
		if c.err == nil {
			s.Session, s.Subject = cmp.Or(s.Session, c.claims.SessionID), cmp.Or(s.Subject, c.claims.Subject)
		}
	}
	return s, nil
}

// secret reads a string key; required keys must be non-empty strings.
func (s AuthState) secret(key string, required bool) (config.Secret, error) {
	v, ok := s.raw[key]
	if !ok || bytes.Equal(v, []byte("null")) {
		if required {
			return "", malformed("%s missing", key)
		}
		return "", nil
	}
	var str string
	if err := json.Unmarshal(v, &str); err != nil {
		return "", malformed("%s is not a string", key)
	}
	if required && str == "" {
		return "", malformed("%s is empty", key)
	}
	return config.Secret(str), nil
}

// ParseClaims reads the claims of a JWT without verifying its signature: the
// token comes from the hub's own auth_state, and Keycloak verifies it on use.
func ParseClaims(jwt string) (Claims, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return Claims{}, errors.New("not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return Claims{}, fmt.Errorf("JWT payload: %w", err)
	}
	var c struct {
		Exp *json.Number `json:"exp"`
		Iat *json.Number `json:"iat"`
		Sid string       `json:"sid"`
		Sub string       `json:"sub"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return Claims{}, fmt.Errorf("JWT claims: %w", err)
	}
	exp, err := unixTime(c.Exp)
	if err != nil || exp.IsZero() {
		return Claims{}, errors.New("JWT has no valid exp claim")
	}
	iat, _ := unixTime(c.Iat)
	return Claims{IssuedAt: iat, Expiry: exp, SessionID: c.Sid, Subject: c.Sub}, nil
}

func unixTime(n *json.Number) (time.Time, error) {
	if n == nil {
		return time.Time{}, nil
	}
	f, err := n.Float64()
	if err != nil || f <= 0 || f > 1e11 {
		return time.Time{}, errors.New("bad time claim")
	}
	return time.Unix(int64(f), 0), nil
}

// tokenResponseKeys are the token-endpoint fields copied into token_response.
var tokenResponseKeys = []string{
	"refresh_expires_in", "id_token", "session_state", "scope", "not-before-policy",
}

// Apply returns the auth_state after a refresh grant, in OAuthenticator's
// layout: the top-level tokens and scope, and token_response updated key by
// key so the hub's own code keeps working. The user-info key and unknown keys
// are kept.
func (s AuthState) Apply(tok *oauth2.Token) (json.RawMessage, error) {
	out := make(map[string]json.RawMessage, len(s.raw)+2)
	for k, v := range s.raw {
		out[k] = v
	}
	resp := map[string]json.RawMessage{}
	if tr, ok := s.raw["token_response"]; ok {
		_ = json.Unmarshal(tr, &resp) // a non-object token_response is replaced
	}
	set := func(m map[string]json.RawMessage, k string, v any) {
		m[k], _ = json.Marshal(v)
	}
	set(out, "access_token", tok.AccessToken)
	set(resp, "access_token", tok.AccessToken)
	set(resp, "token_type", firstNonEmpty(tok.TokenType, "Bearer"))
	if tok.ExpiresIn > 0 {
		set(resp, "expires_in", tok.ExpiresIn)
	}
	refresh := firstNonEmpty(tok.RefreshToken, s.Refresh.Reveal())
	set(out, "refresh_token", refresh)
	set(resp, "refresh_token", refresh)
	for _, k := range tokenResponseKeys {
		if v := tok.Extra(k); v != nil {
			set(resp, k, v)
		}
	}
	if id, _ := tok.Extra("id_token").(string); id != "" {
		set(out, "id_token", id)
	}
	if scope, _ := tok.Extra("scope").(string); scope != "" {
		set(out, "scope", strings.Fields(scope))
	}
	set(out, "token_response", resp)
	return json.Marshal(out)
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
