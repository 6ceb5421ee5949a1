package keycloak

import (
	"errors"
	"net/http"

	"golang.org/x/oauth2"
)

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

// Classify sorts an error from Refresh by what the refresher must do about it.
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

// Refused reports whether err is Keycloak refusing a token exchange or a
// stored identity-provider token for good (*ExchangeError, *BrokerError),
// as opposed to Keycloak being unreachable or unavailable.
func Refused(err error) bool {
	return errors.As(err, new(*ExchangeError)) || errors.As(err, new(*BrokerError))
}
