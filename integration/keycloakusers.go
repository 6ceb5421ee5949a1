package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// CreateKeycloakUser adds a user with a password to the test realm; a user
// who already exists is left as they are.
func (s *Stack) CreateKeycloakUser(ctx context.Context, username, password string) error {
	user := map[string]any{
		"username": username, "enabled": true, "emailVerified": true,
		"email": username + "@example.org", "firstName": username, "lastName": "Test",
		"credentials": []map[string]any{{"type": "password", "value": password, "temporary": false}},
	}
	err := s.KeycloakAdmin(ctx, http.MethodPost, "/users", user, nil)
	if err != nil && !IsStatus(err, http.StatusConflict) {
		return fmt.Errorf("create keycloak user %s: %w", username, err)
	}
	return nil
}

// EndKeycloakSession ends one SSO session, as an administrator does from the
// admin console. Keycloak sends back-channel logout tokens for it to the
// clients that registered a URL.
func (s *Stack) EndKeycloakSession(ctx context.Context, sessionID string) error {
	if err := s.KeycloakAdmin(ctx, http.MethodDelete, "/sessions/"+url.PathEscape(sessionID), nil, nil); err != nil {
		return fmt.Errorf("end keycloak session %s: %w", sessionID, err)
	}
	return nil
}

// KeycloakClientUUID returns Keycloak's internal id of a client of the test realm.
func (s *Stack) KeycloakClientUUID(ctx context.Context, clientID string) (string, error) {
	var clients []struct {
		ID string `json:"id"`
	}
	if err := s.KeycloakAdmin(ctx, http.MethodGet, "/clients?clientId="+url.QueryEscape(clientID), nil, &clients); err != nil {
		return "", err
	}
	if len(clients) != 1 {
		return "", fmt.Errorf("keycloak client %q: %d matches", clientID, len(clients))
	}
	return clients[0].ID, nil
}

// SetBackchannelLogoutURL sets where Keycloak sends back-channel logout
// tokens for the hub's client.
func (s *Stack) SetBackchannelLogoutURL(ctx context.Context, u string) error {
	id, err := s.KeycloakClientUUID(ctx, "jupyterhub")
	if err != nil {
		return err
	}
	body := map[string]any{"attributes": map[string]string{"backchannel.logout.url": u}}
	if err := s.KeycloakAdmin(ctx, http.MethodPut, "/clients/"+id, body, nil); err != nil {
		return fmt.Errorf("set the back-channel logout URL: %w", err)
	}
	return nil
}

// BackchannelLogoutURL is the back-channel logout URL the stack registers
// for the hub's client: tokenkeeper's endpoint.
func (s *Stack) BackchannelLogoutURL() string { return s.ServiceURL() + "backchannel-logout" }

// KeycloakEvent is one of the realm's user events.
type KeycloakEvent struct {
	Time      int64  `json:"time"` // milliseconds since the epoch
	Type      string `json:"type"`
	SessionID string `json:"sessionId"`
	Error     string `json:"error"`
}

// KeycloakEvents lists the realm's latest events of one type, newest
// first. Keycloak records no user with the errors of refresh grants whose
// session has ended; their SessionID says whose they were.
func (s *Stack) KeycloakEvents(ctx context.Context, typ string) ([]KeycloakEvent, error) {
	var events []KeycloakEvent
	q := url.Values{"type": {typ}, "max": {"1000"}}
	err := s.KeycloakAdmin(ctx, http.MethodGet, "/events?"+q.Encode(), nil, &events)
	return events, err
}

