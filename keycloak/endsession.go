package keycloak

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/tokenkeeper/tokenkeeper/config"
)

// EndSessionError is an answer of the realm's end-session endpoint other
// than a 204, or a 400 saying the session is already gone.
type EndSessionError struct {
	Status int    // the HTTP status
	Body   string // the answer's start, printable, at most 200 bytes, never the token
}

func (e *EndSessionError) Error() string {
	return fmt.Sprintf("keycloak end-session answered HTTP %d: %s", e.Status, e.Body)
}

// EndSession ends the Keycloak SSO session that refresh belongs to, as this
// client (the hub's, to which the token is bound), through the realm's
// end_session_endpoint with the refresh token (Keycloak's logout of a
// confidential client without a browser). Keycloak then sends its
// back-channel logouts to the session's other clients. A session that has
// already ended (Keycloak answers 400 invalid_grant) counts as ended.
func (k *Client) EndSession(ctx context.Context, refresh config.Secret) error {
	u, err := k.advertised(ctx, "end_session_endpoint")
	if err != nil {
		return err
	}
	status, body, err := k.postForm(ctx, u, url.Values{"refresh_token": {refresh.Reveal()}})
	if err != nil {
		return fmt.Errorf("end session: %w", err)
	}
	return endSessionAnswer(status, body, refresh)
}

// endSessionAnswer sorts the end-session endpoint's answer.
func endSessionAnswer(status int, body []byte, refresh config.Secret) error {
	var answer struct {
		Error string `json:"error"`
	}
	switch {
	case status == http.StatusNoContent || status == http.StatusOK:
		return nil
	case status == http.StatusBadRequest && json.Unmarshal(body, &answer) == nil && answer.Error == "invalid_grant":
		return nil
	}
	text := string(body)
	if refresh != "" {
		text = strings.ReplaceAll(text, refresh.Reveal(), "[token]")
	}
	return &EndSessionError{Status: status, Body: printable(text)}
}
