package keycloak

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/oauth2"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// ErrProviderNotAllowed means tokenkeeper's configuration allows no token of
// the identity provider asked for. Callers that keep an allow-list return it
// before asking Keycloak anything.
var ErrProviderNotAllowed = errors.New("identity provider not allowed")

// BrokerError is Keycloak refusing to give a user's stored token of an
// identity provider: a 4xx answer other than 429 (the user's token lacks
// the broker client's read-token role, the user never logged in through
// that provider, the provider stores no tokens), or a 502 (Keycloak could
// not refresh the provider's token).
type BrokerError struct {
	Alias   string
	Status  int
	Message string // Keycloak's errorMessage, printable and at most 200 bytes
}

func (e *BrokerError) Error() string {
	return fmt.Sprintf("keycloak gave no token of identity provider %q: HTTP %d: %s", e.Alias, e.Status, e.Message)
}

// maxBrokerBody bounds the stored token response read from Keycloak.
const maxBrokerBody = 1 << 20

// ProviderToken returns the access token of the external identity provider
// alias that Keycloak stored when the user logged in through it (identity
// brokering with "Store tokens" on), asking the realm's broker token endpoint
// with subject, the user's access token, which must carry the broker
// client's read-token role. Keycloak refreshes the stored token first when
// it is about to expire and the provider gave a refresh token. Only the
// access token is kept, with its expiry when Keycloak recorded one
// (accessTokenExpiration); the provider's refresh and ID tokens are dropped
// unread. Refusals are *BrokerError.
func (k *Client) ProviderToken(ctx context.Context, subject config.Secret, alias string) (*oauth2.Token, error) {
	u := k.realm.issuer + "/broker/" + url.PathEscape(alias) + "/token"
	status, body, err := getJSON(ctx, k.realm.client, u, "Bearer "+subject.Reveal(), maxBrokerBody)
	if err != nil {
		return nil, fmt.Errorf("identity provider token: %w", err)
	}
	if status != http.StatusOK {
		return nil, brokerError(alias, status, body)
	}
	return storedToken(alias, body)
}

// getJSON GETs u accepting JSON, with authorization unless it is "", and
// returns the status and at most limit bytes of the body.
func getJSON(ctx context.Context, c *http.Client, u, authorization string, limit int64) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	return resp.StatusCode, body, err
}

// brokerError sorts a non-200 answer of the broker token endpoint.
func brokerError(alias string, status int, body []byte) error {
	if !refusal(status) && status != http.StatusBadGateway {
		return fmt.Errorf("identity provider token %q: keycloak answered HTTP %d", alias, status)
	}
	var e struct {
		Message     string `json:"errorMessage"`
		Description string `json:"error_description"`
		Code        string `json:"error"`
	}
	_ = json.Unmarshal(body, &e) // an HTML error page says nothing more
	msg := firstNonEmpty(e.Message, e.Description, e.Code, http.StatusText(status))
	return &BrokerError{Alias: alias, Status: status, Message: printable(msg)}
}

// storedToken reads the access token and its expiry from the token response
// Keycloak stored: JSON, or the form encoding some providers answer with.
func storedToken(alias string, body []byte) (*oauth2.Token, error) {
	var st struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		Expiration  int64  `json:"accessTokenExpiration"`
	}
	if b := bytes.TrimSpace(body); len(b) > 0 && b[0] == '{' {
		if err := json.Unmarshal(b, &st); err != nil {
			return nil, &BrokerError{Alias: alias, Status: http.StatusOK, Message: "the stored token is not valid JSON"}
		}
	} else if form, err := url.ParseQuery(string(b)); err == nil {
		st.AccessToken, st.TokenType = form.Get("access_token"), form.Get("token_type")
	}
	if st.AccessToken == "" {
		return nil, &BrokerError{Alias: alias, Status: http.StatusOK, Message: "the stored token response holds no access token"}
	}
	tok := &oauth2.Token{AccessToken: st.AccessToken, TokenType: firstNonEmpty(st.TokenType, "Bearer")}
	if st.Expiration > 0 {
		tok.Expiry = time.Unix(st.Expiration, 0)
	}
	return tok, nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
