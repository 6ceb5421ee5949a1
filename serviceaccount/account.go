// Package serviceaccount holds tokenkeeper's own Keycloak identities:
// client-credentials tokens from confidential clients with service accounts
// enabled. The service account's token is used for job-status checks that
// must keep working after a user's SSO session ended and is handed to CI
// callers with the service-account scope, as it is or narrowed to one
// audience by token exchange (Handout); it must hold no admin roles. A second
// client's token, which never leaves tokenkeeper, is used for Keycloak admin
// calls (Admin).
package serviceaccount

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// Account is a cached client-credentials token source, renewed ahead of expiry.
type Account struct {
	clientID string
	secret   config.Secret
	endpoint func(ctx context.Context) (oauth2.Endpoint, error)
	early    time.Duration
	client   *http.Client
	// base carries the HTTP client for the token source; token sources
	// outlive a single request, so they are built from the daemon's context.
	base context.Context

	mu sync.Mutex // guards ts
	ts oauth2.TokenSource
}

// New returns an Account for the confidential client clientID. endpoint finds
// the realm's token endpoint (discovered lazily, so Keycloak may be down at
// start). Tokens are renewed when less than early is left. The client is
// copied and never follows redirects.
func New(base context.Context, client *http.Client, clientID string, secret config.Secret,
	endpoint func(ctx context.Context) (oauth2.Endpoint, error), early time.Duration) *Account {
	client = noRedirects(client)
	return &Account{
		clientID: clientID, secret: secret, endpoint: endpoint, early: early, client: client,
		base: context.WithValue(base, oauth2.HTTPClient, client),
	}
}

// Token returns a service-account access token with more than the early
// margin left, fetching a new one when needed.
func (a *Account) Token(ctx context.Context) (*oauth2.Token, error) {
	ts, err := a.source(ctx)
	if err != nil {
		return nil, err
	}
	tok, err := ts.Token()
	if err != nil {
		return nil, fmt.Errorf("service account: %w", err)
	}
	return tok, nil
}

func (a *Account) source(ctx context.Context) (oauth2.TokenSource, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ts != nil {
		return a.ts, nil
	}
	ep, err := a.endpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("service account: %w", err)
	}
	cc := clientcredentials.Config{
		ClientID: a.clientID, ClientSecret: a.secret.Reveal(),
		TokenURL: ep.TokenURL, AuthStyle: oauth2.AuthStyleInHeader,
	}
	a.ts = oauth2.ReuseTokenSourceWithExpiry(nil, cc.TokenSource(a.base), a.early)
	return a.ts, nil
}

// AccessToken returns just the access token, for callers that only need the string.
func (a *Account) AccessToken(ctx context.Context) (string, error) {
	tok, err := a.Token(ctx)
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}
