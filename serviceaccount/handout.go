package serviceaccount

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/keycloak"
)

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

// ExchangeFunc trades an access token for one whose audience is narrowed to
// audience: keycloak.Client.Exchange, as the service account's client.
type ExchangeFunc func(ctx context.Context, subject config.Secret, audience string) (*oauth2.Token, error)

// Handout gives the service account's token to callers: as it is, or
// narrowed to one allowed audience with Keycloak's standard token exchange.
// Exchanged tokens are cached per audience until shortly before they
// expire. It never hands out a token that carries realm-management roles.
type Handout struct {
	account  *Account
	exchange ExchangeFunc
	now      func() time.Time
	locks    map[string]chan struct{} // one per allowed audience; fixed after NewHandout

	mu    sync.Mutex // guards cache
	cache map[string]*oauth2.Token
}

// NewHandout returns a Handout for a's token, allowing the given audiences,
// which exchange narrows a's token to.
func NewHandout(a *Account, exchange ExchangeFunc, audiences []string, now func() time.Time) *Handout {
	h := &Handout{account: a, exchange: exchange, now: now, locks: map[string]chan struct{}{}, cache: map[string]*oauth2.Token{}}
	for _, aud := range audiences {
		h.locks[aud] = make(chan struct{}, 1)
	}
	return h
}

// Token returns the service account's token when audience is "", else a
// token whose audience is narrowed to audience, which must be allowed
// (keycloak.ErrAudienceNotAllowed otherwise). Keycloak's refusals are
// *keycloak.ExchangeError.
func (h *Handout) Token(ctx context.Context, audience string) (*oauth2.Token, error) {
	if audience == "" {
		return h.checked(h.account.Token(ctx))
	}
	lock, ok := h.locks[audience]
	if !ok {
		return nil, fmt.Errorf("service account: %w: %q", keycloak.ErrAudienceNotAllowed, audience)
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
	tok, err := h.checked(h.narrowed(ctx, audience))
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

// narrowed trades the service account's token for one narrowed to audience.
func (h *Handout) narrowed(ctx context.Context, audience string) (*oauth2.Token, error) {
	subject, err := h.account.Token(ctx)
	if err != nil {
		return nil, err
	}
	tok, err := h.exchange(ctx, config.Secret(subject.AccessToken), audience)
	if err != nil {
		return nil, fmt.Errorf("service account: %w", err)
	}
	return tok, nil
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
