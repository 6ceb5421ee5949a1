package keycloak

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// logoutRealm serves a realm's discovery document and key set, counting the
// key set's fetches, and signs logout tokens.
type logoutRealm struct {
	srv *httptest.Server

	mu      sync.Mutex // guards keys and fetches
	keys    map[string]*ecdsa.PrivateKey
	fetches int
}

func newLogoutRealm(t *testing.T, kids ...string) *logoutRealm {
	t.Helper()
	r := &logoutRealm{keys: map[string]*ecdsa.PrivateKey{}}
	for _, kid := range kids {
		r.addKey(t, kid)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /realms/r/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                r.issuer(),
			"authorization_endpoint":                r.issuer() + "/protocol/openid-connect/auth",
			"token_endpoint":                        r.issuer() + "/protocol/openid-connect/token",
			"jwks_uri":                              r.issuer() + "/protocol/openid-connect/certs",
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256", "HS256"},
		})
	})
	mux.HandleFunc("GET /realms/r/protocol/openid-connect/certs", r.certs)
	r.srv = httptest.NewServer(mux)
	t.Cleanup(r.srv.Close)
	return r
}

func (r *logoutRealm) issuer() string { return r.srv.URL + "/realms/r" }

func (r *logoutRealm) addKey(t *testing.T, kid string) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys[kid] = key
	return key
}

func (r *logoutRealm) certs(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fetches++
	set := jose.JSONWebKeySet{}
	for kid, key := range r.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: key.Public(), KeyID: kid, Algorithm: "ES256", Use: "sig"})
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(set)
}

func (r *logoutRealm) fetchCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fetches
}

// sign signs claims with key under kid, with the JOSE typ header typ ("" for none).
func sign(t *testing.T, key *ecdsa.PrivateKey, kid, typ string, claims map[string]any) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	if typ != "" {
		opts = opts.WithType(jose.ContentType(typ))
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	jws, err := signer.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// realmLogoutClaims are Keycloak's logout token claims, issued at iat.
func (r *logoutRealm) claims(iat time.Time, jti string) map[string]any {
	return map[string]any{
		"iss": r.issuer(), "aud": "jupyterhub", "iat": iat.Unix(), "exp": iat.Add(2 * time.Minute).Unix(),
		"jti": jti, "sid": "s1", "sub": "sub-1", "typ": "Logout",
		"events": map[string]any{"http://schemas.openid.net/event/backchannel-logout": map[string]any{}},
	}
}

// stepTime is a settable clock.
type stepTime struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *stepTime) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepTime) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newLogoutKeycloak(r *logoutRealm, clk *stepTime) *Client {
	return New(r.issuer(), "jupyterhub", config.Secret("s"), r.srv.Client(), WithClock(clk.Now))
}

func TestVerifyLogoutTypHeader(t *testing.T) {
	r := newLogoutRealm(t, "k1")
	clk := &stepTime{now: time.Now().Truncate(time.Second)}
	k := newLogoutKeycloak(r, clk)
	tests := []struct {
		typ string
		ok  bool
	}{
		{typ: "logout+jwt", ok: true},
		{typ: "application/logout+jwt", ok: true},
		{typ: "Logout+JWT", ok: true},
		{typ: "JWT", ok: true},
		{typ: "", ok: true},
		{typ: "at+jwt"},
		{typ: "application/at+jwt"},
		{typ: "secevent+jwt"},
		{typ: "Refresh"},
		{typ: "JOSE"},
	}
	for i, tt := range tests {
		raw := sign(t, r.keys["k1"], "k1", tt.typ, r.claims(clk.Now(), fmt.Sprint("j", i)))
		_, err := k.VerifyLogout(context.Background(), raw)
		if (err == nil) != tt.ok {
			t.Errorf("VerifyLogout with typ %q: error = %v, want ok %t", tt.typ, err, tt.ok)
		}
	}
}

func TestVerifyLogoutTimes(t *testing.T) {
	r := newLogoutRealm(t, "k1")
	clk := &stepTime{now: time.Now().Truncate(time.Second)}
	now := clk.Now()
	k := newLogoutKeycloak(r, clk)
	withTimes := func(iat, exp *time.Time) map[string]any {
		c := r.claims(now, "j")
		delete(c, "iat")
		delete(c, "exp")
		if iat != nil {
			c["iat"] = iat.Unix()
		}
		if exp != nil {
			c["exp"] = exp.Unix()
		}
		return c
	}
	at := func(d time.Duration) *time.Time { t := now.Add(d); return &t }
	tests := []struct {
		name       string
		iat, exp   *time.Time
		ok         bool
		wantExpiry time.Time // the capped Expiry, when ok
	}{
		{name: "Keycloak's 2 minutes", iat: at(0), exp: at(2 * time.Minute), ok: true, wantExpiry: now.Add(2 * time.Minute)},
		{name: "no iat", exp: at(2 * time.Minute)},
		{name: "no exp", iat: at(0)},
		{name: "iat 4 min ago", iat: at(-4 * time.Minute), exp: at(time.Minute), ok: true, wantExpiry: now.Add(time.Minute)},
		{name: "iat 6 min ago", iat: at(-6 * time.Minute), exp: at(time.Minute)},
		{name: "iat 4 min ahead", iat: at(4 * time.Minute), exp: at(6 * time.Minute), ok: true, wantExpiry: now.Add(6 * time.Minute)},
		{name: "iat 6 min ahead", iat: at(6 * time.Minute), exp: at(8 * time.Minute)},
		{name: "expired", iat: at(-3 * time.Minute), exp: at(-time.Minute)},
		{name: "lives 10 min", iat: at(0), exp: at(10 * time.Minute), ok: true, wantExpiry: now.Add(10 * time.Minute)},
		{name: "lives 11 min", iat: at(0), exp: at(11 * time.Minute)},
		{name: "lives a year", iat: at(0), exp: at(365 * 24 * time.Hour)},
		{name: "iat ahead, long life: retention capped", iat: at(4 * time.Minute), exp: at(14 * time.Minute), ok: true, wantExpiry: now.Add(10 * time.Minute)},
		{name: "exp before iat", iat: at(4 * time.Minute), exp: at(time.Minute)},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claims := withTimes(tt.iat, tt.exp)
			claims["jti"] = fmt.Sprint("j", i)
			lt, err := k.VerifyLogout(context.Background(), sign(t, r.keys["k1"], "k1", "logout+jwt", claims))
			if (err == nil) != tt.ok {
				t.Fatalf("VerifyLogout error = %v, want ok %t", err, tt.ok)
			}
			if tt.ok && !lt.Expiry.Equal(tt.wantExpiry) {
				t.Errorf("Expiry = %s, want %s (the jti's retention)", lt.Expiry, tt.wantExpiry)
			}
		})
	}
}

// TestVerifyLogoutForgedKeyIDs checks that tokens naming key ids the realm
// does not have make the key set be fetched at most once per 30 s, and that
// a rotated key is picked up once that time has passed.
func TestVerifyLogoutForgedKeyIDs(t *testing.T) {
	r := newLogoutRealm(t, "k1")
	clk := &stepTime{now: time.Now().Truncate(time.Second)}
	k := newLogoutKeycloak(r, clk)
	ctx := context.Background()
	if _, err := k.VerifyLogout(ctx, sign(t, r.keys["k1"], "k1", "logout+jwt", r.claims(clk.Now(), "good-1"))); err != nil {
		t.Fatalf("VerifyLogout of a good token: %v", err)
	}
	attacker, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for i := range 100 {
		raw := sign(t, attacker, fmt.Sprint("forged-", i), "logout+jwt", r.claims(clk.Now(), fmt.Sprint("f", i)))
		if _, err := k.VerifyLogout(ctx, raw); err == nil {
			t.Fatalf("VerifyLogout of a token with forged kid %d: no error", i)
		}
	}
	if n := r.fetchCount(); n != 1 {
		t.Errorf("key set fetches after 1 good and 100 forged tokens within 30 s = %d, want 1", n)
	}
	// A token signed by a known kid's name but with another key is refused without a fetch.
	if _, err := k.VerifyLogout(ctx, sign(t, attacker, "k1", "logout+jwt", r.claims(clk.Now(), "wrong-key"))); err == nil {
		t.Error("VerifyLogout of a token with a known kid and another key: no error")
	}
	// The realm rotates its key: refused until 30 s after the last fetch.
	k2 := r.addKey(t, "k2")
	rotated := func(jti string) string { return sign(t, k2, "k2", "logout+jwt", r.claims(clk.Now(), jti)) }
	clk.Advance(29 * time.Second)
	if _, err := k.VerifyLogout(ctx, rotated("rot-1")); err == nil || !strings.Contains(err.Error(), "unknown key id") {
		t.Errorf("VerifyLogout with the new key 29 s after the fetch: %v, want unknown key id", err)
	}
	clk.Advance(time.Second)
	if _, err := k.VerifyLogout(ctx, rotated("rot-2")); err != nil {
		t.Errorf("VerifyLogout with the new key 30 s after the fetch: %v", err)
	}
	for i := range 100 {
		raw := sign(t, attacker, fmt.Sprint("forged-again-", i), "logout+jwt", r.claims(clk.Now(), fmt.Sprint("g", i)))
		_, _ = k.VerifyLogout(ctx, raw)
	}
	if n := r.fetchCount(); n != 2 {
		t.Errorf("key set fetches in all = %d, want 2", n)
	}
}

// TestVerifyLogoutKeySetFailures checks that a key set that cannot be read
// fails verification without a panic or a fetch per token.
func TestVerifyLogoutKeySetFailures(t *testing.T) {
	for _, tt := range []struct {
		name, body string
		status     int
	}{
		{name: "HTTP 503", status: 503, body: "<html>down</html>"},
		{name: "not JSON", status: 200, body: "<html>hello</html>"},
		{name: "no keys", status: 200, body: `{"keys":[]}`},
		{name: "junk keys", status: 200, body: `{"keys":[{"kty":"XYZ","kid":"k1"},{"kid":"k1"}]}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newLogoutRealm(t, "k1")
			var fetches int
			var mu sync.Mutex
			jwks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				mu.Lock()
				fetches++
				mu.Unlock()
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}))
			t.Cleanup(jwks.Close)
			clk := &stepTime{now: time.Now().Truncate(time.Second)}
			ks := newKeySet(jwks.URL, jwks.Client(), clk.Now, []jose.SignatureAlgorithm{jose.ES256})
			for i := range 10 {
				raw := sign(t, r.keys["k1"], "k1", "logout+jwt", r.claims(clk.Now(), fmt.Sprint("j", i)))
				if _, err := ks.VerifySignature(context.Background(), raw); err == nil {
					t.Fatal("VerifySignature with an unreadable key set: no error")
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if fetches != 1 {
				t.Errorf("fetches of a failing key set for 10 tokens = %d, want 1", fetches)
			}
		})
	}
}

func TestVerifyLogoutMalformed(t *testing.T) {
	r := newLogoutRealm(t, "k1")
	k := newLogoutKeycloak(r, &stepTime{now: time.Now()})
	for _, raw := range []string{"", "abc", "!!!.e30.sig", "e30.e30.sig", "bm90IGpzb24.e30.sig"} {
		if _, err := k.VerifyLogout(context.Background(), raw); err == nil {
			t.Errorf("VerifyLogout(%q): no error", raw)
		}
	}
}
