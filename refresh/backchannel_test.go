package refresh

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
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

// FuzzBackchannelLogout feeds arbitrary logout tokens through verification:
// nothing panics, and nothing but the one validly signed token logs anyone out.
func FuzzBackchannelLogout(f *testing.F) {
	fx := newFixture(f)
	s := newLogoutSigner(f, fx.clock)
	valid := s.token(f, logoutClaims(fx.now, "seed", "s1", "jupyterhub"))
	f.Add(valid)
	f.Add("")
	f.Add("a.b.c")
	f.Add(valid[:len(valid)-3] + "AAA")
	f.Add(s.token(f, logoutClaims(fx.now, "seed2", "s1", "someone-else")))
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := fx.r.BackchannelLogout(context.Background(), raw, s.verify)
		if raw != valid && (err == nil && len(got) > 0) {
			t.Errorf("token %q logged out %v", raw, got)
		}
	})
}
