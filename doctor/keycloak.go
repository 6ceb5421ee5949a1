package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"unicode"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
	"github.com/tokenkeeper/tokenkeeper/keycloak"
)

// The names of the checks, as the checklist prints them.
const (
	nameDiscovery = "keycloak discovery"
	nameSecret    = "hub client secret"
)

// probeToken is the refresh token checkSecret sends: no token at all, so
// that Keycloak authenticates the client, then refuses the grant without
// touching any session.
const probeToken = config.Secret("tokenkeeper-doctor-not-a-token")

// checkDiscovery reads the issuer's OpenID configuration; go-oidc refuses
// one whose issuer differs from issuer_url.
func checkDiscovery(ctx context.Context, d Deps) Result {
	issuer := d.Config.IssuerURL
	_, err := d.Discover(ctx)
	switch {
	case err == nil:
		return ok(nameDiscovery, issuer+" answers, and names itself as that issuer")
	case errors.As(err, new(*net.DNSError)):
		return fail(nameDiscovery, "the issuer's host does not resolve: "+clip(err.Error()),
			"check issuer_url (TOKENKEEPER_ISSUER_URL) for a typo, and that this host's DNS knows Keycloak's name")
	case errors.As(err, new(*keycloak.DiscoveryError)):
		return fail(nameDiscovery, clip(err.Error()),
			"issuer_url must be the realm's issuer exactly as Keycloak names it (https://HOST/realms/REALM, "+
				"the issuer in its .well-known/openid-configuration); behind a proxy, Keycloak's hostname setting must match")
	}
	return fail(nameDiscovery, "Keycloak did not answer: "+clip(err.Error()),
		"check that Keycloak runs, and that network policies, firewalls and proxies let tokenkeeper reach "+issuer)
}

// checkSecret sends a refresh grant with a made-up token as the hub's
// client. Keycloak authenticates the client first: invalid_client or
// unauthorized_client means the secret (or the client) is wrong; the
// invalid_grant that follows a successful authentication means it is right.
func checkSecret(ctx context.Context, d Deps) Result {
	id := d.Config.ClientID
	_, err := d.Refresh(ctx, probeToken)
	var rerr *oauth2.RetrieveError
	switch {
	case err == nil:
		return warn(nameSecret, "Keycloak accepted a made-up refresh token", "report this: Keycloak should refuse it")
	case errors.As(err, &rerr) && clientRefused(rerr):
		return fail(nameSecret, fmt.Sprintf("Keycloak refused client %q: %s", id, describeRetrieve(rerr)),
			fmt.Sprintf("set TOKENKEEPER_CLIENT_SECRET (or client_secret_file) to the secret on the Credentials tab of client %q; "+
				"the client must exist, be enabled and have Client authentication on", id))
	case errors.As(err, &rerr) && rerr.ErrorCode == "invalid_grant":
		return ok(nameSecret, fmt.Sprintf("Keycloak authenticated client %q (and refused a made-up refresh token, as it should)", id))
	case errors.As(err, &rerr):
		return fail(nameSecret, "Keycloak's token endpoint answered "+describeRetrieve(rerr),
			"see Keycloak's log; access_denied means the realm is disabled")
	}
	return fail(nameSecret, "Keycloak's token endpoint did not answer: "+clip(err.Error()),
		"check that network policies and proxies let tokenkeeper reach Keycloak's token endpoint")
}

// clientRefused reports whether Keycloak refused to authenticate the
// client: invalid_client (401 in current versions) or unauthorized_client
// (older versions, and a client whose credentials need setting up).
func clientRefused(e *oauth2.RetrieveError) bool {
	return e.ErrorCode == "invalid_client" || e.ErrorCode == "unauthorized_client"
}

// describeRetrieve says what Keycloak answered, without the request.
func describeRetrieve(e *oauth2.RetrieveError) string {
	status := 0
	if e.Response != nil {
		status = e.Response.StatusCode
	}
	s := fmt.Sprintf("HTTP %d", status)
	if e.ErrorCode != "" {
		s += " " + clip(e.ErrorCode)
	}
	if e.ErrorDescription != "" {
		s += ": " + clip(e.ErrorDescription)
	}
	return s
}

// maxText bounds a remote text the checklist repeats.
const maxText = 300

// clip returns s without control characters, at most maxText bytes long.
func clip(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	if len(s) > maxText {
		return strings.ToValidUTF8(s[:maxText], "") + "…"
	}
	return s
}
