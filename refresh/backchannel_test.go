package refresh

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

const testIssuer = "https://kc.example.org/realms/jupyter"

// logoutSigner signs logout tokens and verifies them like Keycloak's keys would.
type logoutSigner struct {
	signer jose.Signer
	verify LogoutVerifier
}

func newLogoutSigner(t testing.TB, now func() time.Time) logoutSigner {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("logout+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	v := oidc.NewVerifier(testIssuer, &oidc.StaticKeySet{PublicKeys: []crypto.PublicKey{key.Public()}},
		&oidc.Config{ClientID: "jupyterhub", SupportedSigningAlgs: []string{"ES256"}, Now: now})
	return logoutSigner{signer: signer, verify: v.VerifyLogout}
}

func (s logoutSigner) token(t testing.TB, claims map[string]any) string {
	t.Helper()
	b, _ := json.Marshal(claims)
	jws, err := s.signer.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func logoutClaims(now time.Time, jti, sid, aud string) map[string]any {
	return map[string]any{
		"iss": testIssuer, "aud": aud, "iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
		"jti": jti, "sid": sid, "sub": "sub-1",
		"events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}},
	}
}

func TestBackchannelLogout(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	s := newLogoutSigner(t, f.clock)
	f.addUser("alice", true, f.now, "rt-alice") // its access token carries sid "s1"
	if _, err := f.r.Fresh(ctx, "alice", time.Minute); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		raw     string
		wantErr error
		want    []string
	}{
		{"wrong audience", s.token(t, logoutClaims(f.now, "j0", "s1", "other-client")), &LogoutTokenError{}, nil},
		{"unknown session", s.token(t, logoutClaims(f.now, "j1", "s-unknown", "jupyterhub")), nil, nil},
		{"OK", s.token(t, logoutClaims(f.now, "j2", "s1", "jupyterhub")), nil, []string{"alice"}},
		{"replayed jti", s.token(t, logoutClaims(f.now, "j2", "s1", "jupyterhub")), ErrReplayedLogout, nil},
		{"garbage", "not.a.jwt", &LogoutTokenError{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := f.r.BackchannelLogout(ctx, tt.raw, s.verify)
			var lerr *LogoutTokenError
			switch {
			case tt.wantErr == nil && err != nil,
				errors.Is(tt.wantErr, ErrReplayedLogout) && !errors.Is(err, ErrReplayedLogout),
				errors.As(tt.wantErr, &lerr) && !errors.As(err, &lerr):
				t.Fatalf("BackchannelLogout() error = %v, want %v", err, tt.wantErr)
			}
			if len(got) != len(tt.want) || (len(got) > 0 && got[0] != tt.want[0]) {
				t.Errorf("BackchannelLogout() = %v, want %v", got, tt.want)
			}
		})
	}
	if st := string(f.hub.states["alice"]); st != "{}" {
		t.Errorf("alice's auth_state after back-channel logout = %s, want {}", st)
	}
}

func TestBackchannelLogoutLeavesNewerSessionAlone(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	s := newLogoutSigner(t, f.clock)
	f.addUser("alice", true, f.now, "rt-alice")
	if _, err := f.r.Fresh(ctx, "alice", time.Minute); err != nil {
		t.Fatal(err)
	}
	// alice logs in again: her tokens now belong to session s2.
	f.hub.states["alice"] = json.RawMessage(`{"access_token":"` + jwt(map[string]any{"exp": f.now.Add(time.Hour).Unix(), "sid": "s2"}) + `","refresh_token":"rt-2"}`)
	got, err := f.r.BackchannelLogout(ctx, s.token(t, logoutClaims(f.now, "j9", "s1", "jupyterhub")), s.verify)
	if err != nil || len(got) != 0 {
		t.Errorf("BackchannelLogout for the old session = %v, %v; want nobody logged out", got, err)
	}
}

// FuzzBackchannelLogout feeds arbitrary logout tokens to a refresher that
// knows two users and their sessions. Forged, unsigned and tampered tokens
// must log out nobody; only the validly signed seeds may.
func FuzzBackchannelLogout(f *testing.F) {
	fx := newFixture(f)
	s := newLogoutSigner(f, fx.clock)
	other := newLogoutSigner(f, fx.clock) // a key Keycloak never published
	for _, u := range []string{"alice", "bob"} {
		fx.addUser(u, true, fx.now, "rt-"+u) // both in session s1
		if _, err := fx.r.Fresh(context.Background(), u, time.Minute); err != nil {
			f.Fatal(err)
		}
	}
	claims := logoutClaims(fx.now, "seed", "s1", "jupyterhub")
	valid := s.token(f, claims)
	signed := map[string]bool{valid: true}
	parts := strings.Split(valid, ".")
	tampered := map[string]any{}
	for k, v := range claims {
		tampered[k] = v
	}
	tampered["sid"], tampered["jti"] = "s1", "forged"
	payload, _ := json.Marshal(tampered)
	for _, seed := range []string{
		valid, "", "a.b.c",
		parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2], // tampered payload
		base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"logout+jwt"}`)) + "." +
			base64.RawURLEncoding.EncodeToString(payload) + ".", // unsigned
		other.token(f, tampered), // signed by another key
		valid[:len(valid)-3] + "AAA",
		s.token(f, logoutClaims(fx.now, "seed2", "s1", "someone-else")),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		for _, u := range []string{"alice", "bob"} {
			fx.addUser(u, true, fx.now, "rt-"+u)
		}
		writes := fx.hub.writes.Load()
		got, err := fx.r.BackchannelLogout(context.Background(), raw, s.verify)
		if signed[raw] {
			return
		}
		if len(got) > 0 || fx.hub.writes.Load() != writes {
			t.Errorf("token %q logged out %v (err %v)", raw, got, err)
		}
	})
}

// Tokens without a sid (lightweight access tokens, no ID token) are matched
// by subject: the back-channel logout takes effect instead of answering 200
// and doing nothing, and health says such tokens are held.
func TestBackchannelLogoutMatchesTokensWithoutSID(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	s := newLogoutSigner(t, f.clock)
	at := jwt(map[string]any{"iat": f.now.Unix(), "exp": f.now.Add(5 * time.Minute).Unix(), "sub": "sub-1"})
	st, _ := json.Marshal(map[string]any{"access_token": at, "refresh_token": "rt-alice"})
	f.hub.mu.Lock()
	f.hub.states["alice"], f.hub.active["alice"] = st, true
	f.hub.mu.Unlock()
	if _, err := f.r.Fresh(ctx, "alice", time.Minute); err != nil {
		t.Fatal(err)
	}
	if h := f.r.Health(); !hasProblem(h, ProblemNoSessionID) || h.State() != HealthDegraded {
		t.Errorf("Health() with tokens without sid = %+v, want degraded, tokens_without_sid", h)
	}
	got, err := f.r.BackchannelLogout(ctx, s.token(t, logoutClaims(f.now, "j1", "s9", "jupyterhub")), s.verify)
	if err != nil || len(got) != 1 || !f.loggedOut("alice") {
		t.Errorf("BackchannelLogout of a session of alice's subject = %v, %v (logged out %t); want alice logged out",
			got, err, f.loggedOut("alice"))
	}
}
