package refresh

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

// Keycloak spends refresh tokens at the realm's token endpoint with the hub's
// own OAuth client (Keycloak binds refresh tokens to the client they were
// issued to). The endpoint is discovered from the issuer on first use and
// kept; discovery is retried on the next grant after a failure.
type Keycloak struct {
	issuer   string
	clientID string
	secret   config.Secret
	client   *http.Client
	now      func() time.Time // for logout tokens

	mu       sync.Mutex // guards endpoint, provider and verifier
	endpoint *oauth2.Endpoint
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier // for logout tokens, built on first use
}

// KeycloakOption configures a Keycloak.
type KeycloakOption func(*Keycloak)

// WithKeycloakClock sets the clock logout tokens are checked against
// (default time.Now).
func WithKeycloakClock(now func() time.Time) KeycloakOption {
	return func(k *Keycloak) { k.now = now }
}

// NewKeycloak returns a Keycloak client for the realm at issuer.
func NewKeycloak(issuer, clientID string, secret config.Secret, client *http.Client, opts ...KeycloakOption) *Keycloak {
	k := &Keycloak{issuer: issuer, clientID: clientID, secret: secret, client: client, now: time.Now}
	for _, o := range opts {
		o(k)
	}
	return k
}

// DiscoveryError is a failure to read the issuer's OpenID configuration for
// a reason other than the network: a wrong issuer URL, an issuer mismatch, or
// a realm that does not exist. It is an operator problem.
type DiscoveryError struct{ Err error }

func (e *DiscoveryError) Error() string { return "keycloak discovery: " + e.Err.Error() }
func (e *DiscoveryError) Unwrap() error { return e.Err }

// Endpoint returns the realm's token endpoint, discovering it if needed.
func (k *Keycloak) Endpoint(ctx context.Context) (oauth2.Endpoint, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.endpoint != nil {
		return *k.endpoint, nil
	}
	p, err := k.discover(ctx)
	if err != nil {
		return oauth2.Endpoint{}, err
	}
	ep := p.Endpoint()
	// Auto-detection re-sends a failed grant with the other style, spending
	// the refresh token twice; Keycloak accepts HTTP Basic.
	ep.AuthStyle = oauth2.AuthStyleInHeader
	k.endpoint, k.provider = &ep, p
	return ep, nil
}

func (k *Keycloak) discover(ctx context.Context) (*oidc.Provider, error) {
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, k.discoveryClient()), k.issuer)
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
func (k *Keycloak) VerifyLogout(ctx context.Context, raw string) (*oidc.LogoutToken, error) {
	if err := checkLogoutType(raw); err != nil {
		return nil, err
	}
	v, err := k.logoutVerifier(ctx)
	if err != nil {
		return nil, err
	}
	lt, err := v.VerifyLogout(oidc.ClientContext(ctx, k.client), raw)
	if err != nil {
		return nil, err
	}
	return checkLogoutTimes(lt, k.now())
}

// Refresh runs one refresh_token grant and returns the new token set. Errors
// from Keycloak are *oauth2.RetrieveError; Classify sorts every error.
func (k *Keycloak) Refresh(ctx context.Context, refresh config.Secret) (*oauth2.Token, error) {
	ep, err := k.Endpoint(ctx)
	if err != nil {
		return nil, err
	}
	conf := oauth2.Config{ClientID: k.clientID, ClientSecret: k.secret.Reveal(), Endpoint: ep}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, k.client)
	tok, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: refresh.Reveal()}).Token()
	if err != nil {
		return nil, fmt.Errorf("refresh grant: %w", err)
	}
	return tok, nil
}

// Class sorts grant failures by what tokenkeeper must do about them.
type Class int

const (
	// Transient failures (network, timeouts, 5xx, 429) are retried with backoff.
	Transient Class = iota
	// Terminal failures mean the user's SSO session has ended.
	Terminal
	// Operator failures are configuration problems (client secret, realm,
	// issuer): refreshing stops for everyone and nobody is logged out.
	Operator
)

func (c Class) String() string {
	return [...]string{"transient", "terminal", "operator"}[c]
}

// operatorGrantErrors are Keycloak's invalid_grant descriptions that point at
// tokenkeeper's configuration rather than at the user's session.
var operatorGrantErrors = map[string]bool{
	"Invalid refresh token. Token client and authorized client don't match": true,
}

// Classify sorts an error from Refresh.
func Classify(err error) Class {
	var rerr *oauth2.RetrieveError
	var derr *DiscoveryError
	switch {
	case errors.As(err, &derr):
		return Operator
	case errors.As(err, &rerr):
		return classifyRetrieve(rerr)
	default:
		return Transient // transport errors, timeouts, cancellation
	}
}

func classifyRetrieve(e *oauth2.RetrieveError) Class {
	status := 0
	if e.Response != nil {
		status = e.Response.StatusCode
	}
	switch {
	case status >= 500 || status == http.StatusTooManyRequests:
		return Transient
	case e.ErrorCode == "invalid_grant" && isIssuerMismatch(e.ErrorDescription):
		return Operator
	case e.ErrorCode == "invalid_grant" && operatorGrantErrors[e.ErrorDescription]:
		return Operator
	case e.ErrorCode == "invalid_grant", e.ErrorCode == "invalid_scope":
		return Terminal
	case status == 0 && e.ErrorCode == "":
		return Transient
	default:
		// invalid_client, unauthorized_client, access_denied (realm
		// disabled), invalid_request and anything unknown.
		return Operator
	}
}

// isIssuerMismatch recognises "Invalid token issuer. Expected '<realm url>'",
// whose tail varies with the realm URL.
func isIssuerMismatch(desc string) bool {
	const prefix = "Invalid token issuer."
	return len(desc) >= len(prefix) && desc[:len(prefix)] == prefix
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

// discoveryClient is k.client with 5xx answers made transport errors.
func (k *Keycloak) discoveryClient() *http.Client {
	base := k.client.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c := *k.client
	c.Transport = statusTransport{base: base}
	return &c
}
