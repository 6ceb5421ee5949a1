// Package keycloak is tokenkeeper's client of one Keycloak realm: discovery,
// the refresh grant with the hub's client, standard token exchange (RFC 8693,
// Keycloak 26.2 and later), users' stored identity-provider tokens through
// identity brokering, token introspection (RFC 7662), verification of
// back-channel logout tokens, and the sorting of grant failures into
// transient, terminal and operator problems and grants of unknown outcome.
package keycloak

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// Client speaks to one Keycloak realm as one confidential OAuth client: it
// spends refresh tokens (Keycloak binds them to the client they were issued
// to, so this is the hub's own client), exchanges access tokens for tokens
// of another audience, introspects tokens, reads users' stored
// identity-provider tokens and verifies back-channel logout tokens. The realm's endpoints are discovered
// from the issuer on first use and kept; discovery is retried on the next
// call after a failure. It never follows a redirect: its requests carry a
// client secret or a user's token meant for Keycloak alone.
type Client struct {
	realm    *realm
	clientID string
	secret   config.Secret

	mu       sync.Mutex            // guards verifier
	verifier *oidc.IDTokenVerifier // for logout tokens, built on first use
}

// realm is what the clients of one realm share: the HTTP client, the clock
// and the discovered provider.
type realm struct {
	issuer string
	client *http.Client
	now    func() time.Time // for logout tokens and stored identity-provider tokens

	mu       sync.Mutex // guards endpoint and provider
	endpoint *oauth2.Endpoint
	provider *oidc.Provider
}

// Option configures a Client.
type Option func(*realm)

// WithClock sets the clock logout tokens are checked against
// (default time.Now).
func WithClock(now func() time.Time) Option {
	return func(r *realm) { r.now = now }
}

// New returns a client for the realm at issuer, as the confidential client
// clientID. The HTTP client is copied and made to follow no redirect.
func New(issuer, clientID string, secret config.Secret, client *http.Client, opts ...Option) *Client {
	hc := *client
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	r := &realm{issuer: issuer, client: &hc, now: time.Now}
	for _, o := range opts {
		o(r)
	}
	return &Client{realm: r, clientID: clientID, secret: secret}
}

// As returns a client of the same realm, sharing its discovery, that
// authenticates as another confidential client.
func (k *Client) As(clientID string, secret config.Secret) *Client {
	return &Client{realm: k.realm, clientID: clientID, secret: secret}
}

// DiscoveryError is a failure to read the issuer's OpenID configuration for
// a reason other than the network: a wrong issuer URL, an issuer mismatch, or
// a realm that does not exist. It is an operator problem.
type DiscoveryError struct{ Err error }

func (e *DiscoveryError) Error() string { return "keycloak discovery: " + e.Err.Error() }
func (e *DiscoveryError) Unwrap() error { return e.Err }

// Endpoint returns the realm's token endpoint, discovering it if needed.
func (k *Client) Endpoint(ctx context.Context) (oauth2.Endpoint, error) {
	ep, _, err := k.realm.discovered(ctx)
	return ep, err
}

// discovered returns the token endpoint and the provider, discovering them
// if needed.
func (r *realm) discovered(ctx context.Context) (oauth2.Endpoint, *oidc.Provider, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.endpoint != nil {
		return *r.endpoint, r.provider, nil
	}
	p, err := r.discover(ctx)
	if err != nil {
		return oauth2.Endpoint{}, nil, err
	}
	ep := p.Endpoint()
	// Auto-detection re-sends a failed grant with the other style, spending
	// the refresh token twice; Keycloak accepts HTTP Basic.
	ep.AuthStyle = oauth2.AuthStyleInHeader
	r.endpoint, r.provider = &ep, p
	return ep, p, nil
}

func (r *realm) discover(ctx context.Context) (*oidc.Provider, error) {
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, r.discoveryClient()), r.issuer)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) || ctx.Err() != nil {
			return nil, fmt.Errorf("keycloak discovery: %w", err)
		}
		return nil, &DiscoveryError{Err: err}
	}
	return p, nil
}

// VerifyLogout verifies a back-channel logout token: its typ header
// (logout+jwt, JWT or none), its signature against the realm's keys (a key id
// it does not know makes it fetch the keys again, at most once per 30 s),
// issuer, audience (the hub's client), the logout event, no nonce, a jti, an
// iat within 5 minutes of now, and an exp not passed and at most 10 minutes
// after iat. The returned token's Expiry is capped at now + 10 minutes: it
// says how long its jti must be remembered, which covers every moment at
// which the token would still be accepted.
func (k *Client) VerifyLogout(ctx context.Context, raw string) (*oidc.LogoutToken, error) {
	if err := checkLogoutType(raw); err != nil {
		return nil, err
	}
	v, err := k.logoutVerifier(ctx)
	if err != nil {
		return nil, err
	}
	lt, err := v.VerifyLogout(oidc.ClientContext(ctx, k.realm.client), raw)
	if err != nil {
		return nil, err
	}
	return checkLogoutTimes(lt, k.realm.now())
}

// Refresh runs one refresh_token grant and returns the new token set. Errors
// from Keycloak are *oauth2.RetrieveError; failures before the grant was sent
// are marked ErrNotSent, except a *DiscoveryError; Classify sorts every error.
func (k *Client) Refresh(ctx context.Context, refresh config.Secret) (*oauth2.Token, error) {
	ep, err := k.Endpoint(ctx)
	if err != nil {
		return nil, unsent(err)
	}
	if refresh == "" {
		return nil, fmt.Errorf("refresh grant: %w: no refresh token", ErrNotSent)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("refresh grant: %w: %w", ErrNotSent, err)
	}
	conf := oauth2.Config{ClientID: k.clientID, ClientSecret: k.secret.Reveal(), Endpoint: ep}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, k.realm.client)
	tok, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: refresh.Reveal()}).Token()
	if err != nil {
		return nil, fmt.Errorf("refresh grant: %w", err)
	}
	return tok, nil
}

// unsent marks a discovery failure ErrNotSent, unless it is a
// *DiscoveryError, which Classify reports as an operator problem.
func unsent(err error) error {
	if errors.As(err, new(*DiscoveryError)) {
		return err
	}
	return fmt.Errorf("refresh grant: %w: %w", ErrNotSent, err)
}

// unavailableStatus is a 5xx or 429 answer during discovery: Keycloak is
// starting, overloaded or behind a failing proxy, which is transient.
type unavailableStatus struct{ status int }

func (e *unavailableStatus) Error() string {
	return fmt.Sprintf("HTTP %d %s", e.status, http.StatusText(e.status))
}

// statusTransport turns 5xx and 429 answers into transport errors, so that
// they surface as *url.Error (transient) rather than as a discovery failure.
type statusTransport struct{ base http.RoundTripper }

func (t statusTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil && (resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests) {
		resp.Body.Close()
		return nil, &unavailableStatus{status: resp.StatusCode}
	}
	return resp, err
}

// discoveryClient is r.client with 5xx answers made transport errors.
func (r *realm) discoveryClient() *http.Client {
	base := r.client.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c := *r.client
	c.Transport = statusTransport{base: base}
	return &c
}
