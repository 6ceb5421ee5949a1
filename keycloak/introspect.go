package keycloak

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// maxIntrospectionBody bounds the introspection answer read from Keycloak.
const maxIntrospectionBody = 1 << 20

// IntrospectionError is an answer of the introspection endpoint other than a
// 200 holding an "active" boolean: Keycloak refusing this client (401
// invalid_client, 403), a proxy's error page, or a body that is not
// introspection JSON.
type IntrospectionError struct {
	Status int    // the HTTP status
	Body   string // the answer's start, printable, at most 200 bytes, never the token
}

func (e *IntrospectionError) Error() string {
	return fmt.Sprintf("keycloak token introspection answered HTTP %d without an \"active\" boolean: %s", e.Status, e.Body)
}

// Introspect asks the realm's token introspection endpoint (RFC 7662)
// whether token is active, as this client with HTTP Basic authentication,
// with hint as token_type_hint ("refresh_token"; none when empty). For a
// refresh token, Keycloak's answer says whether spending it now would
// succeed (its session alive, its reuse count within the realm's Max
// Reuse) without spending it and without moving the session's idle timer.
// tokenkeeper uses it after a grant whose answer was lost (Unknown) and to
// check on idle users. Answers other than a 200 holding an "active" boolean
// are *IntrospectionError; discovery failures are returned as they are and
// network errors wrapped.
func (k *Client) Introspect(ctx context.Context, token config.Secret, hint string) (bool, error) {
	u, err := k.introspectionEndpoint(ctx)
	if err != nil {
		return false, err
	}
	form := url.Values{"token": {token.Reveal()}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	status, body, err := k.postForm(ctx, u, form)
	if err != nil {
		return false, fmt.Errorf("token introspection: %w", err)
	}
	return introspection(status, body, token)
}

// introspectionEndpoint returns the introspection_endpoint the realm
// advertises, discovering it if needed.
func (k *Client) introspectionEndpoint(ctx context.Context) (string, error) {
	return k.advertised(ctx, "introspection_endpoint")
}

// advertised returns the endpoint the realm's discovery document names
// under key, discovering it if needed.
func (k *Client) advertised(ctx context.Context, key string) (string, error) {
	_, p, err := k.realm.discovered(ctx)
	if err != nil {
		return "", err
	}
	var c map[string]any
	if err := p.Claims(&c); err != nil {
		return "", &DiscoveryError{Err: err}
	}
	if u, _ := c[key].(string); u != "" {
		return u, nil
	}
	return "", &DiscoveryError{Err: fmt.Errorf("the realm advertises no %s", key)}
}

// postForm POSTs form to u as this client, authenticated with HTTP Basic
// (client id and secret form-encoded first, RFC 6749 §2.3.1), accepting
// JSON, and returns the status and at most maxIntrospectionBody bytes of the
// body.
func (k *Client) postForm(ctx context.Context, u string, form url.Values) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(url.QueryEscape(k.clientID), url.QueryEscape(k.secret.Reveal()))
	resp, err := k.realm.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIntrospectionBody))
	return resp.StatusCode, body, err
}

// introspection reads the "active" boolean of an introspection answer; any
// other answer is an *IntrospectionError, whose body never holds token.
func introspection(status int, body []byte, token config.Secret) (bool, error) {
	var answer struct {
		Active *bool `json:"active"`
	}
	if status == http.StatusOK && json.Unmarshal(body, &answer) == nil && answer.Active != nil {
		return *answer.Active, nil
	}
	text := string(body)
	if token != "" {
		text = strings.ReplaceAll(text, token.Reveal(), "[token]")
	}
	return false, &IntrospectionError{Status: status, Body: printable(text)}
}
