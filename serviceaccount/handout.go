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

// AdminRolesError means the service account's token carries admin roles
// (see adminRoles). That token is handed out, so Handout refuses it: admin
// roles belong to the admin client.
type AdminRolesError struct {
	// Roles are the admin roles found, sorted: "realm:ROLE" for a realm
	// role, "CLIENT:ROLE" for a client role.
	Roles []string
}

func (e *AdminRolesError) Error() string {
	return fmt.Sprintf("the service account's token carries admin roles %v; tokenkeeper hands out no admin token", e.Roles)
}

// ExchangeFunc trades an access token for one whose audience is narrowed to
// audience: keycloak.Client.Exchange, as the service account's client.
type ExchangeFunc func(ctx context.Context, subject config.Secret, audience string) (*oauth2.Token, error)

// Handout gives the service account's token to callers: as it is, or
// narrowed to one allowed audience with Keycloak's standard token exchange.
// Exchanged tokens are cached per audience until shortly before they
// expire. It never hands out a token that carries admin roles.
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

// checked passes tok on unless it carries admin roles.
func (h *Handout) checked(tok *oauth2.Token, err error) (*oauth2.Token, error) {
	if err != nil {
		return nil, err
	}
	if roles := adminRoles(parseClaims(tok.AccessToken)); len(roles) > 0 {
		return nil, &AdminRolesError{Roles: roles}
	}
	return tok, nil
}

// roleClaims are the role claims of a Keycloak access token.
type roleClaims struct {
	RealmAccess    roleList            `json:"realm_access"`
	ResourceAccess map[string]roleList `json:"resource_access"`
}

// roleList is the roles of one realm_access or resource_access entry.
type roleList struct {
	Roles []string `json:"roles"`
}

// parseClaims reads the role claims of an access token. The token comes
// straight from Keycloak's token endpoint, so it is read without verifying
// its signature; a token that is not a JWT has none.
func parseClaims(token string) roleClaims {
	var claims roleClaims
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return claims
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return roleClaims{}
	}
	if json.Unmarshal(payload, &claims) != nil {
		return roleClaims{}
	}
	return claims
}

// adminRealmRoles are the realm roles that grant admin powers: admin over
// the realm (in the master realm, over every realm) and create-realm.
var adminRealmRoles = []string{"admin", "create-realm"}

// adminRoles returns the admin roles in claims, sorted: the realm roles
// admin and create-realm as "realm:ROLE", and every role of an admin client
// as "CLIENT:ROLE".
func adminRoles(claims roleClaims) []string {
	var found []string
	for _, role := range claims.RealmAccess.Roles {
		if slices.Contains(adminRealmRoles, role) {
			found = append(found, "realm:"+role)
		}
	}
	for client, access := range claims.ResourceAccess {
		if !isAdminClient(client) {
			continue
		}
		for _, role := range access.Roles {
			found = append(found, client+":"+role)
		}
	}
	slices.Sort(found)
	return slices.Compact(found)
}

// isAdminClient reports whether every role of client is an admin role: the
// realm's realm-management client, and the master realm's <realm>-realm
// clients, one per realm, whose roles administer that realm. A client of
// another realm whose ID ends in -realm is refused as well.
func isAdminClient(client string) bool {
	return client == "realm-management" || strings.HasSuffix(client, "-realm")
}
