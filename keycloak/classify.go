package keycloak

import (
	"errors"
	"fmt"
	"net"
	"net/http"

	"golang.org/x/oauth2"
)

// Class sorts grant failures by what tokenkeeper must do about them.
type Class int

const (
	// Transient failures are retried with backoff: the grant was never sent
	// (discovery failed, the connection could not be made), Keycloak
	// answered 429, or Keycloak itself answered a 5xx with its OAuth error
	// body, which means its transaction issued no new token.
	Transient Class = iota
	// Terminal failures mean the user's SSO session has ended.
	Terminal
	// Operator failures are configuration problems (client secret, realm,
	// issuer): refreshing stops for everyone and nobody is logged out.
	Operator
	// Unknown failures are grants that may have reached Keycloak and been
	// carried out, though their answer never arrived or could not be read:
	// the connection broke or timed out after the request was sent, a proxy
	// answered a 5xx page of its own, or a 2xx answer held no readable
	// tokens. With refresh-token rotation Keycloak may have spent the
	// refresh token, so re-sending it can fail even though the session is
	// alive.
	Unknown
)

// String returns the class's name in lower case, as used in logs and metrics.
func (c Class) String() string {
	names := [...]string{"transient", "terminal", "operator", "unknown"}
	if c < 0 || int(c) >= len(names) {
		return fmt.Sprintf("Class(%d)", int(c))
	}
	return names[c]
}

// ErrNotSent marks a Refresh failure that happened before the grant was
// sent, so the refresh token was not spent. A *DiscoveryError is not marked
// with it: no grant was sent either, but it is an operator problem.
var ErrNotSent = errors.New("the grant was not sent")

// operatorGrantErrors are Keycloak's invalid_grant descriptions that point at
// tokenkeeper's configuration rather than at the user's session.
var operatorGrantErrors = map[string]bool{
	"Invalid refresh token. Token client and authorized client don't match": true,
}

// Classify sorts an error from Refresh by what the refresher must do about it.
func Classify(err error) Class {
	var rerr *oauth2.RetrieveError
	switch {
	case errors.As(err, new(*DiscoveryError)):
		return Operator
	case errors.As(err, &rerr):
		return classifyRetrieve(rerr)
	case notSent(err):
		return Transient
	default:
		// The request may have left: a timeout or cancellation while
		// waiting, a broken connection, or a 2xx answer without tokens.
		return Unknown
	}
}

// notSent reports whether err shows that the grant never left: it is marked
// ErrNotSent, or the connection to Keycloak (or to the proxy in front of it)
// could not be made.
func notSent(err error) bool {
	if errors.Is(err, ErrNotSent) || errors.As(err, new(*net.DNSError)) {
		return true
	}
	var operr *net.OpError
	return errors.As(err, &operr) && (operr.Op == "dial" || operr.Op == "proxyconnect")
}

func classifyRetrieve(e *oauth2.RetrieveError) Class {
	status := 0
	if e.Response != nil {
		status = e.Response.StatusCode
	}
	switch {
	case status == http.StatusTooManyRequests:
		return Transient
	case status >= 500 && e.ErrorCode == "":
		// Not Keycloak's OAuth error body: a proxy's page, sent while
		// Keycloak may have been carrying out the grant.
		return Unknown
	case status >= 500:
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

// Refused reports whether err is Keycloak refusing a token exchange or a
// stored identity-provider token for good (*ExchangeError, *BrokerError),
// as opposed to Keycloak being unreachable or unavailable.
func Refused(err error) bool {
	return errors.As(err, new(*ExchangeError)) || errors.As(err, new(*BrokerError))
}
