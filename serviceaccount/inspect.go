package serviceaccount

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/Nerzal/gocloak/v13"
)

// RealmSettings are the realm settings tokenkeeper depends on, as the admin
// API shows them. A nil field is one Keycloak did not show: an admin client
// without the realm-management role view-realm sees the realm's name only.
type RealmSettings struct {
	RevokeRefreshToken   *bool
	RefreshTokenMaxReuse *int
	// AccessTokenLifespan, SSOSessionIdle and SSOSessionMax are in seconds.
	AccessTokenLifespan *int
	SSOSessionIdle      *int
	SSOSessionMax       *int
}

// Readable reports whether s holds the settings only a reader with
// view-realm is shown.
func (s RealmSettings) Readable() bool {
	return s.RevokeRefreshToken != nil && s.AccessTokenLifespan != nil && s.SSOSessionIdle != nil
}

// RealmSettings reads the realm's token and session settings. It needs the
// realm-management role view-realm for more than the realm's name.
func (a *Admin) RealmSettings(ctx context.Context) (RealmSettings, error) {
	tok, err := a.token(ctx)
	if err != nil {
		return RealmSettings{}, err
	}
	r, err := a.gc.GetRealm(ctx, tok, a.realm)
	if err != nil {
		return RealmSettings{}, adminError("realm", err)
	}
	return RealmSettings{
		RevokeRefreshToken: r.RevokeRefreshToken, RefreshTokenMaxReuse: r.RefreshTokenMaxReuse,
		AccessTokenLifespan: r.AccessTokenLifespan, SSOSessionIdle: r.SsoSessionIdleTimeout, SSOSessionMax: r.SsoSessionMaxLifespan,
	}, nil
}

// Mapper is one protocol mapper that shapes a client's tokens, on the
// client itself or on one of its default client scopes.
type Mapper struct {
	Type     string // e.g. oidc-audience-mapper
	Claim    string // claim.name, when the mapper names one
	Audience string // included.client.audience of an audience mapper
}

// ClientSettings are the settings of one client that tokenkeeper depends on.
type ClientSettings struct {
	FrontchannelLogout bool
	// Attributes are the client's attributes, e.g. backchannel.logout.url.
	Attributes map[string]string
	// DefaultScopes are the names of the client's default client scopes.
	DefaultScopes []string
	// Mappers are the client's own protocol mappers and those of its
	// default client scopes.
	Mappers []Mapper
}

// ClientSettings reads the client whose client id is clientID, with the
// protocol mappers of its default client scopes. It needs the
// realm-management role view-clients; a client the realm does not have is
// an *AdminError with Status 404.
func (a *Admin) ClientSettings(ctx context.Context, clientID string) (ClientSettings, error) {
	tok, err := a.token(ctx)
	if err != nil {
		return ClientSettings{}, err
	}
	clients, err := a.gc.GetClients(ctx, tok, a.realm, gocloak.GetClientsParams{ClientID: &clientID})
	if err != nil {
		return ClientSettings{}, adminError("client", err)
	}
	i := slices.IndexFunc(clients, func(c *gocloak.Client) bool { return gocloak.PString(c.ClientID) == clientID })
	if i < 0 {
		return ClientSettings{}, &AdminError{Op: "client " + clientID, Status: http.StatusNotFound, Err: errNoSuchClient}
	}
	s := clientSettings(clients[i])
	scopes, err := a.gc.GetClientScopes(ctx, tok, a.realm)
	if err != nil {
		return ClientSettings{}, adminError("client scopes", err)
	}
	for _, sc := range scopes {
		if slices.Contains(s.DefaultScopes, gocloak.PString(sc.Name)) && sc.ProtocolMappers != nil {
			for _, m := range *sc.ProtocolMappers {
				s.Mappers = append(s.Mappers, scopeMapper(m))
			}
		}
	}
	return s, nil
}

// errNoSuchClient is the cause of the 404 ClientSettings reports.
var errNoSuchClient = errors.New("the realm has no such client")

// clientSettings copies what tokenkeeper needs from a client representation.
func clientSettings(c *gocloak.Client) ClientSettings {
	s := ClientSettings{FrontchannelLogout: c.FrontChannelLogout != nil && *c.FrontChannelLogout, Attributes: map[string]string{}}
	if c.Attributes != nil {
		for k, v := range *c.Attributes {
			s.Attributes[k] = v
		}
	}
	if c.DefaultClientScopes != nil {
		s.DefaultScopes = slices.Clone(*c.DefaultClientScopes)
	}
	if c.ProtocolMappers != nil {
		for _, m := range *c.ProtocolMappers {
			var conf map[string]string
			if m.Config != nil {
				conf = *m.Config
			}
			s.Mappers = append(s.Mappers, Mapper{Type: gocloak.PString(m.ProtocolMapper),
				Claim: conf["claim.name"], Audience: conf["included.client.audience"]})
		}
	}
	return s
}

// scopeMapper copies what tokenkeeper needs from a client scope's mapper.
func scopeMapper(m gocloak.ProtocolMappers) Mapper {
	out := Mapper{Type: gocloak.PString(m.ProtocolMapper)}
	if c := m.ProtocolMappersConfig; c != nil {
		out.Claim, out.Audience = gocloak.PString(c.ClaimName), gocloak.PString(c.IncludedClientAudience)
	}
	return out
}

// ProviderSettings are the settings of one identity provider that
// tokenkeeper depends on to read users' stored tokens of it.
type ProviderSettings struct {
	Enabled bool
	// StoreToken says Keycloak stores the provider's tokens at login.
	StoreToken bool
	// ReadTokenRoleOnCreate says users the provider creates get the broker
	// client's read-token role ("Stored tokens readable").
	ReadTokenRoleOnCreate bool
}

// ProviderSettings reads the identity provider alias. It needs the
// realm-management role view-identity-providers (or view-realm); an alias
// the realm does not have is an *AdminError with Status 404.
func (a *Admin) ProviderSettings(ctx context.Context, alias string) (ProviderSettings, error) {
	tok, err := a.token(ctx)
	if err != nil {
		return ProviderSettings{}, err
	}
	p, err := a.gc.GetIdentityProvider(ctx, tok, a.realm, alias)
	if err != nil {
		return ProviderSettings{}, adminError("identity provider "+alias, err)
	}
	return ProviderSettings{Enabled: gocloak.PBool(p.Enabled), StoreToken: gocloak.PBool(p.StoreToken),
		ReadTokenRoleOnCreate: gocloak.PBool(p.AddReadTokenRoleOnCreate)}, nil
}
