package integration

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// adminTokens caches the bootstrap admin's access token (it lives 60 s), so
// that checks over many users do not make Keycloak hash the admin's password
// once per call.
var adminTokens struct {
	sync.Mutex
	token   string
	expires time.Time
}

// keycloakAdmin is KeycloakAdmin with a cached admin token.
func (s *Stack) keycloakAdmin(ctx context.Context, method, path string, body, out any) error {
	adminTokens.Lock()
	tok := adminTokens.token
	if time.Now().After(adminTokens.expires) {
		t, err := s.adminToken(ctx)
		if err != nil {
			adminTokens.Unlock()
			return err
		}
		tok = t
		adminTokens.token, adminTokens.expires = t, time.Now().Add(30*time.Second)
	}
	adminTokens.Unlock()
	return doJSON(ctx, s.KeycloakURL()+"/admin/realms/jupyter", "Bearer "+tok, method, path, body, out)
}

// KeycloakUserSessions lists the sessions of the user with Keycloak id id.
func (s *Stack) KeycloakUserSessions(ctx context.Context, id string) ([]KeycloakSession, error) {
	var sessions []KeycloakSession
	if err := s.keycloakAdmin(ctx, http.MethodGet, "/users/"+url.PathEscape(id)+"/sessions", nil, &sessions); err != nil {
		return nil, fmt.Errorf("sessions of user %s: %w", id, err)
	}
	return sessions, nil
}

// KeycloakUserIDs maps the test realm's usernames to their Keycloak ids.
func (s *Stack) KeycloakUserIDs(ctx context.Context) (map[string]string, error) {
	var users []struct {
		ID       string `json:"id"`
		Username string `json:"username"`
	}
	if err := s.keycloakAdmin(ctx, http.MethodGet, "/users?briefRepresentation=true&max=10000", nil, &users); err != nil {
		return nil, fmt.Errorf("list keycloak users: %w", err)
	}
	ids := make(map[string]string, len(users))
	for _, u := range users {
		ids[u.Username] = u.ID
	}
	return ids, nil
}

// EndKeycloakUserSessions ends all sessions of the user with Keycloak id id.
func (s *Stack) EndKeycloakUserSessions(ctx context.Context, id string) error {
	if err := s.keycloakAdmin(ctx, http.MethodPost, "/users/"+url.PathEscape(id)+"/logout", nil, nil); err != nil {
		return fmt.Errorf("end the sessions of user %s: %w", id, err)
	}
	return nil
}

// CreateKeycloakUser adds a user with a password to the test realm; a user
// who already exists is left as they are.
func (s *Stack) CreateKeycloakUser(ctx context.Context, username, password string) error {
	user := map[string]any{
		"username": username, "enabled": true, "emailVerified": true,
		"email": username + "@example.org", "firstName": username, "lastName": "Test",
		"credentials": []map[string]any{{"type": "password", "value": password, "temporary": false}},
	}
	err := s.keycloakAdmin(ctx, http.MethodPost, "/users", user, nil)
	if err != nil && !IsStatus(err, http.StatusConflict) {
		return fmt.Errorf("create keycloak user %s: %w", username, err)
	}
	return nil
}

// EndKeycloakSession ends one SSO session, as an administrator does from the
// admin console. Keycloak sends back-channel logout tokens for it to the
// clients that registered a URL.
func (s *Stack) EndKeycloakSession(ctx context.Context, sessionID string) error {
	if err := s.keycloakAdmin(ctx, http.MethodDelete, "/sessions/"+url.PathEscape(sessionID), nil, nil); err != nil {
		return fmt.Errorf("end keycloak session %s: %w", sessionID, err)
	}
	return nil
}

// KeycloakClientUUID returns Keycloak's internal id of a client of the test realm.
func (s *Stack) KeycloakClientUUID(ctx context.Context, clientID string) (string, error) {
	var clients []struct {
		ID string `json:"id"`
	}
	if err := s.keycloakAdmin(ctx, http.MethodGet, "/clients?clientId="+url.QueryEscape(clientID), nil, &clients); err != nil {
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
	if err := s.keycloakAdmin(ctx, http.MethodPut, "/clients/"+id, body, nil); err != nil {
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
	err := s.keycloakAdmin(ctx, http.MethodGet, "/events?"+q.Encode(), nil, &events)
	return events, err
}
