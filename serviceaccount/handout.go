package serviceaccount

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Standard token exchange (RFC 8693) as Keycloak implements it since 26.2.
const (
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeAccess    = "urn:ietf:params:oauth:token-type:access_token"
)

// ErrAudienceNotAllowed means the audience asked for is not among the
// configured service_token_audiences.
var ErrAudienceNotAllowed = errors.New("audience not allowed")

// ExchangeError is Keycloak refusing a token exchange (a 4xx answer other
// than 429): the realm does not let the service account have a token for
// that audience.
type ExchangeError struct {
	Audience    string
	Status      int
	Code        string // the OAuth error, e.g. invalid_request
	Description string // Keycloak's error_description
	Err         error
}

func (e *ExchangeError) Error() string {
	return fmt.Sprintf("service account: Keycloak refused a token for audience %q: HTTP %d %s: %s",
		e.Audience, e.Status, e.Code, e.Description)
}

func (e *ExchangeError) Unwrap() error { return e.Err }

// AdminRolesError means the service account's token carries realm-management
// roles. That token is handed out, so Handout refuses it: those roles belong
// to the admin client.
type AdminRolesError struct {
	Roles []string
}

func (e *AdminRolesError) Error() string {
	return "service account: its token carries the realm-management roles " + strings.Join(e.Roles, ", ") +
		"; tokenkeeper hands this token out, so remove them (they belong to the admin client)"
}

// Handout gives the service account's token to callers: as it is, or
// narrowed to one allowed audience with Keycloak's standard token exchange.
// Exchanged tokens are cached per audience until shortly before they
// expire. It never hands out a token that carries realm-management roles.
type Handout struct {
	account *Account
	now     func() time.Time
	locks   map[string]chan struct{} // one per allowed audience; fixed after NewHandout

	mu    sync.Mutex // guards cache
	cache map[string]*oauth2.Token
}

// NewHandout returns a Handout for a's token, allowing the given audiences.
func NewHandout(a *Account, audiences []string, now func() time.Time) *Handout {
	h := &Handout{account: a, now: now, locks: map[string]chan struct{}{}, cache: map[string]*oauth2.Token{}}
	for _, aud := range audiences {
		h.locks[aud] = make(chan struct{}, 1)
	}
	return h
}

// Token returns the service account's token when audience is "", else a
// token whose audience is narrowed to audience, which must be allowed
// (ErrAudienceNotAllowed otherwise). Keycloak's refusals are *ExchangeError.
func (h *Handout) Token(ctx context.Context, audience string) (*oauth2.Token, error) {
	if audience == "" {
		return h.checked(h.account.Token(ctx))
	}
	lock, ok := h.locks[audience]
	if !ok {
		return nil, fmt.Errorf("service account: %w: %q", ErrAudienceNotAllowed, audience)
	}
	select {
	case lock <- struct{}{}:
		defer func() { <-lock }()
	case <-ctx.Done():
		return nil, fmt.Errorf("service account: %w", ctx.Err())
	}
	if tok := h.cached(audience); tok != nil {
		return tok, nil
	}
	tok, err := h.checked(h.exchange(ctx, audience))
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.cache[audience] = tok
	h.mu.Unlock()
	return tok, nil
}

// cached returns the cached token for audience while more than the
// account's early margin is left on it.
func (h *Handout) cached(audience string) *oauth2.Token {
	h.mu.Lock()
	defer h.mu.Unlock()
	tok := h.cache[audience]
	if tok == nil || tok.Expiry.Sub(h.now()) <= h.account.early {
		return nil
	}
	return tok
}

// exchange trades the service account's token for one narrowed to audience,
// authenticating with the service account's credentials in the
// Authorization header.
func (h *Handout) exchange(ctx context.Context, audience string) (*oauth2.Token, error) {
	subject, err := h.account.Token(ctx)
	if err != nil {
		return nil, err
	}
	ep, err := h.account.endpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("service account: %w", err)
	}
	cc := clientcredentials.Config{
		ClientID: h.account.clientID, ClientSecret: h.account.secret.Reveal(),
		TokenURL: ep.TokenURL, AuthStyle: oauth2.AuthStyleInHeader,
		EndpointParams: url.Values{
			"grant_type":           {grantTokenExchange},
			"subject_token":        {subject.AccessToken},
			"subject_token_type":   {tokenTypeAccess},
			"requested_token_type": {tokenTypeAccess},
			"audience":             {audience},
		},
	}
	tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, h.account.client))
	if err != nil {
		return nil, exchangeError(audience, err)
	}
	return tok, nil
}

// exchangeError makes Keycloak's refusals an *ExchangeError; transient
// failures (network, 5xx, 429) stay as they are, wrapped.
func exchangeError(audience string, err error) error {
	var rerr *oauth2.RetrieveError
	if errors.As(err, &rerr) && rerr.Response != nil {
		st := rerr.Response.StatusCode
		if st >= 400 && st < 500 && st != http.StatusTooManyRequests {
			return &ExchangeError{Audience: audience, Status: st, Code: rerr.ErrorCode,
				Description: truncate(rerr.ErrorDescription, 200), Err: err}
		}
	}
	return fmt.Errorf("service account: token exchange for %q: %w", audience, err)
}

// checked passes tok on unless it carries realm-management roles.
func (h *Handout) checked(tok *oauth2.Token, err error) (*oauth2.Token, error) {
	if err != nil {
		return nil, err
	}
	if roles := adminRoles(tok.AccessToken); len(roles) > 0 {
		return nil, &AdminRolesError{Roles: roles}
	}
	return tok, nil
}

// adminRoles returns the realm-management roles in an access token's
// resource_access claim. The token comes straight from Keycloak's token
// endpoint, so it is read without verifying its signature; a token that is
// not a JWT has none.
func adminRoles(token string) []string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return nil
	}
	var claims struct {
		ResourceAccess map[string]struct {
			Roles []string `json:"roles"`
		} `json:"resource_access"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return nil
	}
	roles := slices.Clone(claims.ResourceAccess["realm-management"].Roles)
	slices.Sort(roles)
	return roles
}
