package keycloak

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
)

// Bounds on back-channel logout tokens beyond what go-oidc checks.
const (
	// logoutSkew is how far a logout token's iat may be from now, either way.
	logoutSkew = 5 * time.Minute
	// maxLogoutLifetime is the longest exp - iat accepted; Keycloak sends
	// 2 minutes. It is at least twice logoutSkew, so that remembering a jti
	// until now + maxLogoutLifetime outlasts the token's acceptance.
	maxLogoutLifetime = 10 * time.Minute
	// jwksRefetchInterval is the least time between two fetches of the
	// realm's keys.
	jwksRefetchInterval = 30 * time.Second
	// maxJWKSBody bounds the key set read from Keycloak.
	maxJWKSBody = 1 << 20
)

// signingAlgs are the JWS algorithms go-oidc can verify.
var signingAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA,
}

// checkLogoutType refuses a token whose JOSE typ header names another kind of
// token. Keycloak sends "logout+jwt", as OpenID Connect Back-Channel Logout
// 1.0 recommends; "JWT" and no typ are what providers older than that
// recommendation send.
func checkLogoutType(raw string) error {
	head, _, ok := strings.Cut(raw, ".")
	if !ok {
		return errors.New("not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(head, "="))
	if err != nil {
		return fmt.Errorf("JOSE header: %w", err)
	}
	var h struct {
		Typ *string `json:"typ"`
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return fmt.Errorf("JOSE header: %w", err)
	}
	if h.Typ == nil {
		return nil
	}
	switch strings.TrimPrefix(strings.ToLower(*h.Typ), "application/") {
	case "logout+jwt", "jwt":
		return nil
	}
	return fmt.Errorf("typ header %q is not a logout token's", *h.Typ)
}

// checkLogoutTimes checks iat and exp against now and caps Expiry at now +
// maxLogoutLifetime. A token is accepted only while exp > now and iat ≥
// now - logoutSkew, so never after iat + logoutSkew ≤ now + 2·logoutSkew ≤
// now + maxLogoutLifetime.
func checkLogoutTimes(lt *oidc.LogoutToken, now time.Time) (*oidc.LogoutToken, error) {
	switch {
	case lt.IssuedAt.IsZero():
		return nil, errors.New("logout token has no iat")
	case lt.IssuedAt.Before(now.Add(-logoutSkew)) || lt.IssuedAt.After(now.Add(logoutSkew)):
		return nil, fmt.Errorf("logout token issued at %s, more than %s from now", lt.IssuedAt.UTC().Format(time.RFC3339), logoutSkew)
	case !lt.Expiry.After(lt.IssuedAt):
		return nil, errors.New("logout token expires before it was issued")
	case lt.Expiry.Sub(lt.IssuedAt) > maxLogoutLifetime:
		return nil, fmt.Errorf("logout token lives %s, more than %s", lt.Expiry.Sub(lt.IssuedAt), maxLogoutLifetime)
	}
	capped := *lt
	if limit := now.Add(maxLogoutLifetime); capped.Expiry.After(limit) {
		capped.Expiry = limit
	}
	return &capped, nil
}

// logoutVerifier returns the verifier of logout tokens, building it from the
// discovered provider on first use.
func (k *Client) logoutVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	_, provider, err := k.realm.discovered(ctx)
	if err != nil {
		return nil, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.verifier != nil {
		return k.verifier, nil
	}
	var meta struct {
		JWKSURL string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := provider.Claims(&meta); err != nil || meta.JWKSURL == "" {
		return nil, &DiscoveryError{Err: fmt.Errorf("no jwks_uri in the OpenID configuration: %v", err)}
	}
	algs := supportedAlgs(meta.Algs)
	keys := newKeySet(meta.JWKSURL, k.realm.client, k.realm.now, algs)
	k.verifier = oidc.NewVerifier(k.realm.issuer, keys, &oidc.Config{
		ClientID: k.clientID, SupportedSigningAlgs: algNames(algs), Now: k.realm.now,
	})
	return k.verifier, nil
}

// supportedAlgs keeps the advertised algorithms that go-oidc can verify;
// none advertised means RS256, the one OpenID Connect requires.
func supportedAlgs(advertised []string) []jose.SignatureAlgorithm {
	var out []jose.SignatureAlgorithm
	for _, a := range signingAlgs {
		for _, name := range advertised {
			if string(a) == name {
				out = append(out, a)
			}
		}
	}
	if len(out) == 0 {
		return []jose.SignatureAlgorithm{jose.RS256}
	}
	return out
}

func algNames(algs []jose.SignatureAlgorithm) []string {
	names := make([]string, len(algs))
	for i, a := range algs {
		names[i] = string(a)
	}
	return names
}

// keySet is an oidc.KeySet over the realm's JSON Web Keys. It fetches them on
// first use and again when a token names a key id it does not know, but at
// most once per jwksRefetchInterval (failed fetches count): tokens with
// made-up key ids cost Keycloak one request per interval, not one each.
// go-oidc's RemoteKeySet fetches on every unknown key id.
type keySet struct {
	url    string
	client *http.Client
	now    func() time.Time
	algs   []jose.SignatureAlgorithm
	fetch  chan struct{} // held while fetching: one fetch at a time

	mu      sync.Mutex // guards keys and fetched
	keys    []jose.JSONWebKey
	fetched time.Time // when the last fetch started; zero before the first
}

func newKeySet(url string, client *http.Client, now func() time.Time, algs []jose.SignatureAlgorithm) *keySet {
	return &keySet{url: url, client: client, now: now, algs: algs, fetch: make(chan struct{}, 1)}
}

// VerifySignature verifies raw's signature with the key its kid names and
// returns the payload.
func (s *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSigned(raw, s.algs)
	if err != nil {
		return nil, fmt.Errorf("malformed JWS: %w", err)
	}
	if len(jws.Signatures) != 1 {
		return nil, errors.New("want exactly one signature")
	}
	kid := jws.Signatures[0].Header.KeyID
	keys := s.current()
	if !knows(keys, kid) {
		if keys, err = s.refetch(ctx); err != nil {
			return nil, err
		}
		if !knows(keys, kid) {
			return nil, fmt.Errorf("unknown key id %q (the realm's keys are fetched at most every %s)", kid, jwksRefetchInterval)
		}
	}
	for _, key := range keys {
		if kid == "" || key.KeyID == kid {
			if payload, err := jws.Verify(&key); err == nil {
				return payload, nil
			}
		}
	}
	return nil, errors.New("signature does not verify")
}

func (s *keySet) current() []jose.JSONWebKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys
}

// knows reports whether keys hold kid (any key, when kid is "").
func knows(keys []jose.JSONWebKey, kid string) bool {
	for _, k := range keys {
		if kid == "" || k.KeyID == kid {
			return true
		}
	}
	return false
}

// refetch fetches the keys unless a fetch started less than the interval
// ago, and returns the keys held then.
func (s *keySet) refetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	select {
	case s.fetch <- struct{}{}:
		defer func() { <-s.fetch }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	if !s.fetched.IsZero() && s.now().Sub(s.fetched) < jwksRefetchInterval {
		defer s.mu.Unlock()
		return s.keys, nil
	}
	s.fetched = s.now()
	s.mu.Unlock()
	keys, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = keys
	return keys, nil
}

// get reads the key set, keeping the signing keys go-jose understands.
func (s *keySet) get(ctx context.Context) ([]jose.JSONWebKey, error) {
	status, body, err := getJSON(ctx, s.client, s.url, "", maxJWKSBody)
	if err != nil {
		return nil, fmt.Errorf("keycloak keys: %w", err)
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("keycloak keys: HTTP %d", status)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("keycloak keys: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, raw := range set.Keys {
		var k jose.JSONWebKey
		if json.Unmarshal(raw, &k) == nil && k.Use != "enc" && k.IsPublic() {
			keys = append(keys, k)
		}
	}
	return keys, nil
}
