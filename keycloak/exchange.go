package keycloak

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// Standard token exchange (RFC 8693) as Keycloak implements it since 26.2.
const (
	grantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeAccess    = "urn:ietf:params:oauth:token-type:access_token"
)

// ErrAudienceNotAllowed means tokenkeeper's configuration allows no token
// for the audience asked for. Callers that keep an allow-list return it
// before asking Keycloak anything.
var ErrAudienceNotAllowed = errors.New("audience not allowed")

// ExchangeError is Keycloak refusing a token exchange (a 4xx answer other
// than 429): the realm does not let this client have a token for that
// audience with that subject token.
type ExchangeError struct {
	Audience    string
	Status      int
	Code        string // the OAuth error, e.g. invalid_request
	Description string // Keycloak's error_description, printable and at most 200 bytes
	Err         error
}

func (e *ExchangeError) Error() string {
	return fmt.Sprintf("keycloak refused a token exchange for audience %q: HTTP %d %s: %s",
		e.Audience, e.Status, e.Code, e.Description)
}

func (e *ExchangeError) Unwrap() error { return e.Err }

// Exchange trades subject, an access token of this realm, for an access token
// whose audience is narrowed to audience, with Keycloak's standard token
// exchange. It authenticates as this client in the Authorization header and
// sends one request. The client needs "Standard token exchange" enabled, and
// audience must be in the audience of the tokens Keycloak issues to it.
// Refusals are *ExchangeError; network errors, 5xx and 429 are returned
// wrapped as they are (*url.Error, *oauth2.RetrieveError).
func (k *Client) Exchange(ctx context.Context, subject config.Secret, audience string) (*oauth2.Token, error) {
	ep, err := k.Endpoint(ctx)
	if err != nil {
		return nil, err
	}
	cc := clientcredentials.Config{
		ClientID: k.clientID, ClientSecret: k.secret.Reveal(),
		TokenURL: ep.TokenURL, AuthStyle: oauth2.AuthStyleInHeader,
		EndpointParams: url.Values{
			"grant_type":           {grantTokenExchange},
			"subject_token":        {subject.Reveal()},
			"subject_token_type":   {tokenTypeAccess},
			"requested_token_type": {tokenTypeAccess},
			"audience":             {audience},
		},
	}
	tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, k.realm.client))
	if err != nil {
		return nil, exchangeError(audience, err)
	}
	return tok, nil
}

// exchangeError makes Keycloak's refusals an *ExchangeError; transient
// failures (network, 5xx, 429) stay as they are, wrapped.
func exchangeError(audience string, err error) error {
	var rerr *oauth2.RetrieveError
	if errors.As(err, &rerr) && rerr.Response != nil && refusal(rerr.Response.StatusCode) {
		return &ExchangeError{Audience: audience, Status: rerr.Response.StatusCode, Code: printable(rerr.ErrorCode),
			Description: printable(rerr.ErrorDescription), Err: err}
	}
	return fmt.Errorf("token exchange for %q: %w", audience, err)
}

// refusal reports whether an HTTP status is Keycloak refusing a request for
// good (a 4xx other than 429) rather than being unavailable.
func refusal(status int) bool {
	return status >= 400 && status < 500 && status != http.StatusTooManyRequests
}

// maxErrorText bounds the text of Keycloak's that tokenkeeper passes on.
const maxErrorText = 200

// printable returns s without control characters, cut to maxErrorText
// bytes, so that an error text from Keycloak cannot forge log lines or
// bloat an answer.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
	if len(s) <= maxErrorText {
		return s
	}
	cut := maxErrorText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
